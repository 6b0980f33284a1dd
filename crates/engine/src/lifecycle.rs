//! Booting, supervising and removing sandboxes, and cleaning up after a daemon
//! that died. Every resource a sandbox holds (QEMU process, memfd, overlay,
//! sockets, runtime directory, database row) is released on every path here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn, Instrument};
use zygote_mem::Region;
use zygote_proto::api::{CreateSandbox, SandboxInfo, SandboxState};
use zygote_qemu::{QemuProcess, VmConfig};

use crate::agent_link::{AgentLink, LinkError};
use crate::error::{EngineError, Result};
use crate::sandbox::{Command, DiskState, MachineFacts, Sandbox, SandboxMemory, Spec};
use crate::store::SandboxRow;
use crate::{
    paths, Engine, DEFAULT_IMAGE, DEFAULT_MEMORY_MIB, MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB,
};

/// How long QEMU gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Lines of console shown in a boot error.
const CONSOLE_TAIL_LINES: usize = 30;

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random, unguessable sandbox id (96 bits).
pub(crate) fn new_id() -> String {
    let mut b = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The last lines of a console log.
pub(crate) fn console_tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(CONSOLE_TAIL_LINES);
    let tail = lines[start..].join("\n");
    if tail.trim().is_empty() {
        "(the console is empty)".to_string()
    } else {
        tail
    }
}

impl Engine {
    /// Create a sandbox and boot it; returns once its agent answers.
    pub async fn create(self: &Arc<Self>, req: CreateSandbox) -> Result<SandboxInfo> {
        self.check_open()?;
        let CreateSandbox {
            image,
            memory_mib,
            vcpus,
            env,
            timeout_secs,
        } = req;
        let memory_mib = memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&memory_mib) {
            return Err(EngineError::BadRequest(format!(
                "memory_mib {memory_mib} is out of range: pass {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}"
            )));
        }
        let vcpus = vcpus.unwrap_or(1);
        if !(1..=MAX_VCPUS).contains(&vcpus) {
            return Err(EngineError::BadRequest(format!(
                "vcpus {vcpus} is out of range: pass 1..={MAX_VCPUS}"
            )));
        }
        for k in env.keys() {
            paths::env_name(k)?;
        }
        if timeout_secs == Some(0) {
            return Err(EngineError::BadRequest(
                "timeout_secs 0 would remove the sandbox at once: pass a lifetime in seconds, or omit it".into(),
            ));
        }
        let image_name = image.unwrap_or_else(|| DEFAULT_IMAGE.to_string());
        zygote_image::validate_name(&image_name)?;
        let home = self.cfg.home.clone();
        let lookup = image_name.clone();
        let image = tokio::task::spawn_blocking(move || zygote_image::resolve(&home, &lookup))
            .await
            .map_err(|e| EngineError::BadRequest(format!("image lookup failed: {e}")))??;

        let created = now_unix();
        let sb = self.register(
            Spec {
                image: image_name,
                memory_mib,
                vcpus,
                env,
                accel: self.accel.accel.to_string(),
                expires_at_unix: timeout_secs.map(|t| created + t),
            },
            None,
        )?;
        let id = sb.id.clone();
        let span = sb.span.clone();

