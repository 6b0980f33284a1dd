//! [`Qmp`]: an async client for one QEMU's QMP socket. Owns the connection: one
//! reader task demultiplexes replies (matched by the `id` we attach) from events
//! (broadcast to subscribers). Any number of tasks may call [`Qmp::execute`] at
//! once through `&self`. When the socket closes every pending call fails with
//! [`QemuError::QmpClosed`]. Bytes from the socket are untrusted: malformed JSON is
//! logged and skipped, never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::QemuError;

/// Default timeout of [`Qmp::execute`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest line accepted from QEMU (`query-qmp-schema` is about 200 KB).
const MAX_LINE: usize = 16 << 20;
/// Events buffered per subscriber before the slowest one starts losing them.
const EVENT_CAPACITY: usize = 1024;
/// Pause between connection attempts while QEMU creates its socket.
const CONNECT_RETRY: Duration = Duration::from_millis(20);

/// An asynchronous QMP event (`STOP`, `RESUME`, `MIGRATION`, `SHUTDOWN`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// The event name.
    pub name: String,
    /// Its `data` member (`Null` if absent).
    pub data: Value,
    /// QEMU's timestamp (`seconds * 1e6 + microseconds`, host wall clock).
    pub timestamp_us: u64,
}

type Reply = Result<Value, QemuError>;

