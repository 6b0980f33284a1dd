//! One sandbox: its identity, lifecycle state and the guest operations that run
//! through its agent link. Booting and removal live in `lifecycle`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use zygote_proto::agent::{DirEntry, EvalResult, ExecRequest, FileStat};
use zygote_proto::api::{ExecBody, SandboxInfo, SandboxState};

use crate::agent_link::AgentLink;
use crate::error::{EngineError, Result};
use crate::ops::{self, ExecStream, ReadStream};
use crate::paths;
use crate::state;

/// Longest exec timeout accepted (a day).
const MAX_EXEC_TIMEOUT_SECS: f64 = 86_400.0;
/// Default time an eval may take.
pub(crate) const EVAL_TIMEOUT: Duration = Duration::from_secs(600);

/// Commands for the sandbox's supervisor task (the one owner of its QEMU process).
#[derive(Debug)]
pub(crate) enum Command {
    /// Stop QEMU: ask the guest to power off, then quit, then kill.
    Stop {
        /// Told when QEMU is gone.
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// Fixed facts about a sandbox.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Image name.
    pub image: String,
    /// Guest RAM.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Environment for every exec.
    pub env: BTreeMap<String, String>,
    /// Accelerator name.
    pub accel: String,
    /// Lifetime end.
    pub expires_at_unix: Option<u64>,
}

/// Where a sandbox's guest RAM lives.
#[derive(Clone)]
pub(crate) enum SandboxMemory {
    /// Its own share=on memfd (booted, or a private-memory child): the daemon
    /// sees every guest write, so `copy` branches work.
    Own(Arc<zygote_mem::Region>),
    /// Copy-on-write (`MAP_PRIVATE`, share=off) over a snapshot's sealed memfd;
    /// held so the memfd outlives QEMU's open of its `/proc` path even if the
    /// snapshot is deleted meanwhile.
    Cow(#[allow(dead_code)] Arc<zygote_mem::Region>),
}

/// The sandbox's disk: its writable top overlay and the frozen generations below.
#[derive(Debug, Clone)]
pub(crate) struct DiskState {
    /// The overlay QEMU writes to now.
    pub(crate) top: PathBuf,
    /// Frozen generations the top's backing chain needs (in `<home>/disks`).
    pub(crate) chain: Vec<PathBuf>,
    /// Virtual size in bytes.
    pub(crate) virtual_size: u64,
    /// Generation counter (names the next overlay).
    pub(crate) generation: u32,
}

/// How the VM was started; children must match it exactly.
#[derive(Debug, Clone)]
pub(crate) struct MachineFacts {
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
    pub(crate) append: String,
    pub(crate) cpu: String,
}

/// A sandbox.
pub struct Sandbox {
    /// Random id.
    pub id: String,
    /// What it was created with.
    pub spec: Spec,
    /// Runtime directory (overlay, sockets, console log).
    pub dir: PathBuf,
    /// Creation time.
    pub created_at_unix: u64,
    pub(crate) state: watch::Sender<(SandboxState, Option<String>)>,
    pub(crate) link: OnceLock<Arc<AgentLink>>,
    pub(crate) pid: OnceLock<u32>,
    pub(crate) boot_ms: OnceLock<u64>,
    pub(crate) cmd: Mutex<Option<mpsc::Sender<Command>>>,
    pub(crate) span: tracing::Span,
    pub(crate) qmp: OnceLock<Arc<zygote_qemu::Qmp>>,
    pub(crate) memory: Mutex<Option<SandboxMemory>>,
    pub(crate) disk: Mutex<Option<DiskState>>,
    pub(crate) machine: OnceLock<MachineFacts>,
    /// The snapshot a child was spawned from.
    pub(crate) snapshot_tag: Option<String>,
    /// One branch at a time.
    pub(crate) branch_lock: tokio::sync::Mutex<()>,
}

impl Sandbox {
    /// The API view.
    pub fn info(&self) -> SandboxInfo {
        let (state, reason) = self.state.borrow().clone();
        SandboxInfo {
            id: self.id.clone(),
            image: self.spec.image.clone(),
            state,
            reason,
            memory_mib: self.spec.memory_mib,
            vcpus: self.spec.vcpus,
            accel: self.spec.accel.clone(),
            pid: self.pid.get().copied(),
            created_at_unix: self.created_at_unix,
            boot_ms: self.boot_ms.get().copied(),
            expires_at_unix: self.spec.expires_at_unix,
            snapshot_tag: self.snapshot_tag.clone(),
            memory: self.memory_kind().map(str::to_string),
        }
    }

