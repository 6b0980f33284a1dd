//! Snapshots as objects: device state (`vmstate`), guest memory (a sealed memfd
//! in the daemon, and `memory.bin` on disk), a frozen qcow2 disk generation, and
//! metadata. On-disk layout, staged and renamed into place:
//!
//! ```text
//! <home>/snapshots/<tag>/meta.json     format version, tag, lineage, machine facts
//! <home>/snapshots/<tag>/vmstate       QEMU migration stream without guest RAM
//! <home>/snapshots/<tag>/memory.bin    guest RAM, sparse (written after the branch)
//! <home>/disks/<tag>-<rand>.qcow2      the frozen disk generation (children back onto it)
//! ```
//!
//! Disks live outside the snapshot directory because a qcow2 header names its
//! backing file by path: a generation's path never changes once written.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use zygote_mem::Region;

use crate::disks::{self, DiskHold, Holds};
use crate::error::{EngineError, Result};
use crate::machine::{Cpu, Machine, PageSize, MACHINE_TYPE};
use crate::model::{BranchMode, SnapshotStatus, SnapshotView};

/// Version of `meta.json`, independent of the program version. Version 1 kept
/// the VM's facts as loose fields; version 2 keeps the [`Machine`] whole.
pub const FORMAT_VERSION: u32 = 2;
/// Largest `meta.json` accepted.
const MAX_META_BYTES: u64 = 1 << 20;

/// What `meta.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotMeta {
    /// Format version of this file.
    pub format_version: u32,
    /// Tag.
    pub tag: String,
    /// Image of the lineage.
    pub image: String,
    /// Sandbox it was taken from.
    pub branched_from: Option<String>,
    /// Snapshot that sandbox was spawned from, if any.
    pub parent_snapshot: Option<String>,
    /// Capture mode.
    pub mode: BranchMode,
    /// The VM children start as (its `pages` is the snapshot memory's).
    pub machine: Machine,
    /// The frozen disk generation.
    pub disk: PathBuf,
    /// Virtual size of the disk in bytes.
    pub disk_bytes: u64,
    /// Every disk file the chain below `disk` needs (ancestor generations).
    pub disk_chain: Vec<PathBuf>,
    /// STOP→RESUME of the parent.
    pub pause_ms: Option<f64>,
    /// RAM copy inside the pause.
    pub copy_ms: Option<f64>,
    /// Guest RAM bytes captured.
    pub memory_bytes: u64,
    /// `vmstate` bytes.
    pub vmstate_bytes: u64,
    /// Creation time.
    pub created_at_unix: u64,
    /// Fallback warnings.
    pub warning: Option<String>,
    /// Labels of the sandbox it was taken from (its children inherit them).
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The paused sandbox this snapshot is (hidden from listings; resuming
    /// or removing that sandbox deletes it).
    #[serde(default)]
    pub owner: Option<String>,
    /// Volume slots the sandbox it was taken from had volumes mounted in:
    /// its children clear them before mounting their own.
    #[serde(default)]
    pub volume_slots_used: Vec<u8>,
    /// The egress policy of the sandbox it was taken from (its children's
    /// unless a spawn says otherwise); `None` without a network card.
    #[serde(default)]
    pub network: Option<zygote_net::Policy>,
}

/// `meta.json` format 1, read and converted to the current format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotMetaV1 {
    #[allow(dead_code)]
    format_version: u32,
    tag: String,
    image: String,
    branched_from: Option<String>,
    parent_snapshot: Option<String>,
    mode: BranchMode,
    memory_mib: u64,
    vcpus: u32,
    cpu: String,
    machine: String,
    accel: zygote_qemu::Accel,
    kernel: PathBuf,
    initrd: PathBuf,
    append: String,
    disk: PathBuf,
    disk_bytes: u64,
    disk_chain: Vec<PathBuf>,
    hugepages: bool,
    pause_ms: Option<f64>,
    copy_ms: Option<f64>,
    memory_bytes: u64,
    vmstate_bytes: u64,
    created_at_unix: u64,
    warning: Option<String>,
}

