//! The engine: sandboxes and their lifecycle, above the crates that wrap QEMU,
//! guest memory and images. It owns every sandbox, its QEMU process, its memfd,
//! overlay, sockets and runtime directory, and removes them on every path.
//!
//! It knows nothing of HTTP: the daemon translates requests into calls here.

pub mod agent_link;
mod api;
mod branch;
pub mod bundle;
mod catalog;
pub mod cgroup;
mod console;
mod disk_switch;
mod disks;
mod error;
mod lifecycle;
mod limits;
mod live;
mod machine;
mod model;
mod network;
mod observe;
pub mod ops;
mod paths;
mod pause;
mod pool;
mod procs;
mod rundir;
mod sandbox;
pub mod snapshot;
mod spawn;
mod stale;
pub mod state;
pub mod store;
mod vm;
pub mod volumes;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use api::EngineApi;
pub use error::{EngineError, ErrorClass, Result};
pub use limits::Limits;
pub use machine::{Cpu, Machine, PageSize, MACHINE_TYPE};
pub use model::*;
pub use observe::{Observer, Timing};
pub use sandbox::Sandbox;
use tokio::sync::watch;
use tracing::{info, warn};
pub use zygote_net::{Cidr, Policy};
pub use zygote_qemu::Accel;
use zygote_qemu::{AccelChoice, QemuBinary};

use crate::store::Store;

/// Default image name.
pub const DEFAULT_IMAGE: &str = "python";
/// Default guest RAM.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Smallest guest RAM accepted.
pub const MIN_MEMORY_MIB: u64 = 128;
/// Largest guest RAM accepted.
pub const MAX_MEMORY_MIB: u64 = 65_536;
/// Most vCPUs accepted.
pub const MAX_VCPUS: u32 = 64;
/// Pre-started children per hot snapshot by default.
pub const DEFAULT_PRESTART: usize = 2;
/// Pre-started children over all snapshots by default.
pub const DEFAULT_PRESTART_MAX: usize = 8;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Home directory (state database, images, sandboxes).
    pub home: PathBuf,
    /// Force an accelerator; `None` chooses automatically.
    pub accel: Option<Accel>,
    /// How long a boot may take before it fails with the console's tail.
    pub boot_timeout: Duration,
    /// Pre-started copy-on-write children kept per hot snapshot (0: none).
    pub prestart: usize,
    /// Most pre-started children kept over all snapshots.
    pub prestart_max: usize,
    /// Receives the engine's timings (the daemon's metrics).
    pub observer: Option<Arc<dyn Observer>>,
    /// Host directories under this one may be attached read-only as volumes
    /// (`None`: no host directory may).
    pub volume_host_root: Option<PathBuf>,
    /// How sandboxes are networked.
    pub network: model::NetworkMode,
    /// Quotas.
    pub limits: Limits,
    /// Put every QEMU in a cgroup of its own (memory, CPU and task caps).
    pub cgroups: bool,
    /// QEMU's own memory allowed in its cgroup on top of guest RAM (`None`:
    /// 256 MiB, plus 1 GiB for the translation buffer under TCG).
    pub cgroup_overhead_mib: Option<u64>,
}

impl std::fmt::Debug for dyn Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl EngineConfig {
    /// Defaults for a home directory.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        EngineConfig {
            home: home.into(),
            accel: None,
            boot_timeout: Duration::from_secs(60),
            prestart: DEFAULT_PRESTART,
            prestart_max: DEFAULT_PRESTART_MAX,
            observer: None,
            volume_host_root: None,
            network: model::NetworkMode::None,
            limits: Limits::default(),
            cgroups: true,
            cgroup_overhead_mib: None,
        }
    }
}

/// The engine.
pub struct Engine {
    cfg: EngineConfig,
    qemu: QemuBinary,
    accel: AccelChoice,
    /// Kernel command line for boots (carries `tsc_early_khz=` under TCG).
    append: String,
    store: Arc<Store>,
    snapshots: snapshot::Snapshots,
    volumes: Arc<volumes::Volumes>,
    /// Host networking (`None`: `--network none`).
    net: Option<Arc<zygote_net::HostNet>>,
    /// This daemon's cgroups (`None`: off, or the host has none to use).
    cgroups: Option<cgroup::Cgroups>,
    sandboxes: Mutex<HashMap<String, Arc<Sandbox>>>,
    pool: pool::Pool,
    shutting_down: AtomicBool,
    /// Tells starts in flight to give up (their VMs are dropped, QEMU killed).
    shutdown: watch::Sender<bool>,
    /// Sandboxes being started (booted or spawned) right now.
    launches: AtomicUsize,
    /// What starts in flight reserved against the quotas.
    reserved: limits::Reserved,
}

