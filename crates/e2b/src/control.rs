//! E2B's control plane (sandboxes: create, connect, list, kill, timeout,
//! pause/resume). Not written yet: every route answers 501 naming the gap.

use axum::http::StatusCode;
use axum::Router;

use crate::error::ApiError;
use crate::App;

/// The control-plane router (placeholder: 501 for every request).
pub(crate) fn router(_app: App) -> Router {
    Router::new().fallback(|| async {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "the E2B control plane is not implemented yet in zygote-e2b",
        )
    })
}
