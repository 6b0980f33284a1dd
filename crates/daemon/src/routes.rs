//! Routes and handlers. Each handler validates its input, calls the engine and
//! translates the answer; nothing here knows about QEMU or the agent protocol.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use zygote_engine::ops::ExecItem;
use zygote_proto::api::{
    BranchRequest, CreateSandbox, CreateSnapshot, EvalAnswer, EvalBody, ExecEvent, ExecRequest,
    ExecResult, ForkBody, ForkResult, Health, ListResult, Pong, Removed, SandboxInfo,
    SnapshotDeleted, SnapshotInfo, SnapshotStatus, SpawnRequest, SpawnResult, VersionInfo,
    WriteFileResult,
};
use zygote_proto::AGENT_PROTOCOL_VERSION;

use crate::error::{chain, ApiError};
use crate::{auth, forkd, openapi, AppState};

/// JSON body extractor whose rejections are `{"error": ...}` 400s.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    let msg = match &rej {
        JsonRejection::JsonDataError(e) => format!("invalid request body: {}", chain(e)),
        JsonRejection::JsonSyntaxError(e) => format!("malformed JSON: {}", chain(e)),
        JsonRejection::MissingJsonContentType(_) => {
            "missing `Content-Type: application/json`: send the body as JSON".to_string()
        }
        other => format!("unreadable request body: {other}"),
    };
    ApiError::bad_request(msg)
}

type Params = HashMap<String, String>;

fn param<'a>(q: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    q.get(name).map(String::as_str).ok_or_else(|| {
        ApiError::bad_request(format!(
            "query parameter `{name}` is missing: add ?{name}=/absolute/path"
        ))
    })
}

