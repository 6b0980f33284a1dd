//! [`QemuProcess`]: one running `qemu-system-x86_64`, its captured output and its
//! end; [`create_overlay`]: `qemu-img create`. Owns process lifetime only: it does
//! not talk QMP (see [`crate::Qmp`]) and does not read the console.
//!
//! QEMU runs in a process group of its own (a signal to the daemon's group does
//! not reach it) and outlives the daemon if the daemon dies: a restarted daemon
//! takes it back with [`QemuProcess::adopt`] (through a pidfd; QEMU's output is
//! not captured after that). No `PR_SET_PDEATHSIG`, for the same reason.
//! Dropping a `QemuProcess` kills QEMU unless [`QemuProcess::detach`] was called.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::pidfd::PidFd;
use crate::{QemuBinary, QemuError, VmConfig};

/// How many output lines of QEMU are kept for error messages.
const TAIL_LINES: usize = 40;
/// Longest kept line (QEMU's messages are short; the guest's are not ours).
const MAX_LINE: usize = 1024;
/// How long `qemu-img create` may take.
const QEMU_IMG_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a SIGKILLed process to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// How QEMU ended: the exit status and the tail of what it printed.
#[derive(Debug, Clone)]
pub struct QemuExit {
    /// The exit status (a signal shows as such); unknown for an adopted QEMU,
    /// which is not this process's child.
    pub status: Option<ExitStatus>,
    /// The last lines QEMU wrote to stdout/stderr (QEMU prints errors there).
    pub stderr_tail: String,
}

impl fmt::Display for QemuExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(st) => write!(f, "exited with {st}")?,
            None => write!(f, "exited (status unknown: adopted after a daemon restart)")?,
        }
        if self.stderr_tail.trim().is_empty() {
            write!(f, " (no output)")
        } else {
            write!(
                f,
                "; its output ended with:\n{}",
                self.stderr_tail.trim_end()
            )
        }
    }
}

type Tail = Arc<Mutex<VecDeque<String>>>;

/// How this process reaches its QEMU.
#[derive(Debug)]
enum Handle {
    /// QEMU is our child.
    Child(Child),
    /// A previous daemon's QEMU, re-adopted.
    Adopted(PidFd),
}

/// A running QEMU. Dropping it kills the process unless it was detached; call
/// [`QemuProcess::kill`] for an orderly SIGTERM first.
#[derive(Debug)]
pub struct QemuProcess {
    handle: Handle,
    /// Left running when dropped (the daemon exits for an upgrade).
    detached: bool,
    pid: u32,
    name: String,
    tail: Tail,
    pumps: Vec<JoinHandle<()>>,
    exit: Option<QemuExit>,
}

