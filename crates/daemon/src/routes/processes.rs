//! Background process routes: start, list, get, follow (NDJSON), stdin,
//! signal, kill, resize.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use zygote_proto::api::{ProcessStart, SignalBody};
use zygote_proto::procs::{ProcInfo, PtySize};

use super::sandboxes::exec_event_line;
use super::{only_params, ApiJson, Params};
use crate::error::ApiError;
use crate::{wire, AppState};

/// Most stdin bytes one call carries.
const MAX_STDIN_CALL: usize = 1 << 20;

fn flag(q: &Params, name: &str, default: bool) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None => Ok(default),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!(
            "{name} `{v}` is not a boolean: pass ?{name}=true or ?{name}=false"
        ))),
    }
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes", params(("id" = String, Path)), request_body = ProcessStart,
    description = "Starts a background process (or, with `pty`, a terminal) and answers once it runs. Its output is kept (the last 256 KiB) for `GET .../output`; it runs on when clients go.",
    responses((status = 201, body = ProcInfo), (status = 400, body = zygote_proto::api::ErrorBody), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn start(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProcessStart>,
) -> Result<Response, ApiError> {
    let spec = wire::process(body)?;
    let pid = s.engine.start_process(&id, spec).await?;
    let info = find(&s, &id, pid).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn find(s: &AppState, id: &str, pid: u32) -> Result<ProcInfo, ApiError> {
    s.engine
        .processes(id)
        .await?
        .into_iter()
        .find(|p| p.pid == pid)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no background process {pid} in sandbox `{id}`: list them with GET /v1/sandboxes/{id}/processes"
            ))
        })
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes", params(("id" = String, Path)),
    responses((status = 200, body = [ProcInfo])))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ProcInfo>>, ApiError> {
    Ok(Json(s.engine.processes(&id).await?))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}", params(("id" = String, Path), ("pid" = u32, Path)),
    responses((status = 200, body = ProcInfo), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn get(
    State(s): State<AppState>,
    Path((id, pid)): Path<(String, u32)>,
) -> Result<Json<ProcInfo>, ApiError> {
    Ok(Json(find(&s, &id, pid).await?))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/output", params(("id" = String, Path), ("pid" = u32, Path),
        ("replay" = Option<bool>, Query, description = "send the kept output first (default true)")),
    description = "NDJSON lines of ExecEvent: the kept output (with `replay`), then live output, then `exit`. Closing the connection stops following; the process runs on.",
    responses((status = 200, description = "NDJSON lines of ExecEvent", body = zygote_proto::api::ExecEvent)))]
pub(crate) async fn output(
    State(s): State<AppState>,
    Path((id, pid)): Path<(String, u32)>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    only_params(&q, &["replay"])?;
    let replay = flag(&q, "replay", true)?;
    let items = s.engine.attach(&id, pid, replay).await?;
    let t0 = std::time::Instant::now();
    let lines = items.map(move |i| Ok::<_, std::convert::Infallible>(exec_event_line(i, t0)));
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/stdin", params(("id" = String, Path), ("pid" = u32, Path),
        ("eof" = Option<bool>, Query, description = "close its stdin after these bytes")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = ProcInfo)))]
pub(crate) async fn stdin(
    State(s): State<AppState>,
    Path((id, pid)): Path<(String, u32)>,
    Query(q): Query<Params>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    only_params(&q, &["eof"])?;
    let eof = flag(&q, "eof", false)?;
    if body.len() > MAX_STDIN_CALL {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "{} bytes of input in one call, over the {MAX_STDIN_CALL}-byte cap: send it in pieces",
                body.len()
            ),
        });
    }
    s.engine.process_input(&id, pid, body.to_vec(), eof).await?;
    Ok(Json(
        serde_json::json!({"pid": pid, "bytes": body.len(), "eof": eof}),
    ))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/signal", params(("id" = String, Path), ("pid" = u32, Path)), request_body = SignalBody,
    responses((status = 200, body = ProcInfo)))]
pub(crate) async fn signal(
    State(s): State<AppState>,
    Path((id, pid)): Path<(String, u32)>,
    ApiJson(body): ApiJson<SignalBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.engine.signal_process(&id, pid, body.signal).await?;
    Ok(Json(serde_json::json!({"pid": pid, "signal": body.signal})))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/processes/{pid}", params(("id" = String, Path), ("pid" = u32, Path)),
    description = "SIGKILL to its process group.",
    responses((status = 200, body = ProcInfo)))]
pub(crate) async fn kill(
    State(s): State<AppState>,
    Path((id, pid)): Path<(String, u32)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.engine.signal_process(&id, pid, libc_sigkill()).await?;
    Ok(Json(serde_json::json!({"pid": pid, "killed": true})))
}

/// SIGKILL's number (9 on every Linux architecture zygote runs on).
fn libc_sigkill() -> i32 {
    9
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/resize", params(("id" = String, Path), ("pid" = u32, Path)), request_body = PtySize,
    responses((status = 200, body = PtySize)))]
pub(crate) async fn resize(
    State(s): State<AppState>,
    Path((id, pid)): Path<(String, u32)>,
    ApiJson(size): ApiJson<PtySize>,
) -> Result<Json<PtySize>, ApiError> {
    s.engine
        .resize_process(&id, pid, size.rows, size.cols)
        .await?;
    Ok(Json(size))
}
