//! Routes and handlers. Each handler reads its input, maps it onto an engine
//! call ([`zygote_engine::EngineApi`]) and maps the answer back (`crate::wire`,
//! and `crate::forkd` for forkd's shapes); nothing here knows about QEMU or the
//! agent protocol.
//!
//! - [`sandboxes`]: create (and forkd's spawn), list, get, remove, ping, exec,
//!   eval, branch, fork;
//! - [`files`]: guest files and directory trees (mkdir, rename, walk, watch, batch);
//! - [`processes`]: background processes and terminals;
//! - [`snapshots`]: warm snapshots, list, get, delete, spawn;
//! - [`network`]: a sandbox's egress policy and exposed ports;
//! - [`volumes`]: named volumes.

pub(crate) mod files;
pub(crate) mod network;
pub(crate) mod processes;
pub(crate) mod sandboxes;
pub(crate) mod snapshots;
pub(crate) mod volumes;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use zygote_proto::api::{Health, VersionInfo};
use zygote_proto::AGENT_PROTOCOL_VERSION;

use crate::error::{chain, ApiError};
use crate::{auth, openapi, wire, AppState};

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

/// A JSON value read as `T`, a 400 naming the field when it does not fit.
pub(crate) fn from_value<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
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

pub(crate) type Params = HashMap<String, String>;

pub(crate) fn param<'a>(q: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    q.get(name).map(String::as_str).ok_or_else(|| {
        ApiError::bad_request(format!(
            "query parameter `{name}` is missing: add ?{name}=/absolute/path"
        ))
    })
}

pub(crate) fn only_params(q: &Params, allowed: &[&str]) -> Result<(), ApiError> {
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
    use self::files as f;
    use self::network as net;
    use self::processes as pr;
    use self::sandboxes as sb;
    use self::snapshots as sn;
    use self::volumes as vol;
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/version", get(version))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(crate::metrics::handler))
        .route("/v1/images", get(list_images))
        .route("/v1/sandboxes", get(sb::list).post(sb::create))
        .route("/v1/sandboxes/{id}", get(sb::get).delete(sb::delete))
        .route("/v1/sandboxes/{id}/ping", post(sb::ping))
        .route("/v1/sandboxes/{id}/pause", post(sb::pause))
        .route("/v1/sandboxes/{id}/resume", post(sb::resume))
        .route("/v1/sandboxes/{id}/timeout", post(sb::timeout))
        .route("/v1/sandboxes/{id}/network", patch(net::set_policy))
        .route("/v1/sandboxes/{id}/ports", post(net::expose))
        .route("/v1/sandboxes/{id}/ports/{port}", delete(net::unexpose))
        .route("/v1/sandboxes/{id}/branch", post(sb::branch))
        .route("/v1/sandboxes/{id}/fork", post(sb::fork))
        .route("/v1/sandboxes/{id}/exec", post(sb::exec))
        .route("/v1/sandboxes/{id}/exec/stream", post(sb::exec_stream))
        .route("/v1/sandboxes/{id}/eval", post(sb::eval))
        .route(
            "/v1/sandboxes/{id}/files",
            get(f::read).put(f::write).delete(f::remove),
        )
        .route("/v1/sandboxes/{id}/files/stat", get(f::stat))
        .route("/v1/sandboxes/{id}/files/list", get(f::list))
        .route("/v1/sandboxes/{id}/files/walk", get(f::walk))
        .route("/v1/sandboxes/{id}/files/watch", get(f::watch))
        .route("/v1/sandboxes/{id}/files/mkdir", post(f::mkdir))
        .route("/v1/sandboxes/{id}/files/rename", post(f::rename))
        .route("/v1/sandboxes/{id}/files/batch", post(f::batch))
        .route(
            "/v1/sandboxes/{id}/processes",
            get(pr::list).post(pr::start),
        )
        .route(
            "/v1/sandboxes/{id}/processes/{pid}",
            get(pr::get).delete(pr::kill),
        )
        .route("/v1/sandboxes/{id}/processes/{pid}/output", get(pr::output))
        .route("/v1/sandboxes/{id}/processes/{pid}/stdin", post(pr::stdin))
        .route(
            "/v1/sandboxes/{id}/processes/{pid}/signal",
            post(pr::signal),
        )
        .route(
            "/v1/sandboxes/{id}/processes/{pid}/resize",
            post(pr::resize),
        )
        .route("/v1/volumes", get(vol::list).post(vol::create))
        .route("/v1/volumes/{name}", get(vol::get).delete(vol::delete))
        .route("/v1/snapshots", get(sn::list).post(sn::create))
        .route("/v1/snapshots/{tag}", get(sn::get).delete(sn::delete))
        .route("/v1/snapshots/{tag}/spawn", post(sn::spawn))
        .route(
            "/v1/snapshots/{tag}/bundle",
            get(sn::export).put(sn::import),
        )
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
pub(crate) async fn healthz(
    State(s): State<AppState>,
    anonymous: Option<axum::Extension<crate::auth::Anonymous>>,
) -> Json<Health> {
    Json(Health {
        ok: true,
        sandboxes: anonymous.is_none().then(|| s.engine.sandboxes().len()),
    })
}

#[utoipa::path(get, path = "/version", responses((status = 200, body = VersionInfo)))]
pub(crate) async fn version(State(s): State<AppState>) -> Json<VersionInfo> {
    let f = s.engine.facts();
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api: "v1".into(),
        agent_protocol: AGENT_PROTOCOL_VERSION,
        qemu: f.qemu_version,
        accel: f.accel.to_string(),
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
    let images: Vec<_> = s.engine.images()?.into_iter().map(wire::image).collect();
    Ok(Json(images).into_response())
}
