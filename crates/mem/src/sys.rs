//! The syscalls, each wrapped once. Everything above this module is safe code over
//! these functions (and [`crate::map::RawMap`], which owns mappings).
//!
//! Functions taking raw pointers are `unsafe fn` with their contract written down;
//! their only callers are the safe slice wrappers here and `RawMap`'s bounds-checked
//! methods. Nothing here knows about memfd names or regions: errors are plain
//! `io::Error`s that the callers wrap with the name and the value involved.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::DataRange;

/// `-1` → `Err(last_os_error)`, retrying `EINTR`.
fn retry<T: PartialOrd + Default>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        let r = f();
        if r < T::default() {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(r);
    }
}

fn off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `memfd_create(name, flags)`.
pub(crate) fn memfd_create(name: &CStr, flags: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call;
    // memfd_create validates `flags` itself (EINVAL).
    let raw = retry(|| unsafe { libc::memfd_create(name.as_ptr(), flags) })?;
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `ftruncate(fd, len)`.
pub(crate) fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len = off(len)?;
    // SAFETY: `fd` is a valid open descriptor; ftruncate touches no memory of ours.
    retry(|| unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(())
}

/// `fallocate(fd, mode, offset, len)`.
pub(crate) fn fallocate(
    fd: BorrowedFd<'_>,
    mode: libc::c_int,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    let (o, l) = (off(offset)?, off(len)?);
    // SAFETY: `fd` is a valid open descriptor; fallocate touches no memory of ours.
    retry(|| unsafe { libc::fallocate(fd.as_raw_fd(), mode, o, l) })?;
    Ok(())
}

/// `fstat(fd)`.
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is valid and `st` points to writable memory for one `stat`.
    retry(|| unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so it initialised `st`.
    Ok(unsafe { st.assume_init() })
}

/// `lseek(fd, pos, whence)`; `None` on ENXIO (no data/hole at or after `pos`).
pub(crate) fn lseek(fd: BorrowedFd<'_>, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let p = off(pos)?;
    // SAFETY: `fd` is a valid descriptor; lseek touches no memory of ours.
    match retry(|| unsafe { libc::lseek(fd.as_raw_fd(), p, whence) }) {
        Ok(r) => Ok(Some(r as u64)),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The allocated ranges of the first `size` bytes of `fd`, from
/// `SEEK_DATA`/`SEEK_HOLE`, in order. Works on memfds and regular files alike;
/// hugetlbfs reports the whole file as data.
pub(crate) fn data_ranges(fd: BorrowedFd<'_>, size: u64) -> io::Result<Vec<DataRange>> {
    let mut ranges = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let Some(start) = lseek(fd, pos, libc::SEEK_DATA)? else {
            break;
        };
        if start >= size {
            break;
        }
        let end = lseek(fd, start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
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

/// `pwrite` of `len` bytes at `ptr` to `fd` at `offset`, retrying short writes.
///
/// # Safety
/// `ptr..ptr+len` must be readable for the whole call.
pub(crate) unsafe fn pwrite_ptr(
    fd: BorrowedFd<'_>,
    ptr: *const u8,
    len: usize,
    offset: u64,
) -> io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let o = off(offset + done as u64)?;
        // SAFETY: the caller guarantees `ptr..ptr+len` is readable; we pass a
        // sub-range of it.
        let n =
            retry(|| unsafe { libc::pwrite(fd.as_raw_fd(), ptr.add(done).cast(), len - done, o) })?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        done += n as usize;
    }
    Ok(())
}

/// `pread` of `len` bytes from `fd` at `offset` into `ptr`, retrying short reads.
///
/// # Safety
/// `ptr..ptr+len` must be writable for the whole call and not aliased by a Rust
/// reference.
pub(crate) unsafe fn pread_ptr(
    fd: BorrowedFd<'_>,
    ptr: *mut u8,
    len: usize,
    offset: u64,
) -> io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let o = off(offset + done as u64)?;
        // SAFETY: the caller guarantees `ptr..ptr+len` is writable and unaliased;
        // we pass a sub-range of it.
        let n =
            retry(|| unsafe { libc::pread(fd.as_raw_fd(), ptr.add(done).cast(), len - done, o) })?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        done += n as usize;
    }
    Ok(())
}

/// Writes all of `buf` to `fd` at `offset`.
pub(crate) fn pwrite_all(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<()> {
    // SAFETY: `buf` is a readable slice of `buf.len()` bytes for the whole call.
    unsafe { pwrite_ptr(fd, buf.as_ptr(), buf.len(), offset) }
}

/// Fills all of `buf` from `fd` at `offset`.
pub(crate) fn pread_exact(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<()> {
    // SAFETY: `buf` is an exclusively borrowed, writable slice for the whole call.
    unsafe { pread_ptr(fd, buf.as_mut_ptr(), buf.len(), offset) }
}

#[cfg(test)]
thread_local! {
    /// mmap calls made by this thread (tests assert a refusal happens before any).
    pub(crate) static MMAP_CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// `mmap(NULL, len, prot, flags, fd, 0)`: a fresh mapping at a kernel-chosen address.
pub(crate) fn mmap(
    fd: BorrowedFd<'_>,
    len: usize,
    prot: libc::c_int,
    flags: libc::c_int,
) -> io::Result<NonNull<u8>> {
    #[cfg(test)]
    MMAP_CALLS.with(|c| c.set(c.get() + 1));
    if len == 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: addr NULL lets the kernel pick an unused range, so no existing
    // memory is replaced; the fd is valid for the call.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

/// `munmap(ptr, len)`.
///
/// # Safety
/// `ptr`/`len` must be exactly a mapping returned by [`mmap`] that nothing refers
/// to any more.
pub(crate) unsafe fn munmap(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is an unreferenced mapping of ours.
    let rc = unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `madvise(ptr, len, advice)`.
///
/// # Safety
/// `ptr..ptr+len` must lie inside a mapping of ours, and `advice` must not discard
/// or change contents that a Rust reference relies on (we use only
/// `MADV_POPULATE_*`, which fault pages in without changing them).
pub(crate) unsafe fn madvise(ptr: *mut u8, len: usize, advice: libc::c_int) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is inside one of our mappings.
    retry(|| unsafe { libc::madvise(ptr.cast(), len, advice) })?;
    Ok(())
}

/// `fcntl(fd, F_ADD_SEALS, seals)`.
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: `fd` is valid; F_ADD_SEALS takes an int argument and no memory.
    retry(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(())
}

/// `fcntl(fd, F_GET_SEALS)`.
pub(crate) fn get_seals(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: `fd` is valid; F_GET_SEALS takes no argument and no memory.
    retry(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })
}

/// `fsync(fd)`.
pub(crate) fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is valid; fsync touches no memory of ours.
    retry(|| unsafe { libc::fsync(fd.as_raw_fd()) })?;
    Ok(())
}

/// `process_vm_readv(pid, [buf], [addr])`: reads `buf.len()` bytes at `addr` in
/// another process; returns how many were read.
pub(crate) fn process_vm_read(pid: libc::pid_t, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which is writable for its whole length and
    // outlives the call; `remote` is only an address in the other process, which
    // the kernel checks (EFAULT) and never dereferences in ours.
    let n = retry(|| unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) })?;
    Ok(n as usize)
}

/// `userfaultfd(flags)` (the raw syscall; libc has no wrapper).
pub(crate) fn userfaultfd(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: userfaultfd takes only an integer flag set and touches no memory of ours.
    let raw = retry(|| unsafe { libc::syscall(libc::SYS_userfaultfd, flags) })?;
    let raw = i32::try_from(raw).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn pwrite_pread_round_trip_and_ranges() {
        let fd = memfd_create(c"zygote-sys-test", libc::MFD_CLOEXEC).unwrap();
        ftruncate(fd.as_fd(), 1 << 20).unwrap();
        pwrite_all(fd.as_fd(), b"abc", 8192).unwrap();
        let mut b = [0u8; 3];
        pread_exact(fd.as_fd(), &mut b, 8192).unwrap();
        assert_eq!(&b, b"abc");
        let r = data_ranges(fd.as_fd(), 1 << 20).unwrap();
        assert_eq!(
            r,
            vec![DataRange {
                offset: 8192,
                len: 4096
            }]
        );
        assert_eq!(fstat(fd.as_fd()).unwrap().st_size, 1 << 20);
        // Reading past the end is an EOF, not a silent short read.
        assert!(pread_exact(fd.as_fd(), &mut b, (1 << 20) - 1).is_err());
    }

    #[test]
    fn seals_round_trip() {
        let fd = memfd_create(
            c"zygote-sys-seal",
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
        .unwrap();
        ftruncate(fd.as_fd(), 4096).unwrap();
        add_seals(fd.as_fd(), libc::F_SEAL_GROW).unwrap();
        assert_eq!(
            get_seals(fd.as_fd()).unwrap() & libc::F_SEAL_GROW,
            libc::F_SEAL_GROW
        );
        assert!(ftruncate(fd.as_fd(), 8192).is_err());
    }
}
