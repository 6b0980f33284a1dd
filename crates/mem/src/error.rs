//! [`MemError`]: every failure of this crate, naming the file, the value and what
//! to do about it.

use std::io;
use std::path::PathBuf;

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
        source: io::Error,
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
        source: io::Error,
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
        source: io::Error,
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
    /// A copy would not fit: refused before anything is mapped.
    #[error(
        "copy of {len} bytes from {src:?} ({src_size} bytes) into {dst:?} (allocated {dst_alloc} bytes) refused: \
         the length must not exceed either file; create the destination with at least {len} bytes"
    )]
    CopyTooLarge {
        /// The source's name.
        src: String,
        /// The requested length.
        len: u64,
        /// The source's size.
        src_size: u64,
        /// The destination's name.
        dst: String,
        /// The destination's allocated size.
        dst_alloc: u64,
    },
    /// A copy method that the destination's page kind cannot take.
    #[error("memfd {name:?} is hugetlb-backed and refuses write(2)/pwrite(2); use CopyMethod::Auto, PreadIntoMap or Memcpy")]
    HugetlbRefusesWrite {
        /// The destination's name.
        name: String,
    },
    /// The destination is sealed and can never be written again.
    #[error("memfd {name:?} is sealed against writes; copy into a fresh region instead")]
    Sealed {
        /// The memfd's name.
        name: String,
    },
    /// `F_ADD_SEALS` with `F_SEAL_WRITE` failed because a writable shared mapping
    /// of the file still exists somewhere.
    #[error(
        "sealing memfd {name:?} failed with EBUSY: a writable shared mapping of it still exists \
         (ours, or a share=on QEMU); unmap it first and retry"
    )]
    SealBusy {
        /// The memfd's name.
        name: String,
    },
    /// Reading or writing a hugepage-pool file in /proc or /sys failed.
    #[error("{op} {path:?} failed; hugepage pool changes need root (or set it up front: echo N > {path:?})")]
    Pool {
        /// What was attempted ("read", "write 2 to").
        op: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A pool file held something this crate cannot parse.
    #[error("cannot parse {what} from {path:?}: {text:?}; is this a Linux /proc?")]
    PoolParse {
        /// The field looked for.
        what: String,
        /// The file.
        path: PathBuf,
        /// The offending text.
        text: String,
    },
    /// The kernel could not grow the pool to the requested size.
    #[error(
        "asked for {wanted} free 2 MiB hugepages but the kernel has only {free} free after setting \
         nr_hugepages to {total}; free memory is too fragmented or short (try earlier after boot, or \
         `echo 3 > /proc/sys/vm/drop_caches; echo 1 > /proc/sys/vm/compact_memory`)"
    )]
    PoolShort {
        /// Free pages asked for.
        wanted: u64,
        /// Free pages obtained.
        free: u64,
        /// nr_hugepages written.
        total: u64,
    },
    /// A file on disk (snapshot `memory.bin`) could not be read or written.
    #[error("{op} {path:?} failed")]
    File {
        /// The operation ("open", "pwrite at 4096 to", "fsync").
        op: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}
