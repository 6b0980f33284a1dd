//! One sandbox: its identity, lifecycle state and the guest operations that run
//! through its agent link. A sandbox is built whole from a [`Running`] VM (or,
//! for one a previous daemon left, from its database row, dead); starting and
//! removal live in `lifecycle`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use zygote_proto::agent::{DirEntry, EvalResult, ExecRequest, FileStat};
use zygote_qemu::QemuProcess;

use crate::agent_link::AgentLink;
use crate::disks::DiskHold;
use crate::error::{EngineError, Result};
use crate::machine::Machine;
use crate::model::{
    ExecItems, ExecSpec, Expiry, FileRead, Lifetime, MemoryKind, Metadata, Program, SandboxState,
    SandboxView, UploadStream,
};
use crate::ops;
use crate::paths;
use crate::rundir::RuntimeDir;
use crate::state;
use crate::store::{RuntimeFacts, SandboxRow, Store};
use crate::vm::Running;
use crate::volumes::Attachment;
use zygote_net::SandboxNet;

/// Default time an eval may take.
pub(crate) const EVAL_TIMEOUT: Duration = Duration::from_secs(600);

/// Commands for the sandbox's supervisor task (the one owner of its QEMU process).
#[derive(Debug)]
pub(crate) enum Command {
    /// Stop QEMU: SIGTERM, then SIGKILL.
    Stop {
        /// Told when QEMU is gone.
        done: tokio::sync::oneshot::Sender<()>,
    },
    /// Let go of QEMU without stopping it (the daemon exits for an upgrade;
    /// the next one re-adopts it).
    Detach {
        /// Told once let go.
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// What a sandbox was made with and never changes.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Image name.
    pub(crate) image: String,
    /// Environment for every exec.
    pub(crate) env: BTreeMap<String, String>,
    /// Labels.
    pub(crate) metadata: Metadata,
}

/// When a sandbox's lifetime ends (milliseconds since the Unix epoch) and
/// what happens then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Expires {
    pub(crate) at_ms: Option<u64>,
    pub(crate) on_expiry: Expiry,
}

impl Expires {
    /// A lifetime starting now.
    pub(crate) fn from_now(l: Lifetime) -> Expires {
        Expires {
            at_ms: l.secs.map(|s| crate::lifecycle::now_ms() + s * 1000),
            on_expiry: l.on_expiry,
        }
    }
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
    Cow(Arc<zygote_mem::Region>),
}

impl SandboxMemory {
    fn kind(&self) -> MemoryKind {
        match self {
            SandboxMemory::Own(_) => MemoryKind::Own,
            SandboxMemory::Cow(_) => MemoryKind::Cow,
        }
    }

    fn region(&self) -> &zygote_mem::Region {
        match self {
            SandboxMemory::Own(r) | SandboxMemory::Cow(r) => r,
        }
    }
}

/// What a restarted daemon needs to re-adopt a sandbox in this state.
fn runtime_facts(
    spec: &Spec,
    expires: Expires,
    disk: &DiskState,
    memory: &SandboxMemory,
    boot_ms: Option<u64>,
    volumes: &[Attachment],
    net: Option<&SandboxNet>,
) -> RuntimeFacts {
    RuntimeFacts {
        env: spec.env.clone(),
        metadata: spec.metadata.clone(),
        expires_at_ms: expires.at_ms,
        on_expiry: expires.on_expiry,
        boot_ms,
        disk_top: disk.top.clone(),
        disk_chain: disk.chain.paths().to_vec(),
        disk_bytes: disk.virtual_size,
        disk_generation: disk.generation,
        memory: memory.kind().into(),
        memfd: memory.region().name().to_string(),
        paused_snapshot: None,
        volumes: volumes.to_vec(),
        network: net.map(|n| crate::store::NetFacts {
            netns: n.name().to_string(),
            policy: n.policy(),
        }),
    }
}

/// The sandbox's disk: its writable top overlay and the frozen generations below.
#[derive(Debug, Clone)]
pub(crate) struct DiskState {
    /// The overlay QEMU writes to now.
    pub(crate) top: std::path::PathBuf,
    /// Frozen generations the top's backing chain needs (in `<home>/disks`),
    /// held from garbage collection while this state lives.
    pub(crate) chain: DiskHold,
    /// Virtual size in bytes.
    pub(crate) virtual_size: u64,
    /// Generation counter (names the next overlay).
    pub(crate) generation: u32,
}

