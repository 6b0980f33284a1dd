//! Mappings of memory files, unmapped on drop.
//!
//! * [`Mapping`]: the public read-write `MAP_SHARED` mapping of a whole [`MemFd`].
//! * `RawMap` (crate-private): an owned mapping of any descriptor, with the
//!   bounds-checked bulk operations the copy, prefault and persist code needs
//!   (`pread` into it, `pwrite` out of it, `memcpy` between two, populate, zero
//!   checks). No Rust reference into a mapping is ever handed out: the file may be
//!   shared with QEMU, so every access is a copy through a raw pointer.

use std::io;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use crate::{sys, MemError, MemFd};

/// An owned mapping of `len` bytes at `ptr`.
#[derive(Debug)]
pub(crate) struct RawMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a RawMap is a plain address range; it holds no thread-bound state and
// every access goes through raw-pointer copies (never references), so moving it to
// another thread is sound.
unsafe impl Send for RawMap {}
// SAFETY: shared access only ever copies bytes in or out through raw pointers; the
// memory is a shared file mapping that other processes write concurrently anyway,
// so no Rust aliasing guarantee is relied upon. Callers split work into disjoint
// ranges so the bytes they produce are well defined.
unsafe impl Sync for RawMap {}

impl RawMap {
    /// Maps `len` bytes of `fd` from offset 0, `MAP_SHARED`, read-only or
    /// read-write.
    pub(crate) fn shared(fd: BorrowedFd<'_>, len: u64, writable: bool) -> io::Result<RawMap> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let ptr = sys::mmap(fd, len, prot, libc::MAP_SHARED)?;
        Ok(RawMap { ptr, len })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn check(&self, offset: usize, len: usize) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {offset}+{len} outside a mapping of {} bytes",
                    self.len
                ),
            )),
        }
    }

    /// Copies `data` into the mapping at `offset`.
    pub(crate) fn copy_in(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        self.check(offset, data.len())?;
        // SAFETY: the destination range is inside the mapping (checked above) and
        // `data` is a Rust slice, which cannot overlap a mapping we never lend out.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len())
        };
        Ok(())
    }

    /// Copies from the mapping at `offset` into `out`.
    pub(crate) fn copy_out(&self, offset: usize, out: &mut [u8]) -> io::Result<()> {
        self.check(offset, out.len())?;
        // SAFETY: the source range is inside the mapping (checked above) and `out`
        // is a distinct, exclusively borrowed slice.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    /// Copies `len` bytes at `offset` of `src` into this mapping at the same offset.
    pub(crate) fn copy_from_map(&self, src: &RawMap, offset: usize, len: usize) -> io::Result<()> {
        self.check(offset, len)?;
        src.check(offset, len)?;
        // SAFETY: both ranges are inside their mappings (checked above); two
        // distinct mappings occupy distinct virtual ranges, so they cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.ptr.as_ptr().add(offset),
                self.ptr.as_ptr().add(offset),
                len,
            )
        };
        Ok(())
    }

    /// `pread`s `len` bytes of `fd` at `offset` into the mapping at the same offset.
    pub(crate) fn fill_from_fd(
        &self,
        fd: BorrowedFd<'_>,
        offset: usize,
        len: usize,
    ) -> io::Result<()> {
        self.check(offset, len)?;
        // SAFETY: the range is inside the mapping (checked above), which is
        // writable when callers use this (they map destinations read-write), and no
        // Rust reference points into it.
        unsafe { sys::pread_ptr(fd, self.ptr.as_ptr().add(offset), len, offset as u64) }
    }

    /// `pwrite`s `len` bytes of the mapping at `offset` to `fd` at `file_offset`.
    pub(crate) fn write_to_fd(
        &self,
        fd: BorrowedFd<'_>,
        offset: usize,
        len: usize,
        file_offset: u64,
    ) -> io::Result<()> {
        self.check(offset, len)?;
        // SAFETY: the range is inside the mapping (checked above) and readable for
        // as long as `self` lives, which outlasts the call.
        unsafe { sys::pwrite_ptr(fd, self.ptr.as_ptr().add(offset), len, file_offset) }
    }

    /// Faults in (allocating if needed) every page of `offset..offset+len` for
    /// writing with `MADV_POPULATE_WRITE`, so that later writes take no fault.
    pub(crate) fn populate_write(&self, offset: usize, len: usize) -> io::Result<()> {
        self.check(offset, len)?;
        // SAFETY: the range is inside our mapping (checked above);
        // MADV_POPULATE_WRITE only faults pages in and never changes contents.
        unsafe {
            sys::madvise(
                self.ptr.as_ptr().add(offset),
                len,
                libc::MADV_POPULATE_WRITE,
            )
        }
    }

    /// Whether `offset..offset+len` of the mapping is all zero bytes.
    pub(crate) fn is_zero(&self, offset: usize, len: usize) -> io::Result<bool> {
        self.check(offset, len)?;
        let mut buf = [0u8; 4096];
        let mut pos = offset;
        while pos < offset + len {
            let n = (offset + len - pos).min(buf.len());
            self.copy_out(pos, &mut buf[..n])?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            pos += n;
        }
        Ok(true)
    }
}

impl Drop for RawMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and nothing refers to
        // the mapping after drop (no references into it are ever handed out).
        if let Err(error) = unsafe { sys::munmap(self.ptr, self.len) } {
            tracing::warn!(%error, len = self.len, "munmap failed");
        }
    }
}

/// A read-write shared mapping of a whole [`MemFd`]. Writes are visible to every
/// other process mapping the file (QEMU with `share=on`), and vice versa, so the
/// contents may change under the caller at any time: access goes through copies
/// ([`Mapping::write`], [`Mapping::read`]), never through long-lived references.
#[derive(Debug)]
pub struct Mapping<'a> {
    map: RawMap,
    memfd: &'a MemFd,
}

impl<'a> Mapping<'a> {
    /// Maps all of `memfd` shared, read-write.
    pub fn shared(memfd: &'a MemFd) -> Result<Mapping<'a>, MemError> {
        let map =
            RawMap::shared(memfd.as_fd(), memfd.size(), true).map_err(|source| MemError::Io {
                op: format!("mmap of {} bytes", memfd.size()),
                name: memfd.name().into(),
                source,
            })?;
        Ok(Mapping { map, memfd })
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never: memfds are at least one byte).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Copies `data` into the mapping at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), MemError> {
        self.memfd.check_range(offset as u64, data.len() as u64)?;
        self.map.copy_in(offset, data).map_err(|source| {
            self.memfd
                .io_err_with(format!("write to mapping at {offset}"), source)
        })
    }

    /// Copies from the mapping at `offset` into `out`.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), MemError> {
        self.memfd.check_range(offset as u64, out.len() as u64)?;
        self.map.copy_out(offset, out).map_err(|source| {
            self.memfd
                .io_err_with(format!("read from mapping at {offset}"), source)
        })
    }
}
