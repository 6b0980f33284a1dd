//! Which protocol a request speaks: in-sandbox traffic names its sandbox and
//! port in the `E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers (what the SDKs
//! send when `E2B_SANDBOX_URL` is set) or in a `{port}-{id}.{domain}` Host
//! (wildcard DNS); everything else is the control plane. In-sandbox requests
//! must name a running sandbox and carry its access token (`/health` and
//! signed `/files` URLs excepted).

use std::convert::Infallible;

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tower::ServiceExt;
use zygote_engine::{EngineError, SandboxState};

use crate::error::{sandbox_gone, ApiError};
use crate::{control, envd, interp, App, ENVD_PORT, INTERPRETER_PORT};

/// Header naming the sandbox of an in-sandbox request.
pub(crate) const SANDBOX_ID_HEADER: &str = "e2b-sandbox-id";
/// Header naming the port of an in-sandbox request.
pub(crate) const SANDBOX_PORT_HEADER: &str = "e2b-sandbox-port";
/// envd's access token.
pub(crate) const ACCESS_TOKEN_HEADER: &str = "x-access-token";
/// The code interpreter's traffic token.
pub(crate) const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// The sandbox and port an in-sandbox request was routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) id: String,
    pub(crate) port: u16,
}

/// A plausible sandbox id (what the engine makes: lower-case hex; a little
/// wider so other ids get the engine's own "not found").
fn id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The sandbox and port a request names, if it is in-sandbox traffic.
pub(crate) fn target_of(headers: &HeaderMap) -> Result<Option<Target>, ApiError> {
    if let Some(v) = headers.get(SANDBOX_ID_HEADER) {
        let id = v.to_str().unwrap_or("").trim();
        if !id_ok(id) {
            return Err(ApiError::bad_request(format!(
                "E2b-Sandbox-Id {v:?} is not a sandbox id: pass the sandboxID the create answer carried"
            )));
        }
        let port = match headers.get(SANDBOX_PORT_HEADER) {
            None => ENVD_PORT,
            Some(p) => p
                .to_str()
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "E2b-Sandbox-Port {p:?} is not a port: pass {ENVD_PORT} (envd) or {INTERPRETER_PORT} (the code interpreter)"
                    ))
                })?,
        };
        return Ok(Some(Target {
            id: id.to_string(),
            port,
        }));
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    Ok(host_target(host))
}

/// `{port}-{id}.{domain}[:listener port]` as a target.
fn host_target(host: &str) -> Option<Target> {
    let (label, domain) = host.split_once('.')?;
    if domain.is_empty() {
        return None;
    }
    let (port, id) = label.split_once('-')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || !id_ok(id) {
        return None;
    }
    Some(Target {
        id: id.to_ascii_lowercase(),
        port: port.parse().ok()?,
    })
}

/// The routers behind the dispatch.
#[derive(Clone)]
struct Dispatch {
    app: App,
    control: Router,
    envd: Router,
    interp: Router,
}

/// The one router: a dispatch in front of the three protocols.
pub(crate) fn router(app: App) -> Router {
    let d = Dispatch {
        control: control::router(app.clone()),
        envd: envd::router(app.clone()),
        interp: interp::router(app.clone()),
        app,
    };
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let d = d.clone();
        async move { Ok::<_, Infallible>(d.dispatch(req).await) }
    }))
}

impl Dispatch {
    async fn dispatch(self, req: Request) -> Response {
        match target_of(req.headers()) {
            Err(e) => e.into_response(),
            Ok(None) => call(self.control, req).await,
            Ok(Some(t)) => self.in_sandbox(t, req).await,
        }
    }

