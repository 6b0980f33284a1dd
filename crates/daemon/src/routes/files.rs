//! Guest file routes: upload and download (streamed), stat, list, remove.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use zygote_proto::api::{ListResult, Removed, WriteFileResult};

use super::{only_params, param, Params};
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
