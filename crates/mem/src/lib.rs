//! Guest memory files: the only crate in zygote that calls `memfd_create`, `mmap`
//! and friends.
//!
//! * [`MemFd`]: an anonymous shared-memory file (memfd) sized to a guest's RAM.
//!   The daemon keeps it open; QEMU opens it by [`MemFd::backend_path`]
//!   (`/proc/<daemon pid>/fd/<n>`) as `-object memory-backend-file,...,share=on`,
//!   so no file descriptor is inherited by QEMU.
//! * [`Mapping`]: a shared mapping of a memfd, unmapped on drop.
//!
//! Every syscall is wrapped once here behind a safe function with a test. This crate
//! knows nothing about QEMU or snapshots: it creates, sizes, maps and measures
//! files. (A later phase adds hugetlb files, copying touched ranges, and sealing.)

mod map;
mod memfd;

pub use map::Mapping;
pub use memfd::{DataRange, MemFd};

/// Errors from memory-file syscalls. Each names the file and the size involved.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// The name passed to `memfd_create` contained a NUL byte or was too long.
    #[error("memfd name {name:?} is invalid: use at most 249 bytes and no NUL byte")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// A zero size was requested.
    #[error("memfd {name:?}: size 0 requested; guest RAM must be at least one page")]
    ZeroSize {
        /// The memfd's name.
        name: String,
    },
    /// `memfd_create` failed.
    #[error("memfd_create({name:?}) failed; is the fd limit (ulimit -n) reached?")]
    Create {
        /// The memfd's name.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `ftruncate` failed.
    #[error("sizing memfd {name:?} to {size} bytes failed; check memory limits (shmem, cgroup)")]
    Resize {
        /// The memfd's name.
        name: String,
        /// The requested size in bytes.
        size: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A syscall on an existing memfd failed.
    #[error("{op} on memfd {name:?} failed")]
    Io {
        /// The operation (e.g. "fstat", "pwrite at 4096").
        op: String,
        /// The memfd's name.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An access beyond the end of the file or mapping.
    #[error("memfd {name:?}: range {offset}+{len} is beyond its size {size}")]
    OutOfRange {
        /// The memfd's name.
        name: String,
        /// Start offset.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// The file's size.
        size: u64,
    },
}
