//! Sandbox routes: create (and forkd's spawn on the same route), list, get,
//! remove, ping, exec (buffered and streamed), eval, branch, fork.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures::StreamExt;
use zygote_engine::ExecItem;
use zygote_proto::api::{
    CreateSandbox, ExecEvent, ExecResult, ForkBody, ForkResult, Pong, Removed, SandboxInfo,
    SnapshotInfo, SnapshotStatus,
};
use zygote_proto::compat::{
    BranchRequest, EvalAnswer, ExecRequest, ForkdChild, PingAnswer, SpawnRequest,
};

use super::{from_value, ApiJson, Params};
use crate::error::ApiError;
use crate::observe::Found;
use crate::{forkd, wire, AppState};

/// Most sandboxes one page lists.
const MAX_PAGE: usize = 1000;

#[utoipa::path(get, path = "/v1/sandboxes", params(
        ("state" = Option<String>, Query, description = "only sandboxes in this state"),
        ("metadata.KEY" = Option<String>, Query, description = "only sandboxes labelled KEY=value (repeatable)"),
        ("limit" = Option<usize>, Query, description = "at most this many (1-1000); the `X-Next-Token` header then names the next page"),
        ("next_token" = Option<String>, Query, description = "the page after the one that answered this token")),
    responses((status = 200, body = [SandboxInfo])))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    let query = wire::list_query(&q)?;
    let all = s.engine.sandboxes_where(&query);
    let limit = match q.get("limit") {
        None => None,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit `{l}` is out of range: pass 1-{MAX_PAGE}"
                )))
            }
        },
    };
    // The token is the last id of the previous page (ids are unique; the
    // order is creation time, then id).
    let start = match q.get("next_token") {
        None => 0,
        Some(t) => all
            .iter()
            .position(|v| &v.id == t)
            .map(|i| i + 1)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "next_token `{t}` names no sandbox in this listing: start again without it"
                ))
            })?,
    };
    let end = limit.map_or(all.len(), |n| (start + n).min(all.len()));
    let page: Vec<SandboxInfo> = all[start..end].iter().cloned().map(wire::sandbox).collect();
    let mut resp = Json(page).into_response();
    if end < all.len() && end > start {
        if let Ok(v) = axum::http::HeaderValue::from_str(&all[end - 1].id) {
            resp.headers_mut().insert("x-next-token", v);
        }
    }
    Ok(resp)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause", params(("id" = String, Path)),
    description = "Stores the sandbox as a snapshot of itself (memory, device state, disk), stops its VM and frees its memory; it stays listed, `paused`. `POST .../resume` brings it back under the same id.",
    responses((status = 200, body = SandboxInfo), (status = 409, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn pause(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(wire::sandbox(s.engine.pause(&id).await?)))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", params(("id" = String, Path)),
    responses((status = 200, body = SandboxInfo), (status = 409, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn resume(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(wire::sandbox(s.engine.resume(&id).await?)))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/timeout", params(("id" = String, Path)), request_body = zygote_proto::api::TimeoutBody,
    description = "A new lifetime from now (it replaces the old one); when it runs out the sandbox is removed, or paused with `on_expiry: \"pause\"`.",
    responses((status = 200, body = SandboxInfo)))]
pub(crate) async fn timeout(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<zygote_proto::api::TimeoutBody>,
) -> Result<Json<SandboxInfo>, ApiError> {
    let current = s.engine.sandbox(&id)?.on_expiry;
    let on = b.on_expiry.unwrap_or(wire::on_expiry(current));
    let v = s
        .engine
        .set_timeout(&id, wire::lifetime(Some(b.timeout_secs), Some(on)))
        .await?;
    Ok(Json(wire::sandbox(v)))
}

#[utoipa::path(post, path = "/v1/sandboxes", request_body = CreateSandbox,
    description = "With `snapshot_tag` the body is forkd's spawn (a SpawnRequest) and the answer a list of ForkdChild: zygote's SpawnResult plus forkd's flat `id`, `snapshot_tag`, `created_at_unix`, `pid` and a `warning` naming accepted flags that mean nothing here. zygote's own spawn is `POST /v1/snapshots/{tag}/spawn`.",
    responses((status = 201, body = SandboxInfo), (status = 201, description = "children", body = [ForkdChild]), (status = 400, body = zygote_proto::api::ErrorBody), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn create(
    State(s): State<AppState>,
    ApiJson(v): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    if v.get("snapshot_tag").is_some() {
        return forkd_spawn(s, from_value(v)?).await;
    }
    let req: CreateSandbox = from_value(v)?;
    let info = wire::sandbox(s.engine.create(wire::create(req)?).await?);
    let found = Found::sandbox(&info.id);
    Ok(found.on((StatusCode::CREATED, Json(info))))
}

/// forkd's spawn: `POST /v1/sandboxes` with `snapshot_tag`.
async fn forkd_spawn(s: AppState, req: SpawnRequest) -> Result<Response, ApiError> {
    let (body, warnings, forkd_shaped) = forkd::spawn_body(req);
    let tag = body.snapshot_tag.clone();
    let spec = wire::spawn(&tag, body)?;
    let children: Vec<_> = s
        .engine
        .spawn(spec)
        .await?
        .into_iter()
        .map(wire::child)
        .collect();
    if forkd_shaped && children.iter().all(|c| c.sandbox.is_none()) {
        // forkd answers a failed spawn with an error, never a list without ids.
        let why = children
            .iter()
            .find_map(|c| c.error.clone())
            .unwrap_or_default();
        return Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("no child started: {why}"),
        });
    }
    let found = Found::children(&children);
    let children: Vec<ForkdChild> = children
        .into_iter()
        .map(|c| ForkdChild::new(c, forkd::join_warnings(None, &warnings)))
        .collect();
    Ok(found.on((StatusCode::CREATED, Json(children))))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = SandboxInfo), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(wire::sandbox(s.engine.sandbox(&id)?)))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Removed), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Removed>, ApiError> {
    s.engine.remove(&id).await?;
    Ok(Json(Removed { id, removed: true }))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/ping", params(("id" = String, Path)),
    responses((status = 200, body = PingAnswer)))]
