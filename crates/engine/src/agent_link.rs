//! The host side of the agent protocol: one connection to a guest agent over the
//! QEMU chardev socket behind the virtio-serial port `agent`, multiplexing many
//! requests by id.
//!
//! A reader task routes each incoming frame to the request that owns its id; a
//! writer task owns the socket's write half. A request is a [`Request`] handle:
//! dropping it forgets the id. When the link closes every pending request sees
//! [`LinkError::Closed`] with the reason.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};
use zygote_proto::agent::{self, AgentError, Decoder, Frame, Msg, CONNECTION_ID};
use zygote_proto::AGENT_PROTOCOL_VERSION;

/// Frames buffered per request before the reader waits for its consumer.
const PER_REQUEST_QUEUE: usize = 64;

/// Errors of the agent link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket could not be reached.
    #[error("cannot connect to the agent socket {path}")]
    Connect {
        /// Socket path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The agent did not answer the handshake in time.
    #[error("the guest agent did not answer within {0:?}")]
    HandshakeTimeout(Duration),
    /// The agent speaks another protocol version.
    #[error("guest agent speaks protocol {agent}, the daemon speaks {host}: rebuild the image with `zygote image build`")]
    Protocol {
        /// Agent's version.
        agent: u32,
        /// Ours.
        host: u32,
    },
    /// The link closed (QEMU exited, the guest powered off).
    #[error("the agent link closed: {0}")]
    Closed(String),
    /// The agent answered the request with an error.
    #[error("{}", .0.message)]
    Agent(AgentError),
    /// The agent answered with a message that does not fit the request.
    #[error("unexpected agent reply {0}")]
    Unexpected(String),
    /// The agent did not answer in time.
    #[error("the guest agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The caller stopped reading a stream: more than [`PER_REQUEST_QUEUE`]
    /// frames waited for it, so the request was cancelled rather than let it
    /// hold up every other request of the sandbox.
    #[error("the request was cancelled: its reader fell {0} frames behind the guest (read the stream as it comes)")]
    FellBehind(usize),
    /// The request does not fit in one agent frame.
    #[error("the request is {len} bytes, over the agent's {max}-byte frame cap: send large inputs as files (PUT /v1/sandboxes/ID/files)")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The cap.
        max: usize,
    },
}

/// What the agent said in its handshake.
#[derive(Debug, Clone)]
pub struct Hello {
    /// Agent build version.
    pub agent_version: String,
    /// Boot id of the guest.
    pub boot_id: String,
}

type Routes = Arc<Mutex<HashMap<u64, mpsc::Sender<Frame>>>>;
/// Requests cancelled because their reader fell behind.
type Overrun = Arc<Mutex<std::collections::HashSet<u64>>>;

/// Hand a frame to its request's reader, never waiting: a reader that
/// stopped reading (its channel full) loses its request, which is cancelled
/// in the guest, so the sandbox's other requests go on.
fn route_frame(routes: &Routes, overrun: &Overrun, out: &mpsc::Sender<Vec<u8>>, f: Frame) {
    let route = routes.lock().ok().and_then(|r| r.get(&f.id).cloned());
    let id = f.id;
    // Err(true): its channel is full.
    let sent = route.map(|tx| {
        tx.try_send(f)
            .map_err(|e| matches!(e, mpsc::error::TrySendError::Full(_)))
    });
    match sent {
        // A dropped request is not an error: its id is forgotten.
        Some(Ok(())) | Some(Err(false)) => {}
        Some(Err(true)) => {
            warn!(id, "a request's reader fell behind; cancelling it");
            if let Ok(mut r) = routes.lock() {
                r.remove(&id);
            }
            if let Ok(mut o) = overrun.lock() {
                o.insert(id);
            }
            let _ = out.try_send(agent::encode_vec(id, &Msg::Cancel, &[]));
        }
        None => debug!(id, "agent frame for a forgotten request"),
    }
}

struct Shared {
    routes: Routes,
    overrun: Overrun,
    out: mpsc::Sender<Vec<u8>>,
    next_id: AtomicU64,
    closed: watch::Receiver<Option<String>>,
}

/// A live connection to one guest agent.
pub struct AgentLink {
    shared: Arc<Shared>,
    hello: Hello,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for AgentLink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl AgentLink {
    /// Connect to the agent socket and complete the handshake before `timeout`.
    ///
    /// QEMU creates the socket a moment after it starts, and the guest opens its
    /// end of the port only once booted, so both waits live inside the timeout.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<AgentLink, LinkError> {
        Self::begin(path, timeout).await?.finish().await
    }