impl QemuProcess {
    /// Starts QEMU with `cfg.args()`. Must be called inside a tokio runtime.
    /// Returns once the process exists; QEMU may still fail (bad option, missing
    /// file): that shows as an early exit with the reason in [`QemuExit`].
    /// Before it runs, QEMU writes itself into each of `cgroups` (open
    /// `cgroup.procs` files), so it never runs outside its caps.
    pub fn spawn(
        bin: &QemuBinary,
        cfg: &VmConfig,
        cgroups: &[std::os::fd::RawFd],
    ) -> Result<QemuProcess, QemuError> {
        cfg.validate()?;
        let args = cfg.args();
        tracing::debug!(name = %cfg.name, cmd = %format!("{} {}", bin.path.display(), args.join(" ")), "spawning QEMU");
        let mut cmd = Command::new(&bin.path);
        // With a network card QEMU lives in the card's namespace: it opens the
        // tap there, and sees no other network than the sandbox's.
        let netns = match &cfg.nic {
            Some(n) => Some(
                std::fs::File::open(&n.netns).map_err(|source| QemuError::Spawn {
                    path: n.netns.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        if let Some(f) = &netns {
            let fd = std::os::fd::AsRawFd::as_raw_fd(f);
            // SAFETY: between fork and exec the closure only calls setns, which
            // is async-signal-safe, on a descriptor open until after spawn.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if !cgroups.is_empty() {
            let fds = cgroups.to_vec();
            // SAFETY: between fork and exec the closure only calls write(2),
            // which is async-signal-safe, on descriptors the caller keeps open
            // until after spawn; `fds` was allocated before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    for fd in &fds {
                        if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|source| QemuError::Spawn {
                path: bin.path.clone(),
                source,
            })?;
        let pid = child.id().unwrap_or(0);
        let tail: Tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(
                out,
                tail.clone(),
                cfg.name.clone(),
                "stdout",
            )));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(
                err,
                tail.clone(),
                cfg.name.clone(),
                "stderr",
            )));
        }
        tracing::info!(name = %cfg.name, pid, "QEMU started");
        Ok(QemuProcess {
            handle: Handle::Child(child),
            detached: false,
            pid,
            name: cfg.name.clone(),
            tail,
            pumps,
            exit: None,
        })
    }

    /// A QEMU this process did not start (a previous daemon's), by pid. The
    /// caller checks first that `pid` is the QEMU it means (its command line).
    pub fn adopt(pid: u32, name: &str) -> Result<QemuProcess, QemuError> {
        let fd = PidFd::open(pid).map_err(|source| QemuError::Process {
            op: "pidfd_open",
            pid,
            source,
        })?;
        Ok(QemuProcess {
            handle: Handle::Adopted(fd),
            detached: false,
            pid,
            name: name.to_string(),
            tail: Arc::new(Mutex::new(VecDeque::new())),
            pumps: Vec::new(),
            exit: None,
        })
    }

    /// Leave QEMU running when this handle is dropped (a daemon exiting for an
    /// upgrade; the next one adopts it).
    pub fn detach(&mut self) {
        self.detached = true;
    }

    /// A handle on the process that survives pid reuse (for taking its
    /// descriptors back).
    pub fn pidfd(&self) -> Result<PidFd, QemuError> {
        PidFd::open(self.pid).map_err(|source| QemuError::Process {
            op: "pidfd_open",
            pid: self.pid,
            source,
        })
    }

    /// The process id (record it: the daemon kills stale QEMUs at startup).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The VM name given in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last lines QEMU printed so far.
    pub fn stderr_tail(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().map(|l| format!("{l}\n")).collect()
    }

    /// Waits for the process to exit (no timeout: see [`QemuProcess::wait_timeout`]).
    pub async fn wait(&mut self) -> Result<QemuExit, QemuError> {
        if let Some(e) = &self.exit {
            return Ok(e.clone());
        }
        let pid = self.pid;
        let status = match &mut self.handle {
            Handle::Child(c) => Some(c.wait().await.map_err(|source| QemuError::Process {
                op: "wait",
                pid,
                source,
            })?),
            Handle::Adopted(fd) => {
                fd.exited().await.map_err(|source| QemuError::Process {
                    op: "wait",
                    pid,
                    source,
                })?;
                None
            }
        };
        Ok(self.finish(status).await)
    }

    /// Waits at most `timeout` for the process to exit.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Result<QemuExit, QemuError> {
        match tokio::time::timeout(timeout, self.wait()).await {
            Ok(r) => r,
            Err(_) => Err(QemuError::ExitTimeout {
                pid: self.pid,
                waited: timeout,
                op: "wait",
            }),
        }
    }

    /// The exit, if the process has exited.
    pub async fn try_wait(&mut self) -> Result<Option<QemuExit>, QemuError> {
        if let Some(e) = &self.exit {
            return Ok(Some(e.clone()));
        }
        let pid = self.pid;
        let exited = match &mut self.handle {
            Handle::Child(c) => c
                .try_wait()
                .map_err(|source| QemuError::Process {
                    op: "try_wait",
                    pid,
                    source,
                })?
                .map(Some),
            Handle::Adopted(fd) => fd.has_exited().then_some(None),
        };
        match exited {
            Some(status) => Ok(Some(self.finish(status).await)),
            None => Ok(None),
        }
    }

    /// An error saying the VM exited, for callers that expected it running.
    pub fn exited_error(&self, exit: QemuExit) -> QemuError {
        QemuError::Exited {
            name: self.name.clone(),
            pid: self.pid,
            exit,
        }
    }

    /// Ends the process: SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub async fn kill(&mut self, grace: Duration) -> Result<QemuExit, QemuError> {
        if let Some(e) = self.try_wait().await? {
            return Ok(e);
        }
        if let Err(e) = self.signal(libc::SIGTERM) {
            tracing::warn!(pid = self.pid, error = %e, "SIGTERM failed");
        }
        if let Ok(r) = tokio::time::timeout(grace, self.wait()).await {
            return r;
        }
        tracing::warn!(name = %self.name, pid = self.pid, ?grace, "QEMU ignored SIGTERM; sending SIGKILL");
        self.signal(libc::SIGKILL)
            .map_err(|source| QemuError::Process {
                op: "SIGKILL",
                pid: self.pid,
                source,
            })?;
        match tokio::time::timeout(REAP_TIMEOUT, self.wait()).await {
            Ok(r) => r,
            Err(_) => Err(QemuError::ExitTimeout {
                pid: self.pid,
                waited: REAP_TIMEOUT,
                op: "SIGKILL",
            }),
        }
    }

    /// Signal QEMU: our un-reaped child, or through its pidfd; either way
    /// never a process that reused the pid.
    fn signal(&self, sig: i32) -> std::io::Result<()> {
        match &self.handle {
            Handle::Child(_) => {
                let pid = libc::pid_t::try_from(self.pid)
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
                // SAFETY: kill(2) has no memory effects; `pid` is our child and not
                // yet reaped (callers checked with try_wait), so it is not recycled.
                if unsafe { libc::kill(pid, sig) } == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
            Handle::Adopted(fd) => fd.signal(sig),
        }
    }

    async fn finish(&mut self, status: Option<ExitStatus>) -> QemuExit {
        // The pipes close when QEMU exits; give the pumps a moment to drain.
        for p in self.pumps.drain(..) {
            let _ = tokio::time::timeout(Duration::from_millis(500), p).await;
        }
        let exit = QemuExit {
            status,
            stderr_tail: self.stderr_tail(),
        };
        tracing::info!(name = %self.name, pid = self.pid, ?status, "QEMU exited");
        self.exit = Some(exit.clone());
        exit
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        for p in &self.pumps {
            p.abort();
        }
        if !self.detached && self.exit.is_none() {
            // Best effort: the process may be gone already (then ESRCH).
            let _ = self.signal(libc::SIGKILL);
            if let Handle::Child(c) = &mut self.handle {
                let _ = c.try_wait();
            }
        }
    }
}

