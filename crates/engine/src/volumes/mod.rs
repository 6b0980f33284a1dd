//! Volumes: disks that outlive sandboxes and are never part of a snapshot.
//!
//! A named volume is an ext4 image `<home>/volumes/<name>.img` (its size and
//! creation time beside it in `<name>.json`), made with `mkfs.ext4` and written
//! to only by the one sandbox holding it writable; any number of sandboxes may
//! hold it read-only instead, each through a copy-on-write view of its own
//! (a qcow2 overlay), so a guest that remounts its volume writable changes only
//! its view. A host directory is exported read-only as an ext4 copy taken when
//! it is attached, and only from under the directory the daemon was told to
//! export (`EngineConfig::volume_host_root`).
//!
//! Every VM has [`SLOTS`] volume slots from boot (`Machine::volume_slots`; an
//! empty slot is a 0-byte disk), so a child of a snapshot has its parent's
//! devices whatever volumes it gets. The guest agent mounts them (`Mounts`);
//! a child clears the slots its parent used before mounting its own, since the
//! parent's file systems are still mounted in the memory it inherited.
//!
//! Views and exports live in `<home>/volumes/.attach/<sandbox>/` and go when
//! the sandbox is removed ([`Volumes::detach`]), when its start fails (a
//! [`VolumeLease`] dropped before it was committed), or at start-up when no
//! sandbox row names them.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use zygote_proto::agent::MountSpec;

use crate::error::{EngineError, Result};
use crate::lifecycle::now_unix;
use crate::model::{VolumeSource, VolumeSpec, VolumeView};
use crate::paths;

mod guest;
mod image;

pub(crate) use guest::{fill_child, mount_booted};
use image::{export, mkfs};

/// Volume slots of every VM booted now.
pub(crate) const SLOTS: u8 = 4;
/// Most named volumes on one home.
const MAX_VOLUMES: usize = 256;
/// Smallest and largest named volume, MiB.
const MIN_SIZE_MIB: u64 = 16;
const MAX_SIZE_MIB: u64 = 1 << 20;
/// Largest host directory exported (its copy is made at every attach).
const MAX_EXPORT_BYTES: u64 = 4 << 30;
/// Guest directories a volume may not cover (the agent and the system need them).
const RESERVED: &[&str] = &[
    "/", "/proc", "/sys", "/dev", "/run", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64",
    "/boot",
];

/// A volume in one of a sandbox's slots, as stored with the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The slot (its disk's serial is `vol<slot>`).
    pub slot: u8,
    /// What is attached.
    pub source: VolumeSource,
    /// Mount point in the guest.
    pub path: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// The file QEMU opens for the slot.
    pub image: PathBuf,
    /// `image` is a qcow2 view (else raw).
    pub qcow2: bool,
}

impl Attachment {
    /// The caller's view of it.
    pub(crate) fn spec(&self) -> VolumeSpec {
        VolumeSpec {
            source: self.source.clone(),
            path: self.path.clone(),
            read_only: self.read_only,
        }
    }

    fn mount(&self, reprobe: bool) -> MountSpec {
        MountSpec {
            serial: zygote_qemu::volume_serial(self.slot as usize),
            path: self.path.clone(),
            read_only: self.read_only,
            reprobe,
        }
    }

    fn drive(&self) -> zygote_qemu::VolumeDrive {
        zygote_qemu::VolumeDrive {
            path: self.image.clone(),
            qcow2: self.qcow2,
        }
    }
}

/// The drives of a VM with `slots` slots holding `list`.
pub(crate) fn drives(slots: u8, list: &[Attachment]) -> Vec<Option<zygote_qemu::VolumeDrive>> {
    (0..slots)
        .map(|i| list.iter().find(|a| a.slot == i).map(Attachment::drive))
        .collect()
}

/// `<name>.json`: what the image file cannot say about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeMeta {
    size_bytes: u64,
    created_at_unix: u64,
}

