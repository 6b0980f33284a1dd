//! E2B's wire mapped onto the engine's [`EngineApi`], so E2B's own SDKs
//! (`e2b` and `e2b-code-interpreter` on PyPI, `e2b` on npm) run unmodified
//! against zygote with two environment variables: `E2B_API_URL` and
//! `E2B_SANDBOX_URL`, both pointing at this listener.
//!
//! One listener serves three protocols:
//! - the control plane (`POST /v2/sandboxes`, fork, pause, snapshots, ...;
//!   [`control`]), behind `X-API-KEY`;
//! - envd, the in-sandbox process and filesystem service (Connect-RPC with
//!   the JSON codec, `/files`, `/health`; [`envd`]), and
//! - the code interpreter (`/execute`, `/contexts`; [`interp`]),
//!
//! the last two chosen by the `E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers
//! the SDKs send (or a `{port}-{id}.{domain}` Host) and checked against the
//! sandbox's access token ([`route`]). Handlers only translate: every guest
//! operation is an `EngineApi` call; this crate keeps no state but the
//! filesystem watchers a client asked for (bounded) and the code
//! interpreter's execution counts.

mod connect;
mod control;
mod envd;
mod error;
mod interp;
mod keys;
mod route;
mod time;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use zygote_engine::EngineApi;

pub use keys::{e2b_shaped, load_api_keys, ApiKeys, KeysError};

/// The envd version this layer reports: the SDKs unlock features by it
/// (stdin, closing stdin, recursive watches, the default user, octet-stream
/// uploads), and refuse on their own side what needs a later one (file
/// metadata, entry info on watch events).
pub const ENVD_VERSION: &str = "0.5.7";
/// envd's port, as the SDKs name it in `E2b-Sandbox-Port`.
pub const ENVD_PORT: u16 = 49983;
/// The code interpreter's port.
pub const INTERPRETER_PORT: u16 = 49999;
/// Most streams (process output, directory watches, code executions) open at once.
pub const MAX_STREAMS: usize = 1024;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) engine: Arc<dyn EngineApi>,
    pub(crate) keys: Arc<ApiKeys>,
    pub(crate) watchers: Arc<envd::watchers::Watchers>,
    pub(crate) streams: Arc<Semaphore>,
    pub(crate) counts: Arc<interp::Counts>,
}

impl App {
    fn new(engine: Arc<dyn EngineApi>, keys: ApiKeys) -> App {
        App {
            engine,
            keys: Arc::new(keys),
            watchers: Arc::new(envd::watchers::Watchers::default()),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            counts: Arc::new(interp::Counts::default()),
        }
    }
}

/// The whole E2B surface as one router (control plane and in-sandbox traffic).
pub fn router(engine: Arc<dyn EngineApi>, keys: ApiKeys) -> Router {
    route::router(App::new(engine, keys))
}

/// Serve [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<dyn EngineApi>,
    keys: ApiKeys,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine, keys))
        .with_graceful_shutdown(shutdown)
        .await
}
