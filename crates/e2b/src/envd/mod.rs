//! envd (processes and files over Connect-RPC with the JSON codec, `/files`,
//! `/health`). Not written yet: every route answers 501 naming the gap.

pub(crate) mod watchers;

use axum::http::StatusCode;
use axum::Router;

use crate::error::ApiError;
use crate::App;

/// The envd router (placeholder: 501 for every request).
pub(crate) fn router(_app: App) -> Router {
    Router::new().fallback(|| async {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "envd (commands, files) is not implemented yet in zygote-e2b",
        )
    })
}