/// The named volumes of a home and who holds them.
pub(crate) struct Volumes {
    root: PathBuf,
    host_root: Option<PathBuf>,
    /// Volume name → (sandbox id → read-only).
    holders: Mutex<BTreeMap<String, BTreeMap<String, bool>>>,
    /// Names being created.
    creating: Mutex<HashSet<String>>,
}

/// Volume names: 1-64 of a-z 0-9 `-` `_` `.`, not starting with `.`.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "volume name `{name}` is not valid: use 1-64 of a-z 0-9 - _ . (not starting with .)"
        )))
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> EngineError {
    move |source| EngineError::Io { what, source }
}

impl Volumes {
    /// The volumes of `home`; host directories may be exported from under
    /// `host_root` only.
    pub(crate) fn open(home: &Path, host_root: Option<PathBuf>) -> Result<Volumes> {
        let root = home.join("volumes");
        std::fs::create_dir_all(root.join(".attach"))
            .map_err(io(format!("cannot create {}", root.display())))?;
        let host_root = match host_root {
            Some(r) => Some(
                std::fs::canonicalize(&r)
                    .map_err(io(format!("volume host root {} is unusable", r.display())))?,
            ),
            None => None,
        };
        Ok(Volumes {
            root,
            host_root,
            holders: Mutex::new(BTreeMap::new()),
            creating: Mutex::new(HashSet::new()),
        })
    }

    fn image(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.img"))
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.json"))
    }