#[derive(Debug, Default)]
struct State {
    pending: HashMap<u64, (String, oneshot::Sender<Reply>)>,
    /// Set once the reader has stopped: why.
    closed: Option<String>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    state: Mutex<State>,
    /// Dropped when the connection closes, so every waiter sees `Closed`.
    events: Mutex<Option<broadcast::Sender<QmpEvent>>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn closed_err(&self, cmd: &str, reason: &str) -> QemuError {
        QemuError::QmpClosed {
            cmd: cmd.into(),
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Marks the connection closed and fails every pending call.
    fn close(&self, reason: String) {
        let pending = {
            let mut st = self.lock();
            if st.closed.is_none() {
                st.closed = Some(reason.clone());
            }
            std::mem::take(&mut st.pending)
        };
        for (_, (cmd, tx)) in pending {
            let _ = tx.send(Err(self.closed_err(&cmd, &reason)));
        }
        self.events.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// A QMP connection. Share it with `Arc<Qmp>`; dropping it closes the socket.
#[derive(Debug)]
pub struct Qmp {
    shared: Arc<Shared>,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
}

impl Qmp {
    /// Connects to `path`, retrying until QEMU has created the socket and accepts,
    /// reads the greeting and negotiates capabilities, all within `timeout`.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QemuError> {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("never tried");
        loop {
            match tokio::time::timeout_at(deadline, Self::try_connect(path, deadline)).await {
                Ok(Ok(q)) => return Ok(q),
                Ok(Err(e)) => last_error = e,
                Err(_) => last_error = format!("{last_error}; then timed out"),
            }
            if Instant::now() + CONNECT_RETRY >= deadline {
                return Err(QemuError::QmpConnect {
                    path: path.to_path_buf(),
                    timeout,
                    last_error,
                });
            }
            tokio::time::sleep(CONNECT_RETRY).await;
        }
    }

    async fn try_connect(path: &Path, deadline: Instant) -> Result<Qmp, String> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (rd, wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let greeting = read_line(&mut rd)
            .await
            .map_err(|e| format!("reading greeting: {e}"))?
            .ok_or("socket closed before the greeting")?;
        let g: Value = serde_json::from_slice(&greeting)
            .map_err(|e| format!("greeting is not JSON ({e}): {}", lossy(&greeting)))?;
        if g.get("QMP").is_none() {
            return Err(format!("not a QMP greeting: {}", lossy(&greeting)));
        }
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            state: Mutex::new(State::default()),
            events: Mutex::new(Some(events)),
        });
        let reader = tokio::spawn(read_loop(rd, shared.clone()));
        let qmp = Qmp {
            shared,
            writer: tokio::sync::Mutex::new(wr),
            next_id: AtomicU64::new(1),
            reader,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        qmp.execute_timeout("qmp_capabilities", Value::Null, left)
            .await
            .map_err(|e| e.to_string())?;
        tracing::debug!(?path, version = %g["QMP"]["version"]["qemu"], "QMP connected");
        Ok(qmp)
    }

    /// Put `drive` in volume slot `slot` of the running VM, under its device:
    /// the slot's `raw` node gets the drive as its `file` child (the disk that
    /// was there is closed). The guest sees the new size once its driver
    /// probes the device again.
    pub async fn set_volume(
        &self,
        slot: usize,
        drive: &crate::VolumeDrive,
    ) -> Result<(), QemuError> {
        let node = crate::config::volume_node(slot);
        let file = format!("{node}-f{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let path = drive.path.to_string_lossy();
        let child = if drive.qcow2 {
            json!({"driver": "qcow2", "node-name": file, "discard": "unmap",
                   "file": {"driver": "file", "filename": path}})
        } else {
            json!({"driver": "file", "node-name": file, "discard": "unmap", "filename": path})
        };
        self.execute("blockdev-add", child).await?;
        let reopen = json!({"options": [{"driver": "raw", "node-name": node,
                                         "discard": "unmap", "file": file}]});
        if let Err(e) = self.execute("blockdev-reopen", reopen).await {
            let _ = self
                .execute("blockdev-del", json!({ "node-name": file }))
                .await;
            return Err(e);
        }
        Ok(())
    }

    /// Runs `cmd` with `args` (`Value::Null` for none) and returns its `return`
    /// member, within [`DEFAULT_TIMEOUT`].
    pub async fn execute(&self, cmd: &str, args: Value) -> Result<Value, QemuError> {
        self.execute_timeout(cmd, args, DEFAULT_TIMEOUT).await
    }

    /// [`Qmp::execute`] with an explicit timeout.
    pub async fn execute_timeout(
        &self,
        cmd: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value, QemuError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "execute": cmd, "id": id });
        if !args.is_null() {
            msg["arguments"] = args;
        }
        let mut line = serde_json::to_vec(&msg).map_err(|e| QemuError::QmpProtocol {
            path: self.shared.path.clone(),
            detail: format!("cannot encode {cmd:?}: {e}"),
        })?;
        line.push(b'\n');

        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if let Some(reason) = &st.closed {
                return Err(self.shared.closed_err(cmd, reason));
            }
            st.pending.insert(id, (cmd.to_string(), tx));
        }
        let deadline = Instant::now() + timeout;
        let write = async {
            let mut w = self.writer.lock().await;
            w.write_all(&line).await
        };
        match tokio::time::timeout_at(deadline, write).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                self.shared.lock().pending.remove(&id);
                return Err(QemuError::QmpWrite {
                    cmd: cmd.into(),
                    path: self.shared.path.clone(),
                    source,
                });
            }
            Err(_) => {
                self.shared.lock().pending.remove(&id);
                return Err(QemuError::QmpTimeout {
                    cmd: cmd.into(),
                    timeout,
                });
            }
        }
        tracing::trace!(cmd, id, "QMP command sent");
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(self.shared.closed_err(cmd, "reader stopped")),
            Err(_) => {
                self.shared.lock().pending.remove(&id);
                Err(QemuError::QmpTimeout {
                    cmd: cmd.into(),
                    timeout,
                })
            }
        }
    }

    /// Subscribes to events. Only events arriving after this call are seen:
    /// subscribe *before* sending the command whose events you wait for.
    /// Once the connection is closed the receiver reports `Closed` at once.
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        match &*self.shared.events.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// Whether the connection has closed, and why.
    pub fn closed_reason(&self) -> Option<String> {
        self.shared.lock().closed.clone()
    }

    /// `query-status`: the run state (`running`, `paused`, `inmigrate`,
    /// `postmigrate`, ...).
    pub async fn query_status(&self) -> Result<String, QemuError> {
        let v = self.execute("query-status", Value::Null).await?;
        v.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| QemuError::QmpProtocol {
                path: self.shared.path.clone(),
                detail: format!("query-status returned no status: {v}"),
            })
    }

    /// `stop`: pause the vCPUs.
    pub async fn stop(&self) -> Result<(), QemuError> {
        self.execute("stop", Value::Null).await.map(drop)
    }

    /// `cont`: resume the vCPUs.
    pub async fn cont(&self) -> Result<(), QemuError> {
        self.execute("cont", Value::Null).await.map(drop)
    }

    /// `quit`: QEMU exits at once. A connection closed before the reply counts as
    /// success. Wait on the process afterwards.
    pub async fn quit(&self) -> Result<(), QemuError> {
        match self.execute("quit", Value::Null).await {
            Ok(_) | Err(QemuError::QmpClosed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `human-monitor-command`: runs an HMP command (debugging only, e.g.
    /// `info registers`), returning its text.
    pub async fn hmp(&self, command_line: &str) -> Result<String, QemuError> {
        let v = self
            .execute(
                "human-monitor-command",
                json!({ "command-line": command_line }),
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.reader.abort();
        self.shared.close("client dropped".into());
    }
}

/// Waits on `rx` for an event satisfying `pred`, at most `timeout`.
pub async fn wait_event<F>(
    rx: &mut broadcast::Receiver<QmpEvent>,
    timeout: Duration,
    mut pred: F,
) -> Option<QmpEvent>
where
    F: FnMut(&QmpEvent) -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) if pred(&ev) => return Some(ev),
            Ok(Ok(_)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                tracing::warn!(lost = n, "QMP event subscriber lagged");
            }
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
        }
    }
}

