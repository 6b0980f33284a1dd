//! The code interpreter (port 49999): `POST /execute` runs Python in the
//! sandbox's warm interpreter (its globals persist between calls) and
//! answers E2B's NDJSON lines (`stdout`, `stderr`, `result`, `error`,
//! `number_of_executions`). One interpreter per sandbox: `GET /contexts`
//! lists it as `default`; creating further contexts is refused.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::envd::files::HOME;
use crate::error::ApiError;
use crate::route::Target;
use crate::time::now_rfc3339;
use crate::App;

/// Id of the one context.
const DEFAULT_CONTEXT: &str = "default";
/// Most sandboxes whose execution counts are kept (counts of gone sandboxes go first).
const MAX_COUNTS: usize = 4096;

/// Executions so far, by sandbox.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    by_sandbox: Mutex<HashMap<String, u64>>,
}

impl Counts {
    fn next(&self, app: &App, id: &str) -> u64 {
        let mut m = self.by_sandbox.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_COUNTS && !m.contains_key(id) {
            m.retain(|k, _| app.engine.sandbox(k).is_ok());
            if m.len() >= MAX_COUNTS {
                m.clear();
            }
        }
        let n = m.entry(id.to_string()).or_insert(0);
        *n += 1;
        *n
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteRequest {
    code: String,
    context_id: Option<String>,
    language: Option<String>,
    env_vars: Option<HashMap<String, String>>,
}

/// The interpreter router.
pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/execute", post(execute))
        .route("/contexts", get(contexts).post(create_context))
        .fallback(|| async {
            ApiError::not_found("the code interpreter serves /execute and /contexts only")
        })
        .with_state(app)
}

/// `NameError: name 'y' is not defined` as (name, value).
fn split_error(e: &str) -> (String, String) {
    match e.split_once(": ") {
        Some((n, v)) if !n.contains(' ') => (n.to_string(), v.to_string()),
        _ => (e.to_string(), String::new()),
    }
}

fn check(req: &ExecuteRequest) -> Result<(), ApiError> {
    if let Some(l) = req.language.as_deref() {
        if !l.eq_ignore_ascii_case("python") {
            return Err(ApiError::bad_request(format!(
                "language {l:?} is not supported: zygote's interpreter runs Python"
            )));
        }
    }
    if let Some(c) = req.context_id.as_deref() {
        if c != DEFAULT_CONTEXT {
            return Err(ApiError::not_found(format!(
                "no context {c:?}: zygote has one context per sandbox, {DEFAULT_CONTEXT:?}"
            )));
        }
    }
    if req.env_vars.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(ApiError::bad_request(
            "env_vars on run_code are not supported: set them with os.environ in the code, or as the sandbox's envs",
        ));
    }
    Ok(())
}

async fn execute(State(app): State<App>, Extension(t): Extension<Target>, body: Bytes) -> Response {
    let req: ExecuteRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(format!("invalid body: {e}")).into_response(),
    };
    if let Err(e) = check(&req) {
        return e.into_response();
    }
    let r = match app.engine.eval(&t.id, &req.code).await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let n = app.counts.next(&app, &t.id);
    let ts = now_rfc3339();
    let mut lines = Vec::new();
    if !r.stdout.is_empty() {
        lines.push(json!({"type": "stdout", "text": r.stdout, "timestamp": ts}));
    }
    if !r.stderr.is_empty() {
        lines.push(json!({"type": "stderr", "text": r.stderr, "timestamp": ts}));
    }
    if let Some(v) = r.result {
        lines.push(json!({"type": "result", "text": v, "is_main_result": true}));
    }
    if let Some(e) = r.error {
        let (name, value) = split_error(&e);
        let tb = r.traceback.unwrap_or_default();
        lines.push(json!({"type": "error", "name": name, "value": value, "traceback": tb}));
    }
    lines.push(json!({"type": "number_of_executions", "execution_count": n}));
    let mut out = String::new();
    for l in lines {
        out.push_str(&l.to_string());
        out.push('\n');
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        out,
    )
        .into_response()
}

async fn contexts() -> Response {
    Json(json!([{"id": DEFAULT_CONTEXT, "language": "python", "cwd": HOME}])).into_response()
}

async fn create_context() -> Response {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!("separate contexts are not supported: zygote runs one interpreter per sandbox; run code without a context (it uses {DEFAULT_CONTEXT:?}), or fork the sandbox for an independent one"),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_split() {
        assert_eq!(
            split_error("NameError: name 'y' is not defined"),
            ("NameError".into(), "name 'y' is not defined".into())
        );
        assert_eq!(
            split_error("KeyboardInterrupt"),
            ("KeyboardInterrupt".into(), String::new())
        );
    }
}
