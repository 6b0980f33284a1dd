//! The accept loop of every listener (Unix socket, TCP, TLS, E2B's): at most
//! `max_connections` connections at once (past it, new ones wait in the
//! kernel's backlog until one closes), and a connection with no request in
//! flight must bring a whole request head within `header_timeout` or it is
//! closed: a client that trickles a head, or connects and says nothing, or
//! idles between requests, cannot hold a slot (slowloris). A request in
//! flight (an upload, a streamed exec) has no such limit. HTTP/1.1 and HTTP/2
//! (prior knowledge), upgrades, graceful shutdown on `stop`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;
use tracing::debug;

use crate::observe::Peer;
use crate::tls::TlsListener;

/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of `--header-timeout-secs`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds on one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time a request head may take to arrive.
    pub header_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// A listener whose connections say who is calling.
pub(crate) trait PeerListener: Listener {
    fn peer(io: &Self::Io, addr: &Self::Addr) -> Peer;
}

impl PeerListener for UnixListener {
    fn peer(io: &Self::Io, _: &Self::Addr) -> Peer {
        let cred = io.peer_cred().ok();
        Peer::Unix {
            uid: cred.map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        }
    }
}

impl PeerListener for TcpListener {
    fn peer(_: &Self::Io, addr: &Self::Addr) -> Peer {
        Peer::Tcp {
            addr: *addr,
            tls: false,
        }
    }
}

impl PeerListener for TlsListener {
    fn peer(_: &Self::Io, addr: &Self::Addr) -> Peer {
        Peer::Tcp {
            addr: *addr,
            tls: true,
        }
    }
}

/// Until `stop` turns true.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serve `router` on `listener` until `stop` turns true; in-flight
/// connections then finish their requests.
pub(crate) async fn serve<L: PeerListener>(
    mut listener: L,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut warned = false;
    loop {
        if slots.available_permits() == 0 && !warned {
            tracing::warn!(
                max = limits.max_connections,
                "every connection slot is taken: new connections wait (raise --max-connections)"
            );
            warned = true;
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = stopped(&mut stop) => return,
        };
        let (io, addr) = tokio::select! {
            c = listener.accept() => c,
            () = stopped(&mut stop) => return,
        };
        if slots.available_permits() > limits.max_connections / 2 {
            warned = false;
        }
        let peer = L::peer(&io, &addr);
        let busy = Arc::new(AtomicUsize::new(0));
        let in_flight = busy.clone();
        let svc = router
            .clone()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(Body::new)
            })
            .map_future(move |fut| {
                let guard = Busy::new(in_flight.clone());
                async move {
                    let resp = fut.await?;
                    Ok::<_, std::convert::Infallible>(resp.map(|b| {
                        Body::new(GuardedBody {
                            inner: b,
                            _busy: guard,
                        })
                    }))
                }
            });
        let io = IdleCutoff::new(io, busy, limits.header_timeout);
        let svc = TowerToHyperService::new(svc);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _slot = permit;
            let mut b = Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            b.http2().timer(TokioTimer::new());
            let conn = b.serve_connection_with_upgrades(TokioIo::new(io), svc);
            tokio::pin!(conn);
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(error = %e, "connection ended");
                    }
                }
                () = stopped => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// One request in flight on a connection, from its head to its answer's end.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(n: Arc<AtomicUsize>) -> Busy {
        n.fetch_add(1, Ordering::Relaxed);
        Busy(n)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's body that keeps its request counted until it is sent.
struct GuardedBody {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's IO that fails its reads once it has waited `limit` for
/// bytes with no request in flight.
struct IdleCutoff<Io> {
    io: Io,
    busy: Arc<AtomicUsize>,
    limit: Duration,
    was_busy: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<Io> IdleCutoff<Io> {
    fn new(io: Io, busy: Arc<AtomicUsize>, limit: Duration) -> Self {
        IdleCutoff {
            io,
            busy,
            limit,
            was_busy: false,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// The next head's clock starts now.
    fn restart(&mut self) {
        self.was_busy = false;
        let at = tokio::time::Instant::now() + self.limit;
        self.deadline.as_mut().reset(at);
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for IdleCutoff<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                // Bytes of a head that keeps coming slowly do not reset the
                // deadline: the head must be whole in time.
                if buf.filled().len() > before && this.was_busy {
                    this.restart();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if this.busy.load(Ordering::Relaxed) > 0 {
                    this.was_busy = true;
                    return Poll::Pending;
                }
                if this.was_busy {
                    // The last answer just ended.
                    this.restart();
                }
                match this.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no whole request head within the header timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for IdleCutoff<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_cut_busy_ones_are_not() {
        let busy = Arc::new(AtomicUsize::new(0));
        let limit = Duration::from_secs(2);

        // Idle: the read fails after the limit.
        let (a, _keep) = tokio::io::duplex(64);
        let mut idle = IdleCutoff::new(a, busy.clone(), limit);
        let mut buf = [0u8; 8];
        let e = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);

        // A request in flight: no limit however long the client is silent.
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = IdleCutoff::new(a, busy.clone(), limit);
        let g = Busy::new(busy.clone());
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let n = conn.read(&mut buf).await.unwrap();
            (n, conn)
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        b.write_all(b"x").await.unwrap();
        let (n, mut conn) = read.await.unwrap();
        assert_eq!(n, 1);
        drop(g);
        // The answer ended: the next head has the limit again, from now.
        let t0 = tokio::time::Instant::now();
        let e = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(t0.elapsed() >= limit, "{:?}", t0.elapsed());
    }
}
