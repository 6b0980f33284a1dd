//! Sealing: making snapshot memory immutable forever with
//! `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`.
//!
//! Every memfd of this crate is created with `MFD_ALLOW_SEALING`; hugetlb memfds
//! take seals too (Linux >= 4.16). `F_SEAL_WRITE` fails with EBUSY while any
//! writable shared mapping exists, so [`Region::seal`] drops its own first. After
//! sealing, `pwrite`, `ftruncate` and writable shared `mmap` fail with EPERM;
//! read-only and private mappings (children, share=off) still work.

use crate::{sys, MemError, MemFd, Region};

/// The seals a snapshot carries.
pub const SNAPSHOT_SEALS: libc::c_int =
    libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

impl MemFd {
    /// Adds [`SNAPSHOT_SEALS`]. Fails with [`MemError::SealBusy`] while a writable
    /// shared mapping of the file exists (a [`crate::Mapping`], a share=on QEMU).
    /// Sealing an already sealed file is a no-op.
    pub fn seal(&self) -> Result<(), MemError> {
        if self.is_sealed()? {
            return Ok(());
        }
        sys::add_seals(self.as_fd(), SNAPSHOT_SEALS).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                MemError::SealBusy {
                    name: self.name().into(),
                }
            } else {
                self.io_err_with("fcntl F_ADD_SEALS".into(), e)
            }
        })?;
        tracing::debug!(name = self.name(), "memfd sealed");
        Ok(())
    }

    /// The file's seals (`F_GET_SEALS`), as `libc::F_SEAL_*` bits.
    pub fn seals(&self) -> Result<libc::c_int, MemError> {
        sys::get_seals(self.as_fd()).map_err(|e| self.io_err_with("fcntl F_GET_SEALS".into(), e))
    }

    /// Whether writes are sealed off.
    pub fn is_sealed(&self) -> Result<bool, MemError> {
        Ok(self.seals()? & libc::F_SEAL_WRITE != 0)
    }
}

impl Region {
    /// Drops the region's own writable mapping, then seals the file (see
    /// [`MemFd::seal`]).
    pub fn seal(&mut self) -> Result<(), MemError> {
        self.map = None;
        self.memfd.seal()
    }

    /// Whether writes are sealed off.
    pub fn is_sealed(&self) -> Result<bool, MemError> {
        self.memfd.is_sealed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mapping;

    #[test]
    fn seal_refused_while_mapped_then_writes_fail_with_eperm() {
        let m = MemFd::create("zygote-seal-unit", 8192).unwrap();
        m.write_at(0, b"before").unwrap();
        {
            let _map = Mapping::shared(&m).unwrap();
            assert!(matches!(m.seal(), Err(MemError::SealBusy { .. })));
        }
        m.seal().unwrap();
        m.seal().unwrap();
        assert_eq!(m.seals().unwrap() & SNAPSHOT_SEALS, SNAPSHOT_SEALS);
        match m.write_at(0, b"after") {
            Err(MemError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EPERM))
            }
            other => panic!("expected EPERM, got {other:?}"),
        }
        let mut b = [0u8; 6];
        m.read_at(0, &mut b).unwrap();
        assert_eq!(&b, b"before");
    }
}
