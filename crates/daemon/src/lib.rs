//! The daemon: the only owner of state. It serves the v1 REST API on a Unix
//! socket (and optionally TCP with a bearer token) and hands every request to
//! the engine. Handlers only translate between HTTP and engine calls.
//!
//! On SIGTERM or SIGINT it stops accepting, stops every sandbox (no QEMU, memfd,
//! overlay or socket is left behind) and removes its socket.

mod auth;
mod error;
mod forkd;
mod openapi;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use auth::{load_token, TokenError};
pub use error::ApiError;
use tokio::net::{TcpListener, UnixListener};
use tracing::{info, warn};
use zygote_engine::{Engine, EngineConfig};

/// How the daemon is started.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Unix socket path.
    pub socket: PathBuf,
    /// Optional TCP address.
    pub listen: Option<SocketAddr>,
    /// Bearer token required on TCP.
    pub token: Option<String>,
    /// Engine settings.
    pub engine: EngineConfig,
}

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] zygote_engine::EngineError),
    /// A listener could not be bound.
    #[error("cannot listen on {what}")]
    Bind {
        /// The address or path.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Non-loopback TCP without a token.
    #[error("--listen {0} is not a loopback address: pass --token-file with a bearer token so the API is not open to the network")]
    TokenRequired(SocketAddr),
    /// Another daemon answers on the socket.
    #[error(
        "another zygote daemon is already serving {0}: stop it first, or pass another --socket"
    )]
    AlreadyRunning(String),
}

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Arc<Engine>,
}

/// Run the daemon until SIGTERM/SIGINT.
pub async fn run(cfg: DaemonConfig) -> Result<(), DaemonError> {
    if let Some(addr) = cfg.listen {
        if !addr.ip().is_loopback() && cfg.token.is_none() {
            return Err(DaemonError::TokenRequired(addr));
        }
    }
    if let Some(parent) = cfg.socket.parent() {
        std::fs::create_dir_all(parent).map_err(|source| DaemonError::Bind {
            what: cfg.socket.display().to_string(),
            source,
        })?;
    }
    if cfg.socket.exists() {
        if tokio::net::UnixStream::connect(&cfg.socket).await.is_ok() {
            return Err(DaemonError::AlreadyRunning(
                cfg.socket.display().to_string(),
            ));
        }
        let _ = std::fs::remove_file(&cfg.socket);
    }
    let engine = Engine::open(cfg.engine.clone())?;
    let state = AppState {
        engine: engine.clone(),
    };
    let unix = UnixListener::bind(&cfg.socket).map_err(|source| DaemonError::Bind {
        what: cfg.socket.display().to_string(),
        source,
    })?;
    set_mode_0600(&cfg.socket);
    info!(socket = %cfg.socket.display(), "serving on the Unix socket");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    let app = routes::router(state.clone(), None);
    let mut rx = stop_rx.clone();
    servers.push(tokio::spawn(async move {
        let _ = axum::serve(unix, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await;
    }));
    if let Some(addr) = cfg.listen {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind {
                what: addr.to_string(),
                source,
            })?;
        info!(%addr, auth = cfg.token.is_some(), "serving on TCP");
        let app = routes::router(state.clone(), cfg.token.clone().map(Arc::new));
        let mut rx = stop_rx.clone();
        servers.push(tokio::spawn(async move {
            let _ = axum::serve(tcp, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        }));
    }

    wait_for_signal().await;
    info!("shutting down: no new requests; stopping every sandbox");
    let _ = stop_tx.send(true);
    engine.shutdown().await;
    for s in servers {
        // In-flight requests end once their sandboxes are gone; do not wait forever.
        if tokio::time::timeout(std::time::Duration::from_secs(5), s)
            .await
            .is_err()
        {
            warn!("a server task did not finish in time");
        }
    }
    let _ = std::fs::remove_file(&cfg.socket);
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM");
            futures::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT"),
    }
}

fn set_mode_0600(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        warn!(error = %e, "cannot restrict the socket's permissions");
    }
}