pub(crate) async fn ping(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PingAnswer>, ApiError> {
    let rtt = s.engine.ping(&id).await?;
    Ok(Json(PingAnswer {
        pong: Pong {
            ok: true,
            agent_rtt_ms: rtt.as_secs_f64() * 1000.0,
        },
        forkd_pong: true,
    }))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/branch", params(("id" = String, Path)), request_body = BranchRequest,
    description = "forkd's modes map onto ours: `full`/`diff` -> `copy` (or `live` for a copy-on-write child), `live` -> `live`; `warning` names what was mapped or ignored. 202 while `memory.bin` is being written (`wait: false`).",
    responses((status = 201, body = SnapshotInfo), (status = 202, body = SnapshotInfo), (status = 409, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn branch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<BranchRequest>,
) -> Result<Response, ApiError> {
    let (body, warnings) =
        forkd::branch_body(&id, req, || Ok(wire::sandbox(s.engine.sandbox(&id)?)))?;
    let mut info = wire::snapshot(s.engine.branch(&id, wire::branch(body)).await?);
    info.warning = forkd::join_warnings(info.warning.take(), &warnings);
    let status = if info.status == SnapshotStatus::Writing {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    let found = Found::snapshot(&info.tag);
    Ok(found.on((status, Json(info))))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/fork", params(("id" = String, Path)), request_body = ForkBody,
    responses((status = 201, body = ForkResult)))]
pub(crate) async fn fork(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ForkBody>,
) -> Result<Response, ApiError> {
    let r = wire::forked(s.engine.fork(&id, wire::fork(body)).await?);
    let mut found = Found::children(&r.children);
    found.snapshot = Some(r.snapshot.tag.clone());
    Ok(found.on((StatusCode::CREATED, Json(r))))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", params(("id" = String, Path)), request_body = ExecRequest,
    description = "forkd's `{args, timeout_secs}` is accepted too; then the timeout defaults to 30 s and `exit_code` is never null (128 + signal).",
    responses((status = 200, body = ExecResult), (status = 400, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn exec(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Json<ExecResult>, ApiError> {
    let (body, forkd_shaped) = forkd::exec_body(req)?;
    let cap = wire::max_output(body.max_output_bytes)?;
    let spec = wire::exec(body)?;
    let t0 = Instant::now();
    let mut items = s.engine.exec(&id, spec).await?;
    let (mut out, mut err) = (wire::Tail::new(cap), wire::Tail::new(cap));
    while let Some(item) = items.next().await {
        match item? {
            ExecItem::Started(_) => {}
            ExecItem::Stdout(b) => out.push(&b),
            ExecItem::Stderr(b) => err.push(&b),
            ExecItem::Exit(x) => {
                let (stdout, stdout_truncated) = out.finish();
                let (stderr, stderr_truncated) = err.finish();
                let mut r = ExecResult {
                    exit_code: x.code,
                    signal: x.signal,
                    timed_out: x.timed_out,
                    stdout,
                    stderr,
                    duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
                    stdout_truncated,
                    stderr_truncated,
                };
                if forkd_shaped {
                    forkd::forkd_exit_code(&mut r);
                }
                return Ok(Json(r));
            }
        }
    }
    Err(ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: "the exec ended without an exit status".into(),
    })
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/stream", params(("id" = String, Path)), request_body = ExecRequest,
    responses((status = 200, description = "NDJSON lines of ExecEvent", body = ExecEvent)))]
pub(crate) async fn exec_stream(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let (body, _) = forkd::exec_body(req)?;
    let spec = wire::exec(body)?;
    let t0 = Instant::now();
    let items = s.engine.exec(&id, spec).await?;
    let lines = items.map(move |item| Ok::<_, std::convert::Infallible>(exec_event_line(item, t0)));
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// One NDJSON line of a process's stream (an exec's, or a followed one's).
pub(crate) fn exec_event_line(
    item: Result<ExecItem, zygote_engine::EngineError>,
    t0: Instant,
) -> bytes::Bytes {
    let ev = match item {
        Ok(ExecItem::Started(pid)) => ExecEvent::Started { pid },
        Ok(ExecItem::Stdout(b)) => ExecEvent::Stdout {
            data_b64: B64.encode(&b),
        },
        Ok(ExecItem::Stderr(b)) => ExecEvent::Stderr {
            data_b64: B64.encode(&b),
        },
        Ok(ExecItem::Exit(x)) => ExecEvent::Exit {
            exit_code: x.code,
            signal: x.signal,
            timed_out: x.timed_out,
            duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
        },
        Err(e) => {
            let status = ApiError::from(e);
            ExecEvent::Error {
                error: status.message,
                status: Some(status.status.as_u16()),
            }
        }
    };
    let mut v = serde_json::to_vec(&ev).unwrap_or_default();
    v.push(b'\n');
    v.into()
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/eval", params(("id" = String, Path)), request_body = zygote_proto::api::EvalBody,
    responses((status = 200, body = EvalAnswer)))]
pub(crate) async fn eval(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<zygote_proto::api::EvalBody>,
) -> Result<Json<EvalAnswer>, ApiError> {
    Ok(Json(s.engine.eval(&id, &body.code).await?.into()))
}
