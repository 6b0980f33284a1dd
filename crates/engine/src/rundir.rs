//! [`RuntimeDir`]: a sandbox's directory under `<home>/sandboxes/<id>` and the
//! names of the files in it (overlays, sockets, console log, transfer disk).
//! It removes the directory when dropped, so a VM that fails half-way through
//! starting leaves nothing behind, unless the sandbox was left running for the
//! next daemon ([`RuntimeDir::keep`]).

use std::path::{Path, PathBuf};

use tracing::warn;

use crate::error::{EngineError, Result};

/// A sandbox's runtime directory; removed with everything in it on drop.
#[derive(Debug)]
pub(crate) struct RuntimeDir {
    path: PathBuf,
    keep: std::sync::atomic::AtomicBool,
}

impl RuntimeDir {
    /// Create `<root>/<id>`.
    pub(crate) fn create(root: &Path, id: &str) -> Result<RuntimeDir> {
        let path = root.join(id);
        std::fs::create_dir_all(&path).map_err(|source| EngineError::Io {
            what: format!("cannot create {}", path.display()),
            source,
        })?;
        Ok(RuntimeDir {
            path,
            keep: false.into(),
        })
    }

    /// The directory a previous daemon used (it may be gone already).
    pub(crate) fn existing(path: PathBuf) -> RuntimeDir {
        RuntimeDir {
            path,
            keep: false.into(),
        }
    }

    /// The name of a directory this value does not own (a paused sandbox's:
    /// its VM, once resumed, owns it); never removed on drop.
    pub(crate) fn unowned(path: PathBuf) -> RuntimeDir {
        RuntimeDir {
            path,
            keep: true.into(),
        }
    }

    /// Leave the directory when dropped: its QEMU runs on for the next daemon.
    pub(crate) fn keep(&self) {
        self.keep.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The writable overlay of disk generation `generation` (1 is the first).
    pub(crate) fn overlay(&self, generation: u32) -> PathBuf {
        if generation <= 1 {
            self.path.join("disk.qcow2")
        } else {
            self.path.join(format!("disk-g{generation}.qcow2"))
        }
    }

    /// QMP socket (QEMU listens).
    pub(crate) fn qmp_socket(&self) -> PathBuf {
        self.path.join("qmp.sock")
    }

    /// Agent socket (QEMU listens; the guest sees port `agent`).
    pub(crate) fn agent_socket(&self) -> PathBuf {
        self.path.join("agent.sock")
    }

    /// The serial console's log.
    pub(crate) fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }

    /// The bulk file-transfer disk.
    pub(crate) fn xfer_disk(&self) -> PathBuf {
        self.path.join(crate::ops::xfer::XFER_IMG)
    }

    /// Remove the directory and everything in it now.
    pub(crate) fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(error = %e, dir = %self.path.display(), "cannot remove a sandbox directory");
            }
        }
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        if !self.keep.load(std::sync::atomic::Ordering::SeqCst) {
            self.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_removal_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let r = RuntimeDir::create(d.path(), "s1").unwrap();
        assert_eq!(r.overlay(1), d.path().join("s1/disk.qcow2"));
        assert_eq!(r.overlay(3), d.path().join("s1/disk-g3.qcow2"));
        std::fs::write(r.console_log(), b"x").unwrap();
        let p = r.path().to_path_buf();
        drop(r);
        assert!(!p.exists());
        // A directory that is already gone is fine.
        drop(RuntimeDir::existing(d.path().join("gone")));
        // An unowned one stays.
        std::fs::create_dir_all(d.path().join("s3")).unwrap();
        drop(RuntimeDir::unowned(d.path().join("s3")));
        assert!(d.path().join("s3").exists());
        // A kept one stays.
        let k = RuntimeDir::create(d.path(), "s2").unwrap();
        k.keep();
        drop(k);
        assert!(d.path().join("s2").exists());
    }
}