    async fn in_sandbox(self, t: Target, mut req: Request) -> Response {
        match self.app.engine.sandbox(&t.id) {
            Err(EngineError::NotFound { .. }) => return sandbox_gone(&t.id, ""),
            Err(e) => return ApiError::from(e).into_response(),
            Ok(v) => match v.state {
                SandboxState::Running | SandboxState::Booting => {}
                SandboxState::Paused => {
                    let body = serde_json::json!({
                        "code": 502,
                        "message": format!("The sandbox {} is paused: Sandbox.connect() resumes it", t.id),
                        "sandboxId": t.id,
                    });
                    return (StatusCode::BAD_GATEWAY, Json(body)).into_response();
                }
                SandboxState::Stopping | SandboxState::Dead => {
                    return sandbox_gone(&t.id, &format!(" (it is {})", v.state.as_str()))
                }
            },
        }
        let router = match t.port {
            ENVD_PORT => self.envd.clone(),
            INTERPRETER_PORT => self.interp.clone(),
            p => {
                let body = serde_json::json!({
                    "code": 502,
                    "message": format!("The sandbox {} is running but port {p} is not open: zygote serves envd on {ENVD_PORT} and the code interpreter on {INTERPRETER_PORT} only", t.id),
                    "sandboxId": t.id,
                    "port": p,
                });
                return (StatusCode::BAD_GATEWAY, Json(body)).into_response();
            }
        };
        if !self.authorized(&t, &req) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "missing or wrong X-Access-Token for sandbox {}: send the envdAccessToken its create or connect answer carried",
                    t.id
                ),
            )
            .into_response();
        }
        req.extensions_mut().insert(t);
        call(router, req).await
    }

    /// Whether an in-sandbox request may pass: it carries the sandbox's token,
    /// or it is `/health` (says only that the sandbox runs), or a `/files`
    /// request with a signature (checked by the handler).
    fn authorized(&self, t: &Target, req: &Request) -> bool {
        let path = req.uri().path();
        if t.port == ENVD_PORT && path == "/health" {
            return true;
        }
        if t.port == ENVD_PORT
            && path == "/files"
            && req.uri().query().is_some_and(|q| {
                form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "signature")
            })
        {
            return true;
        }
        let given = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        if given(ACCESS_TOKEN_HEADER).is_some_and(|g| self.app.keys.token_ok(&t.id, g)) {
            return true;
        }
        t.port == INTERPRETER_PORT
            && given(TRAFFIC_TOKEN_HEADER).is_some_and(|g| self.app.keys.token_ok(&t.id, g))
    }
}

async fn call(router: Router, req: Request) -> Response {
    match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn targets() {
        let t = |id: &str, port| {
            Some(Target {
                id: id.into(),
                port,
            })
        };
        assert_eq!(target_of(&headers(&[])).unwrap(), None);
        assert_eq!(
            target_of(&headers(&[("host", "127.0.0.1:3000")])).unwrap(),
            None
        );
        assert_eq!(
            target_of(&headers(&[("host", "api.example.test")])).unwrap(),
            None
        );
        assert_eq!(
            target_of(&headers(&[("E2b-Sandbox-Id", "abc123")])).unwrap(),
            t("abc123", 49983)
        );
        assert_eq!(
            target_of(&headers(&[
                ("E2b-Sandbox-Id", "abc123"),
                ("E2b-Sandbox-Port", "49999")
            ]))
            .unwrap(),
            t("abc123", 49999)
        );
        assert_eq!(
            target_of(&headers(&[("host", "49999-abc123.sandbox.test:3000")])).unwrap(),
            t("abc123", 49999)
        );
        assert_eq!(
            target_of(&headers(&[("host", "49999-abc123")])).unwrap(),
            None
        );
        assert_eq!(
            target_of(&headers(&[("host", "x9-abc.test")])).unwrap(),
            None
        );
        for bad in [
            vec![("E2b-Sandbox-Id", "../etc")],
            vec![("E2b-Sandbox-Id", "")],
            vec![("E2b-Sandbox-Id", "abc"), ("E2b-Sandbox-Port", "99999")],
            vec![("E2b-Sandbox-Id", "abc"), ("E2b-Sandbox-Port", "x")],
        ] {
            let e = target_of(&headers(&bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}
