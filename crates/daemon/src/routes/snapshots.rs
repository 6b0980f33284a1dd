//! Snapshot routes: warm snapshots from an image, list, get, delete,
//! children of a snapshot (`spawn`), and bundles (a snapshot with its disk
//! chain and image as one tar stream, out and in).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use zygote_proto::api::{CreateSnapshot, SnapshotDeleted, SnapshotInfo, SpawnBody, SpawnResult};

use super::{from_value, only_params, ApiJson, Params};
use crate::error::ApiError;
use crate::observe::Found;
use crate::{forkd, wire, AppState};

#[utoipa::path(get, path = "/v1/snapshots", responses((status = 200, body = [SnapshotInfo])))]
pub(crate) async fn list(State(s): State<AppState>) -> Json<Vec<SnapshotInfo>> {
    Json(
        s.engine
            .snapshots()
            .into_iter()
            .map(wire::snapshot)
            .collect(),
    )
}

#[utoipa::path(post, path = "/v1/snapshots", request_body = CreateSnapshot,
    responses((status = 201, body = SnapshotInfo), (status = 409, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn create(
    State(s): State<AppState>,
    ApiJson(v): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    if v.get("kernel").is_some() || v.get("rootfs").is_some() {
        return Err(ApiError::bad_request(
            "`kernel`/`rootfs` given (forkd's snapshot build): zygote boots its own images; pass {\"tag\", \"image\"?, \"warmup\"?} (see GET /v1/images), or branch a running sandbox",
        ));
    }
    let body: CreateSnapshot = from_value(v)?;
    let info = wire::snapshot(s.engine.create_snapshot(wire::warm_snapshot(body)?).await?);
    let found = Found::snapshot(&info.tag);
    Ok(found.on((StatusCode::CREATED, Json(info))))
}

#[utoipa::path(get, path = "/v1/snapshots/{tag}", params(("tag" = String, Path)),
    responses((status = 200, body = SnapshotInfo), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn get(
    State(s): State<AppState>,
    Path(tag): Path<String>,
) -> Result<Json<SnapshotInfo>, ApiError> {
    Ok(Json(wire::snapshot(s.engine.snapshot(&tag)?)))
}

#[utoipa::path(delete, path = "/v1/snapshots/{tag}", params(("tag" = String, Path),
        ("cascade" = Option<bool>, Query, description = "also remove every sandbox spawned from it and every snapshot descended from it"),
        ("force" = Option<bool>, Query, description = "delete even though children run (they keep running)")),
    responses((status = 200, body = SnapshotDeleted), (status = 400, body = zygote_proto::api::ErrorBody), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn delete(
    State(s): State<AppState>,
    Path(tag): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<SnapshotDeleted>, ApiError> {
    only_params(&q, &["cascade", "force"])?;
    let scope = forkd::delete_scope(&q)?;
    let d = s.engine.delete_snapshot(&tag, scope).await?;
    Ok(Json(forkd::deleted(&tag, scope, d)))
}

#[utoipa::path(post, path = "/v1/snapshots/{tag}/spawn", params(("tag" = String, Path)), request_body = SpawnBody,
    description = "Children of the snapshot, each started or failed alone (`error`). Copy-on-write children come first from the snapshot's pre-started pool (`prestarted`).",
    responses((status = 201, body = [SpawnResult]), (status = 400, body = zygote_proto::api::ErrorBody), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn spawn(
    State(s): State<AppState>,
    Path(tag): Path<String>,
    ApiJson(body): ApiJson<SpawnBody>,
) -> Result<Response, ApiError> {
    let spec = wire::spawn(&tag, body)?;
    let children: Vec<SpawnResult> = s
        .engine
        .spawn(spec)
        .await?
        .into_iter()
        .map(wire::child)
        .collect();
    let found = Found::children(&children);
    Ok(found.on((StatusCode::CREATED, Json(children))))
}

#[utoipa::path(get, path = "/v1/snapshots/{tag}/bundle", params(("tag" = String, Path)),
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>, description = "bundle.json, vmstate, memory.bin, disks/, image/, checksums.json"),
        (status = 404, body = zygote_proto::api::ErrorBody), (status = 409, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn export(
    State(s): State<AppState>,
    Path(tag): Path<String>,
) -> Result<Response, ApiError> {
    let stream = s.engine.export_snapshot(&tag).await?;
    let found = Found::snapshot(&tag);
    Ok(found.on((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response()))
}

#[utoipa::path(put, path = "/v1/snapshots/{tag}/bundle", params(("tag" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 201, body = SnapshotInfo), (status = 400, body = zygote_proto::api::ErrorBody),
        (status = 409, body = zygote_proto::api::ErrorBody), (status = 429, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn import(
    State(s): State<AppState>,
    Path(tag): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    let info = wire::snapshot(s.engine.import_snapshot(stream, Some(tag)).await?);
    let found = Found::snapshot(&info.tag);
    Ok(found.on((StatusCode::CREATED, Json(info))))
}