    /// `own` or `cow`, while the sandbox holds memory.
    pub fn memory_kind(&self) -> Option<&'static str> {
        match &*self.memory.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(SandboxMemory::Own(_)) => Some("own"),
            Some(SandboxMemory::Cow(_)) => Some("cow"),
            None => None,
        }
    }

    /// Build a sandbox in `Booting` with nothing attached yet.
    pub(crate) fn new(
        id: String,
        spec: Spec,
        dir: PathBuf,
        created_at_unix: u64,
        snapshot_tag: Option<String>,
        state: SandboxState,
        reason: Option<String>,
    ) -> Sandbox {
        let span = tracing::info_span!("sandbox", id = %id);
        Sandbox {
            id,
            spec,
            dir,
            created_at_unix,
            state: watch::channel((state, reason)).0,
            link: OnceLock::new(),
            pid: OnceLock::new(),
            boot_ms: OnceLock::new(),
            cmd: Mutex::new(None),
            span,
            qmp: OnceLock::new(),
            memory: Mutex::new(None),
            disk: Mutex::new(None),
            machine: OnceLock::new(),
            snapshot_tag,
            branch_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The QMP connection, if the sandbox is running.
    pub(crate) fn qmp(&self) -> Result<&Arc<zygote_qemu::Qmp>> {
        self.link()?;
        self.qmp.get().ok_or_else(|| EngineError::NotRunning {
            id: self.id.clone(),
            state: "without a QMP connection",
            reason: None,
        })
    }

    /// Current state.
    pub fn state(&self) -> SandboxState {
        self.state.borrow().0
    }

    /// Console log path.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// Move to a new state; refused transitions are reported and ignored.
    pub(crate) fn set_state(&self, to: SandboxState, reason: Option<String>) -> bool {
        let mut changed = false;
        self.state
            .send_modify(|(cur, r)| match state::transition(*cur, to) {
                Ok(s) => {
                    *cur = s;
                    if reason.is_some() {
                        *r = reason.clone();
                    }
                    changed = true;
                }
                Err(e) => {
                    tracing::debug!(parent: &self.span, error = %e, "state transition ignored")
                }
            });
        changed
    }

    /// The agent link, if the sandbox is running.
    pub(crate) fn link(&self) -> Result<&Arc<AgentLink>> {
        let (st, reason) = self.state.borrow().clone();
        match st {
            SandboxState::Running => {}
            SandboxState::Booting | SandboxState::Stopping | SandboxState::Dead => {
                return Err(EngineError::NotRunning {
                    id: self.id.clone(),
                    state: st.as_str(),
                    reason,
                })
            }
        }
        self.link.get().ok_or_else(|| EngineError::NotRunning {
            id: self.id.clone(),
            state: st.as_str(),
            reason: None,
        })
    }

    /// Validate an exec body and turn it into an agent request plus stdin bytes.
    pub fn exec_request(&self, body: ExecBody) -> Result<(ExecRequest, Option<Vec<u8>>)> {
        let ExecBody {
            argv,
            cmd,
            env,
            cwd,
            stdin,
            stdin_b64,
            timeout_secs,
        } = body;
        let shell = match (argv.is_empty(), cmd) {
            (true, None) => {
                return Err(EngineError::BadRequest(
                    "argv is empty: pass a program and its arguments in `argv`, or a shell command line in `cmd`".into(),
                ))
            }
            (false, Some(_)) => {
                return Err(EngineError::BadRequest(
                    "both `argv` and `cmd` are set: pass exactly one".into(),
                ))
            }
            (true, Some(c)) if c.trim().is_empty() => {
                return Err(EngineError::BadRequest(
                    "`cmd` is empty: pass a shell command line".into(),
                ))
            }
            (_, c) => c,
        };
        if argv.first().is_some_and(|a| a.is_empty()) {
            return Err(EngineError::BadRequest(
                "argv[0] is empty: pass the program to run first".into(),
            ));
        }
        let mut full_env = self.spec.env.clone();
        for (k, v) in env {
            paths::env_name(&k)?;
            full_env.insert(k, v);
        }
        if let Some(c) = &cwd {
            paths::guest_path(c)?;
        }
        let timeout_ms = match timeout_secs {
            None => None,
            Some(t) if t.is_finite() && t > 0.0 && t <= MAX_EXEC_TIMEOUT_SECS => {
                Some((t * 1000.0).ceil() as u64)
            }
            Some(t) => {
                return Err(EngineError::BadRequest(format!(
                    "timeout_secs {t} is out of range: pass a number of seconds above 0 and at most {MAX_EXEC_TIMEOUT_SECS}"
                )))
            }
        };
        let stdin = match (stdin, stdin_b64) {
            (Some(_), Some(_)) => {
                return Err(EngineError::BadRequest(
                    "both `stdin` and `stdin_b64` are set: pass one".into(),
                ))
            }
            (Some(s), None) => Some(s.into_bytes()),
            (None, Some(b)) => Some(decode_b64(&b)?),
            (None, None) => None,
        };
        Ok((
            ExecRequest {
                argv,
                shell,
                env: full_env,
                cwd,
                stdin: stdin.is_some(),
                timeout_ms,
            },
            stdin,
        ))
    }

    /// Start a process in the guest.
    pub async fn exec(&self, body: ExecBody) -> Result<ExecStream> {
        let (req, stdin) = self.exec_request(body)?;
        let link = self.link()?;
        Ok(ops::exec(link, req, stdin).await?)
    }

    /// Write a guest file from a stream of chunks.
    pub async fn write_file<S, E>(
        &self,
        path: &str,
        mode: Option<u32>,
        body: S,
    ) -> Result<Result<u64, E>>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    {
        paths::guest_path(path)?;
        if let Some(m) = mode {
            if m > 0o7777 {
                return Err(EngineError::BadRequest(format!(
                    "mode {m:o} is not a permission mode: pass octal bits up to 7777, e.g. 644"
                )));
            }
        }
        let link = self.link()?;
        ops::xfer::write_file(link, &self.dir, path, mode, body).await
    }

    /// Read a guest file as a stream of chunks.
    pub async fn read_file(&self, path: &str) -> Result<ReadStream> {
        paths::guest_path(path)?;
        ops::xfer::read_file(self.link()?, &self.dir, path).await
    }

    /// Stat a guest path.
    pub async fn stat(&self, path: &str) -> Result<FileStat> {
        paths::guest_path(path)?;
        Ok(ops::stat(self.link()?, path).await?)
    }

    /// List a guest directory.
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        paths::guest_path(path)?;
        Ok(ops::list(self.link()?, path).await?)
    }

    /// Remove a guest path.
    pub async fn remove_path(&self, path: &str, recursive: bool) -> Result<()> {
        paths::guest_path(path)?;
        if path == "/" {
            return Err(EngineError::BadRequest(
                "refusing to remove `/`: name a file or directory below it".into(),
            ));
        }
        Ok(ops::remove(self.link()?, path, recursive).await?)
    }

    /// Evaluate Python in the warm interpreter.
    pub async fn eval(&self, code: &str) -> Result<EvalResult> {
        Ok(ops::eval(self.link()?, code, EVAL_TIMEOUT).await?)
    }

    /// Ping the agent; the round trip.
    pub async fn ping(&self) -> Result<Duration> {
        Ok(ops::ping(self.link()?).await?)
    }

    /// Send raw bytes down the agent link (tests of the agent's defences).
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<()> {
        Ok(self.link()?.send_raw(bytes).await?)
    }
}

fn decode_b64(s: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| {
            EngineError::BadRequest(format!(
                "stdin_b64 is not valid base64 ({e}): encode the bytes with standard base64"
            ))
        })
}
