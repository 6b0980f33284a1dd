//! The engine: sandboxes and their lifecycle, above the crates that wrap QEMU,
//! guest memory and images. It owns every sandbox, its QEMU process, its memfd,
//! overlay, sockets and runtime directory, and removes them on every path.
//!
//! It knows nothing of HTTP: the daemon translates requests into calls here.

pub mod agent_link;
mod branch;
mod disk_switch;
mod error;
mod lifecycle;
mod live;
pub mod ops;
mod paths;
mod pool;
mod sandbox;
pub mod snapshot;
mod spawn;
mod stale;
pub mod state;
pub mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use error::{EngineError, ErrorClass, Result};
pub use sandbox::{Sandbox, Spec};
use tracing::{info, warn};
use zygote_proto::api::{ImageSummary, SandboxInfo};
use zygote_qemu::{Accel, AccelChoice, QemuBinary};

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
    store: Store,
    snapshots: snapshot::Snapshots,
    sandboxes: Mutex<HashMap<String, Arc<Sandbox>>>,
    pool: pool::Pool,
    shutting_down: AtomicBool,
}

impl Engine {
    /// Open the engine on a home directory: detect QEMU and the accelerator, open
    /// the state database and clean up after a previous daemon that died.
    pub fn open(cfg: EngineConfig) -> Result<Arc<Engine>> {
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
        let store = Store::open(&cfg.home.join("zygote.db"))?;
        let snapshots = snapshot::Snapshots::open(&cfg.home)?;
        let pool = pool::Pool::new(cfg.prestart, cfg.prestart_max.max(cfg.prestart));
        let engine = Arc::new(Engine {
            cfg,
            pool,
            qemu,
            accel,
            append,
            store,
            snapshots,
            sandboxes: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
        });
        engine.recover()?;
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
    pub fn list(&self) -> Vec<SandboxInfo> {
        let mut v: Vec<SandboxInfo> = self.map().values().map(|s| s.info()).collect();
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
    pub fn images(&self) -> Result<Vec<ImageSummary>> {
        Ok(zygote_image::list(&self.cfg.home)?
            .into_iter()
            .map(|i| ImageSummary {
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

    fn check_open(&self) -> Result<()> {
        if self.shutting_down.load(Ordering::SeqCst) {
            Err(EngineError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Stop every sandbox and refuse new work. Leaves no QEMU process, memfd,
    /// overlay or socket behind.
    pub async fn shutdown(self: &Arc<Self>) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.drain_pools().await;
        let ids: Vec<String> = self.map().keys().cloned().collect();
        info!(count = ids.len(), "stopping every sandbox");
        let stops = ids.iter().map(|id| {
            let e = self.clone();
            async move {
                if let Err(err) = e.remove(id).await {
                    warn!(%id, error = %err, "stopping a sandbox at shutdown failed");
                }
            }
        });
        futures::future::join_all(stops).await;
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

/// The transfer disk of a sandbox being started in `dir` (boots and children
/// must carry the same devices, or a child cannot load its parent's state).
pub(crate) fn xfer_disk_for(dir: &Path) -> Result<Option<PathBuf>> {
    ops::xfer::prepare(dir).map(Some)
}
