//! [`MemFd`]: create, size and measure one memfd. Owns the file descriptor and
//! nothing else: no mapping lives here (see [`crate::Mapping`]).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use crate::MemError;

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

/// An anonymous memory file created with `MFD_CLOEXEC | MFD_ALLOW_SEALING` and
/// sized with `ftruncate`. Dropping it closes the descriptor; a QEMU that opened it
/// through [`MemFd::backend_path`] keeps its own mapping.
#[derive(Debug)]
pub struct MemFd {
    fd: OwnedFd,
    name: String,
    size: u64,
}

impl MemFd {
    /// Creates a memfd called `name` (visible in `/proc/<pid>/fd` as
    /// `/memfd:<name>`) of `size` bytes. Pages are allocated lazily on first write.
    pub fn create(name: &str, size: u64) -> Result<MemFd, MemError> {
        if size == 0 {
            return Err(MemError::ZeroSize { name: name.into() });
        }
        if name.len() > MAX_NAME_LEN {
            return Err(MemError::InvalidName { name: name.into() });
        }
        let cname = CString::new(name).map_err(|_| MemError::InvalidName { name: name.into() })?;
        // SAFETY: `cname` is a valid NUL-terminated string that outlives the call;
        // the flags are valid memfd_create flags.
        let raw = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if raw < 0 {
            return Err(MemError::Create {
                name: name.into(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = libc::off_t::try_from(size).map_err(|_| MemError::Resize {
            name: name.into(),
            size,
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        // SAFETY: `fd` is a valid open descriptor owned by us.
        let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), len) };
        if rc < 0 {
            return Err(MemError::Resize {
                name: name.into(),
                size,
                source: io::Error::last_os_error(),
            });
        }
        tracing::debug!(name, size, fd = fd.as_raw_fd(), "memfd created");
        Ok(MemFd {
            fd,
            name: name.into(),
            size,
        })
    }

    /// The size in bytes given at creation.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.name
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
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `fd` is valid and `st` points to writable memory for one `stat`.
        let rc = unsafe { libc::fstat(self.fd.as_raw_fd(), st.as_mut_ptr()) };
        if rc < 0 {
            return Err(self.io_err("fstat".into()));
        }
        // SAFETY: fstat returned 0, so it initialised `st`.
        let st = unsafe { st.assume_init() };
        Ok(u64::try_from(st.st_blocks).unwrap_or(0) * 512)
    }

    /// The allocated ranges, walked with `SEEK_DATA`/`SEEK_HOLE`, in order.
    pub fn data_ranges(&self) -> Result<Vec<DataRange>, MemError> {
        let mut ranges = Vec::new();
        let mut pos: u64 = 0;
        while pos < self.size {
            let Some(start) = self.seek(pos, libc::SEEK_DATA)? else {
                break; // ENXIO: no data at or after `pos`.
            };
            let end = self.seek(start, libc::SEEK_HOLE)?.unwrap_or(self.size);
            let end = end.min(self.size);
            if end <= start {
                break;
            }
            ranges.push(DataRange {
                offset: start,
                len: end - start,
            });
            pos = end;
        }
        Ok(ranges)
    }

    /// Writes `buf` at `offset` with `pwrite` (the whole buffer, retrying short
    /// writes). Refuses to grow the file.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), MemError> {
        self.check_range(offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let rest = &buf[done..];
            let off = libc::off_t::try_from(offset + done as u64).unwrap_or(libc::off_t::MAX);
            // SAFETY: `rest` is a valid readable buffer of `rest.len()` bytes and
            // `fd` is a valid descriptor.
            let n =
                unsafe { libc::pwrite(self.fd.as_raw_fd(), rest.as_ptr().cast(), rest.len(), off) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.io_err_with(format!("pwrite at {offset}"), err));
            }
            if n == 0 {
                return Err(self.io_err_with(
                    format!("pwrite at {offset}"),
                    io::Error::from(io::ErrorKind::WriteZero),
                ));
            }
            done += n as usize;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset` with `pread` (holes read as zeros).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.check_range(offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let rest = &mut buf[done..];
            let off = libc::off_t::try_from(offset + done as u64).unwrap_or(libc::off_t::MAX);
            // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes and
            // `fd` is a valid descriptor.
            let n = unsafe {
                libc::pread(
                    self.fd.as_raw_fd(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    off,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.io_err_with(format!("pread at {offset}"), err));
            }
            if n == 0 {
                return Err(self.io_err_with(
                    format!("pread at {offset}"),
                    io::Error::from(io::ErrorKind::UnexpectedEof),
                ));
            }
            done += n as usize;
        }
        Ok(())
    }

    /// `lseek(fd, pos, whence)`; `None` on ENXIO (no more data/hole).
    fn seek(&self, pos: u64, whence: libc::c_int) -> Result<Option<u64>, MemError> {
        let off = libc::off_t::try_from(pos).unwrap_or(libc::off_t::MAX);
        // SAFETY: `fd` is a valid descriptor; lseek does not touch memory.
        let r = unsafe { libc::lseek(self.fd.as_raw_fd(), off, whence) };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                return Ok(None);
            }
            let what = if whence == libc::SEEK_DATA {
                "SEEK_DATA"
            } else {
                "SEEK_HOLE"
            };
            return Err(self.io_err_with(format!("lseek {what} at {pos}"), err));
        }
        Ok(Some(r as u64))
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

    fn io_err(&self, op: String) -> MemError {
        self.io_err_with(op, io::Error::last_os_error())
    }

    fn io_err_with(&self, op: String, source: io::Error) -> MemError {
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