fn only_params(q: &Params, allowed: &[&str]) -> Result<(), ApiError> {
    for k in q.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{k}`: allowed are {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// The router. `token` guards every route when set (TCP).
pub(crate) fn router(state: AppState, token: Option<Arc<String>>) -> Router {
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/version", get(version))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(crate::metrics::handler))
        .route("/v1/images", get(list_images))
        .route("/v1/sandboxes", get(list_sandboxes).post(create_sandbox))
        .route(
            "/v1/sandboxes/{id}",
            get(get_sandbox).delete(delete_sandbox),
        )
        .route("/v1/sandboxes/{id}/ping", post(ping))
        .route("/v1/sandboxes/{id}/branch", post(branch))
        .route("/v1/sandboxes/{id}/fork", post(fork))
        .route("/v1/snapshots", get(list_snapshots).post(create_snapshot))
        .route(
            "/v1/snapshots/{tag}",
            get(get_snapshot).delete(delete_snapshot),
        )
        .route("/v1/sandboxes/{id}/exec", post(exec))
        .route("/v1/sandboxes/{id}/exec/stream", post(exec_stream))
        .route("/v1/sandboxes/{id}/eval", post(eval))
        .route(
            "/v1/sandboxes/{id}/files",
            get(read_file).put(write_file).delete(remove_file),
        )
        .route("/v1/sandboxes/{id}/files/stat", get(stat_file))
        .route("/v1/sandboxes/{id}/files/list", get(list_files))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    match token {
        Some(t) => api.layer(axum::middleware::from_fn_with_state(t, auth::require_token)),
        None => api,
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {}: see GET /openapi.json for the API",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!(
            "method {} is not allowed on {}: see GET /openapi.json for the methods each route takes",
            req.method(),
            req.uri().path()
        ),
    }
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub(crate) async fn healthz(State(s): State<AppState>) -> Json<Health> {
    Json(Health {
        ok: true,
        sandboxes: s.engine.count(),
    })
}

#[utoipa::path(get, path = "/version", responses((status = 200, body = VersionInfo)))]
pub(crate) async fn version(State(s): State<AppState>) -> Json<VersionInfo> {
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api: "v1".into(),
        agent_protocol: AGENT_PROTOCOL_VERSION,
        qemu: s.engine.qemu_version(),
        accel: s.engine.accel().accel.to_string(),
    })
}

async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::spec_json(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/v1/images", responses((status = 200, body = [zygote_proto::api::ImageSummary])))]
pub(crate) async fn list_images(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(s.engine.images()?).into_response())
}

#[utoipa::path(get, path = "/v1/sandboxes", responses((status = 200, body = [SandboxInfo])))]
pub(crate) async fn list_sandboxes(State(s): State<AppState>) -> Json<Vec<SandboxInfo>> {
    Json(s.engine.list())
}

#[utoipa::path(post, path = "/v1/sandboxes", request_body = CreateSandbox,
    description = "With `snapshot_tag` the body is a SpawnRequest (ours or forkd's fields) and the answer a list of SpawnResult, each also carrying forkd's flat `id`, `snapshot_tag`, `created_at_unix`, `pid` and a `warning` naming accepted flags that mean nothing here.",
    responses((status = 201, body = SandboxInfo), (status = 201, description = "children", body = [SpawnResult]), (status = 400, body = zygote_proto::api::ErrorBody), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn create_sandbox(
    State(s): State<AppState>,
    ApiJson(v): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    if v.get("snapshot_tag").is_some() {
        let req: SpawnRequest = from_value(v)?;
        let (body, warnings, forkd_shaped) = forkd::spawn_body(req);
        let mut children = s.engine.spawn(body).await?;
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
        for c in &mut children {
            c.warning = forkd::join_warnings(c.warning.take(), &warnings);
        }
        return Ok((StatusCode::CREATED, Json(children)).into_response());
    }
    let req: CreateSandbox = from_value(v)?;
    let info = s.engine.create(req).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

fn from_value<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("invalid request body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid request body: {path}: {inner}"))
        }
    })
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/branch", params(("id" = String, Path)), request_body = BranchRequest,
    description = "forkd's modes map onto ours: `full`/`diff` -> `copy` (or `live` for a copy-on-write child), `live` -> `live`; `warning` names what was mapped or ignored. 202 while `memory.bin` is being written (`wait: false`).",
    responses((status = 201, body = SnapshotInfo), (status = 202, body = SnapshotInfo), (status = 409, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn branch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<BranchRequest>,
) -> Result<Response, ApiError> {
    let (body, warnings) = forkd::branch_body(&id, req, || Ok(s.engine.get(&id)?.info()))?;
    let mut info = s.engine.branch(&id, body).await?;
    info.warning = forkd::join_warnings(info.warning.take(), &warnings);
    let status = if info.status == SnapshotStatus::Writing {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(info)).into_response())
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/fork", params(("id" = String, Path)), request_body = ForkBody,
    responses((status = 201, body = ForkResult)))]
pub(crate) async fn fork(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ForkBody>,
) -> Result<Response, ApiError> {
    let r = s.engine.fork(&id, body).await?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

#[utoipa::path(get, path = "/v1/snapshots", responses((status = 200, body = [SnapshotInfo])))]
pub(crate) async fn list_snapshots(State(s): State<AppState>) -> Json<Vec<SnapshotInfo>> {
    Json(s.engine.snapshots())
}

#[utoipa::path(post, path = "/v1/snapshots", request_body = CreateSnapshot,
    responses((status = 201, body = SnapshotInfo), (status = 409, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn create_snapshot(
    State(s): State<AppState>,
    ApiJson(v): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    if v.get("kernel").is_some() || v.get("rootfs").is_some() {
        return Err(ApiError::bad_request(
            "`kernel`/`rootfs` given (forkd's snapshot build): zygote boots its own images; pass {\"tag\", \"image\"?, \"warmup\"?} (see GET /v1/images), or branch a running sandbox",
        ));
    }
    let body: CreateSnapshot = from_value(v)?;
    let info = s.engine.create_snapshot(body).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

#[utoipa::path(get, path = "/v1/snapshots/{tag}", params(("tag" = String, Path)),
    responses((status = 200, body = SnapshotInfo), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn get_snapshot(
    State(s): State<AppState>,
    Path(tag): Path<String>,
) -> Result<Json<SnapshotInfo>, ApiError> {
    Ok(Json(s.engine.snapshot(&tag)?))
}

#[utoipa::path(delete, path = "/v1/snapshots/{tag}", params(("tag" = String, Path),
        ("cascade" = Option<bool>, Query, description = "also remove every sandbox spawned from it and every snapshot descended from it"),
        ("force" = Option<bool>, Query, description = "delete even though children run (they keep running)")),
    responses((status = 200, body = SnapshotDeleted), (status = 400, body = zygote_proto::api::ErrorBody), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn delete_snapshot(
    State(s): State<AppState>,
    Path(tag): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<SnapshotDeleted>, ApiError> {
    only_params(&q, &["cascade", "force"])?;
    Ok(Json(forkd::delete_snapshot(&s.engine, &tag, &q).await?))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = SandboxInfo), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn get_sandbox(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(s.engine.get(&id)?.info()))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Removed), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn delete_sandbox(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Removed>, ApiError> {
    s.engine.remove(&id).await?;
    Ok(Json(Removed { id, removed: true }))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/ping", params(("id" = String, Path)),
    responses((status = 200, body = Pong)))]
pub(crate) async fn ping(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Pong>, ApiError> {
    let rtt = s.engine.get(&id)?.ping().await?;
    Ok(Json(Pong {
        ok: true,
        agent_rtt_ms: rtt.as_secs_f64() * 1000.0,
        pong: true,
    }))
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
    let sb = s.engine.get(&id)?;
    let t0 = Instant::now();
    let mut st = sb.exec(body).await?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match st.next().await.map_err(zygote_engine::EngineError::from)? {
            Some(ExecItem::Started(_)) => {}
            Some(ExecItem::Stdout(b)) => out.extend_from_slice(&b),
            Some(ExecItem::Stderr(b)) => err.extend_from_slice(&b),
            Some(ExecItem::Exit(x)) => {
                let mut r = ExecResult {
                    exit_code: x.code,
                    signal: x.signal,
                    timed_out: x.timed_out,
                    stdout: String::from_utf8_lossy(&out).into_owned(),
                    stderr: String::from_utf8_lossy(&err).into_owned(),
                    duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
                };
                if forkd_shaped {
                    forkd::forkd_exit_code(&mut r);
                }
                return Ok(Json(r));
            }
            None => {
                return Err(ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "the exec ended without an exit status".into(),
                })
            }
        }
    }
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/stream", params(("id" = String, Path)), request_body = ExecRequest,
    responses((status = 200, description = "NDJSON lines of ExecEvent", body = ExecEvent)))]
pub(crate) async fn exec_stream(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let (body, _) = forkd::exec_body(req)?;
    let sb = s.engine.get(&id)?;
    let t0 = Instant::now();
    let st = sb.exec(body).await?;
    let lines = futures::stream::unfold(Some(st), move |st| async move {
        let mut st = st?;
        let ev = match st.next().await {
            Ok(Some(ExecItem::Started(pid))) => ExecEvent::Started { pid },
            Ok(Some(ExecItem::Stdout(b))) => ExecEvent::Stdout {
                data_b64: B64.encode(&b),
            },
            Ok(Some(ExecItem::Stderr(b))) => ExecEvent::Stderr {
                data_b64: B64.encode(&b),
            },
            Ok(Some(ExecItem::Exit(x))) => {
                let ev = ExecEvent::Exit {
                    exit_code: x.code,
                    signal: x.signal,
                    timed_out: x.timed_out,
                    duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
                };
                return Some((line(&ev), None));
            }
            Ok(None) => return None,
            Err(e) => {
                let ev = ExecEvent::Error {
                    error: e.to_string(),
                };
                return Some((line(&ev), None));
            }
        };
        Some((line(&ev), Some(st)))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines.map(Ok::<_, std::convert::Infallible>)),
    )
        .into_response())
}

fn line(ev: &ExecEvent) -> bytes::Bytes {
    let mut v = serde_json::to_vec(ev).unwrap_or_default();
    v.push(b'\n');
    v.into()
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/eval", params(("id" = String, Path)), request_body = EvalBody,
    responses((status = 200, body = EvalAnswer)))]
pub(crate) async fn eval(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EvalBody>,
) -> Result<Json<EvalAnswer>, ApiError> {
    let sb = s.engine.get(&id)?;
    Ok(Json(sb.eval(&body.code).await?.into()))
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), ("path" = String, Query), ("mode" = Option<String>, Query, description = "octal permission bits")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = WriteFileResult)))]
pub(crate) async fn write_file(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
    body: Body,
) -> Result<Json<WriteFileResult>, ApiError> {
    only_params(&q, &["path", "mode"])?;
    let path = param(&q, "path")?.to_string();
    let mode = match q.get("mode") {
        None => None,
        Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
            ApiError::bad_request(format!("mode `{m}` is not octal: pass e.g. mode=644"))
        })?),
    };
    let sb = s.engine.get(&id)?;
    let stream = body.into_data_stream();
    match sb.write_file(&path, mode, stream).await? {
        Ok(bytes) => Ok(Json(WriteFileResult { path, bytes })),
        Err(e) => Err(ApiError::bad_request(format!(
            "the upload broke off: {}",
            chain(&e)
        ))),
    }
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), ("path" = String, Query)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>)))]
pub(crate) async fn read_file(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    only_params(&q, &["path"])?;
    let path = param(&q, "path")?;
    let sb = s.engine.get(&id)?;
    let rs = sb.read_file(path).await?;
    let size = rs.size;
    let mode = rs.mode;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::HeaderName::from_static("x-zygote-mode"),
                format!("{:o}", mode & 0o7777),
            ),
        ],
        Body::from_stream(rs.into_stream()),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), ("path" = String, Query), ("recursive" = Option<bool>, Query)),
    responses((status = 200, body = Removed)))]
pub(crate) async fn remove_file(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    only_params(&q, &["path", "recursive"])?;
    let path = param(&q, "path")?;
    let recursive = match q.get("recursive").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "recursive `{v}` is not a boolean: pass true or false"
            )))
        }
    };
    s.engine.get(&id)?.remove_path(path, recursive).await?;
    Ok(Json(serde_json::json!({"path": path, "removed": true})).into_response())
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", params(("id" = String, Path), ("path" = String, Query)),
    responses((status = 200, body = zygote_proto::agent::FileStat)))]
pub(crate) async fn stat_file(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    only_params(&q, &["path"])?;
    let path = param(&q, "path")?;
    Ok(Json(s.engine.get(&id)?.stat(path).await?).into_response())
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", params(("id" = String, Path), ("path" = String, Query)),
    responses((status = 200, body = ListResult)))]
pub(crate) async fn list_files(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<ListResult>, ApiError> {
    only_params(&q, &["path"])?;
    let path = param(&q, "path")?;
    let entries = s.engine.get(&id)?.list(path).await?;
    Ok(Json(ListResult {
        path: path.to_string(),
        entries,
    }))
}