async fn pump<R: AsyncRead + Unpin>(r: R, tail: Tail, name: String, stream: &'static str) {
    let mut lines = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match lines.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let mut line = String::from_utf8_lossy(&buf).trim_end().to_string();
                if line.len() > MAX_LINE {
                    let mut cut = MAX_LINE;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    line.truncate(cut);
                }
                tracing::debug!(vm = %name, stream, "qemu: {line}");
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    }
}

/// Creates a qcow2 `overlay` backed by `base` (`qemu-img create -f qcow2 -F
/// <base_format> -b <base> <overlay>`). `base` is made absolute first (qemu-img
/// resolves a relative backing path against the overlay's directory).
pub async fn create_overlay(
    base: &Path,
    base_format: &str,
    overlay: &Path,
) -> Result<(), QemuError> {
    let err = |detail: String| QemuError::Overlay {
        base: base.to_path_buf(),
        overlay: overlay.to_path_buf(),
        detail,
    };
    if !matches!(base_format, "raw" | "qcow2") {
        return Err(err(format!(
            "base format {base_format:?} is not \"raw\" or \"qcow2\""
        )));
    }
    let base_abs =
        std::fs::canonicalize(base).map_err(|e| err(format!("base image unreadable: {e}")))?;
    run_qemu_img(
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            base_format.as_ref(),
            "-b".as_ref(),
            base_abs.as_os_str(),
            overlay.as_os_str(),
        ],
        err,
    )
    .await?;
    tracing::debug!(?base_abs, ?overlay, "qcow2 overlay created");
    Ok(())
}

