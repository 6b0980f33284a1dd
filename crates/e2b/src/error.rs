//! Errors as E2B's control plane and envd's HTTP routes answer them:
//! `{"code": <HTTP status>, "message": "..."}`, the shape the SDKs read the
//! message from (and map 401 to their authentication error, 404 to their
//! not-found errors).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use zygote_engine::{EngineError, ErrorClass};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// HTTP status (also the body's `code`).
    pub(crate) status: StatusCode,
    /// What went wrong and what to do.
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

/// The HTTP status of an engine error class.
pub(crate) fn status_of(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Conflict => StatusCode::CONFLICT,
        ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorClass::Forbidden => StatusCode::FORBIDDEN,
        ErrorClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        ErrorClass::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorClass::TooMany => StatusCode::TOO_MANY_REQUESTS,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let status = status_of(e.class());
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(error = %e, "E2B request failed");
        }
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": self.status.as_u16(),
            "message": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}

/// Answer of the in-sandbox routes for a sandbox that is not there (E2B's
/// proxy answers 502 and says the sandbox "was not found": the SDKs turn
/// that into their "sandbox is not running" error).
pub(crate) fn sandbox_gone(id: &str, why: &str) -> Response {
    let body = serde_json::json!({
        "code": 502,
        "message": format!("The sandbox {id} was not found{why}"),
        "sandboxId": id,
    });
    (StatusCode::BAD_GATEWAY, Json(body)).into_response()
}
