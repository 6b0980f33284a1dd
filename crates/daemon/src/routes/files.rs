//! Guest file routes: upload and download (streamed), stat, list, remove.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use zygote_proto::api::{BatchWrite, ListResult, Removed, RenameBody, WalkResult, WriteFileResult};
use zygote_proto::procs::FsEvent;

use super::{only_params, param, ApiJson, Params};
use crate::error::ApiError;
use crate::AppState;

#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), ("path" = String, Query), ("mode" = Option<String>, Query, description = "octal permission bits")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = WriteFileResult)))]
pub(crate) async fn write(
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
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    let bytes = s.engine.write_file(&id, &path, mode, stream).await?;
    Ok(Json(WriteFileResult { path, bytes }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), ("path" = String, Query)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>)))]
pub(crate) async fn read(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    only_params(&q, &["path"])?;
    let path = param(&q, "path")?;
    let f = s.engine.read_file(&id, path).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, f.size.to_string()),
            (
                header::HeaderName::from_static("x-zygote-mode"),
                format!("{:o}", f.mode & 0o7777),
            ),
        ],
        Body::from_stream(f.chunks),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), ("path" = String, Query), ("recursive" = Option<bool>, Query)),
    responses((status = 200, body = Removed)))]
pub(crate) async fn remove(
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
    s.engine.remove_path(&id, path, recursive).await?;
    Ok(Json(serde_json::json!({"path": path, "removed": true})).into_response())
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", params(("id" = String, Path), ("path" = String, Query)),
    responses((status = 200, body = zygote_proto::agent::FileStat)))]
pub(crate) async fn stat(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    only_params(&q, &["path"])?;
    let path = param(&q, "path")?;
    Ok(Json(s.engine.stat(&id, path).await?).into_response())
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", params(("id" = String, Path), ("path" = String, Query)),
    responses((status = 200, body = ListResult)))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<ListResult>, ApiError> {
    only_params(&q, &["path"])?;
    let path = param(&q, "path")?;
    let entries = s.engine.list_dir(&id, path).await?;
    Ok(Json(ListResult {
        path: path.to_string(),
        entries,
    }))
}

fn bool_param(q: &Params, name: &str, default: bool) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None => Ok(default),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!(
            "{name} `{v}` is not a boolean: pass true or false"
        ))),
    }
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", params(("id" = String, Path), ("path" = String, Query),
        ("parents" = Option<bool>, Query, description = "create missing parents; an existing directory is fine (default true)")),
    responses((status = 200, body = Removed)))]
pub(crate) async fn mkdir(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    only_params(&q, &["path", "parents"])?;
    let path = param(&q, "path")?;
    let parents = bool_param(&q, "parents", true)?;
    s.engine.make_dir(&id, path, parents).await?;
    Ok(Json(serde_json::json!({"path": path, "created": true})).into_response())
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/rename", params(("id" = String, Path)), request_body = RenameBody,
    responses((status = 200, body = RenameBody)))]
pub(crate) async fn rename(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<RenameBody>,
) -> Result<Json<RenameBody>, ApiError> {
    s.engine.rename(&id, &b.from, &b.to).await?;
    Ok(Json(b))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/walk", params(("id" = String, Path), ("path" = String, Query),
        ("depth" = Option<u32>, Query, description = "levels to descend, 1-32 (default 1)")),
    responses((status = 200, body = WalkResult)))]
pub(crate) async fn walk(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<WalkResult>, ApiError> {
    only_params(&q, &["path", "depth"])?;
    let path = param(&q, "path")?;
    let depth = match q.get("depth") {
        None => 1,
        Some(d) => d.parse().map_err(|_| {
            ApiError::bad_request(format!("depth `{d}` is not a number: pass 1-32"))
        })?,
    };
    let entries = s.engine.walk(&id, path, depth).await?;
    Ok(Json(WalkResult {
        path: path.to_string(),
        depth,
        entries,
    }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/watch", params(("id" = String, Path), ("path" = String, Query),
        ("recursive" = Option<bool>, Query, description = "watch subdirectories too (default false)")),
    description = "NDJSON lines of FsEvent from when the answer starts; closing the connection ends the watch.",
    responses((status = 200, description = "NDJSON lines of FsEvent", body = FsEvent)))]
pub(crate) async fn watch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    only_params(&q, &["path", "recursive"])?;
    let path = param(&q, "path")?;
    let recursive = bool_param(&q, "recursive", false)?;
    let events = s.engine.watch(&id, path, recursive).await?;
    let lines = events.map(|e| {
        let v = match e {
            Ok(ev) => serde_json::to_value(&ev).unwrap_or_default(),
            Err(e) => {
                let a = ApiError::from(e);
                serde_json::json!({"error": a.message, "status": a.status.as_u16()})
            }
        };
        let mut b = serde_json::to_vec(&v).unwrap_or_default();
        b.push(b'\n');
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(b))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// Most bytes one batch writes.
const MAX_BATCH_BYTES: usize = 64 << 20;

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/batch", params(("id" = String, Path)), request_body = BatchWrite,
    description = "Several files in one call (at most 64 MiB in all), written in order; parents are created.",
    responses((status = 200, body = [WriteFileResult])))]
pub(crate) async fn batch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<BatchWrite>,
) -> Result<Json<Vec<WriteFileResult>>, ApiError> {
    use base64::Engine as _;
    let mut files = Vec::with_capacity(b.files.len());
    let mut total = 0usize;
    for f in b.files {
        let data = match (f.data, f.data_b64) {
            (Some(t), None) => t.into_bytes(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(&b)
                .map_err(|e| {
                    ApiError::bad_request(format!("data_b64 of `{}` is not base64: {e}", f.path))
                })?,
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(format!(
                    "`{}` has both data and data_b64: pass one",
                    f.path
                )))
            }
        };
        let mode = match &f.mode {
            None => None,
            Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
                ApiError::bad_request(format!("mode `{m}` is not octal: pass e.g. \"644\""))
            })?),
        };
        total += data.len();
        if total > MAX_BATCH_BYTES {
            return Err(ApiError {
                status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "the batch holds over {MAX_BATCH_BYTES} bytes: send big files one by one (PUT .../files)"
                ),
            });
        }
        files.push((f.path, mode, data));
    }
    let mut out = Vec::with_capacity(files.len());
    for (path, mode, data) in files {
        let body = futures::stream::iter([Ok(bytes::Bytes::from(data))]).boxed();
        let bytes = s.engine.write_file(&id, &path, mode, body).await?;
        out.push(WriteFileResult { path, bytes });
    }
    Ok(Json(out))
}
