//! [`Region`]: guest memory as a file of a chosen page kind, with its logical size.
//!
//! Owns the policy over [`MemFd`]: rounding hugetlb sizes up to 2 MiB, committing
//! hugetlb pages with `fallocate` at creation so that an exhausted pool answers
//! with a clean ENOSPC here rather than a SIGBUS in QEMU later, and falling back
//! to 4 KiB pages with a warning that is both logged and returned. It keeps the
//! optional pre-faulted writable mapping a destination is copied through; copying,
//! sealing, prefaulting and persistence live in their own modules.

use std::io;
use std::path::PathBuf;

use crate::hugetlb::{align_2m, pool_info, NR_HUGEPAGES_2M_PATH};
use crate::map::RawMap;
use crate::{sys, DataRange, MemError, MemFd, PageKind};

/// Guest memory in one memfd: plain 4 KiB shmem or 2 MiB hugetlb.
///
/// [`Region::size`] is the logical size (what the guest has, what is recorded
/// and handed to QEMU); [`Region::alloc_size`] is the file's size, rounded up to
/// 2 MiB for hugetlb.
#[derive(Debug)]
pub struct Region {
    pub(crate) memfd: MemFd,
    pub(crate) logical_size: u64,
    pub(crate) warning: Option<String>,
    /// A writable shared mapping of the whole file, kept by
    /// [`Region::prepare_destination`] so the copy takes no page faults. Dropped
    /// before sealing (F_SEAL_WRITE fails with EBUSY while it exists).
    pub(crate) map: Option<RawMap>,
}

impl Region {
    /// A region over an existing memfd (see [`MemFd::from_fd`]) whose guest
    /// sees `logical_size` bytes; refused when the file is smaller.
    pub fn from_memfd(memfd: MemFd, logical_size: u64) -> Result<Region, MemError> {
        if memfd.size() < logical_size {
            return Err(MemError::File {
                op: format!(
                    "adopt (it holds {} bytes, the guest has {logical_size})",
                    memfd.size()
                ),
                path: PathBuf::from(format!("memfd:{}", memfd.name())),
                source: io::Error::from(io::ErrorKind::InvalidData),
            });
        }
        Ok(Region {
            memfd,
            logical_size,
            warning: None,
            map: None,
        })
    }

    /// Creates a region of `size` bytes called `name`. With `hugepages`, tries a
    /// hugetlb file of `size` rounded up to 2 MiB and commits its pages at once
    /// (`fallocate`); if the kernel cannot serve it (no pool, pool exhausted, no
    /// hugetlb support), falls back to 4 KiB pages, logs a warning and records it
    /// in [`Region::warning`]. Errors only when the 4 KiB file fails too.
    pub fn create(name: &str, size: u64, hugepages: bool) -> Result<Region, MemError> {
        if size == 0 {
            return Err(MemError::ZeroSize { name: name.into() });
        }
        let mut warning = None;
        if hugepages {
            match create_hugetlb(name, size) {
                Ok(memfd) => {
                    return Ok(Region {
                        memfd,
                        logical_size: size,
                        warning: None,
                        map: None,
                    })
                }
                Err(HugeFailure::Fatal(e)) => return Err(e),
                Err(HugeFailure::Unavailable { op, source }) => {
                    let w = fallback_warning(name, size, op, &source);
                    tracing::warn!(name, size, "{w}");
                    warning = Some(w);
                }
            }
        }
        let memfd = MemFd::create_with(name, size, PageKind::Small)?;
        Ok(Region {
            memfd,
            logical_size: size,
            warning,
            map: None,
        })
    }

    /// The logical size in bytes: what was asked for, never the aligned size.
    pub fn size(&self) -> u64 {
        self.logical_size
    }

    /// The file's size in bytes: [`Region::size`] rounded up to 2 MiB for hugetlb.
    pub fn alloc_size(&self) -> u64 {
        self.memfd.size()
    }

    /// The page kind actually backing the region (after any fallback).
    pub fn kind(&self) -> PageKind {
        self.memfd.kind()
    }

