//! The code interpreter (`/execute`, `/contexts`). Not written yet: every
//! route answers 501 naming the gap.

use axum::http::StatusCode;
use axum::Router;

use crate::error::ApiError;
use crate::App;

/// Execution counts per context (none yet).
#[derive(Debug, Default)]
pub(crate) struct Counts {}

/// The interpreter router (placeholder: 501 for every request).
pub(crate) fn router(_app: App) -> Router {
    Router::new().fallback(|| async {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "the code interpreter is not implemented yet in zygote-e2b",
        )
    })
}
