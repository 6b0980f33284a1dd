//! The middleware around every route: counts each answer by route pattern and
//! status, feeds the latency histograms from the answers of the routes that
//! boot, branch and spawn, and writes one audit line per call. Also the peer
//! identity each listener attaches to a connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use serde_json::Value;
use tokio::net::{TcpListener, UnixListener};
use tracing::warn;

use crate::audit::{self, AuditLog, Caller};
use crate::metrics::Metrics;
use crate::tls::TlsListener;

/// Largest answer read back for the histograms (they are small JSON documents).
const MAX_OBSERVED_BODY: usize = 16 << 20;

/// The peer of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Peer {
    /// Unix socket, with the credentials the kernel reports (SO_PEERCRED).
    Unix { uid: Option<u32>, pid: Option<i32> },
    /// TCP, plain or TLS.
    Tcp { addr: SocketAddr, tls: bool },
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, UnixListener>) -> Self {
        let cred = s.io().peer_cred().ok();
        Peer::Unix {
            uid: cred.map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, TcpListener>) -> Self {
        Peer::Tcp {
            addr: *s.remote_addr(),
            tls: false,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, TlsListener>) -> Self {
        Peer::Tcp {
            addr: *s.remote_addr(),
            tls: true,
        }
    }
}

impl Peer {
    fn caller(self, token: bool) -> Caller {
        match self {
            Peer::Unix { uid, pid } => Caller {
                transport: "unix",
                uid,
                pid,
                addr: None,
                token,
            },
            Peer::Tcp { addr, tls } => Caller {
                transport: if tls { "tls" } else { "tcp" },
                uid: None,
                pid: None,
                addr: Some(addr.to_string()),
                token,
            },
        }
    }
}

/// What the middleware needs.
#[derive(Debug)]
pub(crate) struct Observer {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) audit: Arc<AuditLog>,
}

/// Route label for requests no route matched.
const UNMATCHED: &str = "unmatched";

/// Which answers feed which histograms (matched by method and route pattern).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Observed {
    /// `POST /v1/sandboxes`: a SandboxInfo (boot) or a list of SpawnResult.
    Create,
    /// `POST /v1/sandboxes/{id}/branch`: a SnapshotInfo.
    Branch,
    /// `POST /v1/sandboxes/{id}/fork`: a ForkResult.
    Fork,
    /// `POST /v1/snapshots`: a SnapshotInfo.
    Snapshot,
}

fn observed(method: &Method, route: &str) -> Option<Observed> {
    if method != Method::POST {
        return None;
    }
    match route {
        "/v1/sandboxes" => Some(Observed::Create),
        "/v1/sandboxes/{id}/branch" => Some(Observed::Branch),
        "/v1/sandboxes/{id}/fork" => Some(Observed::Fork),
        "/v1/snapshots" => Some(Observed::Snapshot),
        _ => None,
    }
}

/// Ids found in an answer, for the audit line.
#[derive(Debug, Default, PartialEq)]
struct Found {
    sandbox: Option<String>,
    children: Vec<String>,
    snapshot: Option<String>,
}

/// The sandbox id in a path, by the route pattern's `{id}` segment.
fn sandbox_in_path(route: &str, path: &str) -> Option<String> {
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(pat, _)| matches!(*pat, "{id}" | "{sandbox_id}"))
        .map(|(_, v)| v.to_string())
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The middleware.
pub(crate) async fn observe(
    State(obs): State<Arc<Observer>>,
    req: Request,
    next: Next,
) -> Response {
    let t0 = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let token = req.headers().contains_key(header::AUTHORIZATION);
    let caller = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.caller(token))
        .unwrap_or(Caller {
            transport: "unknown",
            uid: None,
            pid: None,
            addr: None,
            token,
        });

    let mut resp = next.run(req).await;
    let status = resp.status();
    let route_label = route.as_deref().unwrap_or(UNMATCHED);
    let mut found = Found {
        sandbox: route.as_deref().and_then(|r| sandbox_in_path(r, &path)),
        ..Found::default()
    };
    if let Some(kind) = observed(&method, route_label).filter(|_| status.is_success()) {
        let (parts, body) = resp.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_OBSERVED_BODY).await {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, route = route_label, "cannot read an answer back for the metrics");
                Default::default()
            }
        };
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            record(
                &obs.metrics,
                kind,
                &v,
                t0.elapsed().as_secs_f64(),
                &mut found,
            );
        }
        resp = Response::from_parts(parts, Body::from(bytes));
    }
    let latency = t0.elapsed();
    obs.metrics
        .request(method_label(&method), route_label, status.as_u16());
    obs.audit.write(&audit::Record {
        time: audit::now_rfc3339(),
        caller: &caller,
        method: method.as_str(),
        path: &path,
        query: query.as_deref(),
        status: status.as_u16(),
        latency_ms: (latency.as_secs_f64() * 1e6).round() / 1e3,
        sandbox: found.sandbox.as_deref(),
        children: &found.children,
        snapshot: found.snapshot.as_deref(),
    });
    resp
}

