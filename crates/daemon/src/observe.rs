//! The middleware around every route: counts each answer by route pattern and
//! status and writes one audit line per call, naming the sandboxes and
//! snapshots the handler reported ([`Found`], a response extension). Latency
//! histograms are fed by the engine's own timings (see `metrics`). Also the
//! peer identity each listener attaches to a connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use zygote_proto::api::SpawnResult;

use crate::audit::{self, AuditLog, Caller};
use crate::metrics::Metrics;

/// The peer of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Peer {
    /// Unix socket, with the credentials the kernel reports (SO_PEERCRED).
    Unix { uid: Option<u32>, pid: Option<i32> },
    /// TCP, plain or TLS.
    Tcp { addr: SocketAddr, tls: bool },
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

/// The route label of a listener whose router routes by itself (E2B's),
/// as a request extension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteLabel(pub(crate) &'static str);

/// Header naming the sandbox of E2B's in-sandbox traffic.
const E2B_SANDBOX_HEADER: &str = "e2b-sandbox-id";

/// Ids a handler made or touched, for the audit line (a response extension).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Found {
    pub(crate) sandbox: Option<String>,
    pub(crate) children: Vec<String>,
    pub(crate) snapshot: Option<String>,
}

impl Found {
    /// A sandbox made.
    pub(crate) fn sandbox(id: &str) -> Found {
        Found {
            sandbox: Some(id.to_string()),
            ..Found::default()
        }
    }

    /// A snapshot made.
    pub(crate) fn snapshot(tag: &str) -> Found {
        Found {
            snapshot: Some(tag.to_string()),
            ..Found::default()
        }
    }

    /// Children started.
    pub(crate) fn children(list: &[SpawnResult]) -> Found {
        Found {
            children: list
                .iter()
                .filter_map(|c| c.sandbox.as_ref().map(|s| s.id.clone()))
                .collect(),
            ..Found::default()
        }
    }

    /// The answer `r`, carrying these ids.
    pub(crate) fn on(self, r: impl IntoResponse) -> Response {
        let mut r = r.into_response();
        r.extensions_mut().insert(self);
        r
    }
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
        .map(|m| m.as_str().to_string())
        .or_else(|| {
            req.extensions()
                .get::<RouteLabel>()
                .map(|l| l.0.to_string())
        });
    let header_sandbox = req
        .headers()
        .get(E2B_SANDBOX_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
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

    let resp = next.run(req).await;
    let status = resp.status();
    let route_label = route.as_deref().unwrap_or(UNMATCHED);
    let mut found = resp
        .extensions()
        .get::<Found>()
        .cloned()
        .unwrap_or_default();
    if found.sandbox.is_none() {
        found.sandbox = route
            .as_deref()
            .and_then(|r| sandbox_in_path(r, &path))
            .or(header_sandbox);
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
}