    /// Connect and send the handshake without waiting for its answer, so that
    /// requests can be queued behind it ([`PendingLink::start`]) and reach the
    /// guest in the same pass (a restored child answers both at once).
    pub async fn begin(path: &Path, timeout: Duration) -> Result<PendingLink, LinkError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    debug!(error = %e, "agent socket not ready yet");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(source) => {
                    return Err(LinkError::Connect {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
        };
        let (mut rd, mut wr) = stream.into_split();
        let routes: Routes = Arc::default();
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
        let (closed_tx, closed_rx) = watch::channel(None::<String>);
        let (hello_tx, hello_rx) = oneshot::channel::<Msg>();

        let writer = tokio::spawn(async move {
            while let Some(buf) = out_rx.recv().await {
                if let Err(e) = wr.write_all(&buf).await {
                    debug!(error = %e, "agent link write failed");
                    break;
                }
            }
        });
        let reader_routes = routes.clone();
        let overrun: Overrun = Arc::default();
        let reader_overrun = overrun.clone();
        let cancel_out = out_tx.clone();
        let reader = tokio::spawn(async move {
            let mut hello_tx = Some(hello_tx);
            let mut bad = BadFrames::new(Instant::now());
            let mut dec = Decoder::new();
            let mut buf = vec![0u8; 512 * 1024];
            let reason = loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) => break "the guest closed the agent port".to_string(),
                    Ok(n) => n,
                    Err(e) => break format!("agent socket read failed: {e}"),
                };
                dec.feed(&buf[..n]);
                let flooded = loop {
                    match dec.next_frame() {
                        Ok(Some(f)) => {
                            if f.id == CONNECTION_ID {
                                match (&f.msg, hello_tx.take()) {
                                    (Msg::HelloOk { .. } | Msg::Error(_), Some(tx)) => {
                                        let _ = tx.send(f.msg);
                                    }
                                    (_, tx) => {
                                        hello_tx = tx;
                                        debug!(msg = ?f.msg, "connection-level agent frame");
                                    }
                                }
                                continue;
                            }
                            route_frame(&reader_routes, &reader_overrun, &cancel_out, f);
                        }
                        Ok(None) => break None,
                        Err(e) => {
                            if let Some(why) = bad.count(&e, Instant::now()) {
                                break Some(why);
                            }
                        }
                    }
                };
                if let Some(why) = flooded {
                    break why;
                }
            };
            debug!(%reason, "agent link closed");
            if let Ok(mut r) = reader_routes.lock() {
                r.clear();
            }
            let _ = closed_tx.send(Some(reason));
        });

        let shared = Arc::new(Shared {
            routes,
            overrun,
            out: out_tx,
            next_id: AtomicU64::new(1),
            closed: closed_rx,
        });
        let link_tasks = vec![writer, reader];
        let hello_frame = agent::encode_vec(
            CONNECTION_ID,
            &Msg::Hello {
                protocol: AGENT_PROTOCOL_VERSION,
            },
            &[],
        );
        let _ = shared.out.send(hello_frame).await;
        Ok(PendingLink {
            shared,
            hello_rx,
            deadline,
            timeout,
            tasks: link_tasks,
        })
    }

    /// The handshake's answer.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Why the link closed, if it has.
    pub fn closed(&self) -> Option<String> {
        self.shared.closed.borrow().clone()
    }

    /// Why the link closed, once it does.
    pub fn closed_watch(&self) -> watch::Receiver<Option<String>> {
        self.shared.closed.clone()
    }

    /// Start a request: allocate an id, send the first frame.
    pub async fn start(&self, msg: &Msg, payload: &[u8]) -> Result<Request, LinkError> {
        start_on(&self.shared, msg, payload).await
    }

    /// Send a request and wait for its single reply frame.
    pub async fn call(&self, msg: &Msg, timeout: Duration) -> Result<Frame, LinkError> {
        let mut req = self.start(msg, &[]).await?;
        match tokio::time::timeout(timeout, req.next()).await {
            Ok(r) => r,
            Err(_) => Err(LinkError::Timeout(timeout)),
        }
    }

    /// Send raw bytes as if they were frames (for tests of the agent's defences).
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<(), LinkError> {
        self.shared
            .out
            .send(bytes)
            .await
            .map_err(|_| LinkError::Closed(closed_reason(&self.shared.closed)))
    }
}