        match self.boot(&sb, &image).instrument(span.clone()).await {
            Ok(()) => {
                if let Some(secs) = timeout_secs {
                    let weak = Arc::downgrade(self);
                    let id = id.clone();
                    tokio::spawn(
                        async move {
                            tokio::time::sleep(Duration::from_secs(secs)).await;
                            if let Some(e) = weak.upgrade() {
                                info!("lifetime over: removing");
                                let _ = e.remove(&id).await;
                            }
                        }
                        .instrument(span),
                    );
                }
                Ok(sb.info())
            }
            Err(e) => {
                warn!(parent: &span, error = %e, "boot failed; cleaning up");
                let _ = self.remove(&id).await;
                Err(e)
            }
        }
    }

    async fn boot(
        self: &Arc<Self>,
        sb: &Arc<Sandbox>,
        image: &zygote_image::ImageInfo,
    ) -> Result<()> {
        let mem = Arc::new(Region::create(
            &format!("zygote-{}", sb.id),
            sb.spec.memory_mib << 20,
            false,
        )?);
        let overlay = sb.dir.join("disk.qcow2");
        zygote_qemu::create_overlay(&image.rootfs, "raw", &overlay).await?;
        *sb.disk.lock().unwrap_or_else(|p| p.into_inner()) = Some(DiskState {
            top: overlay.clone(),
            chain: Vec::new(),
            virtual_size: image.rootfs_bytes,
            generation: 1,
        });
        let _ = sb.machine.set(MachineFacts {
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            append: self.append.clone(),
            cpu: zygote_qemu::cpu_model(self.accel.accel).to_string(),
        });
        let agent_socket = sb.dir.join("agent.sock");
        let cfg = VmConfig {
            accel: self.accel.accel,
            cpu: zygote_qemu::cpu_model(self.accel.accel).to_string(),
            memory_mib: sb.spec.memory_mib,
            vcpus: sb.spec.vcpus,
            mem_path: mem.backend_path(),
            mem_share: true,
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            append: self.append.clone(),
            disk: overlay,
            qmp_socket: sb.dir.join("qmp.sock"),
            agent_socket: agent_socket.clone(),
            console_log: sb.console_log(),
            incoming_defer: false,
            start_paused: false,
            tb_size_mib: None,
            name: format!("zygote-{}", sb.id),
            xfer_disk: crate::xfer_disk_for(&sb.dir)?,
        };
        let t0 = Instant::now();
        self.launch(sb, &cfg, SandboxMemory::Own(mem))?;
        let timeout = self.cfg.boot_timeout;
        let (link, qmp) = tokio::join!(connect_agent(sb, timeout), connect_qmp(sb, timeout));
        if let Err(e) = qmp {
            warn!(error = %e, "no QMP connection: branching this sandbox will fail");
        }
        let link = link?;
        let ms = t0.elapsed().as_millis() as u64;
        let _ = sb.boot_ms.set(ms);
        info!(boot_ms = ms, agent = %link.hello().agent_version, "agent ready");
        let _ = sb.link.set(Arc::new(link));
        if sb.set_state(SandboxState::Running, None) {
            self.store.set_state(&sb.id, "running", None, None)?;
        }
        Ok(())
    }

    /// Remove a sandbox: stop QEMU, free its memory, delete its overlay,
    /// sockets and directory, forget it.
    pub async fn remove(self: &Arc<Self>, id: &str) -> Result<()> {
        let sb = self
            .map()
            .remove(id)
            .ok_or_else(|| EngineError::NotFound { id: id.to_string() })?;
        let _ = sb.set_state(SandboxState::Stopping, None);
        let tx = sb.cmd.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Command::Stop { done }).await.is_ok() {
                let _ = wait.await;
            }
        }
        let _ = sb.set_state(SandboxState::Dead, Some("removed".into()));
        if let Err(e) = std::fs::remove_dir_all(&sb.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(parent: &sb.span, error = %e, dir = %sb.dir.display(), "cannot remove the sandbox directory");
            }
        }
        self.store.delete(id)?;
        info!(parent: &sb.span, "removed");
        Ok(())
    }

    /// A new sandbox in `Booting`: its runtime directory, its database row, its
    /// place in the map. Whoever registers it removes it on failure.
    pub(crate) fn register(
        &self,
        spec: Spec,
        snapshot_tag: Option<String>,
    ) -> Result<Arc<Sandbox>> {
        self.register_as(new_id(), spec, snapshot_tag)
    }

    /// [`Engine::register`] under an id chosen earlier (a pre-started child's,
    /// whose runtime directory already exists).
    pub(crate) fn register_as(
        &self,
        id: String,
        spec: Spec,
        snapshot_tag: Option<String>,
    ) -> Result<Arc<Sandbox>> {
        let dir = self.sandbox_dir(&id);
        std::fs::create_dir_all(&dir).map_err(|source| EngineError::Io {
            what: format!("cannot create {}", dir.display()),
            source,
        })?;
        let created = now_unix();
        let row = SandboxRow {
            id: id.clone(),
            image: spec.image.clone(),
            state: "booting".into(),
            reason: None,
            pid: None,
            dir: dir.display().to_string(),
            memory_mib: spec.memory_mib,
            vcpus: spec.vcpus,
            accel: spec.accel.clone(),
            created_at_unix: created,
        };
        let sb = Arc::new(Sandbox::new(
            id.clone(),
            spec,
            dir,
            created,
            snapshot_tag,
            SandboxState::Booting,
            None,
        ));
        self.store.insert(&row)?;
        self.map().insert(id, sb.clone());
        Ok(sb)
    }

    /// Start QEMU for `sb` and hand the process, with the guest memory, to the
    /// sandbox's supervisor task.
    pub(crate) fn launch(
        self: &Arc<Self>,
        sb: &Arc<Sandbox>,
        cfg: &VmConfig,
        memory: SandboxMemory,
    ) -> Result<()> {
        let proc = QemuProcess::spawn(&self.qemu, cfg)?;
        self.adopt(sb, proc, memory)
    }

    /// Runtime directory of the sandbox `id`.
    pub(crate) fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.cfg.home.join("sandboxes").join(id)
    }

    /// Hand a started QEMU, with the guest memory, to the sandbox's supervisor
    /// task, its one owner from here on.
    pub(crate) fn adopt(
        self: &Arc<Self>,
        sb: &Arc<Sandbox>,
        proc: QemuProcess,
        memory: SandboxMemory,
    ) -> Result<()> {
        let pid = proc.pid();
        let _ = sb.pid.set(pid);
        self.store.set_state(&sb.id, "booting", None, Some(pid))?;
        info!(pid, "QEMU started");
        *sb.memory.lock().unwrap_or_else(|p| p.into_inner()) = Some(memory);
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        *sb.cmd.lock().unwrap_or_else(|p| p.into_inner()) = Some(cmd_tx);
        tokio::spawn(
            supervise(Arc::downgrade(self), sb.clone(), proc, cmd_rx).instrument(sb.span.clone()),
        );
        Ok(())
    }

    /// Clean up after a previous daemon: QEMU processes it left are stopped,
    /// their directories removed, and their sandboxes reported dead.
    pub(crate) fn recover(&self) -> Result<()> {
        for row in self.store.all()? {
            let Some(state) = crate::state::parse(&row.state) else {
                warn!(id = %row.id, state = %row.state, "unknown stored state; treating as dead");
                continue;
            };
            let reason = match state {
                SandboxState::Dead => row.reason.clone(),
                SandboxState::Booting | SandboxState::Running | SandboxState::Stopping => {
                    if let Some(pid) = row.pid {
                        if crate::stale::kill_stale(pid, &row.dir) {
                            info!(id = %row.id, pid, "stopped a QEMU left by a previous daemon");
                        }
                    }
                    let reason = "the daemon that ran it stopped; its VM was shut down".to_string();
                    self.store.set_state(&row.id, "dead", Some(&reason), None)?;
                    Some(reason)
                }
            };
            let _ = std::fs::remove_dir_all(&row.dir);
            let sb = Arc::new(Sandbox::new(
                row.id.clone(),
                Spec {
                    image: row.image.clone(),
                    memory_mib: row.memory_mib,
                    vcpus: row.vcpus,
                    env: Default::default(),
                    accel: row.accel.clone(),
                    expires_at_unix: None,
                },
                row.dir.clone().into(),
                row.created_at_unix,
                None,
                SandboxState::Dead,
                reason,
            ));
            self.map().insert(row.id, sb);
        }
        // Directories no row names are leftovers of a crash between mkdir and insert.
        if let Ok(rd) = std::fs::read_dir(self.cfg.home.join("sandboxes")) {
            let known: std::collections::HashSet<String> = self.map().keys().cloned().collect();
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !known.contains(&name) {
                    // Pre-started children have no row: stop what runs there.
                    let killed = crate::stale::kill_qemus_in(&e.path());
                    if killed > 0 {
                        info!(dir = %e.path().display(), killed, "stopped QEMUs a previous daemon pre-started");
                    }
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }
}

/// Connect to the agent of a sandbox whose QEMU runs (boot or restore), failing
/// early with the console's tail if QEMU dies or the timeout passes.
pub(crate) async fn connect_agent(sb: &Arc<Sandbox>, timeout: Duration) -> Result<AgentLink> {
    let agent_socket = sb.dir.join("agent.sock");
    agent_or_death(sb, AgentLink::connect(&agent_socket, timeout), timeout).await
}

/// Wait for an agent handshake `fut`, failing early if QEMU dies; errors carry
/// the console's tail.
pub(crate) async fn agent_or_death<F>(
    sb: &Arc<Sandbox>,
    fut: F,
    timeout: Duration,
) -> Result<AgentLink>
where
    F: std::future::Future<Output = std::result::Result<AgentLink, LinkError>>,
{
    let mut st = sb.state.subscribe();
    let link = tokio::select! {
        r = fut => r,
        _ = st.wait_for(|s| s.0 == SandboxState::Dead) => {
            Err(LinkError::Closed(sb.state.borrow().1.clone().unwrap_or_else(|| "QEMU exited".into())))
        }
    };
    link.map_err(|e| link_error(sb, e, timeout))
}

/// A failed agent connection as a boot error with the console's tail.
pub(crate) fn link_error(sb: &Sandbox, e: LinkError, timeout: Duration) -> EngineError {
    let timed_out = matches!(e, LinkError::HandshakeTimeout(_));
    EngineError::Boot {
        reason: if timed_out {
            format!("the guest agent did not answer within {timeout:?} (raise the boot timeout on slow hosts)")
        } else {
            e.to_string()
        },
        console_tail: console_tail(&sb.console_log()),
        timed_out,
    }
}

/// Connect the sandbox's QMP socket and keep the connection.
pub(crate) async fn connect_qmp(
    sb: &Arc<Sandbox>,
    timeout: Duration,
) -> Result<Arc<zygote_qemu::Qmp>> {
    let q = Arc::new(zygote_qemu::Qmp::connect(&sb.dir.join("qmp.sock"), timeout).await?);
    let _ = sb.qmp.set(q.clone());
    Ok(q)
}

/// The one owner of a sandbox's QEMU process; frees its guest memory when
/// QEMU is gone.
pub(crate) async fn supervise(
    engine: Weak<Engine>,
    sb: Arc<Sandbox>,
    mut proc: QemuProcess,
    mut cmds: mpsc::Receiver<Command>,
) {
    let stop_reply = tokio::select! {
        status = proc.wait() => {
            let reason = match status {
                Ok(st) => format!("QEMU exited unexpectedly ({st})"),
                Err(e) => format!("QEMU could not be waited for: {e}"),
            };
            let tail = console_tail(&sb.console_log());
            warn!(%reason, console = %tail, "sandbox died");
            if sb.set_state(SandboxState::Dead, Some(reason.clone())) {
                if let Some(e) = engine.upgrade() {
                    let _ = e.store.set_state(&sb.id, "dead", Some(&reason), None);
                }
            }
            None
        }
        cmd = cmds.recv() => {
            let done = cmd.map(|c| match c {
                Command::Stop { done } => done,
            });
            if let Err(e) = proc.kill(STOP_GRACE).await {
                warn!(error = %e, "stopping QEMU failed");
            }
            done
        }
    };
    // QEMU is gone: free the guest memory before anyone is told.
    *sb.memory.lock().unwrap_or_else(|p| p.into_inner()) = None;
    drop(proc);
    if let Some(done) = stop_reply {
        let _ = done.send(());
    }
    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Command::Stop { done } => {
                let _ = done.send(());
            }
        }
    }
}
