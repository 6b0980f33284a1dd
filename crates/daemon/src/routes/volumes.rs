//! Volume routes: create, list, get and delete named volumes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use zygote_proto::volumes::{CreateVolume, VolumeInfo};

use super::ApiJson;
use crate::error::ApiError;
use crate::{wire, AppState};

#[utoipa::path(get, path = "/v1/volumes", responses((status = 200, body = [VolumeInfo])))]
pub(crate) async fn list(State(s): State<AppState>) -> Result<Json<Vec<VolumeInfo>>, ApiError> {
    Ok(Json(
        s.engine.volumes()?.into_iter().map(wire::volume).collect(),
    ))
}

#[utoipa::path(post, path = "/v1/volumes", request_body = CreateVolume,
    responses((status = 201, body = VolumeInfo), (status = 400, body = zygote_proto::api::ErrorBody),
        (status = 409, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn create(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<CreateVolume>,
) -> Result<(StatusCode, Json<VolumeInfo>), ApiError> {
    let v = s.engine.create_volume(&b.name, b.size_mib).await?;
    Ok((StatusCode::CREATED, Json(wire::volume(v))))
}

#[utoipa::path(get, path = "/v1/volumes/{name}", params(("name" = String, Path)),
    responses((status = 200, body = VolumeInfo), (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<VolumeInfo>, ApiError> {
    Ok(Json(wire::volume(s.engine.volume(&name)?)))
}

#[utoipa::path(delete, path = "/v1/volumes/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = zygote_proto::api::ErrorBody),
        (status = 409, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.engine.delete_volume(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