/// Creates a qcow2 `overlay` of `size` bytes whose header names `base` as its
/// backing file *without opening it* (`qemu-img create -u`): for the overlay a
/// running sandbox moves to during a branch, whose backing file only reaches
/// its final path inside the pause (`blockdev-snapshot-sync` mode `existing`).
pub async fn create_overlay_unchecked(
    base: &Path,
    base_format: &str,
    size: u64,
    overlay: &Path,
) -> Result<(), QemuError> {
    let err = |detail: String| QemuError::Overlay {
        base: base.to_path_buf(),
        overlay: overlay.to_path_buf(),
        detail,
    };
    if !base.is_absolute() {
        return Err(err("the backing path must be absolute".into()));
    }
    let size = size.to_string();
    run_qemu_img(
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-u".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            base_format.as_ref(),
            "-b".as_ref(),
            base.as_os_str(),
            overlay.as_os_str(),
            size.as_ref(),
        ],
        err,
    )
    .await
}

/// Runs `qemu-img` with `args` under [`QEMU_IMG_TIMEOUT`]; failures go through
/// `err` with qemu-img's own message.
async fn run_qemu_img(
    args: &[&std::ffi::OsStr],
    err: impl Fn(String) -> QemuError,
) -> Result<(), QemuError> {
    run_qemu_img_output(args, err).await.map(drop)
}

/// [`run_qemu_img`] that returns what qemu-img printed.
async fn run_qemu_img_output(
    args: &[&std::ffi::OsStr],
    err: impl Fn(String) -> QemuError,
) -> Result<Vec<u8>, QemuError> {
    let img = crate::qemu_img_path()?;
    let mut cmd = Command::new(&img);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(QEMU_IMG_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            err(format!(
                "{} did not finish within {QEMU_IMG_TIMEOUT:?}",
                img.display()
            ))
        })?
        .map_err(|e| err(format!("running {}: {e}", img.display())))?;
    if !out.status.success() {
        return Err(err(format!(
            "{} ({})",
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        )));
    }
    Ok(out.stdout)
}

/// The backing file a qcow2 `image` names (as written in its header) and its
/// format, or `None` for an image without one.
pub async fn backing_file(image: &Path) -> Result<Option<(PathBuf, String)>, QemuError> {
    let err = |detail: String| QemuError::Overlay {
        base: PathBuf::new(),
        overlay: image.to_path_buf(),
        detail,
    };
    let out = run_qemu_img_output(
        &[
            "info".as_ref(),
            "--output=json".as_ref(),
            "-U".as_ref(),
            image.as_os_str(),
        ],
        err,
    )
    .await?;
    let v: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|e| err(format!("qemu-img info printed no JSON: {e}")))?;
    Ok(v["backing-filename"].as_str().map(|b| {
        let format = v["backing-filename-format"]
            .as_str()
            .unwrap_or("raw")
            .to_string();
        (PathBuf::from(b), format)
    }))
}

/// Rewrites the backing file named in qcow2 `image`'s header to `base` (of
/// `base_format`) without touching the data (`qemu-img rebase -u`): for a
/// disk chain moved to other paths, the same contents.
pub async fn rebase_unchecked(
    image: &Path,
    base: &Path,
    base_format: &str,
) -> Result<(), QemuError> {
    let err = |detail: String| QemuError::Overlay {
        base: base.to_path_buf(),
        overlay: image.to_path_buf(),
        detail,
    };
    if !base.is_absolute() {
        return Err(err("the backing path must be absolute".into()));
    }
    run_qemu_img(
        &[
            "rebase".as_ref(),
            "-u".as_ref(),
            "-F".as_ref(),
            base_format.as_ref(),
            "-b".as_ref(),
            base.as_os_str(),
            image.as_os_str(),
        ],
        err,
    )
    .await
}

/// Reads at most the last `max_bytes` of a file (e.g. the console log, for error
/// messages). A missing file reads as empty.
pub fn read_tail(path: &Path, max_bytes: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut buf = Vec::new();
    let _ = f.take(max_bytes).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
