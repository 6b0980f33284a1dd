//! [`Mapping`]: a `MAP_SHARED` mapping of a [`MemFd`], unmapped on drop. Owns the
//! mapping only; the file stays owned by the `MemFd` it borrows.

use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use crate::{MemError, MemFd};

/// A read-write shared mapping of a whole [`MemFd`]. Writes are visible to every
/// other process mapping the file (QEMU with `share=on`), and vice versa, so the
/// contents may change under the caller at any time: access goes through copies
/// ([`Mapping::write`], [`Mapping::read`]), never through long-lived references.
#[derive(Debug)]
pub struct Mapping<'a> {
    ptr: NonNull<u8>,
    len: usize,
    memfd: &'a MemFd,
}

impl<'a> Mapping<'a> {
    /// Maps all of `memfd` shared, read-write.
    pub fn shared(memfd: &'a MemFd) -> Result<Mapping<'a>, MemError> {
        let len = usize::try_from(memfd.size()).map_err(|_| MemError::OutOfRange {
            name: memfd.name().into(),
            offset: 0,
            len: memfd.size(),
            size: memfd.size(),
        })?;
        // SAFETY: a fresh mapping (addr NULL) of a valid descriptor; the kernel
        // chooses the address, so no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(MemError::Io {
                op: format!("mmap of {len} bytes"),
                name: memfd.name().into(),
                source: io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| MemError::Io {
            op: "mmap returned NULL".into(),
            name: memfd.name().into(),
            source: io::Error::from(io::ErrorKind::Other),
        })?;
        Ok(Mapping { ptr, len, memfd })
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: memfds are at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `data` into the mapping at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), MemError> {
        self.memfd.check_range(offset as u64, data.len() as u64)?;
        // SAFETY: the range [offset, offset+len) is inside the mapping (checked
        // above; the mapping covers the whole file) and `data` cannot overlap it
        // since it is a Rust slice the mapping never hands out.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len());
        }
        Ok(())
    }

    /// Copies from the mapping at `offset` into `out`.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), MemError> {
        self.memfd.check_range(offset as u64, out.len() as u64)?;
        // SAFETY: the source range is inside the mapping (checked above) and `out`
        // is a distinct, writable Rust slice.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            );
        }
        Ok(())
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned and nothing refers to
        // the mapping after drop (no references into it are ever handed out).
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        if rc != 0 {
            tracing::warn!(
                name = self.memfd.name(),
                error = %io::Error::last_os_error(),
                "munmap failed"
            );
        }
    }
}
