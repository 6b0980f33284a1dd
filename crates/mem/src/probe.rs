//! Probes for `zygote doctor`: whether this host lets zygote use the memory
//! syscalls it relies on or plans to (hugetlb memfds, reading another process's
//! memory and page map, userfaultfd). Each probe allocates nothing that outlives
//! it and says what failed; deciding what that means is the caller's business.

use std::io;
use std::os::unix::fs::FileExt;

use crate::{sys, MemError, MemFd, PageKind, HUGE_PAGE_2M};

/// Creates (and closes) a 2 MiB hugetlb memfd with `MFD_HUGETLB | MFD_HUGE_2MB`
/// and sizes it. Sizing a hugetlb file commits no page, so this works with an
/// empty pool: it tells whether the kernel supports hugetlb memfds at all.
pub fn probe_hugetlb_memfd() -> Result<(), MemError> {
    MemFd::create_with("zygote-probe-hugetlb", HUGE_PAGE_2M, PageKind::Huge2M).map(drop)
}

/// Reads `buf.len()` bytes at `addr` in process `pid` with `process_vm_readv`
/// (needs ptrace access to `pid`); returns how many bytes were read.
pub fn read_process_memory(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    sys::process_vm_read(pid, addr, buf)
}

/// One page's entry of `/proc/<pid>/pagemap` (4 KiB pages): bit 63 present,
/// bits 0-54 the page frame number, which reads as 0 without `CAP_SYS_ADMIN`.
pub fn pagemap_entry(pid: u32, addr: u64) -> io::Result<u64> {
    let f = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, (addr / 4096) * 8)?;
    Ok(u64::from_le_bytes(b))
}

/// Bit 63 of a pagemap entry: the page is in RAM.
pub const PAGEMAP_PRESENT: u64 = 1 << 63;
/// Bits 0-54 of a pagemap entry: the page frame number.
pub const PAGEMAP_PFN_MASK: u64 = (1 << 55) - 1;

/// Opens (and closes) a userfaultfd (`O_CLOEXEC | O_NONBLOCK`).
pub fn probe_userfaultfd() -> io::Result<()> {
    sys::userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_memory_and_page_map() {
        let data = *b"zygote probe bytes";
        let mut out = [0u8; 18];
        let addr = data.as_ptr() as u64;
        let n = read_process_memory(std::process::id(), addr, &mut out).unwrap();
        assert_eq!((n, out), (18, data));
        // The page holding `data` is present (it is on our stack, just written).
        let e = pagemap_entry(std::process::id(), addr).unwrap();
        assert_ne!(e & PAGEMAP_PRESENT, 0, "{e:#x}");
        // An address nobody maps is refused, not read.
        assert!(read_process_memory(std::process::id(), 8, &mut out).is_err());
    }
}
