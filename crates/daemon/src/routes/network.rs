//! Network routes: a running sandbox's egress policy and exposed ports.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use zygote_proto::api::SandboxInfo;
use zygote_proto::net::{NetworkBody, PortBody, PortInfo};

use super::ApiJson;
use crate::error::ApiError;
use crate::{wire, AppState};

#[utoipa::path(patch, path = "/v1/sandboxes/{id}/network", params(("id" = String, Path)), request_body = NetworkBody,
    description = "Replace a running sandbox's egress policy (new connections follow it at once). `deny_out` wins over `allow_out`; `internet: false` with `allow_out` lets only those through.",
    responses((status = 200, body = SandboxInfo), (status = 400, body = zygote_proto::api::ErrorBody),
        (status = 404, body = zygote_proto::api::ErrorBody), (status = 409, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn set_policy(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<NetworkBody>,
) -> Result<Json<SandboxInfo>, ApiError> {
    if b.enabled.is_some() {
        return Err(ApiError::bad_request(
            "`enabled` applies on create only (a running sandbox keeps its network card): set `internet` and the lists instead",
        ));
    }
    let policy = wire::policy(&b)?;
    Ok(Json(wire::sandbox(
        s.engine.set_network(&id, policy).await?,
    )))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/ports", params(("id" = String, Path)), request_body = PortBody,
    description = "Expose the guest's TCP port on the daemon's host: a connection to the returned `host` reaches the port inside the sandbox. Exposing a port twice returns the same address; ports go away with the sandbox.",
    responses((status = 200, body = PortInfo), (status = 400, body = zygote_proto::api::ErrorBody),
        (status = 404, body = zygote_proto::api::ErrorBody), (status = 409, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn expose(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<PortBody>,
) -> Result<Json<PortInfo>, ApiError> {
    let port = wire::guest_port(b.port)?;
    Ok(Json(wire::port(s.engine.expose_port(&id, port).await?)))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/ports/{port}", params(("id" = String, Path), ("port" = u32, Path)),
    responses((status = 204), (status = 400, body = zygote_proto::api::ErrorBody),
        (status = 404, body = zygote_proto::api::ErrorBody)))]
pub(crate) async fn unexpose(
    State(s): State<AppState>,
    Path((id, port)): Path<(String, u32)>,
) -> Result<StatusCode, ApiError> {
    let port = wire::guest_port(port)?;
    s.engine.unexpose_port(&id, port).await?;
    Ok(StatusCode::NO_CONTENT)
}
