//! Booting, registering, supervising and removing sandboxes, and cleaning up
//! after a daemon that died. Every resource a sandbox holds (QEMU process,
//! memfd, overlay, sockets, runtime directory, database row) is released on
//! every path here.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn, Instrument};

use crate::error::{EngineError, Result};
use crate::model::{
    CreateSpec, Expiry, Lifetime, ListQuery, NetworkRequest, SandboxState, SandboxView,
};
use crate::observe::Timing;
use crate::sandbox::{Command, Expires, Sandbox, Spec};
use crate::vm::Running;
use crate::{
    paths, Engine, DEFAULT_IMAGE, DEFAULT_MEMORY_MIB, MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB,
};

/// How long QEMU gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Most labels on one sandbox.
const MAX_LABELS: usize = 64;

/// Refuse labels that are too many, too long or oddly named.
pub(crate) fn check_labels(m: &crate::model::Metadata) -> Result<()> {
    if m.len() > MAX_LABELS {
        return Err(EngineError::BadRequest(format!(
            "{} metadata labels: pass at most {MAX_LABELS}",
            m.len()
        )));
    }
    for (k, v) in m {
        let ok = !k.is_empty()
            && k.len() <= 64
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
        if !ok {
            return Err(EngineError::BadRequest(format!(
                "metadata key `{k}` is invalid: use 1-64 characters from A-Z a-z 0-9 . _ - /"
            )));
        }
        if v.len() > 512 {
            return Err(EngineError::BadRequest(format!(
                "metadata value of `{k}` is {} bytes: keep it under 512",
                v.len()
            )));
        }
    }
    Ok(())
}

/// Refuse a lifetime of zero (it would end at once).
pub(crate) fn check_lifetime(l: &crate::model::Lifetime) -> Result<()> {
    if l.secs == Some(0) {
        return Err(EngineError::BadRequest(
            "timeout_secs 0 would remove the sandbox at once: pass a lifetime in seconds, or omit it".into(),
        ));
    }
    Ok(())
}

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
    crate::console::tail(path)
}