/// A connection whose handshake is sent but not yet answered.
pub struct PendingLink {
    shared: Arc<Shared>,
    hello_rx: oneshot::Receiver<Msg>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for PendingLink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl PendingLink {
    /// Queue a request behind the handshake.
    pub async fn start(&self, msg: &Msg, payload: &[u8]) -> Result<Request, LinkError> {
        start_on(&self.shared, msg, payload).await
    }

    /// Wait for the handshake's answer (within the timeout `begin` was given).
    pub async fn finish(mut self) -> Result<AgentLink, LinkError> {
        let shared = self.shared.clone();
        let deadline = self.deadline;
        let timeout = self.timeout;
        let hello_rx = std::mem::replace(&mut self.hello_rx, oneshot::channel().1);
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut closed = shared.closed.clone();
        let reply = tokio::select! {
            r = tokio::time::timeout(remaining, hello_rx) => match r {
                Ok(Ok(m)) => m,
                Ok(Err(_)) => return Err(LinkError::Closed(closed_reason(&shared.closed))),
                Err(_) => return Err(LinkError::HandshakeTimeout(timeout)),
            },
            _ = closed.wait_for(|c| c.is_some()) => {
                return Err(LinkError::Closed(closed_reason(&shared.closed)))
            }
        };
        let hello = match reply {
            Msg::HelloOk {
                protocol,
                agent_version,
                boot_id,
            } => {
                if protocol != AGENT_PROTOCOL_VERSION {
                    return Err(LinkError::Protocol {
                        agent: protocol,
                        host: AGENT_PROTOCOL_VERSION,
                    });
                }
                Hello {
                    agent_version,
                    boot_id,
                }
            }
            Msg::Error(e) => return Err(LinkError::Agent(e)),
            other => return Err(LinkError::Unexpected(format!("{other:?}"))),
        };
        // From here the link owns the reader and writer (until now a failure
        // dropped `self`, which aborts them).
        Ok(AgentLink {
            shared,
            hello,
            tasks: std::mem::take(&mut self.tasks),
        })
    }
}

async fn start_on(shared: &Arc<Shared>, msg: &Msg, payload: &[u8]) -> Result<Request, LinkError> {
    if let Some(r) = shared.closed.borrow().clone() {
        return Err(LinkError::Closed(r));
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(PER_REQUEST_QUEUE);
    if let Ok(mut r) = shared.routes.lock() {
        r.insert(id, tx);
    }
    let req = Request {
        cancel_on_drop: false,
        id,
        rx,
        shared: shared.clone(),
    };
    req.send(msg, payload).await?;
    Ok(req)
}

/// Refuse a frame the agent would reject for its size.
fn check_size(frame: &[u8]) -> Result<(), LinkError> {
    let body = frame.len().saturating_sub(4);
    let header = frame
        .get(4..8)
        .map(|h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize)
        .unwrap_or(0);
    if body > agent::MAX_FRAME {
        return Err(LinkError::TooLarge {
            len: body,
            max: agent::MAX_FRAME,
        });
    }
    if header > agent::MAX_HEADER {
        return Err(LinkError::TooLarge {
            len: header,
            max: agent::MAX_HEADER,
        });
    }
    Ok(())
}

/// Undecodable frames logged before they are only counted.
const BAD_FRAMES_LOGGED: u64 = 10;
/// Undecodable frames within [`BAD_FRAME_WINDOW`] that close the link.
const BAD_FRAMES_MAX: u32 = 100;
/// The window [`BAD_FRAMES_MAX`] counts in.
const BAD_FRAME_WINDOW: Duration = Duration::from_secs(10);

/// The undecodable frames a guest sent: a few are logged, the rest
/// counted; a flood closes the link (a broken or hostile agent cannot fill
/// the daemon's log or keep its reader busy).
struct BadFrames {
    total: u64,
    in_window: u32,
    window_start: Instant,
}

impl BadFrames {
    fn new(now: Instant) -> BadFrames {
        BadFrames {
            total: 0,
            in_window: 0,
            window_start: now,
        }
    }

    /// Count one; `Some(reason)` when the link must close.
    fn count(&mut self, e: &dyn std::fmt::Display, now: Instant) -> Option<String> {
        self.total += 1;
        if self.total <= BAD_FRAMES_LOGGED {
            warn!(error = %e, "undecodable frame from the agent");
        } else if self.total == BAD_FRAMES_LOGGED + 1 {
            warn!("more undecodable frames from the agent: counted, no longer logged");
        }
        if now.duration_since(self.window_start) >= BAD_FRAME_WINDOW {
            self.window_start = now;
            self.in_window = 0;
        }
        self.in_window += 1;
        (self.in_window > BAD_FRAMES_MAX).then(|| {
            format!(
                "the guest agent sent more than {BAD_FRAMES_MAX} undecodable frames within {BAD_FRAME_WINDOW:?} ({} in all): the link was closed",
                self.total
            )
        })
    }
}

fn closed_reason(rx: &watch::Receiver<Option<String>>) -> String {
    rx.borrow()
        .clone()
        .unwrap_or_else(|| "the agent link closed".to_string())
}

/// One request in flight. Dropping it forgets the id (and, when asked for
/// with [`Request::cancel_on_drop`], tells the agent to stop it).
pub struct Request {
    id: u64,
    rx: mpsc::Receiver<Frame>,
    shared: Arc<Shared>,
    cancel_on_drop: bool,
}

impl Request {
    /// The request's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Send `Cancel` for this request when it is dropped before it ended (a
    /// client that stopped following a stream stops what feeds it).
    pub fn cancel_on_drop(mut self) -> Request {
        self.cancel_on_drop = true;
        self
    }

    /// The request ended: nothing to cancel when it is dropped.
    pub fn ended(&mut self) {
        self.cancel_on_drop = false;
    }

    /// Send a further frame for this request (stdin, file data).
    pub async fn send(&self, msg: &Msg, payload: &[u8]) -> Result<(), LinkError> {
        let frame = agent::encode_vec(self.id, msg, payload);
        check_size(&frame)?;
        self.shared
            .out
            .send(frame)
            .await
            .map_err(|_| LinkError::Closed(closed_reason(&self.shared.closed)))
    }

    /// The next frame for this request. An agent `Error` frame becomes
    /// [`LinkError::Agent`].
    pub async fn next(&mut self) -> Result<Frame, LinkError> {
        match self.rx.recv().await {
            Some(Frame {
                msg: Msg::Error(e), ..
            }) => Err(LinkError::Agent(e)),
            Some(f) => Ok(f),
            None if self.fell_behind() => Err(LinkError::FellBehind(PER_REQUEST_QUEUE)),
            None => Err(LinkError::Closed(closed_reason(&self.shared.closed))),
        }
    }

    fn fell_behind(&self) -> bool {
        self.shared
            .overrun
            .lock()
            .map(|o| o.contains(&self.id))
            .unwrap_or(false)
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Ok(mut r) = self.shared.routes.lock() {
            r.remove(&self.id);
        }
        if let Ok(mut o) = self.shared.overrun.lock() {
            o.remove(&self.id);
        }
        if self.cancel_on_drop {
            // Best effort: a full queue or a closed link means the agent will
            // see the connection's end instead.
            let _ = self
                .shared
                .out
                .try_send(agent::encode_vec(self.id, &Msg::Cancel, &[]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fake agent: answers the handshake, then sends `bad` frames whose
    /// length is right and whose header is garbage.
    async fn flooding_agent(path: &Path, bad: usize) -> tokio::task::JoinHandle<()> {
        let l = tokio::net::UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            let ok = agent::encode_vec(
                CONNECTION_ID,
                &Msg::HelloOk {
                    protocol: AGENT_PROTOCOL_VERSION,
                    agent_version: "fake".into(),
                    boot_id: "b".into(),
                },
                &[],
            );
            s.write_all(&ok).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut garbage = Vec::new();
            for _ in 0..bad {
                garbage.extend_from_slice(&12u32.to_be_bytes());
                garbage.extend_from_slice(&8u32.to_be_bytes());
                garbage.extend_from_slice(b"not json");
            }
            let _ = s.write_all(&garbage).await;
            // Stay open: only the daemon may end this link.
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
    }

    #[test]
    fn bad_frames_are_counted_then_close_the_link() {
        let mut b = BadFrames::new(Instant::now());
        let t0 = Instant::now();
        for _ in 0..BAD_FRAMES_MAX {
            assert!(b.count(&"x", t0).is_none());
        }
        assert!(b.count(&"x", t0).is_some());
        // Spread out, the same number is tolerated.
        let mut b = BadFrames::new(t0);
        for i in 0..(BAD_FRAMES_MAX * 3) {
            let at = t0 + BAD_FRAME_WINDOW * (i / BAD_FRAMES_MAX + 1) + Duration::from_millis(1);
            assert!(b.count(&"x", at).is_none(), "frame {i}");
        }
    }

    #[tokio::test]
    async fn a_flood_of_garbage_closes_the_link_and_a_trickle_does_not() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("flood.sock");
        let _agent = flooding_agent(&p, 500).await;
        let link = AgentLink::connect(&p, Duration::from_secs(5))
            .await
            .unwrap();
        let mut w = link.closed_watch();
        let why = tokio::time::timeout(Duration::from_secs(5), w.wait_for(|r| r.is_some()))
            .await
            .expect("the link closes")
            .unwrap()
            .clone()
            .unwrap();
        assert!(why.contains("undecodable frames"), "{why}");

        let p = d.path().join("trickle.sock");
        let _agent = flooding_agent(&p, 5).await;
        let link = AgentLink::connect(&p, Duration::from_secs(5))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(link.closed(), None);
    }
}
