//! Guest memory files: the only crate in zygote that calls `memfd_create`, `mmap`,
//! `fallocate`, `madvise` and the sealing `fcntl`s.
//!
//! * [`MemFd`]: an anonymous shared-memory file (memfd) sized to a guest's RAM.
//!   The daemon keeps it open; QEMU opens it by [`MemFd::backend_path`]
//!   (`/proc/<daemon pid>/fd/<n>`) as `-object memory-backend-file,...`, so no file
//!   descriptor is inherited by QEMU.
//! * [`Mapping`]: a shared mapping of a memfd, unmapped on drop.
//! * [`Region`]: guest memory of a chosen [`PageKind`] (4 KiB shmem or 2 MiB
//!   hugetlb, falling back to 4 KiB with a returned warning when the pool cannot
//!   serve), reporting its logical size apart from its 2 MiB-aligned one. Regions
//!   are prepared ahead of a pause ([`Region::prepare_destination`]), filled from a
//!   source's allocated ranges ([`Region::copy_from`]), sealed ([`Region::seal`]),
//!   and written to or loaded from disk ([`Region::persist`], [`Region::from_file`]).
//! * The hugepage pool: [`pool_info`], [`nr_hugepages`], [`reserve_pool`].
//! * Host probes for `zygote doctor`: [`probe_hugetlb_memfd`],
//!   [`read_process_memory`], [`pagemap_entry`], [`probe_userfaultfd`].
//!
//! Every syscall is wrapped once (module `sys`) behind a safe function with a
//! test. This crate knows nothing about QEMU or snapshots: it creates, sizes, maps,
//! copies, seals and measures files.

mod copy;
mod error;
mod hugetlb;
mod map;
mod memfd;
mod persist;
mod prefault;
mod probe;
mod region;
mod seal;
mod sys;

pub use copy::{copy_ranges, CopyMethod, CopyOptions, CopyStats};
pub use error::MemError;
pub use hugetlb::{
    align_2m, has_2m_pool, nr_hugepages, parse_meminfo, pool_info, reserve_pool, set_nr_hugepages,
    PoolInfo, PoolReservation, HUGE_PAGE_2M, MEMINFO_PATH, NR_HUGEPAGES_2M_PATH,
    NR_OVERCOMMIT_2M_PATH,
};
pub use map::Mapping;
pub use memfd::{DataRange, MemFd, PageKind};
pub use persist::PersistStats;
pub use prefault::Prefault;
pub use probe::{
    pagemap_entry, probe_hugetlb_memfd, probe_userfaultfd, read_process_memory, PAGEMAP_PFN_MASK,
    PAGEMAP_PRESENT,
};
pub use region::Region;
pub use seal::SNAPSHOT_SEALS;