impl Engine {
    /// Create a sandbox and boot it; returns once its agent answers.
    pub async fn create(self: &Arc<Self>, req: CreateSpec) -> Result<SandboxView> {
        self.check_open()?;
        let CreateSpec {
            image,
            memory_mib,
            vcpus,
            env,
            lifetime,
            metadata,
            volumes,
            network,
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
        check_lifetime(&lifetime)?;
        check_labels(&metadata)?;
        let image_name = image.unwrap_or_else(|| DEFAULT_IMAGE.to_string());
        zygote_image::validate_name(&image_name)?;
        let home = self.cfg.home.clone();
        let lookup = image_name.clone();
        let image = tokio::task::spawn_blocking(move || zygote_image::resolve(&home, &lookup))
            .await
            .map_err(|e| EngineError::BadRequest(format!("image lookup failed: {e}")))??;

        let _admitted = self.admit(1, memory_mib)?;
        let id = new_id();
        let span = tracing::info_span!("sandbox", id = %id);
        let policy = match network {
            NetworkRequest::Off => None,
            NetworkRequest::Inherit if self.net.is_none() => None,
            NetworkRequest::Inherit => Some(zygote_net::Policy::open()),
            NetworkRequest::Policy(p) => Some(p),
        };
        let machine = self.machine_for(&image, memory_mib, vcpus, policy.is_some());
        let lease = self
            .volumes
            .attach(&id, &volumes, machine.volume_slots)
            .await?;
        let running = self
            .launching(self.boot_vm(&id, machine, &image, lease, policy))
            .instrument(span.clone())
            .await
            .inspect_err(|e| warn!(parent: &span, error = %e, "boot failed"))?;
        let created = now_unix();
        self.observe(Timing::Booted {
            ms: running.ready_ms,
        });
        let sb = self.register(
            running,
            Spec {
                image: image_name,
                env,
                metadata,
            },
            Expires::from_now(lifetime),
            None,
            created,
        )?;
        Ok(sb.view())
    }

    /// A new lifetime for a sandbox, from now.
    pub async fn set_timeout(
        self: &Arc<Self>,
        id: &str,
        lifetime: Lifetime,
    ) -> Result<SandboxView> {
        check_lifetime(&lifetime)?;
        let sb = self.get(id)?;
        match sb.state() {
            SandboxState::Running | SandboxState::Paused => {}
            st @ (SandboxState::Booting | SandboxState::Stopping | SandboxState::Dead) => {
                return Err(EngineError::NotRunning {
                    id: id.to_string(),
                    state: st.as_str(),
                    reason: None,
                })
            }
        }
        sb.set_expires(Expires::from_now(lifetime));
        Ok(sb.view())
    }

    /// Run what is due for every sandbox whose lifetime ran out (the engine's
    /// expiry task calls this a few times a second).
    pub(crate) async fn expire_due(self: &Arc<Self>) {
        let now = now_ms();
        let due: Vec<(Arc<Sandbox>, Expiry)> = self
            .map()
            .values()
            .filter_map(|sb| sb.take_due(now).map(|a| (sb.clone(), a)))
            .collect();
        for (sb, action) in due {
            let e = self.clone();
            let span = sb.span.clone();
            tokio::spawn(
                async move {
                    info!(?action, "lifetime over");
                    let r = match action {
                        Expiry::Pause if sb.state() == SandboxState::Running => {
                            e.pause(&sb.id).await.map(|_| ())
                        }
                        Expiry::Pause => Ok(()),
                        Expiry::Kill => e.remove(&sb.id).await,
                    };
                    if let Err(err) = r {
                        warn!(error = %err, "the end of a lifetime failed");
                    }
                }
                .instrument(span),
            );
        }
    }

    /// Sandboxes matching `q`, oldest first.
    pub fn list_where(&self, q: &ListQuery) -> Vec<SandboxView> {
        let mut v: Vec<SandboxView> = self
            .map()
            .values()
            .filter(|s| q.state.is_none_or(|st| s.state() == st) && s.has_labels(&q.metadata))
            .map(|s| s.view())
            .collect();
        v.sort_by(|a, b| {
            a.created_at_unix
                .cmp(&b.created_at_unix)
                .then(a.id.cmp(&b.id))
        });
        v
    }

    /// Remove a sandbox: stop QEMU, free its memory, delete its overlay,
    /// sockets and directory, forget it.
    pub async fn remove(self: &Arc<Self>, id: &str) -> Result<()> {
        let sb = self
            .map()
            .remove(id)
            .ok_or_else(|| EngineError::NotFound { id: id.to_string() })?;
        let _ = sb.set_state(SandboxState::Stopping, None);
        if let Some(g) = &sb.guest {
            let (done, wait) = oneshot::channel();
            if g.cmd.send(Command::Stop { done }).await.is_ok() {
                let _ = wait.await;
            }
        }
        let _ = sb.set_state(SandboxState::Dead, Some("removed".into()));
        sb.dir.remove();
        // QEMU is gone: its volumes are free for others.
        self.volumes.detach(id);
        if let Some(p) = &sb.paused {
            // A paused sandbox is its snapshot: it goes with it.
            let _ = self.snapshots.delete(&p.snapshot);
        }
        // Its disk chain is free now (whoever still holds the sandbox value),
        // and a generation only it needed (its snapshot deleted meanwhile)
        // goes at once.
        {
            let mut disk = sb.disk.lock().unwrap_or_else(|p| p.into_inner());
            disk.chain = disk.chain.none();
        }
        self.snapshots.gc_disks();
        self.store.delete(id)?;
        info!(parent: &sb.span, "removed");
        Ok(())
    }

    /// Register a running VM as a sandbox: its database row, its place in the
    /// map, and the supervisor task that owns its QEMU from here on. Refused
    /// (and the VM stopped) once the engine is shutting down.
    pub(crate) fn register(
        self: &Arc<Self>,
        running: Running,
        spec: Spec,
        expires: Expires,
        snapshot_tag: Option<String>,
        created_at_unix: u64,
    ) -> Result<Arc<Sandbox>> {
        self.check_open()?;
        let (sb, process, cmds) = Sandbox::running(
            running,
            spec,
            expires,
            snapshot_tag,
            created_at_unix,
            self.store.clone(),
        )?;
        self.map().insert(sb.id.clone(), sb.clone());
        tokio::spawn(supervise(sb.clone(), process, cmds).instrument(sb.span.clone()));
        Ok(sb)
    }

    /// Take over from a previous daemon: a sandbox whose QEMU still runs is
    /// re-adopted (its memory, QMP and agent link taken back); the others are
    /// reported dead with the reason and their directories removed; QEMUs in
    /// directories no row names (interrupted starts, pre-started children)
    /// are killed.
    pub(crate) async fn recover(self: &Arc<Self>) -> Result<()> {
        for row in self.store.all()? {
            let reason = match row.state {
                SandboxState::Dead => row.reason.clone(),
                // A paused sandbox is its snapshot on disk: nothing runs.
                SandboxState::Paused => {
                    let id = row.id.clone();
                    match Sandbox::paused_from_row(
                        row,
                        self.store.clone(),
                        self.snapshots.hold(Vec::new()),
                    ) {
                        Some(sb) => {
                            self.map().insert(id, Arc::new(sb));
                        }
                        None => {
                            warn!(%id, "a paused sandbox's row names no snapshot; forgetting it");
                            self.store.delete(&id)?;
                        }
                    }
                    continue;
                }
                SandboxState::Booting | SandboxState::Running | SandboxState::Stopping => {
                    let dir = row.dir.to_string_lossy().to_string();
                    let alive = row.pid.filter(|pid| crate::stale::is_our_qemu(*pid, &dir));
                    let why = match (row.state, alive, &row.runtime) {
                        (SandboxState::Running, Some(pid), Some(facts)) => {
                            match self.adopt(&row, pid, facts).await {
                                Ok(()) => continue,
                                Err(e) => {
                                    warn!(id = %row.id, error = %e, "re-adopting a sandbox failed; stopping it");
                                    format!(
                                        "it could not be re-adopted after a daemon restart ({}); its VM was shut down",
                                        crate::error_chain(&e)
                                    )
                                }
                            }
                        }
                        (_, Some(_), _) => {
                            "the daemon that ran it stopped; its VM was shut down".to_string()
                        }
                        (_, None, _) => "its QEMU exited while no daemon ran".to_string(),
                    };
                    if let Some(pid) = row.pid {
                        if crate::stale::kill_stale(pid, &dir) {
                            info!(id = %row.id, pid, "stopped a QEMU left by a previous daemon");
                        }
                    }
                    self.store
                        .set_state(&row.id, SandboxState::Dead, Some(&why))?;
                    Some(why)
                }
            };
            let sb = Sandbox::dead(
                row,
                reason,
                self.store.clone(),
                self.snapshots.hold(Vec::new()),
            );
            sb.dir.remove();
            self.map().insert(sb.id.clone(), Arc::new(sb));
        }
        // Running and paused sandboxes hold their volumes again; views no
        // sandbox names go.
        for sb in self.map().values() {
            if matches!(sb.state(), SandboxState::Running | SandboxState::Paused) {
                self.volumes.adopt(&sb.id, &sb.volumes);
            }
        }
        self.volumes.sweep(&self.map().keys().cloned().collect());
        if let Ok(rd) = std::fs::read_dir(self.sandboxes_root()) {
            let known: std::collections::HashSet<String> = self.map().keys().cloned().collect();
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !known.contains(&name) {
                    let killed = crate::stale::kill_qemus_in(&e.path());
                    if killed > 0 {
                        info!(dir = %e.path().display(), killed, "stopped QEMUs a previous daemon left without a row");
                    }
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }

    /// Re-adopt the running sandbox of `row` and register it again.
    async fn adopt(
        self: &Arc<Self>,
        row: &crate::store::SandboxRow,
        pid: u32,
        facts: &crate::store::RuntimeFacts,
    ) -> Result<()> {
        let span = tracing::info_span!("sandbox", id = %row.id);
        let running = self.adopt_vm(row, pid, facts).instrument(span).await?;
        // The lifetime runs on: one that ended meanwhile acts at once.
        self.register(
            running,
            Spec {
                image: row.image.clone(),
                env: facts.env.clone(),
                metadata: facts.metadata.clone(),
            },
            Expires {
                at_ms: facts.expires_at_ms,
                on_expiry: facts.on_expiry,
            },
            row.snapshot_tag.clone(),
            row.created_at_unix,
        )?;
        Ok(())
    }
}

/// Mark `sb` dead after its QEMU exited on its own, saying why.
fn died(
    sb: &Sandbox,
    cgroup: Option<&crate::cgroup::Cgroup>,
    status: std::result::Result<zygote_qemu::QemuExit, zygote_qemu::QemuError>,
) {
    let reason = match status {
        _ if cgroup.is_some_and(|c| c.oom_killed()) => format!(
            "QEMU was killed by the kernel's OOM killer: it reached its cgroup's memory cap (guest RAM {} MiB plus QEMU's allowance; raise --cgroup-overhead-mib)",
            sb.machine.memory_mib
        ),
        Ok(st) => format!("QEMU exited unexpectedly ({st})"),
        Err(e) => format!("QEMU could not be waited for: {e}"),
    };
    let tail = console_tail(&sb.dir.console_log());
    warn!(%reason, console = %tail, "sandbox died");
    sb.set_state(SandboxState::Dead, Some(reason));
}

/// Why `link` closed, once it does (never, without one; a link closed
/// before is seen at once).
async fn link_closed(link: &mut Option<watch::Receiver<Option<String>>>) -> String {
    let Some(rx) = link else {
        return std::future::pending().await;
    };
    let why = rx.wait_for(|r| r.is_some()).await.map(|r| r.clone());
    match why {
        Ok(r) => r.unwrap_or_default(),
        Err(_) => {
            // The link is gone (the sandbox let it go): nothing more to watch.
            *link = None;
            std::future::pending().await
        }
    }
}

/// The one owner of a sandbox's QEMU process; frees its guest memory when
/// QEMU is gone.
async fn supervise(
    sb: Arc<Sandbox>,
    qemu: crate::sandbox::Qemu,
    mut cmds: mpsc::Receiver<Command>,
) {
    let crate::sandbox::Qemu {
        process: mut proc,
        cgroup,
    } = qemu;
    // The console log is cut back every few seconds (a guest may print
    // without end).
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    // A link that closes while QEMU runs leaves a sandbox nobody can reach.
    let mut link = sb.guest.as_ref().map(|g| g.link.closed_watch());
    let stop_reply = loop {
        tokio::select! {
            why = link_closed(&mut link) => {
                // QEMU's own exit, if it is on its way, says more.
                match tokio::time::timeout(Duration::from_secs(1), proc.wait()).await {
                    Ok(status) => died(&sb, cgroup.as_ref(), status),
                    Err(_) => {
                        let reason = format!("its guest agent cannot be reached ({why}); QEMU was stopped: remove the sandbox");
                        warn!(%reason, "sandbox dead");
                        sb.set_state(SandboxState::Dead, Some(reason));
                        if let Err(e) = proc.kill(STOP_GRACE).await {
                            warn!(error = %e, "stopping QEMU failed");
                        }
                    }
                }
                break None;
            }
            status = proc.wait() => {
                died(&sb, cgroup.as_ref(), status);
                break None;
            }
            _ = tick.tick() => {
                match crate::console::cap(&sb.dir.console_log(), crate::console::CAP_BYTES) {
                    Ok(true) => info!("console log cut back to its end"),
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "cannot cut the console log back"),
                }
            }
            cmd = cmds.recv() => match cmd {
                Some(Command::Detach { done }) => {
                    if let Some(n) = sb.net() {
                        n.detach();
                    }
                    proc.detach();
                    if let Some(c) = cgroup {
                        c.detach();
                    }
                    info!(pid = proc.pid(), "left running for the next daemon");
                    let _ = done.send(());
                    return;
                }
                Some(Command::Stop { done }) => {
                    if let Err(e) = proc.kill(STOP_GRACE).await {
                        warn!(error = %e, "stopping QEMU failed");
                    }
                    break Some(done);
                }
                None => {
                    if let Err(e) = proc.kill(STOP_GRACE).await {
                        warn!(error = %e, "stopping QEMU failed");
                    }
                    break None;
                }
            },
        }
    };
    // QEMU is gone: free the guest memory before anyone is told.
    *sb.memory.lock().unwrap_or_else(|p| p.into_inner()) = None;
    drop(proc);
    drop(cgroup);
    // Its namespace, veth pair, rules and exposed ports go with it.
    sb.net.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(done) = stop_reply {
        let _ = done.send(());
    }
    // Returning drops the receiver: a later `Stop` finds QEMU already gone.
}
