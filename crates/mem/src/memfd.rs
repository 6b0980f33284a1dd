//! [`MemFd`]: create, size and measure one memfd, plain or hugetlb. Owns the file
//! descriptor and nothing else: no mapping lives here (see [`crate::Mapping`]),
//! and no policy (fallback, rounding, prefaulting: see [`crate::Region`]).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use crate::{sys, MemError};

/// Longest name `memfd_create` accepts (NAME_MAX minus the "memfd:" prefix).
const MAX_NAME_LEN: usize = 249;

/// One allocated (data) range of a memfd, from `SEEK_DATA`/`SEEK_HOLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRange {
    /// Start offset in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// An anonymous memory file created with `MFD_CLOEXEC | MFD_ALLOW_SEALING` (plus
/// `MFD_HUGETLB` for hugetlb files) and sized with `ftruncate`. Dropping it closes the descriptor; a QEMU that opened it
/// through [`MemFd::backend_path`] keeps its own mapping.
#[derive(Debug)]
pub struct MemFd {
    fd: OwnedFd,
    name: String,
    size: u64,
    kind: PageKind,
}

/// The page size backing a memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// Plain shmem, 4 KiB pages (transparent huge pages aside).
    Small,
    /// hugetlbfs, 2 MiB pages from the reserved pool (`MFD_HUGETLB | MFD_HUGE_2MB`).
    Huge2M,
}

impl PageKind {
    /// The page size in bytes: the unit a file of this kind is sized in.
    pub fn page_size(self) -> u64 {
        match self {
            PageKind::Small => 4096,
            PageKind::Huge2M => crate::HUGE_PAGE_2M,
        }
    }

    fn memfd_flags(self) -> libc::c_uint {
        match self {
            PageKind::Small => 0,
            // MFD_HUGE_2MB is log2(2 MiB) = 21 in the size field.
            PageKind::Huge2M => libc::MFD_HUGETLB | (21 << libc::MFD_HUGE_SHIFT),
        }
    }
}

impl MemFd {
    /// Creates a memfd called `name` (visible in `/proc/<pid>/fd` as
    /// `/memfd:<name>`) of `size` bytes. Pages are allocated lazily on first write.
    pub fn create(name: &str, size: u64) -> Result<MemFd, MemError> {
        MemFd::create_with(name, size, PageKind::Small)
    }

    /// Creates a memfd of `size` bytes backed by `kind` pages. For
    /// [`PageKind::Huge2M`] `size` must be a multiple of 2 MiB (the kernel refuses
    /// anything else with EINVAL); [`crate::Region`] does the rounding.
    pub(crate) fn create_with(name: &str, size: u64, kind: PageKind) -> Result<MemFd, MemError> {
        if size == 0 {
            return Err(MemError::ZeroSize { name: name.into() });
        }
        if name.len() > MAX_NAME_LEN {
            return Err(MemError::InvalidName { name: name.into() });
        }
        let cname = CString::new(name).map_err(|_| MemError::InvalidName { name: name.into() })?;
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | kind.memfd_flags();
        let fd = sys::memfd_create(&cname, flags).map_err(|source| MemError::Create {
            name: name.into(),
            source,
        })?;
        sys::ftruncate(fd.as_fd(), size).map_err(|source| MemError::Resize {
            name: name.into(),
            size,
            source,
        })?;
        tracing::debug!(name, size, ?kind, fd = fd.as_raw_fd(), "memfd created");
        Ok(MemFd {
            fd,
            name: name.into(),
            size,
            kind,
        })
    }

    /// A memfd another process created and this one was handed (for example
    /// taken from a QEMU with `pidfd_getfd` by a daemon that restarted): its
    /// size from `fstat`, its page kind from the block size the kernel reports.
    pub fn from_fd(fd: OwnedFd, name: &str) -> Result<MemFd, MemError> {
        let st = sys::fstat(fd.as_fd()).map_err(|source| MemError::File {
            op: "fstat an adopted memfd".into(),
            path: PathBuf::from(format!("memfd:{name}")),
            source,
        })?;
        let kind = if u64::try_from(st.st_blksize).unwrap_or(0) >= crate::HUGE_PAGE_2M {
            PageKind::Huge2M
        } else {
            PageKind::Small
        };
        Ok(MemFd {
            fd,
            name: name.into(),
            size: u64::try_from(st.st_size).unwrap_or(0),
            kind,
        })
    }

    /// The size in bytes given at creation (for hugetlb files, the 2 MiB-aligned
    /// size; [`crate::Region::size`] has the logical one).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The page size backing the file.
    pub fn kind(&self) -> PageKind {
        self.kind
    }

    /// `/proc/<this process's pid>/fd/<n>`: the path QEMU opens as `mem-path=`.
    /// Valid only while this `MemFd` is alive.
    pub fn backend_path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.fd.as_raw_fd()
        ))
    }

    /// Borrows the descriptor.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Bytes of the file backed by memory, from `fstat`'s `st_blocks * 512`
    /// (one syscall; pages written by QEMU through its mapping count too).
    pub fn allocated_bytes(&self) -> Result<u64, MemError> {
        let st = sys::fstat(self.as_fd()).map_err(|e| self.io_err_with("fstat".into(), e))?;
        Ok(u64::try_from(st.st_blocks).unwrap_or(0) * 512)
    }

    /// The allocated ranges, walked with `SEEK_DATA`/`SEEK_HOLE`, in order.
    /// (hugetlbfs has no holes to report: a hugetlb file is one range.)
    pub fn data_ranges(&self) -> Result<Vec<DataRange>, MemError> {
        sys::data_ranges(self.as_fd(), self.size)
            .map_err(|e| self.io_err_with("lseek SEEK_DATA/SEEK_HOLE".into(), e))
    }

    /// Writes `buf` at `offset` with `pwrite` (the whole buffer, retrying short
    /// writes). Refuses to grow the file. Hugetlb files refuse it (EINVAL).
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), MemError> {
        self.check_range(offset, buf.len() as u64)?;
        sys::pwrite_all(self.as_fd(), buf, offset)
            .map_err(|e| self.io_err_with(format!("pwrite at {offset}"), e))
    }

    /// Reads `buf.len()` bytes at `offset` with `pread` (holes read as zeros).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.check_range(offset, buf.len() as u64)?;
        sys::pread_exact(self.as_fd(), buf, offset)
            .map_err(|e| self.io_err_with(format!("pread at {offset}"), e))
    }

    pub(crate) fn check_range(&self, offset: u64, len: u64) -> Result<(), MemError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(MemError::OutOfRange {
                name: self.name.clone(),
                offset,
                len,
                size: self.size,
            }),
        }
    }

    pub(crate) fn io_err_with(&self, op: String, source: io::Error) -> MemError {
        MemError::Io {
            op,
            name: self.name.clone(),
            source,
        }
    }
}

impl AsFd for MemFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_zero_size_and_bad_names() {
        assert!(matches!(
            MemFd::create("x", 0),
            Err(MemError::ZeroSize { .. })
        ));
        assert!(matches!(
            MemFd::create("a\0b", 4096),
            Err(MemError::InvalidName { .. })
        ));
        assert!(matches!(
            MemFd::create(&"n".repeat(300), 4096),
            Err(MemError::InvalidName { .. })
        ));
    }

    #[test]
    fn out_of_range_io_is_refused() {
        let m = MemFd::create("oor", 8192).unwrap();
        assert!(matches!(
            m.write_at(8190, &[0; 4]),
            Err(MemError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.write_at(u64::MAX, &[0; 4]),
            Err(MemError::OutOfRange { .. })
        ));
    }
}
