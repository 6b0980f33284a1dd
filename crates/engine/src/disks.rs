//! Frozen disk generations under `<home>/disks` and who needs them: a
//! [`DiskHold`] keeps files alive for a sandbox's backing chain, a start in
//! flight or a branch whose snapshot is not committed yet, so garbage
//! collection (after a snapshot is deleted, and at start-up) never removes a
//! file something is about to use. Also the durable-write helpers a snapshot
//! needs before it may say `ready` (fsync of files and directories).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{EngineError, Result};

/// Reference counts of held disk files.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    counts: Mutex<HashMap<PathBuf, usize>>,
}

impl Holds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold `paths` until the returned value is dropped.
    pub(crate) fn hold(self: &Arc<Self>, paths: Vec<PathBuf>) -> DiskHold {
        let mut c = self.lock();
        for p in &paths {
            *c.entry(p.clone()).or_default() += 1;
        }
        DiskHold {
            holds: self.clone(),
            paths,
        }
    }

    /// Whether `path` is held.
    #[cfg(test)]
    pub(crate) fn is_held(&self, path: &Path) -> bool {
        self.lock().get(path).is_some_and(|n| *n > 0)
    }

    /// Every held path (for garbage collection).
    pub(crate) fn held(&self) -> Vec<PathBuf> {
        self.lock().keys().cloned().collect()
    }
}

/// Keeps disk files from garbage collection while it lives.
#[derive(Debug)]
pub(crate) struct DiskHold {
    holds: Arc<Holds>,
    paths: Vec<PathBuf>,
}

impl DiskHold {
    /// The files held.
    pub(crate) fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// A hold of nothing (from the same registry).
    pub(crate) fn none(&self) -> DiskHold {
        self.holds.hold(Vec::new())
    }

    /// A hold of these files and `more`.
    pub(crate) fn extended(&self, more: PathBuf) -> DiskHold {
        let mut paths = self.paths.clone();
        paths.push(more);
        self.holds.hold(paths)
    }
}

impl Clone for DiskHold {
    fn clone(&self) -> DiskHold {
        self.holds.hold(self.paths.clone())
    }
}

impl Drop for DiskHold {
    fn drop(&mut self) {
        let mut c = self.holds.lock();
        for p in &self.paths {
            if let Some(n) = c.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    c.remove(p);
                }
            }
        }
    }
}

/// Bytes free for this process on the filesystem holding `path` (`statvfs`).
pub(crate) fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs(3) reads a NUL-terminated path and fills the zeroed
    // struct we pass; both live for the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuse to write about `needed` bytes of `what` under `path` when its
/// filesystem has less free.
pub(crate) fn ensure_room(path: &Path, needed: u64, what: &str) -> Result<()> {
    let free = free_bytes(path).map_err(io(format!("cannot statvfs {}", path.display())))?;
    if free < needed {
        return Err(EngineError::DiskFull {
            what: what.to_string(),
            path: path.display().to_string(),
            needed_mib: needed.div_ceil(1 << 20),
            free_mib: free >> 20,
        });
    }
    Ok(())
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> EngineError {
    move |source| EngineError::Io { what, source }
}

/// fsync a file's data and metadata.
pub(crate) fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("cannot fsync {}", path.display())))
}

/// fsync a directory (so the names in it are durable).
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("cannot fsync the directory {}", path.display())))
}

/// Write `bytes` to `path` and fsync it.
pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    File::create(path)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(io(format!("cannot write {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_count_and_release() {
        let h = Arc::new(Holds::default());
        let a = PathBuf::from("/d/a");
        let one = h.hold(vec![a.clone()]);
        let two = one.clone();
        assert!(h.is_held(&a));
        drop(one);
        assert!(h.is_held(&a), "a clone still holds it");
        drop(two);
        assert!(!h.is_held(&a));
        assert!(h.held().is_empty());
    }

    #[test]
    fn free_space_and_refusals() {
        let d = tempfile::tempdir().unwrap();
        assert!(free_bytes(d.path()).unwrap() > 0);
        ensure_room(d.path(), 1, "a test").unwrap();
        let e = ensure_room(d.path(), u64::MAX / 2, "a snapshot")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a snapshot needs about") && e.contains("MiB is free"),
            "{e}"
        );
        assert!(free_bytes(Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn durable_writes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.json");
        write_durable(&p, b"{}").unwrap();
        sync_file(&p).unwrap();
        sync_dir(d.path()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        let e = sync_file(&d.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