impl SnapshotMetaV1 {
    fn upgrade(self) -> Result<SnapshotMeta> {
        if self.machine != MACHINE_TYPE {
            return Err(EngineError::BadRequest(format!(
                "snapshot `{}` is of machine type `{}`; zygote runs `{MACHINE_TYPE}` only",
                self.tag, self.machine
            )));
        }
        Ok(SnapshotMeta {
            format_version: FORMAT_VERSION,
            tag: self.tag,
            image: self.image,
            branched_from: self.branched_from,
            parent_snapshot: self.parent_snapshot,
            mode: self.mode,
            machine: Machine {
                accel: self.accel,
                cpu: Cpu(self.cpu),
                memory_mib: self.memory_mib,
                vcpus: self.vcpus,
                pages: if self.hugepages {
                    PageSize::Huge
                } else {
                    PageSize::Small
                },
                kernel: self.kernel,
                initrd: self.initrd,
                append: self.append,
                volume_slots: 0,
                nic: false,
            },
            disk: self.disk,
            disk_bytes: self.disk_bytes,
            disk_chain: self.disk_chain,
            pause_ms: self.pause_ms,
            copy_ms: self.copy_ms,
            memory_bytes: self.memory_bytes,
            vmstate_bytes: self.vmstate_bytes,
            created_at_unix: self.created_at_unix,
            warning: self.warning,
            metadata: Default::default(),
            owner: None,
            volume_slots_used: Vec::new(),
            network: None,
        })
    }
}

/// A snapshot the daemon holds.
pub struct Snapshot {
    /// Its metadata.
    pub meta: SnapshotMeta,
    /// Its directory.
    pub dir: PathBuf,
    memory: Mutex<Option<Arc<Region>>>,
    status: watch::Sender<(SnapshotStatus, Option<String>)>,
}

impl Snapshot {
    pub(crate) fn new(
        meta: SnapshotMeta,
        dir: PathBuf,
        memory: Option<Arc<Region>>,
        status: SnapshotStatus,
    ) -> Snapshot {
        Snapshot {
            meta,
            dir,
            memory: Mutex::new(memory),
            status: watch::channel((status, None)).0,
        }
    }

    /// `vmstate` path.
    pub fn vmstate(&self) -> PathBuf {
        self.dir.join("vmstate")
    }

    /// `memory.bin` path.
    pub fn memory_bin(&self) -> PathBuf {
        self.dir.join("memory.bin")
    }

    /// Persistence state.
    pub fn status(&self) -> SnapshotStatus {
        self.status.borrow().0
    }

    pub(crate) fn set_status(&self, s: SnapshotStatus, warning: Option<String>) {
        self.status.send_replace((s, warning));
    }

    /// Wait until the snapshot is no longer `writing`.
    pub async fn wait_persisted(&self) -> SnapshotStatus {
        let mut rx = self.status.subscribe();
        let r = rx.wait_for(|(s, _)| *s != SnapshotStatus::Writing).await;
        r.map(|v| v.0).unwrap_or(SnapshotStatus::Failed)
    }

    /// The memory region, loading `memory.bin` when the daemon no longer holds it
    /// (after a restart).
    pub fn memory(&self) -> Result<Arc<Region>> {
        let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = m.as_ref() {
            return Ok(r.clone());
        }
        let path = self.memory_bin();
        if !path.exists() {
            return Err(EngineError::Conflict(format!(
                "snapshot `{}` has no memory: its memory.bin was never written (the daemon stopped before persisting it); take a new snapshot",
                self.meta.tag
            )));
        }
        let (mut region, stats) = Region::from_file(
            &path,
            &format!("zygote-snap-{}", self.meta.tag),
            self.meta.machine.pages.is_huge(),
        )?;
        region.seal()?;
        tracing::info!(tag = %self.meta.tag, ms = stats.ms(), bytes = stats.bytes, "snapshot memory reloaded from disk");
        let r = Arc::new(region);
        *m = Some(r.clone());
        Ok(r)
    }

    pub(crate) fn drop_memory(&self) {
        *self.memory.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// How the engine reports it (`prestarted` is the pool's count).
    pub(crate) fn view(&self, prestarted: usize) -> SnapshotView {
        let (status, warn) = self.status.borrow().clone();
        let m = &self.meta;
        SnapshotView {
            tag: m.tag.clone(),
            image: m.image.clone(),
            branched_from: m.branched_from.clone(),
            parent_snapshot: m.parent_snapshot.clone(),
            mode: m.mode,
            status,
            memory_mib: m.machine.memory_mib,
            vcpus: m.machine.vcpus,
            cpu: m.machine.cpu.0.clone(),
            accel: m.machine.accel,
            hugepages: m.machine.pages.is_huge(),
            pause_ms: m.pause_ms,
            copy_ms: m.copy_ms,
            memory_bytes: m.memory_bytes,
            vmstate_bytes: m.vmstate_bytes,
            created_at_unix: m.created_at_unix,
            warning: match (&m.warning, warn) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.clone().or(b),
            },
            prestarted: prestarted as u32,
            dir: self.dir.clone(),
            // try_lock: `memory()` holds the lock while it reloads memory.bin,
            // and a listing must not wait for that (the file exists then).
            bootable: self.memory_bin().exists()
                || self.memory.try_lock().map(|m| m.is_some()).unwrap_or(true),
        }
    }
}