    /// Why hugepages were asked for and not used, if they were not.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        self.memfd.name()
    }

    /// The underlying file.
    pub fn memfd(&self) -> &MemFd {
        &self.memfd
    }

    /// `/proc/<pid>/fd/<n>`: the `mem-path=` for QEMU, with `size=` set to
    /// [`Region::size`]. Valid while the region is alive.
    pub fn backend_path(&self) -> PathBuf {
        self.memfd.backend_path()
    }

    /// Bytes backed by memory (`st_blocks * 512`; whole 2 MiB pages for hugetlb).
    pub fn allocated_bytes(&self) -> Result<u64, MemError> {
        self.memfd.allocated_bytes()
    }

    /// Allocated ranges within the logical size. (A hugetlb region reports all of
    /// it: hugetlbfs has no holes.)
    pub fn data_ranges(&self) -> Result<Vec<DataRange>, MemError> {
        sys::data_ranges(self.memfd.as_fd(), self.logical_size).map_err(|e| {
            self.memfd
                .io_err_with("lseek SEEK_DATA/SEEK_HOLE".into(), e)
        })
    }

    /// Reads `buf.len()` bytes at `offset` (within the logical size) with `pread`,
    /// which hugetlbfs supports.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.check_logical(offset, buf.len() as u64)?;
        self.memfd.read_at(offset, buf)
    }

    /// Writes `buf` at `offset` (within the logical size): `pwrite` for 4 KiB
    /// regions, a temporary mapping for hugetlb ones (which refuse `write(2)`).
    /// Meant for small writes (tests, headers); bulk data goes through the copy.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), MemError> {
        self.check_logical(offset, buf.len() as u64)?;
        match self.kind() {
            PageKind::Small => self.memfd.write_at(offset, buf),
            PageKind::Huge2M => {
                let op = || format!("write of {} bytes at {offset} through a mapping", buf.len());
                let tmp;
                let map = match &self.map {
                    Some(m) => m,
                    None => {
                        tmp = self
                            .map_writable()
                            .map_err(|e| self.memfd.io_err_with(op(), e))?;
                        &tmp
                    }
                };
                map.copy_in(offset as usize, buf)
                    .map_err(|e| self.memfd.io_err_with(op(), e))
            }
        }
    }

    fn check_logical(&self, offset: u64, len: u64) -> Result<(), MemError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.logical_size => Ok(()),
            _ => Err(MemError::OutOfRange {
                name: self.name().into(),
                offset,
                len,
                size: self.logical_size,
            }),
        }
    }

    /// A fresh writable shared mapping of the whole file.
    pub(crate) fn map_writable(&self) -> io::Result<RawMap> {
        RawMap::shared(self.memfd.as_fd(), self.alloc_size(), true)
    }
}

/// How creating a hugetlb file failed: the pool cannot serve it (fall back), or
/// something unrelated to hugepages is wrong (report it).
enum HugeFailure {
    Unavailable { op: &'static str, source: io::Error },
    Fatal(MemError),
}

/// memfd_create(MFD_HUGETLB) + ftruncate(aligned) + fallocate(0, 0, aligned).
///
/// Measured on Linux 6.18 with the pool exhausted: memfd_create and ftruncate
/// succeed; `fallocate` fails with ENOSPC (keeping any pages it got, freed when
/// the file closes); `mmap(MAP_SHARED)` fails with ENOMEM (the reservation);
/// with `MAP_NORESERVE`, the first touch raises SIGBUS and MADV_POPULATE_WRITE
/// returns EFAULT. Committing with fallocate is the one clean answer.
fn create_hugetlb(name: &str, size: u64) -> Result<MemFd, HugeFailure> {
    let alloc = align_2m(size);
    let memfd = match MemFd::create_with(name, alloc, PageKind::Huge2M) {
        Ok(m) => m,
        Err(MemError::Create { source, .. }) => {
            return Err(HugeFailure::Unavailable {
                op: "memfd_create(MFD_HUGETLB)",
                source,
            })
        }
        Err(MemError::Resize { source, .. }) => {
            return Err(HugeFailure::Unavailable {
                op: "ftruncate",
                source,
            })
        }
        Err(e) => return Err(HugeFailure::Fatal(e)),
    };
    sys::fallocate(memfd.as_fd(), 0, 0, alloc).map_err(|source| HugeFailure::Unavailable {
        op: "fallocate",
        source,
    })?;
    Ok(memfd)
}

fn fallback_warning(name: &str, size: u64, op: &str, err: &io::Error) -> String {
    let pages = align_2m(size) / crate::HUGE_PAGE_2M;
    let errno = err.raw_os_error().map(errno_name).unwrap_or("no errno");
    let pool = match pool_info() {
        Ok(p) => format!(
            "pool: {} free, {} reserved, {} total",
            p.free, p.reserved, p.total
        ),
        Err(_) => "pool: unreadable".into(),
    };
    format!(
        "hugetlb region {name:?} of {size} bytes ({pages} x 2 MiB pages) unavailable: {op} failed with \
         {errno} ({err}); {pool}; using 4 KiB pages instead. To get hugepages, grow the pool by at least \
         {pages} pages: echo <total+{pages}> > {NR_HUGEPAGES_2M_PATH}"
    )
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::ENOSPC => "ENOSPC",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENODEV => "ENODEV",
        _ => "another errno",
    }
}