    fn attach_dir(&self, sandbox: &str) -> PathBuf {
        self.root.join(".attach").join(sandbox)
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<String, bool>>> {
        self.holders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Create a named volume of `size_mib` MiB holding an empty ext4.
    pub(crate) async fn create(&self, name: &str, size_mib: u64) -> Result<VolumeView> {
        check_name(name)?;
        if !(MIN_SIZE_MIB..=MAX_SIZE_MIB).contains(&size_mib) {
            return Err(EngineError::BadRequest(format!(
                "volume size {size_mib} MiB is out of range: pass {MIN_SIZE_MIB} MiB to {} GiB",
                MAX_SIZE_MIB >> 10
            )));
        }
        if self.names()?.len() >= MAX_VOLUMES {
            return Err(EngineError::Conflict(format!(
                "this home has {MAX_VOLUMES} volumes, the most it keeps: remove one with `zygote volume rm`"
            )));
        }
        let _creating = Creating::claim(self, name)?;
        if self.image(name).exists() {
            return Err(EngineError::Conflict(format!(
                "a volume named `{name}` exists: pick another name or remove it first"
            )));
        }
        let staged = self.root.join(format!(".{name}.img.tmp"));
        let size = size_mib << 20;
        let made = async {
            let f = std::fs::File::create(&staged)
                .map_err(io(format!("cannot create {}", staged.display())))?;
            f.set_len(size)
                .map_err(io(format!("cannot size {}", staged.display())))?;
            drop(f);
            mkfs(&staged, name, None).await?;
            crate::disks::sync_file(&staged)?;
            let meta = VolumeMeta {
                size_bytes: size,
                created_at_unix: now_unix(),
            };
            let json = serde_json::to_vec(&meta).unwrap_or_default();
            crate::disks::write_durable(&self.meta_path(name), &json)?;
            std::fs::rename(&staged, self.image(name))
                .map_err(io(format!("cannot publish volume `{name}`")))?;
            crate::disks::sync_dir(&self.root)?;
            Ok::<_, EngineError>(())
        };
        if let Err(e) = made.await {
            let _ = std::fs::remove_file(&staged);
            let _ = std::fs::remove_file(self.meta_path(name));
            return Err(e);
        }
        info!(volume = name, size_mib, "volume created");
        self.view(name)
    }

    fn names(&self) -> Result<Vec<String>> {
        let dir = std::fs::read_dir(&self.root)
            .map_err(io(format!("cannot list {}", self.root.display())))?;
        let mut names: Vec<String> = dir
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let name = n.strip_suffix(".img")?;
                (!name.starts_with('.')).then(|| name.to_string())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// One named volume.
    pub(crate) fn view(&self, name: &str) -> Result<VolumeView> {
        check_name(name)?;
        let img = self.image(name);
        let st = std::fs::metadata(&img).map_err(|_| EngineError::VolumeNotFound {
            name: name.to_string(),
        })?;
        let meta: Option<VolumeMeta> = std::fs::read(self.meta_path(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let holders = self
            .holders()
            .get(name)
            .map(|h| h.iter().map(|(s, ro)| (s.clone(), *ro)).collect())
            .unwrap_or_default();
        use std::os::unix::fs::MetadataExt;
        Ok(VolumeView {
            name: name.to_string(),
            size_bytes: st.len(),
            allocated_bytes: st.blocks() * 512,
            created_at_unix: meta.map(|m| m.created_at_unix).unwrap_or(0),
            holders,
        })
    }

    /// Every named volume, by name.
    pub(crate) fn list(&self) -> Result<Vec<VolumeView>> {
        Ok(self
            .names()?
            .iter()
            .filter_map(|n| self.view(n).ok())
            .collect())
    }

    /// Delete a named volume nobody holds.
    pub(crate) fn delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let holders = self.holders();
        if let Some(h) = holders.get(name).filter(|h| !h.is_empty()) {
            let ids: Vec<&str> = h.keys().map(String::as_str).collect();
            return Err(EngineError::Conflict(format!(
                "volume `{name}` is attached to {}: remove those sandboxes first",
                ids.join(", ")
            )));
        }
        std::fs::remove_file(self.image(name)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                EngineError::VolumeNotFound {
                    name: name.to_string(),
                }
            } else {
                EngineError::Io {
                    what: format!("cannot remove volume `{name}`"),
                    source: e,
                }
            }
        })?;
        let _ = std::fs::remove_file(self.meta_path(name));
        info!(volume = name, "volume removed");
        Ok(())
    }

    /// Check `specs` for a VM with `slots` slots; `copies` sandboxes will
    /// each get them.
    pub(crate) fn check(&self, specs: &[VolumeSpec], slots: u8, copies: u32) -> Result<()> {
        if specs.len() > slots as usize {
            return Err(EngineError::BadRequest(if slots == 0 {
                "this VM has no volume slots (its snapshot predates volumes): make a new snapshot to attach volumes".to_string()
            } else {
                format!(
                    "{} volumes asked for; a sandbox has {slots} volume slots",
                    specs.len()
                )
            }));
        }
        let mut paths = HashSet::new();
        let mut names = HashSet::new();
        for s in specs {
            check_mount_point(&s.path)?;
            if !paths.insert(s.path.trim_end_matches('/')) {
                return Err(EngineError::BadRequest(format!(
                    "two volumes are mounted at {}: give each its own path",
                    s.path
                )));
            }
            match &s.source {
                VolumeSource::Named(n) => {
                    check_name(n)?;
                    if !names.insert(n) {
                        return Err(EngineError::BadRequest(format!(
                            "volume `{n}` is named twice: attach it once"
                        )));
                    }
                    if !s.read_only && copies > 1 {
                        return Err(EngineError::BadRequest(format!(
                            "volume `{n}` is writable and {copies} children were asked for: one sandbox holds a writable volume; attach it read-only or spawn one child"
                        )));
                    }
                }
                VolumeSource::HostDir(p) => {
                    if !s.read_only {
                        return Err(EngineError::BadRequest(format!(
                            "host directory {} can only be attached read-only: set read_only",
                            p.display()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Take `specs` for sandbox `sandbox`: holds on named volumes, views and
    /// exports made. Dropping the lease before [`VolumeLease::commit`] undoes it.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        sandbox: &str,
        specs: &[VolumeSpec],
        slots: u8,
    ) -> Result<VolumeLease> {
        self.check(specs, slots, 1)?;
        let mut lease = VolumeLease {
            volumes: Some(self.clone()),
            sandbox: sandbox.to_string(),
            list: Vec::new(),
            committed: AtomicBool::new(specs.is_empty()),
        };
        if specs.is_empty() {
            return Ok(lease);
        }
        self.hold(sandbox, specs)?;
        let dir = self.attach_dir(sandbox);
        std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        for (slot, s) in specs.iter().enumerate() {
            let slot = slot as u8;
            let (image, qcow2) = match &s.source {
                VolumeSource::Named(n) if !s.read_only => (self.image(n), false),
                VolumeSource::Named(n) => {
                    let view = dir.join(format!("{slot}.qcow2"));
                    zygote_qemu::create_overlay(&self.image(n), "raw", &view).await?;
                    (view, true)
                }
                VolumeSource::HostDir(p) => {
                    let src = self.exportable(p)?;
                    let img = dir.join(format!("{slot}.img"));
                    export(&src, &img).await?;
                    (img, false)
                }
            };
            lease.list.push(Attachment {
                slot,
                source: s.source.clone(),
                path: s.path.clone(),
                read_only: s.read_only,
                image,
                qcow2,
            });
        }
        Ok(lease)
    }

    /// Record `sandbox`'s holds, refusing one a holder excludes.
    fn hold(&self, sandbox: &str, specs: &[VolumeSpec]) -> Result<()> {
        let mut holders = self.holders();
        for s in specs {
            let VolumeSource::Named(n) = &s.source else {
                continue;
            };
            if !self.image(n).exists() {
                return Err(EngineError::VolumeNotFound { name: n.clone() });
            }
            let h = holders.get(n).cloned().unwrap_or_default();
            let writer = h.iter().find(|(id, ro)| !**ro && *id != sandbox);
            let conflict = match (s.read_only, writer) {
                (_, Some((id, _))) => {
                    Some(format!("volume `{n}` is held writable by sandbox {id}"))
                }
                (false, None) if h.keys().any(|id| id != sandbox) => Some(format!(
                    "volume `{n}` is held read-only by {}",
                    h.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
                _ => None,
            };
            if let Some(why) = conflict {
                return Err(EngineError::Conflict(format!(
                    "{why}: one sandbox may hold a volume writable, or any number read-only, never both"
                )));
            }
        }
        for s in specs {
            if let VolumeSource::Named(n) = &s.source {
                holders
                    .entry(n.clone())
                    .or_default()
                    .insert(sandbox.to_string(), s.read_only);
            }
        }
        Ok(())
    }

    /// Holds of a sandbox a previous daemon left (running or paused).
    pub(crate) fn adopt(&self, sandbox: &str, list: &[Attachment]) {
        let mut holders = self.holders();
        for a in list {
            if let VolumeSource::Named(n) = &a.source {
                holders
                    .entry(n.clone())
                    .or_default()
                    .insert(sandbox.to_string(), a.read_only);
            }
        }
    }

    /// Let go of everything `sandbox` holds: its holds and its views.
    pub(crate) fn detach(&self, sandbox: &str) {
        {
            let mut holders = self.holders();
            for h in holders.values_mut() {
                h.remove(sandbox);
            }
            holders.retain(|_, h| !h.is_empty());
        }
        let dir = self.attach_dir(sandbox);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(error = %e, dir = %dir.display(), "cannot remove a sandbox's volume views");
            }
        }
    }

    /// Start-up: remove staged creations and the views of sandboxes no row
    /// names.
    pub(crate) fn sweep(&self, live: &HashSet<String>) {
        if let Ok(dir) = std::fs::read_dir(&self.root) {
            for e in dir.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with('.') && n.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir(self.root.join(".attach")) {
            for e in dir.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !live.contains(&id) {
                    info!(sandbox = %id, "removing volume views no sandbox holds");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// `p` if it may be exported: an existing directory under the host root.
    fn exportable(&self, p: &Path) -> Result<PathBuf> {
        let Some(root) = &self.host_root else {
            return Err(EngineError::BadRequest(format!(
                "host directory {} cannot be attached: this daemon exports no host directories (start it with --volume-host-root DIR)",
                p.display()
            )));
        };
        let real = std::fs::canonicalize(p).map_err(|e| {
            EngineError::BadRequest(format!("host directory {} is unusable: {e}", p.display()))
        })?;
        if !real.starts_with(root) || !real.is_dir() {
            return Err(EngineError::BadRequest(format!(
                "host path {} is not a directory under {}, the daemon's --volume-host-root",
                p.display(),
                root.display()
            )));
        }
        Ok(real)
    }
}

/// Marks a volume name as being created, for as long as it lives.
struct Creating<'a>(&'a Volumes, String);

impl<'a> Creating<'a> {
    fn claim(v: &'a Volumes, name: &str) -> Result<Creating<'a>> {
        let mut c = v.creating.lock().unwrap_or_else(|p| p.into_inner());
        if !c.insert(name.to_string()) {
            return Err(EngineError::Conflict(format!(
                "volume `{name}` is being created right now"
            )));
        }
        Ok(Creating(v, name.to_string()))
    }
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        let mut c = self.0.creating.lock().unwrap_or_else(|p| p.into_inner());
        c.remove(&self.1);
    }
}

/// What one sandbox has in its slots. Until [`VolumeLease::commit`] (the
/// sandbox is registered), dropping it lets go of everything; after, the
/// sandbox's removal does ([`Volumes::detach`]).
pub(crate) struct VolumeLease {
    volumes: Option<Arc<Volumes>>,
    sandbox: String,
    list: Vec<Attachment>,
    committed: AtomicBool,
}

impl VolumeLease {
    /// The attachments of a sandbox that already holds them (a resume, a
    /// re-adoption): dropping it lets go of nothing.
    pub(crate) fn existing(list: Vec<Attachment>) -> VolumeLease {
        VolumeLease {
            volumes: None,
            sandbox: String::new(),
            list,
            committed: AtomicBool::new(true),
        }
    }

    /// What is attached.
    pub(crate) fn list(&self) -> &[Attachment] {
        &self.list
    }

    /// The sandbox is registered: from now on its removal lets go.
    pub(crate) fn commit(self) -> Vec<Attachment> {
        self.committed.store(true, Ordering::SeqCst);
        self.list.clone()
    }
}

impl Drop for VolumeLease {
    fn drop(&mut self) {
        if !self.committed.load(Ordering::SeqCst) {
            if let Some(v) = &self.volumes {
                v.detach(&self.sandbox);
            }
        }
    }
}

/// Mount points: absolute, no `..`, not a system directory.
fn check_mount_point(path: &str) -> Result<()> {
    paths::guest_path(path)?;
    let p = path.trim_end_matches('/');
    let p = if p.is_empty() { "/" } else { p };
    if let Some(r) = RESERVED
        .iter()
        .find(|r| p == **r || (**r != "/" && p.starts_with(&format!("{r}/"))))
    {
        return Err(EngineError::BadRequest(format!(
            "volume mount point {path} is {} {r}, which the guest system needs: mount it elsewhere, e.g. /data",
            if p == *r { "the directory" } else { "under" }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_mount_points() {
        for ok in ["data", "a.b-c_1", "x"] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "Data", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for ok in ["/data", "/mnt/x", "/home/user/work", "/devices"] {
            check_mount_point(ok).unwrap();
        }
        for bad in [
            "/",
            "/proc",
            "/dev/x",
            "/etc/",
            "data",
            "/a/../etc",
            "/run/zygote",
        ] {
            assert!(check_mount_point(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn drives_put_each_volume_in_its_slot() {
        let a = Attachment {
            slot: 2,
            source: VolumeSource::Named("d".into()),
            path: "/d".into(),
            read_only: false,
            image: "/v/d.img".into(),
            qcow2: false,
        };
        let d = drives(4, &[a]);
        assert_eq!(d.len(), 4);
        assert!(d[0].is_none() && d[1].is_none() && d[3].is_none());
        assert_eq!(d[2].as_ref().unwrap().path, PathBuf::from("/v/d.img"));
    }

    #[tokio::test]
    async fn holders_exclude_each_other_and_views_go_with_the_sandbox() {
        let home = tempfile::tempdir().unwrap();
        let v = Arc::new(Volumes::open(home.path(), None).unwrap());
        v.create("data", 16).await.unwrap();
        let e = v.create("data", 16).await.unwrap_err();
        assert!(e.to_string().contains("exists"), "{e}");
        let rw = |ro| VolumeSpec {
            source: VolumeSource::Named("data".into()),
            path: "/data".into(),
            read_only: ro,
        };
        let a = v.attach("a", &[rw(false)], SLOTS).await.unwrap();
        a.commit();
        let e = v.attach("b", &[rw(true)], SLOTS).await.err().unwrap();
        assert!(e.to_string().contains("held writable by sandbox a"), "{e}");
        let e = v.delete("data").unwrap_err();
        assert!(e.to_string().contains("attached to a"), "{e}");
        v.detach("a");
        // Readers share; a writer is refused while they hold it.
        let b = v.attach("b", &[rw(true)], SLOTS).await.unwrap();
        assert!(b.list()[0].qcow2 && b.list()[0].image.exists());
        let view = b.list()[0].image.clone();
        let c = v.attach("c", &[rw(true)], SLOTS).await.unwrap();
        let e = v.attach("d", &[rw(false)], SLOTS).await.err().unwrap();
        assert!(e.to_string().contains("held read-only by b, c"), "{e}");
        // An uncommitted lease lets go when dropped.
        drop(b);
        assert!(!view.exists());
        assert_eq!(
            v.view("data").unwrap().holders,
            vec![("c".to_string(), true)]
        );
        c.commit();
        // Start-up sweep: views of sandboxes without a row go.
        v.sweep(&HashSet::new());
        assert!(!home.path().join("volumes/.attach/c").exists());
        let e = v
            .attach(
                "e",
                &[VolumeSpec {
                    source: VolumeSource::Named("nope".into()),
                    ..rw(true)
                }],
                SLOTS,
            )
            .await
            .err()
            .unwrap();
        assert!(matches!(e, EngineError::VolumeNotFound { .. }), "{e}");
        let e = v.check(&[rw(false)], SLOTS, 2).unwrap_err();
        assert!(
            e.to_string()
                .contains("one sandbox holds a writable volume"),
            "{e}"
        );
        let e = v.check(&[rw(true)], 0, 1).unwrap_err();
        assert!(e.to_string().contains("no volume slots"), "{e}");
    }

    #[tokio::test]
    async fn host_directories_need_the_host_root() {
        let home = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("ref")).unwrap();
        std::fs::write(root.path().join("ref/a.txt"), b"hello").unwrap();
        let spec = |p: &Path| VolumeSpec {
            source: VolumeSource::HostDir(p.to_path_buf()),
            path: "/ref".into(),
            read_only: true,
        };
        let closed = Arc::new(Volumes::open(home.path(), None).unwrap());
        let e = closed
            .attach("a", &[spec(&root.path().join("ref"))], SLOTS)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("--volume-host-root"), "{e}");
        let v = Arc::new(Volumes::open(home.path(), Some(root.path().to_path_buf())).unwrap());
        let e = v
            .attach("a", &[spec(Path::new("/etc"))], SLOTS)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a directory under"), "{e}");
        let l = v
            .attach("a", &[spec(&root.path().join("ref/../ref"))], SLOTS)
            .await
            .unwrap();
        let img = &l.list()[0].image;
        assert!(std::fs::metadata(img).unwrap().len() >= 32 << 20);
    }
}