/// Tags: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`, never joined into paths unchecked.
pub fn validate_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag.as_bytes()[0].is_ascii_alphanumeric()
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "snapshot tag `{tag}` is invalid: use 1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )))
    }
}

/// Every snapshot, by tag.
pub struct Snapshots {
    root: PathBuf,
    disks: PathBuf,
    map: Mutex<HashMap<String, Arc<Snapshot>>>,
    /// Tags being created right now (a second create of the same tag is a 409).
    pending: Mutex<HashSet<String>>,
    /// Disk files in use outside the snapshots (lock order: `map`, then `holds`).
    holds: Arc<Holds>,
}

/// Holds a tag while its snapshot is being made.
pub(crate) struct TagReservation<'a> {
    snaps: &'a Snapshots,
    tag: String,
}

impl Drop for TagReservation<'_> {
    fn drop(&mut self) {
        self.snaps
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.tag);
    }
}

impl Snapshots {
    /// Open the store under `home`, loading every snapshot on disk.
    pub(crate) fn open(home: &Path) -> Result<Snapshots> {
        let root = home.join("snapshots");
        let disks = home.join("disks");
        for d in [&root, &disks] {
            std::fs::create_dir_all(d).map_err(|source| EngineError::Io {
                what: format!("cannot create {}", d.display()),
                source,
            })?;
        }
        let s = Snapshots {
            root,
            disks,
            map: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashSet::new()),
            holds: Arc::new(Holds::default()),
        };
        s.load_all();
        Ok(s)
    }

    fn load_all(&self) {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(".staging-") {
                let _ = std::fs::remove_dir_all(e.path());
                continue;
            }
            // A persist the daemon did not finish.
            let _ = std::fs::remove_file(e.path().join("memory.bin.tmp"));
            match read_meta(&e.path().join("meta.json")) {
                // Its memory lived only in the daemon that stopped before
                // writing it: nothing can be started from it, so it goes
                // (a snapshot is ready or absent, never half there).
                Ok(meta) if !e.path().join("memory.bin").exists() => {
                    tracing::warn!(tag = %meta.tag, "removing a snapshot whose memory.bin was never written (the daemon stopped first)");
                    let _ = std::fs::remove_dir_all(e.path());
                }
                Ok(meta) => {
                    let snap = Snapshot::new(meta, e.path(), None, SnapshotStatus::Ready);
                    self.map().insert(name, Arc::new(snap));
                }
                Err(err) => {
                    tracing::warn!(dir = %e.path().display(), error = %err, "skipping an unreadable snapshot")
                }
            }
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Snapshot>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserve a tag for a snapshot about to be made (409 when taken).
    pub(crate) fn reserve(&self, tag: &str) -> Result<TagReservation<'_>> {
        validate_tag(tag)?;
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if self.map().contains_key(tag) || p.contains(tag) || self.root.join(tag).exists() {
            return Err(EngineError::Conflict(format!(
                "snapshot tag `{tag}` is taken: pick another tag or delete the snapshot first"
            )));
        }
        p.insert(tag.to_string());
        Ok(TagReservation {
            snaps: self,
            tag: tag.to_string(),
        })
    }

    /// A fresh staging directory for `tag`, removed unless committed.
    pub(crate) fn staging(&self, tag: &str) -> Result<Staging> {
        let d = self.root.join(format!(".staging-{tag}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).map_err(|source| EngineError::Io {
            what: format!("cannot create {}", d.display()),
            source,
        })?;
        Ok(Staging {
            dir: d,
            committed: false,
        })
    }

    /// Hold disk files no snapshot references yet (a branch's frozen disk).
    pub(crate) fn hold(&self, paths: Vec<PathBuf>) -> DiskHold {
        self.holds.hold(paths)
    }

    /// What a child being started needs of `snap`, taken at once: its disk
    /// chain (held from garbage collection) and its vmstate (open, so a delete
    /// meanwhile cannot pull it away). Refused if the snapshot was deleted.
    pub(crate) fn claim(&self, snap: &Arc<Snapshot>) -> Result<Claim> {
        let map = self.map();
        if !map
            .get(&snap.meta.tag)
            .is_some_and(|s| Arc::ptr_eq(s, snap))
        {
            return Err(EngineError::SnapshotNotFound {
                tag: snap.meta.tag.clone(),
            });
        }
        let vmstate = std::fs::File::open(snap.vmstate()).map_err(|source| EngineError::Io {
            what: format!("cannot open {}", snap.vmstate().display()),
            source,
        })?;
        let mut chain = snap.meta.disk_chain.clone();
        chain.push(snap.meta.disk.clone());
        Ok(Claim {
            chain: self.holds.hold(chain),
            vmstate,
        })
    }

    /// Where the frozen disk of a new snapshot goes.
    pub(crate) fn new_disk_path(&self, tag: &str) -> PathBuf {
        let mut b = [0u8; 4];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
        self.disks.join(format!("{tag}-{}.qcow2", hex::encode(b)))
    }

    /// Make a snapshot durable and visible: the vmstate and the frozen disk
    /// fsynced, `meta.json` written and fsynced, the staging directory renamed
    /// into place and both directories fsynced. `memory.bin` follows later
    /// (`writing` → `ready`); a snapshot without it is never reloaded as ready.
    pub(crate) fn commit(
        &self,
        mut staging: Staging,
        meta: SnapshotMeta,
        memory: Arc<Region>,
    ) -> Result<Arc<Snapshot>> {
        let dir_staged = staging.path().to_path_buf();
        let json =
            serde_json::to_vec_pretty(&meta).map_err(|e| EngineError::BadRequest(e.to_string()))?;
        disks::sync_file(&dir_staged.join("vmstate"))?;
        disks::sync_file(&meta.disk)?;
        disks::sync_dir(&self.disks)?;
        disks::write_durable(&dir_staged.join("meta.json"), &json)?;
        disks::sync_dir(&dir_staged)?;
        let dir = self.root.join(&meta.tag);
        std::fs::rename(&dir_staged, &dir).map_err(|source| EngineError::Io {
            what: format!("cannot move {} to {}", dir_staged.display(), dir.display()),
            source,
        })?;
        staging.committed = true;
        disks::sync_dir(&self.root)?;
        let tag = meta.tag.clone();
        let snap = Arc::new(Snapshot::new(
            meta,
            dir,
            Some(memory),
            SnapshotStatus::Writing,
        ));
        self.map().insert(tag, snap.clone());
        Ok(snap)
    }

    /// Make an imported snapshot visible: its staging directory already holds
    /// `vmstate` and `memory.bin`, its disks are in place; `meta.json` is
    /// written, everything fsynced and the directory renamed in, `ready`.
    pub(crate) fn adopt(&self, mut staging: Staging, meta: SnapshotMeta) -> Result<Arc<Snapshot>> {
        let dir_staged = staging.path().to_path_buf();
        let json =
            serde_json::to_vec_pretty(&meta).map_err(|e| EngineError::BadRequest(e.to_string()))?;
        disks::sync_file(&dir_staged.join("vmstate"))?;
        disks::sync_file(&dir_staged.join("memory.bin"))?;
        for d in meta.disk_chain.iter().chain([&meta.disk]) {
            disks::sync_file(d)?;
        }
        disks::sync_dir(&self.disks)?;
        disks::write_durable(&dir_staged.join("meta.json"), &json)?;
        disks::sync_dir(&dir_staged)?;
        let dir = self.root.join(&meta.tag);
        std::fs::rename(&dir_staged, &dir).map_err(|source| EngineError::Io {
            what: format!("cannot move {} to {}", dir_staged.display(), dir.display()),
            source,
        })?;
        staging.committed = true;
        disks::sync_dir(&self.root)?;
        let tag = meta.tag.clone();
        let snap = Arc::new(Snapshot::new(meta, dir, None, SnapshotStatus::Ready));
        self.map().insert(tag, snap.clone());
        Ok(snap)
    }

    /// One snapshot.
    pub fn get(&self, tag: &str) -> Result<Arc<Snapshot>> {
        validate_tag(tag)?;
        self.map()
            .get(tag)
            .cloned()
            .ok_or_else(|| EngineError::SnapshotNotFound {
                tag: tag.to_string(),
            })
    }

    /// Every snapshot, oldest first.
    pub(crate) fn all(&self) -> Vec<Arc<Snapshot>> {
        let mut v: Vec<Arc<Snapshot>> = self.map().values().cloned().collect();
        v.sort_by(|a, b| {
            a.meta
                .created_at_unix
                .cmp(&b.meta.created_at_unix)
                .then(a.meta.tag.cmp(&b.meta.tag))
        });
        v
    }

    /// Bytes the snapshot directories take on disk (allocated blocks: the
    /// memory files are sparse).
    pub(crate) fn persisted_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let mut total = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(md) = e.metadata() else { continue };
                if md.is_dir() {
                    stack.push(e.path());
                } else if md.is_file() {
                    total += md.blocks() * 512;
                }
            }
        }
        total
    }

    /// Delete a snapshot: its memory and files. Running children keep running
    /// (QEMU holds its own mapping and open disk files, and the children hold
    /// their disk chains).
    pub(crate) fn delete(&self, tag: &str) -> Result<()> {
        let snap = self
            .map()
            .remove(tag)
            .ok_or_else(|| EngineError::SnapshotNotFound {
                tag: tag.to_string(),
            })?;
        snap.drop_memory();
        let _ = std::fs::remove_dir_all(&snap.dir);
        self.gc_disks();
        Ok(())
    }

    /// Remove disk files no snapshot references and nothing holds.
    pub(crate) fn gc_disks(&self) {
        let map = self.map();
        let mut keep: HashSet<PathBuf> = self.holds.held().into_iter().collect();
        for s in map.values() {
            keep.insert(s.meta.disk.clone());
            keep.extend(s.meta.disk_chain.iter().cloned());
        }
        if let Ok(rd) = std::fs::read_dir(&self.disks) {
            for e in rd.flatten() {
                if !keep.contains(&e.path()) {
                    tracing::info!(file = %e.path().display(), "removing a disk generation nothing needs");
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// What a child holds of its snapshot while it starts.
#[derive(Debug)]
pub(crate) struct Claim {
    /// The disk chain the child's overlay backs onto.
    pub(crate) chain: DiskHold,
    /// The device state to load.
    pub(crate) vmstate: std::fs::File,
}

/// A snapshot being assembled under `<home>/snapshots/.staging-<tag>`; removed
/// when dropped before [`Snapshots::commit`] moved it into place.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn read_meta(path: &Path) -> Result<SnapshotMeta> {
    let io = |source| EngineError::Io {
        what: format!("cannot read {}", path.display()),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_META_BYTES {
        return Err(EngineError::BadRequest(format!(
            "{} is {len} bytes, over the {MAX_META_BYTES}-byte cap",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let not_meta = |e: serde_json::Error| {
        EngineError::BadRequest(format!("{} is not snapshot metadata: {e}", path.display()))
    };
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let version = serde_json::from_slice::<Version>(&bytes)
        .map_err(not_meta)?
        .format_version;
    match version {
        1 => serde_json::from_slice::<SnapshotMetaV1>(&bytes)
            .map_err(not_meta)?
            .upgrade(),
        FORMAT_VERSION => serde_json::from_slice(&bytes).map_err(not_meta),
        v => Err(EngineError::BadRequest(format!(
            "{} has format version {v}, this zygote reads 1 and {FORMAT_VERSION}: upgrade zygote",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_1_meta_is_read_as_format_2() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("meta.json");
        let v1 = serde_json::json!({
            "format_version": 1, "tag": "old", "image": "python", "branched_from": "sb",
            "parent_snapshot": null, "mode": "copy", "memory_mib": 512, "vcpus": 2,
            "cpu": "max", "machine": "microvm", "accel": "tcg", "kernel": "/i/vmlinuz",
            "initrd": "/i/initrd.img", "append": "quiet", "disk": "/h/disks/old-1.qcow2",
            "disk_bytes": 1024, "disk_chain": [], "hugepages": true, "pause_ms": 1.5,
            "copy_ms": null, "memory_bytes": 4096, "vmstate_bytes": 10,
            "created_at_unix": 7, "warning": null
        });
        std::fs::write(&p, serde_json::to_vec(&v1).unwrap()).unwrap();
        let m = read_meta(&p).unwrap();
        assert_eq!(m.format_version, FORMAT_VERSION);
        assert_eq!((m.machine.memory_mib, m.machine.vcpus), (512, 2));
        assert_eq!(m.machine.pages, PageSize::Huge);
        assert_eq!(m.machine.kernel, PathBuf::from("/i/vmlinuz"));
        // and written back as format 2, it reads the same
        std::fs::write(&p, serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(read_meta(&p).unwrap(), m);
        let mut v9 = v1;
        v9["format_version"] = 9.into();
        std::fs::write(&p, serde_json::to_vec(&v9).unwrap()).unwrap();
        assert!(read_meta(&p)
            .unwrap_err()
            .to_string()
            .contains("format version 9"));
    }

    #[test]
    fn tags() {
        for ok in ["a", "py-warm.1", "A_b", &"x".repeat(64)] {
            assert!(validate_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "-a", ".a", "a/b", "a b", &"x".repeat(65), "é"] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }
}
