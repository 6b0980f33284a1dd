//! The daemon: the only owner of state. It serves the v1 REST API on a Unix
//! socket (and optionally TCP with a bearer token) and hands every request to
//! the engine. Handlers only translate between HTTP and engine calls.
//!
//! On SIGTERM or SIGINT it stops accepting, stops every sandbox (no QEMU, memfd,
//! overlay or socket is left behind) and removes its socket. On SIGUSR2 (or
//! SIGTERM with `keep_sandboxes`) it exits for an upgrade: sandboxes run on and
//! the next daemon on the same home re-adopts them. On SIGHUP it reopens its
//! audit log.
//!
//! Every call is counted for `GET /metrics` ([`metrics`]) and written to the
//! audit log ([`audit`]) by one middleware ([`observe`]); TCP may be TLS ([`tls`]).

mod audit;
mod auth;
mod error;
mod forkd;
mod metrics;
mod observe;
mod openapi;
mod routes;
mod serve;
mod tls;
mod wire;

#[cfg(test)]
mod router_tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use audit::AuditError;
pub use auth::{load_token, TokenError};
pub use error::ApiError;
pub use serve::{ConnLimits, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
pub use tls::TlsError;
use tokio::net::{TcpListener, UnixListener};
use tracing::{info, warn};
pub use zygote_e2b::{load_api_keys, ApiKeys, KeysError};
use zygote_engine::{Engine, EngineApi, EngineConfig};

/// How the daemon is started.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Unix socket path.
    pub socket: PathBuf,
    /// Optional TCP address.
    pub listen: Option<SocketAddr>,
    /// Bearer token required on TCP.
    pub token: Option<String>,
    /// Serve TCP over TLS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// The audit log (one JSON line per call).
    pub audit_log: PathBuf,
    /// Engine settings.
    pub engine: EngineConfig,
    /// On SIGTERM leave sandboxes running for the next daemon (as SIGUSR2 does).
    pub keep_sandboxes: bool,
    /// Allow plain HTTP off loopback.
    pub insecure_http: bool,
    /// Serve E2B's API (its control plane and in-sandbox traffic) here.
    pub e2b: Option<E2bListen>,
    /// Connection cap and header timeout of each listener.
    pub conn_limits: ConnLimits,
}

/// The E2B listener: E2B's SDKs reach it with `E2B_API_URL` and
/// `E2B_SANDBOX_URL` both set to its address.
#[derive(Debug, Clone)]
pub struct E2bListen {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// The API keys it accepts (`--e2b-api-keys`).
    pub keys: zygote_e2b::ApiKeys,
}

/// The PEM files of the TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, server certificate first.
    pub cert: PathBuf,
    /// Private key of the certificate.
    pub key: PathBuf,
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
    /// TCP without a token.
    #[error("--listen {0} needs a bearer token (every TCP listener does, loopback too: any local user can reach it): pass --token-file")]
    TokenRequired(SocketAddr),
    /// Plain HTTP off loopback.
    #[error("--listen {0} is not a loopback address and has no TLS, so the token would cross the network in clear: pass --tls-cert and --tls-key, or --insecure-http if a tunnel already protects it")]
    PlainHttpOffLoopback(SocketAddr),
    /// Another daemon answers on the socket.
    #[error(
        "another zygote daemon is already serving {0}: stop it first, or pass another --socket"
    )]
    AlreadyRunning(String),
    /// The E2B listener off loopback without TLS.
    #[error("--e2b-listen {0} is not a loopback address and has no TLS, so API keys would cross the network in clear: pass --tls-cert and --tls-key (the E2B listener then speaks TLS too), or --insecure-http if a tunnel already protects it")]
    E2bPlainHttpOffLoopback(SocketAddr),
    /// TLS files without a TCP listener.
    #[error("--tls-cert/--tls-key apply to the TCP listener: pass --listen ADDR:PORT too")]
    TlsWithoutListen,
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Arc<dyn EngineApi>,
    pub(crate) metrics: Arc<metrics::Metrics>,
}

/// Refuse a TCP listener without a token, or off loopback without TLS
/// (unless `insecure_http`).
fn check_listen(cfg: &DaemonConfig) -> Result<(), DaemonError> {
    if let Some(addr) = cfg.listen {
        if cfg.token.is_none() {
            return Err(DaemonError::TokenRequired(addr));
        }
        if !addr.ip().is_loopback() && cfg.tls.is_none() && !cfg.insecure_http {
            return Err(DaemonError::PlainHttpOffLoopback(addr));
        }
    }
    if let Some(e) = &cfg.e2b {
        if !e.addr.ip().is_loopback() && cfg.tls.is_none() && !cfg.insecure_http {
            return Err(DaemonError::E2bPlainHttpOffLoopback(e.addr));
        }
    }
    Ok(())
}