/// What a paused sandbox is: the snapshot of itself it owns.
#[derive(Debug, Clone)]
pub(crate) struct Paused {
    /// The snapshot's tag.
    pub(crate) snapshot: String,
    /// It ran on memory of its own (it resumes so).
    pub(crate) own_memory: bool,
}

/// The live parts of a running sandbox.
pub(crate) struct Guest {
    pub(crate) pid: u32,
    pub(crate) qmp: Arc<zygote_qemu::Qmp>,
    pub(crate) link: Arc<AgentLink>,
    pub(crate) cmd: mpsc::Sender<Command>,
}

/// A sandbox's QEMU as its supervisor owns it: the process and its cgroup.
pub(crate) struct Qemu {
    pub(crate) process: QemuProcess,
    pub(crate) cgroup: Option<crate::cgroup::Cgroup>,
}

/// A sandbox.
pub struct Sandbox {
    pub(crate) id: String,
    pub(crate) spec: Spec,
    /// The VM it runs (or ran).
    pub(crate) machine: Machine,
    pub(crate) dir: RuntimeDir,
    pub(crate) created_at_unix: u64,
    /// The snapshot a child was spawned from.
    pub(crate) snapshot_tag: Option<String>,
    pub(crate) boot_ms: Option<u64>,
    /// `None` for a sandbox a previous daemon left (dead), or a paused one.
    pub(crate) guest: Option<Guest>,
    /// Set when it is paused.
    pub(crate) paused: Option<Paused>,
    /// Dropped when QEMU is gone.
    pub(crate) memory: Mutex<Option<SandboxMemory>>,
    /// Its lifetime (changed by `set_timeout`).
    expires: Mutex<Expires>,
    pub(crate) disk: Mutex<DiskState>,
    /// Its volumes, in their slots.
    pub(crate) volumes: Vec<Attachment>,
    /// Its network namespace (dropped when QEMU is gone).
    pub(crate) net: Mutex<Option<Arc<SandboxNet>>>,
    state: watch::Sender<(SandboxState, Option<String>)>,
    store: Arc<Store>,
    pub(crate) span: tracing::Span,
    /// One branch at a time.
    pub(crate) branch_lock: tokio::sync::Mutex<()>,
}

impl Sandbox {
    /// A sandbox around a running VM, with the database row that records it.
    /// Returns the QEMU process and the command channel for its supervisor.
    pub(crate) fn running(
        running: Running,
        spec: Spec,
        expires: Expires,
        snapshot_tag: Option<String>,
        created_at_unix: u64,
        store: Arc<Store>,
    ) -> Result<(Arc<Sandbox>, Qemu, mpsc::Receiver<Command>)> {
        let Running {
            mut vm,
            link,
            ready_ms,
        } = running;
        let pid = vm.process.pid();
        let net = vm.net.take();
        let cgroup = vm.cgroup.take();
        let volumes = vm.volumes.commit();
        let boot_ms = Some(ready_ms as u64);
        let row = SandboxRow {
            id: vm.id.clone(),
            image: spec.image.clone(),
            state: SandboxState::Running,
            reason: None,
            pid: Some(pid),
            dir: vm.dir.path().to_path_buf(),
            machine: vm.machine.clone(),
            created_at_unix,
            snapshot_tag: snapshot_tag.clone(),
            runtime: Some(runtime_facts(
                &spec,
                expires,
                &vm.disk,
                &vm.memory,
                boot_ms,
                &volumes,
                net.as_deref(),
            )),
        };
        store.insert(&row)?;
        let (cmd, cmd_rx) = mpsc::channel(4);
        let span = tracing::info_span!("sandbox", id = %vm.id);
        let sb = Sandbox {
            id: vm.id,
            spec,
            machine: vm.machine,
            dir: vm.dir,
            created_at_unix,
            snapshot_tag,
            boot_ms,
            guest: Some(Guest {
                pid,
                qmp: vm.qmp,
                link: Arc::new(link),
                cmd,
            }),
            paused: None,
            memory: Mutex::new(Some(vm.memory)),
            expires: Mutex::new(expires),
            disk: Mutex::new(vm.disk),
            volumes,
            net: Mutex::new(net),
            state: watch::channel((SandboxState::Running, None)).0,
            store,
            span,
            branch_lock: tokio::sync::Mutex::new(()),
        };
        let qemu = Qemu {
            process: vm.process,
            cgroup,
        };
        Ok((Arc::new(sb), qemu, cmd_rx))
    }