impl Engine {
    /// Open the engine on a home directory: detect QEMU and the accelerator, open
    /// the state database and clean up after a previous daemon that died.
    pub async fn open(cfg: EngineConfig) -> Result<Arc<Engine>> {
        for d in [
            cfg.home.clone(),
            cfg.home.join("sandboxes"),
            cfg.home.join("images"),
        ] {
            std::fs::create_dir_all(&d).map_err(|source| EngineError::Io {
                what: format!("cannot create directory {}", d.display()),
                source,
            })?;
        }
        let qemu = zygote_qemu::detect_qemu()?;
        let accel = zygote_qemu::choose_accel(cfg.accel)?;
        info!(qemu = %qemu.path.display(), version = ?qemu.version, accel = %accel.accel, reason = %accel.reason, "engine ready");
        let append = zygote_qemu::default_append(accel.accel)?;
        let store = Arc::new(Store::open(&cfg.home.join("zygote.db"))?);
        let snapshots = snapshot::Snapshots::open(&cfg.home)?;
        let pool = pool::Pool::new(cfg.prestart, cfg.prestart_max.max(cfg.prestart));
        let volumes = Arc::new(volumes::Volumes::open(
            &cfg.home,
            cfg.volume_host_root.clone(),
        )?);
        let net = network::host(&cfg)?;
        let cgroups = cgroup::setup(&cfg);
        let engine = Arc::new(Engine {
            cfg,
            pool,
            qemu,
            accel,
            append,
            store,
            snapshots,
            volumes,
            net,
            cgroups,
            sandboxes: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
            launches: AtomicUsize::new(0),
            reserved: Default::default(),
        });
        engine.recover().await?;
        // After re-adoption: namespaces no sandbox owns are a dead daemon's.
        engine.sweep_networks();
        if let Some(c) = &engine.cgroups {
            c.sweep();
        }
        // Lifetimes: a few checks a second, for as long as the engine lives.
        let weak = Arc::downgrade(&engine);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let Some(e) = weak.upgrade() else { return };
                if e.check_open().is_err() {
                    return;
                }
                e.expire_due().await;
            }
        });
        // After recovery: disk generations nothing references or holds go.
        engine.snapshots.gc_disks();
        Ok(engine)
    }

    /// Home directory.
    pub fn home(&self) -> &Path {
        &self.cfg.home
    }

    /// QEMU version string.
    pub fn qemu_version(&self) -> String {
        let (a, b, c) = self.qemu.version;
        format!("{a}.{b}.{c}")
    }

    /// Accelerator in use and why.
    pub fn accel(&self) -> &AccelChoice {
        &self.accel
    }

    /// Every sandbox, oldest first.
    pub fn list(&self) -> Vec<SandboxView> {
        let mut v: Vec<SandboxView> = self.map().values().map(|s| s.view()).collect();
        v.sort_by(|a, b| {
            a.created_at_unix
                .cmp(&b.created_at_unix)
                .then(a.id.cmp(&b.id))
        });
        v
    }

    /// One sandbox.
    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>> {
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NotFound { id: id.to_string() })
    }

    /// Built images.
    pub fn images(&self) -> Result<Vec<ImageView>> {
        Ok(zygote_image::list(&self.cfg.home)?
            .into_iter()
            .map(|i| ImageView {
                name: i.name,
                id: i.id,
                kernel_version: i.kernel_version,
                release: i.release,
                rootfs_bytes: i.rootfs_bytes,
                created_unix: i.created_unix,
            })
            .collect())
    }

    /// Number of sandboxes held.
    pub fn count(&self) -> usize {
        self.map().len()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Sandbox>>> {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where sandboxes' runtime directories live.
    pub(crate) fn sandboxes_root(&self) -> PathBuf {
        self.cfg.home.join("sandboxes")
    }

    /// Report a timing to the observer, if one is installed.
    pub(crate) fn observe(&self, t: Timing) {
        if let Some(o) = &self.cfg.observer {
            o.timing(t);
        }
    }

    /// Run a VM start, counted as in flight and abandoned (its VM dropped,
    /// which kills QEMU and removes its directory) when the engine shuts down.
    pub(crate) async fn launching<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        struct InFlight<'a>(&'a AtomicUsize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.launches.fetch_add(1, Ordering::SeqCst);
        let _count = InFlight(&self.launches);
        let mut stop = self.shutdown.subscribe();
        tokio::select! {
            r = fut => r,
            _ = stop.wait_for(|s| *s) => Err(EngineError::ShuttingDown),
        }
    }

    /// Starts in flight.
    pub(crate) fn launches_in_flight(&self) -> usize {
        self.launches.load(Ordering::SeqCst)
    }

    fn check_open(&self) -> Result<()> {
        if self.shutting_down.load(Ordering::SeqCst) {
            Err(EngineError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Refuse new work and let every sandbox's QEMU run on without this
    /// daemon (an upgrade): the next daemon on this home re-adopts them.
    /// Pre-started children and starts in flight are stopped.
    pub async fn detach(self: &Arc<Self>) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
        self.drain_pools().await;
        let sandboxes: Vec<Arc<Sandbox>> = self.map().values().cloned().collect();
        info!(
            count = sandboxes.len(),
            "leaving every sandbox running for the next daemon"
        );
        for sb in sandboxes {
            sb.dir.keep();
            if let Some(n) = sb.net() {
                n.detach();
            }
            if let Some(g) = &sb.guest {
                let (done, wait) = tokio::sync::oneshot::channel();
                if g.cmd.send(sandbox::Command::Detach { done }).await.is_ok() {
                    let _ = wait.await;
                }
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.launches_in_flight() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop every running sandbox and refuse new work. Leaves no QEMU
    /// process, memfd, overlay or socket behind; paused sandboxes stay.
    pub async fn shutdown(self: &Arc<Self>) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
        self.drain_pools().await;
        // A paused sandbox is only its snapshot on disk: it stays for the
        // next daemon, like any snapshot.
        let ids: Vec<String> = self
            .map()
            .iter()
            .filter(|(_, sb)| sb.state() != SandboxState::Paused)
            .map(|(id, _)| id.clone())
            .collect();
        info!(count = ids.len(), "stopping every running sandbox");
        let stops = ids.iter().map(|id| {
            let e = self.clone();
            async move {
                if let Err(err) = e.remove(id).await {
                    warn!(%id, error = %err, "stopping a sandbox at shutdown failed");
                }
            }
        });
        futures::future::join_all(stops).await;
        // Starts in flight drop their VMs as soon as they see the signal.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.launches_in_flight() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(h) = &self.net {
            h.shutdown();
        }
        if let Some(c) = &self.cgroups {
            c.release();
        }
    }
}

/// An error and its causes, one sentence after another.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
