//! envd, the in-sandbox process and filesystem service, served by the
//! daemon on the sandbox's behalf: `process.Process` ([`process`]) and
//! `filesystem.Filesystem` ([`filesystem`]) over Connect-RPC with the JSON
//! codec, `/files` ([`files`]) and `/health`. The route in front
//! ([`crate::route`]) has already checked the sandbox runs and the access
//! token; each handler finds its sandbox in the request's [`Target`].
//!
//! [`Target`]: crate::route::Target

pub(crate) mod files;
pub(crate) mod filesystem;
pub(crate) mod process;
pub(crate) mod watchers;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use crate::connect::{Code, RpcError};
use crate::App;

/// The envd router.
pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::NO_CONTENT }))
        .route("/files", get(files::download).post(files::upload))
        .route("/process.Process/Start", post(process::start))
        .route("/process.Process/Connect", post(process::connect))
        .route("/process.Process/List", post(process::list))
        .route("/process.Process/SendInput", post(process::send_input))
        .route("/process.Process/StreamInput", post(process::stream_input))
        .route("/process.Process/SendSignal", post(process::send_signal))
        .route("/process.Process/CloseStdin", post(process::close_stdin))
        .route("/process.Process/Update", post(process::update))
        .route("/filesystem.Filesystem/Stat", post(filesystem::stat))
        .route("/filesystem.Filesystem/MakeDir", post(filesystem::make_dir))
        .route("/filesystem.Filesystem/Move", post(filesystem::move_path))
        .route("/filesystem.Filesystem/ListDir", post(filesystem::list_dir))
        .route("/filesystem.Filesystem/Remove", post(filesystem::remove))
        .route(
            "/filesystem.Filesystem/WatchDir",
            post(filesystem::watch_dir),
        )
        .route(
            "/filesystem.Filesystem/CreateWatcher",
            post(filesystem::create_watcher),
        )
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(filesystem::get_watcher_events),
        )
        .route(
            "/filesystem.Filesystem/RemoveWatcher",
            post(filesystem::remove_watcher),
        )
        .fallback(|req: Request| async move {
            RpcError::new(
                Code::Unimplemented,
                format!(
                    "{} {} is not served by zygote's envd (see docs/e2b.md)",
                    req.method(),
                    req.uri().path()
                ),
            )
            .unary_response()
        })
        .with_state(app)
}