    /// A sandbox a previous daemon left, shown dead with `reason`.
    pub(crate) fn dead(
        row: SandboxRow,
        reason: Option<String>,
        store: Arc<Store>,
        no_disk: DiskHold,
    ) -> Sandbox {
        let span = tracing::info_span!("sandbox", id = %row.id);
        Sandbox {
            spec: Spec {
                image: row.image,
                env: BTreeMap::new(),
                metadata: row
                    .runtime
                    .as_ref()
                    .map(|f| f.metadata.clone())
                    .unwrap_or_default(),
            },
            machine: row.machine,
            dir: RuntimeDir::existing(row.dir),
            created_at_unix: row.created_at_unix,
            snapshot_tag: row.snapshot_tag,
            boot_ms: None,
            guest: None,
            paused: None,
            memory: Mutex::new(None),
            expires: Mutex::new(Expires::default()),
            disk: Mutex::new(DiskState {
                top: Default::default(),
                chain: no_disk,
                virtual_size: 0,
                generation: 0,
            }),
            volumes: row
                .runtime
                .as_ref()
                .map(|f| f.volumes.clone())
                .unwrap_or_default(),
            net: Mutex::new(None),
            state: watch::channel((SandboxState::Dead, reason)).0,
            store,
            span,
            branch_lock: tokio::sync::Mutex::new(()),
            id: row.id,
        }
    }