fn lossy(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.chars().take(200).collect()
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes; `None` at EOF.
async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() { None } else { Some(line) });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        if line.len() + chunk.len() > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line longer than {MAX_LINE} bytes"),
            ));
        }
        line.extend_from_slice(chunk);
        let n = chunk.len();
        r.consume(n);
        if done {
            return Ok(Some(line));
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(mut rd: BufReader<R>, shared: Arc<Shared>) {
    let reason = loop {
        let line = match read_line(&mut rd).await {
            Ok(Some(l)) => l,
            Ok(None) => break "QEMU closed the socket (exited?)".to_string(),
            Err(e) => break format!("read error: {e}"),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(&line) {
            Ok(msg) => dispatch(&shared, msg),
            Err(e) => tracing::error!(
                path = ?shared.path,
                error = %e,
                line = %lossy(&line),
                "malformed JSON on the QMP socket; skipped"
            ),
        }
    };
    tracing::debug!(path = ?shared.path, %reason, "QMP reader stopped");
    shared.close(reason);
}

fn dispatch(shared: &Shared, msg: Value) {
    if let Some(name) = msg.get("event").and_then(Value::as_str) {
        let ts = &msg["timestamp"];
        let secs = ts["seconds"].as_u64().unwrap_or(0);
        let usecs = ts["microseconds"].as_u64().unwrap_or(0);
        let ev = QmpEvent {
            name: name.to_string(),
            data: msg.get("data").cloned().unwrap_or(Value::Null),
            timestamp_us: secs.saturating_mul(1_000_000).saturating_add(usecs),
        };
        tracing::debug!(event = %ev.name, data = %ev.data, "QMP event");
        if let Some(tx) = &*shared.events.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = tx.send(ev); // no subscribers is fine
        }
        return;
    }
    let Some(id) = msg.get("id").and_then(Value::as_u64) else {
        tracing::warn!(msg = %msg, "QMP message without a numeric id or event; ignored");
        return;
    };
    let Some((cmd, tx)) = shared.lock().pending.remove(&id) else {
        tracing::debug!(id, "QMP reply for a call that timed out; ignored");
        return;
    };
    let reply = if let Some(ret) = msg.get("return") {
        Ok(ret.clone())
    } else if let Some(err) = msg.get("error") {
        Err(QemuError::Qmp {
            cmd: cmd.clone(),
            class: err["class"].as_str().unwrap_or("?").to_string(),
            desc: err["desc"].as_str().unwrap_or("?").to_string(),
        })
    } else {
        Err(QemuError::QmpProtocol {
            path: shared.path.clone(),
            detail: format!("reply to {cmd:?} has neither return nor error: {msg}"),
        })
    };
    let _ = tx.send(reply);
}

#[cfg(test)]
#[path = "qmp_tests.rs"]
mod tests;