/// Run the daemon until SIGTERM/SIGINT.
pub async fn run(cfg: DaemonConfig) -> Result<(), DaemonError> {
    // Every file and directory the daemon makes (snapshot RAM, disks,
    // sockets, logs) is its own alone, whatever umask it was started with.
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    check_listen(&cfg)?;
    let tls = match (&cfg.tls, cfg.listen) {
        (None, _) => None,
        (Some(_), None) => return Err(DaemonError::TlsWithoutListen),
        (Some(f), Some(_)) => Some(tls::server_config(&f.cert, &f.key)?),
    };
    let e2b_tls = tls.clone();
    let audit = Arc::new(audit::AuditLog::open(&cfg.audit_log)?);
    reopen_on_sighup(audit.clone());
    info!(path = %audit.path().display(), "audit log");
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
    let metrics = Arc::new(metrics::Metrics::new());
    let mut engine_cfg = cfg.engine.clone();
    engine_cfg.observer = Some(metrics.clone());
    let engine = Engine::open(engine_cfg).await?;
    let state = AppState {
        engine: Arc::new(engine.clone()),
        metrics: metrics.clone(),
    };
    let observer = Arc::new(observe::Observer { metrics, audit });
    let app = |token: Option<Arc<String>>| {
        routes::router(state.clone(), token).layer(axum::middleware::from_fn_with_state(
            observer.clone(),
            observe::observe,
        ))
    };
    let unix = UnixListener::bind(&cfg.socket).map_err(|source| DaemonError::Bind {
        what: cfg.socket.display().to_string(),
        source,
    })?;
    set_mode_0600(&cfg.socket);
    info!(socket = %cfg.socket.display(), "serving on the Unix socket");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = cfg.conn_limits;
    let mut servers = vec![tokio::spawn(serve::serve(
        unix,
        app(None),
        limits,
        stop_rx.clone(),
    ))];
    if let Some(addr) = cfg.listen {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind {
                what: addr.to_string(),
                source,
            })?;
        info!(%addr, auth = cfg.token.is_some(), tls = tls.is_some(), "serving on TCP");
        let tcp_app = app(cfg.token.clone().map(Arc::new));
        let stop = stop_rx.clone();
        servers.push(match tls {
            Some(tls) => {
                let tls = tls::TlsListener::new(tcp, tls).map_err(|source| DaemonError::Bind {
                    what: addr.to_string(),
                    source,
                })?;
                tokio::spawn(serve::serve(tls, tcp_app, limits, stop))
            }
            None => tokio::spawn(serve::serve(tcp, tcp_app, limits, stop)),
        });
    }

    if let Some(e) = &cfg.e2b {
        servers.push(
            serve_e2b(
                e,
                state.engine.clone(),
                observer.clone(),
                e2b_tls,
                limits,
                stop_rx.clone(),
            )
            .await?,
        );
    }

    let exit = wait_for_signal(cfg.keep_sandboxes).await;
    let _ = stop_tx.send(true);
    match exit {
        Exit::Stop => {
            info!("shutting down: no new requests; stopping every sandbox");
            engine.shutdown().await;
        }
        Exit::KeepSandboxes => {
            info!("exiting for an upgrade: no new requests; sandboxes run on for the next daemon");
            engine.detach().await;
        }
    }
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

/// Serve E2B's API on its own listener (TLS when the daemon has a certificate).
async fn serve_e2b(
    e: &E2bListen,
    engine: Arc<dyn EngineApi>,
    observer: Arc<observe::Observer>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnLimits,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    let bind = |source| DaemonError::Bind {
        what: e.addr.to_string(),
        source,
    };
    let tcp = TcpListener::bind(e.addr).await.map_err(bind)?;
    info!(addr = %e.addr, tls = tls.is_some(), "serving E2B's API");
    // Counted and audited like the rest, under the route label `e2b`.
    let app = zygote_e2b::router(engine, e.keys.clone())
        .layer(axum::middleware::from_fn_with_state(
            observer,
            observe::observe,
        ))
        .layer(axum::middleware::map_request(
            |mut req: axum::extract::Request| async move {
                req.extensions_mut().insert(observe::RouteLabel("e2b"));
                req
            },
        ));
    Ok(match tls {
        Some(tls) => {
            let tls = tls::TlsListener::new(tcp, tls).map_err(bind)?;
            tokio::spawn(serve::serve(tls, app, limits, stop))
        }
        None => tokio::spawn(serve::serve(tcp, app, limits, stop)),
    })
}

/// Reopen the audit log on every SIGHUP (log rotation).
fn reopen_on_sighup(audit: Arc<audit::AuditLog>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    info!("SIGHUP: reopening the audit log");
                    audit.reopen();
                }
            });
        }
        Err(e) => warn!(error = %e, "cannot listen for SIGHUP: the audit log will not be reopened"),
    }
}

/// How the daemon leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Stop every sandbox (SIGTERM, SIGINT).
    Stop,
    /// Leave sandboxes running for the next daemon (SIGUSR2, or SIGTERM with
    /// `--keep-sandboxes`).
    KeepSandboxes,
}

async fn wait_for_signal(keep_on_term: bool) -> Exit {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut usr2) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::user_defined2()),
    ) {
        (Ok(t), Ok(u)) => (t, u),
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "cannot listen for SIGTERM/SIGUSR2");
            futures::future::pending::<()>().await;
            return Exit::Stop;
        }
    };
    tokio::select! {
        _ = term.recv() => {
            info!("SIGTERM");
            if keep_on_term { Exit::KeepSandboxes } else { Exit::Stop }
        }
        _ = usr2.recv() => {
            info!("SIGUSR2");
            Exit::KeepSandboxes
        }
        _ = tokio::signal::ctrl_c() => {
            info!("SIGINT");
            Exit::Stop
        }
    }
}

fn set_mode_0600(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        warn!(error = %e, "cannot restrict the socket's permissions");
    }
}