    /// The paused sandbox this running one becomes (same id, labels and
    /// lifetime; no VM); `snapshot` is the snapshot of itself it owns.
    pub(crate) fn paused(&self, snapshot: String, own_memory: bool) -> Sandbox {
        Sandbox {
            id: self.id.clone(),
            spec: self.spec.clone(),
            machine: self.machine.clone(),
            dir: RuntimeDir::unowned(self.dir.path().to_path_buf()),
            created_at_unix: self.created_at_unix,
            snapshot_tag: self.snapshot_tag.clone(),
            boot_ms: None,
            guest: None,
            paused: Some(Paused {
                snapshot,
                own_memory,
            }),
            memory: Mutex::new(None),
            expires: Mutex::new(self.expires()),
            disk: Mutex::new(DiskState {
                top: Default::default(),
                // Its snapshot references the disk chain; it holds nothing.
                chain: self
                    .disk
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .chain
                    .none(),
                virtual_size: 0,
                generation: 0,
            }),
            volumes: self.volumes.clone(),
            net: Mutex::new(None),
            state: watch::channel((SandboxState::Paused, None)).0,
            store: self.store.clone(),
            span: self.span.clone(),
            branch_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Record in the database that it is paused (no pid; its snapshot named).
    pub(crate) fn record_paused(&self) -> Result<()> {
        let Some(p) = &self.paused else {
            return Ok(());
        };
        let facts = RuntimeFacts {
            env: self.spec.env.clone(),
            metadata: self.spec.metadata.clone(),
            expires_at_ms: self.expires().at_ms,
            on_expiry: self.expires().on_expiry,
            boot_ms: None,
            disk_top: Default::default(),
            disk_chain: Vec::new(),
            disk_bytes: 0,
            disk_generation: 0,
            memory: if p.own_memory {
                crate::store::MemoryKindCol::Own
            } else {
                crate::store::MemoryKindCol::Cow
            },
            memfd: String::new(),
            paused_snapshot: Some(p.snapshot.clone()),
            volumes: self.volumes.clone(),
            network: None,
        };
        Ok(self.store.set_paused(&self.id, &facts)?)
    }

    /// A paused sandbox from its database row.
    pub(crate) fn paused_from_row(
        row: SandboxRow,
        store: Arc<Store>,
        no_disk: DiskHold,
    ) -> Option<Sandbox> {
        let facts = row.runtime.clone()?;
        let snapshot = facts.paused_snapshot.clone()?;
        let mut sb = Sandbox::dead(row, None, store, no_disk);
        sb.dir = RuntimeDir::unowned(sb.dir.path().to_path_buf());
        sb.paused = Some(Paused {
            snapshot,
            own_memory: facts.memory == crate::store::MemoryKindCol::Own,
        });
        sb.expires = Mutex::new(Expires {
            at_ms: facts.expires_at_ms,
            on_expiry: facts.on_expiry,
        });
        sb.state = watch::channel((SandboxState::Paused, None)).0;
        Some(sb)
    }

    /// Record what re-adoption needs now (after a branch moved the disk).
    pub(crate) fn record_runtime(&self) {
        let memory = self
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(memory) = memory else { return };
        let disk = self.disk.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let facts = runtime_facts(
            &self.spec,
            self.expires(),
            &disk,
            &memory,
            self.boot_ms,
            &self.volumes,
            self.net().as_deref(),
        );
        if let Err(e) = self.store.set_runtime(&self.id, &facts) {
            tracing::warn!(parent: &self.span, error = %e, "cannot record the sandbox's disk chain");
        }
    }

    /// Its lifetime.
    pub(crate) fn expires(&self) -> Expires {
        *self.expires.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new lifetime, recorded for a restarted daemon.
    pub(crate) fn set_expires(&self, e: Expires) {
        *self.expires.lock().unwrap_or_else(|p| p.into_inner()) = e;
        self.record_runtime();
    }

    /// The action due at `now_ms`, if its lifetime ran out (taken: it is due once).
    pub(crate) fn take_due(&self, now_ms: u64) -> Option<Expiry> {
        let mut e = self.expires.lock().unwrap_or_else(|p| p.into_inner());
        if e.at_ms.is_some_and(|at| at <= now_ms) {
            e.at_ms = None;
            return Some(e.on_expiry);
        }
        None
    }

    /// Whether every label of `want` is on it.
    pub(crate) fn has_labels(&self, want: &Metadata) -> bool {
        want.iter()
            .all(|(k, v)| self.spec.metadata.get(k) == Some(v))
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How the engine reports it.
    pub fn view(&self) -> SandboxView {
        let (state, reason) = self.state.borrow().clone();
        let m = &self.machine;
        SandboxView {
            id: self.id.clone(),
            image: self.spec.image.clone(),
            state,
            reason,
            memory_mib: m.memory_mib,
            vcpus: m.vcpus,
            accel: m.accel,
            pid: self.guest.as_ref().map(|g| g.pid),
            created_at_unix: self.created_at_unix,
            boot_ms: self.boot_ms,
            expires_at_unix: self.expires().at_ms.map(|ms| ms.div_ceil(1000)),
            on_expiry: self.expires().on_expiry,
            snapshot_tag: self.snapshot_tag.clone(),
            memory: self.memory_kind(),
            metadata: self.spec.metadata.clone(),
            volumes: self.volumes.iter().map(Attachment::spec).collect(),
            network: self.net().map(|n| crate::model::NetworkView {
                address: zygote_net::GUEST_ADDR,
                policy: n.policy(),
                ports: n
                    .ports()
                    .into_iter()
                    .map(|(port, host)| crate::model::PortView { port, host })
                    .collect(),
            }),
        }
    }

    /// Its network namespace, while QEMU runs.
    pub(crate) fn net(&self) -> Option<Arc<SandboxNet>> {
        self.net.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Where its guest RAM lives, while it holds any.
    pub(crate) fn memory_kind(&self) -> Option<MemoryKind> {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(SandboxMemory::kind)
    }

    /// Current state.
    pub fn state(&self) -> SandboxState {
        self.state.borrow().0
    }

    /// Move to a new state, in memory and in the database in one call; a
    /// refused transition is logged and ignored. Returns whether it moved.
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
        if changed && to != SandboxState::Stopping {
            if let Err(e) = self.store.set_state(&self.id, to, reason.as_deref()) {
                tracing::warn!(parent: &self.span, error = %e, "cannot record the state change");
            }
        }
        changed
    }

    fn not_running(&self) -> EngineError {
        let (st, reason) = self.state.borrow().clone();
        EngineError::NotRunning {
            id: self.id.clone(),
            state: st.as_str(),
            reason,
        }
    }

    /// The live parts, if the sandbox is running.
    pub(crate) fn guest(&self) -> Result<&Guest> {
        match self.state() {
            SandboxState::Running => self.guest.as_ref().ok_or_else(|| self.not_running()),
            SandboxState::Booting
            | SandboxState::Paused
            | SandboxState::Stopping
            | SandboxState::Dead => Err(self.not_running()),
        }
    }

    fn link(&self) -> Result<&Arc<AgentLink>> {
        Ok(&self.guest()?.link)
    }

    /// Validate an exec and turn it into an agent request plus stdin bytes.
    pub(crate) fn exec_request(&self, spec: ExecSpec) -> Result<(ExecRequest, Option<Vec<u8>>)> {
        let ExecSpec {
            program,
            env,
            cwd,
            stdin,
            timeout,
            user,
        } = spec;
        let (argv, shell) = match program {
            Program::Argv(argv) => {
                if argv.is_empty() {
                    return Err(EngineError::BadRequest(
                        "argv is empty: pass a program and its arguments in `argv`, or a shell command line in `cmd`".into(),
                    ));
                }
                if argv[0].is_empty() {
                    return Err(EngineError::BadRequest(
                        "argv[0] is empty: pass the program to run first".into(),
                    ));
                }
                (argv, None)
            }
            Program::Shell(c) if c.trim().is_empty() => {
                return Err(EngineError::BadRequest(
                    "`cmd` is empty: pass a shell command line".into(),
                ))
            }
            Program::Shell(c) => (Vec::new(), Some(c)),
        };
        let mut full_env = self.spec.env.clone();
        for (k, v) in env {
            paths::env_name(&k)?;
            full_env.insert(k, v);
        }
        if let Some(c) = &cwd {
            paths::guest_path(c)?;
        }
        Ok((
            ExecRequest {
                argv,
                shell,
                env: full_env,
                cwd,
                stdin: stdin.is_some(),
                timeout_ms: timeout.map(|t| t.as_millis().max(1) as u64),
                user,
            },
            stdin,
        ))
    }

    /// Start a process in the guest.
    pub(crate) async fn exec(&self, spec: ExecSpec) -> Result<ExecItems> {
        let (req, stdin) = self.exec_request(spec)?;
        let st = ops::exec(self.link()?, req, stdin).await?;
        Ok(st.into_items())
    }

    /// Write a guest file from a stream of chunks.
    pub(crate) async fn write_file(
        &self,
        path: &str,
        mode: Option<u32>,
        body: UploadStream,
    ) -> Result<u64> {
        paths::guest_path(path)?;
        if let Some(m) = mode {
            if m > 0o7777 {
                return Err(EngineError::BadRequest(format!(
                    "mode {m:o} is not a permission mode: pass octal bits up to 7777, e.g. 644"
                )));
            }
        }
        let link = self.link()?;
        ops::xfer::write_file(link, self.dir.path(), path, mode, body)
            .await?
            .map_err(EngineError::UploadBroken)
    }

    /// Read a guest file as a stream of chunks.
    pub(crate) async fn read_file(&self, path: &str) -> Result<FileRead> {
        paths::guest_path(path)?;
        let rs = ops::xfer::read_file(self.link()?, self.dir.path(), path).await?;
        Ok(FileRead {
            size: rs.size,
            mode: rs.mode,
            chunks: rs
                .into_stream()
                .map(|r| r.map_err(EngineError::from))
                .boxed(),
        })
    }

    /// Stat a guest path.
    pub(crate) async fn stat(&self, path: &str) -> Result<FileStat> {
        paths::guest_path(path)?;
        Ok(ops::stat(self.link()?, path).await?)
    }

    /// List a guest directory.
    pub(crate) async fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        paths::guest_path(path)?;
        Ok(ops::list(self.link()?, path).await?)
    }

    /// Remove a guest path.
    pub(crate) async fn remove_path(&self, path: &str, recursive: bool) -> Result<()> {
        paths::guest_path(path)?;
        if path == "/" {
            return Err(EngineError::BadRequest(
                "refusing to remove `/`: name a file or directory below it".into(),
            ));
        }
        Ok(ops::remove(self.link()?, path, recursive).await?)
    }

    /// Evaluate Python in the warm interpreter.
    pub(crate) async fn eval(&self, code: &str) -> Result<EvalResult> {
        Ok(ops::eval(self.link()?, code, EVAL_TIMEOUT).await?)
    }

    /// Ping the agent; the round trip.
    pub(crate) async fn ping(&self) -> Result<Duration> {
        Ok(ops::ping(self.link()?).await?)
    }
}