/// Feed the histograms from one successful answer and note the ids it names.
fn record(m: &Metrics, kind: Observed, v: &Value, total_s: f64, found: &mut Found) {
    let snapshot = |v: &Value, found: &mut Found| {
        let mode = v["mode"].as_str().unwrap_or("copy");
        if let Some(p) = v["pause_ms"].as_f64() {
            m.pause_ms(mode, p);
        }
        found.snapshot = v["tag"].as_str().map(str::to_string);
        mode.to_string()
    };
    let children = |list: &Value, found: &mut Found| {
        for c in list.as_array().into_iter().flatten() {
            match c["sandbox"]["id"].as_str() {
                Some(id) => found.children.push(id.to_string()),
                None => m.spawn_failed(),
            }
            if let Some(ms) = c["running_ms"].as_f64() {
                m.spawn_ms("running", ms);
            }
            if let Some(ms) = c["ready_ms"].as_f64() {
                m.spawn_ms("ready", ms);
            }
        }
    };
    match kind {
        Observed::Create if v.is_array() => children(v, found),
        Observed::Create => {
            found.sandbox = v["id"].as_str().map(str::to_string);
            if let Some(ms) = v["boot_ms"].as_f64() {
                m.boot_ms(ms);
            }
        }
        Observed::Branch => {
            let mode = snapshot(v, found);
            m.branch_seconds(&mode, total_s);
        }
        Observed::Fork => {
            snapshot(&v["snapshot"], found);
            children(&v["children"], found);
        }
        Observed::Snapshot => {
            snapshot(v, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_paths() {
        assert_eq!(
            sandbox_in_path("/v1/sandboxes/{id}/exec", "/v1/sandboxes/ab12/exec").as_deref(),
            Some("ab12")
        );
        assert_eq!(
            sandbox_in_path("/v1/snapshots/{tag}", "/v1/snapshots/t"),
            None
        );
    }

    #[test]
    fn answers_feed_histograms() {
        let m = Metrics::new();
        let mut f = Found::default();
        let fork = serde_json::json!({
            "snapshot": {"tag": "t1", "mode": "live", "pause_ms": 12.5},
            "children": [
                {"sandbox": {"id": "c1"}, "running_ms": 100.0, "ready_ms": 220.0},
                {"error": "boom"}
            ]
        });
        record(&m, Observed::Fork, &fork, 1.0, &mut f);
        assert_eq!(f.children, vec!["c1".to_string()]);
        assert_eq!(f.snapshot.as_deref(), Some("t1"));
        let t = m.render(&Default::default());
        assert!(
            t.contains("zygote_branch_pause_seconds_count{mode=\"live\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("zygote_spawn_seconds_count{phase=\"ready\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("zygote_spawn_failures_total 1\n"), "{t}");

        let mut f = Found::default();
        let branch = serde_json::json!({"tag": "t2", "mode": "copy", "pause_ms": 30.0});
        record(&m, Observed::Branch, &branch, 0.2, &mut f);
        let t = m.render(&Default::default());
        assert!(
            t.contains("zygote_branch_seconds_count{mode=\"copy\"} 1\n"),
            "{t}"
        );
    }
}
