//! Copying the allocated ranges of a source file into a destination [`Region`].
//!
//! Owns the copy loop and its choice of method; never creates or seals files.
//! Only `SEEK_DATA` ranges are copied (holes stay holes in a 4 KiB destination).
//! Fastest methods measured (see `examples/copy_bench.rs`):
//!
//! * 4 KiB destination: `pwrite` into the destination from a read-only mapping of
//!   the source ([`CopyMethod::PwriteFromMap`]).
//! * hugetlb destination: `pread` from the source into a mapping of the
//!   destination ([`CopyMethod::PreadIntoMap`]), 2 threads (hugetlb refuses
//!   `write(2)`). [`CopyMethod::Memcpy`] is as fast at best but pays a page fault
//!   per 4 KiB source page in our own mapping, and varied far more.
//!
//! Measured on a shared 2-core host (load ~2.5), 600 MB touched of 1 GiB, p50:
//! 4 KiB target with pwrite 2.0-2.3 GB/s (2.8-3.2 with the destination
//! pre-allocated); hugetlb target with pread 3.8-4.0 GB/s on 1 thread, 4.2-7.1
//! GB/s on 2.
//!
//! Size checks come first: a request that does not fit is refused before any
//! mapping is made.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::map::RawMap;
use crate::{sys, DataRange, MemError, MemFd, PageKind, Region};

/// Work is split into pieces of at most this many bytes (a multiple of 2 MiB).
const PIECE: u64 = 8 << 20;

/// How bytes move from source to destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CopyMethod {
    /// `PwriteFromMap` for 4 KiB destinations, `PreadIntoMap` for hugetlb ones.
    #[default]
    Auto,
    /// `pwrite(dst, src_mapping + off)`; refused for hugetlb destinations.
    PwriteFromMap,
    /// `pread(src, dst_mapping + off)`.
    PreadIntoMap,
    /// `memcpy` between a source and a destination mapping.
    Memcpy,
}

/// What to copy and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    /// Bytes from offset 0 to consider; `None` means the whole source. Must not
    /// exceed the source's size nor the destination's allocated size.
    pub len: Option<u64>,
    /// Worker threads; 0 picks what measured fastest: 1 for 4 KiB destinations
    /// (a second pwrite thread gained 0-15% on 2 cores, and lost under load),
    /// 2 for hugetlb ones (capped at the available parallelism).
    pub threads: usize,
    /// The copy method.
    pub method: CopyMethod,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            len: None,
            threads: 0,
            method: CopyMethod::Auto,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes copied (the sum of the data ranges, clipped to the length).
    pub bytes: u64,
    /// Source data ranges copied.
    pub ranges: usize,
    /// Threads used.
    pub threads: usize,
    /// The method used (never `Auto`).
    pub method: CopyMethod,
    /// Wall time, checks and mappings included.
    pub elapsed: Duration,
}

impl CopyStats {
    /// Wall time in milliseconds.
    pub fn ms(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e3
    }

    /// Throughput in MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A file to copy from: a memfd or a `memory.bin` on disk.
pub(crate) struct Source<'a> {
    pub(crate) fd: BorrowedFd<'a>,
    pub(crate) size: u64,
    pub(crate) name: String,
}

/// Copies the allocated ranges of `src` into `dst` (see [`Region::copy_from`]).
pub fn copy_ranges(src: &MemFd, dst: &Region, opts: &CopyOptions) -> Result<CopyStats, MemError> {
    let source = Source {
        fd: src.as_fd(),
        size: src.size(),
        name: src.name().into(),
    };
    copy_source(&source, dst, opts)
}

impl Region {
    /// Copies the allocated (`SEEK_DATA`) ranges of `src`, up to `opts.len` bytes,
    /// into this region at the same offsets. Refuses, before mapping anything, a
    /// length beyond either file, a sealed destination, and `PwriteFromMap` into
    /// hugetlb.
    pub fn copy_from(&self, src: &MemFd, opts: &CopyOptions) -> Result<CopyStats, MemError> {
        copy_ranges(src, self, opts)
    }
}

pub(crate) fn copy_source(
    src: &Source<'_>,
    dst: &Region,
    opts: &CopyOptions,
) -> Result<CopyStats, MemError> {
    let started = Instant::now();
    let len = opts.len.unwrap_or(src.size);
    if len > src.size || len > dst.alloc_size() {
        return Err(MemError::CopyTooLarge {
            src: src.name.clone(),
            len,
            src_size: src.size,
            dst: dst.name().into(),
            dst_alloc: dst.alloc_size(),
        });
    }
    let method = match (opts.method, dst.kind()) {
        (CopyMethod::Auto, PageKind::Small) => CopyMethod::PwriteFromMap,
        (CopyMethod::Auto, PageKind::Huge2M) => CopyMethod::PreadIntoMap,
        (CopyMethod::PwriteFromMap, PageKind::Huge2M) => {
            return Err(MemError::HugetlbRefusesWrite {
                name: dst.name().into(),
            })
        }
        (m, _) => m,
    };
    if dst.is_sealed()? {
        return Err(MemError::Sealed {
            name: dst.name().into(),
        });
    }
    let src_err = |op: String, source| MemError::Io {
        op,
        name: src.name.clone(),
        source,
    };
    let ranges = sys::data_ranges(src.fd, len)
        .map_err(|e| src_err("lseek SEEK_DATA/SEEK_HOLE".into(), e))?;
    let pieces = split(&ranges, PIECE);
    let bytes = ranges.iter().map(|r| r.len).sum();
    let threads = match (opts.threads, dst.kind()) {
        (0, PageKind::Small) => 1,
        (0, PageKind::Huge2M) => std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
        (n, _) => n,
    }
    .clamp(1, pieces.len().max(1));
    if pieces.is_empty() {
        return Ok(CopyStats {
            bytes: 0,
            ranges: 0,
            threads,
            method,
            elapsed: started.elapsed(),
        });
    }

    let src_map = match method {
        CopyMethod::PwriteFromMap | CopyMethod::Memcpy => Some(
            RawMap::shared(src.fd, src.size, false)
                .map_err(|e| src_err(format!("mmap of {} bytes", src.size), e))?,
        ),
        _ => None,
    };
    let tmp_dst;
    let dst_map = match (method, &dst.map) {
        (CopyMethod::PwriteFromMap, _) => None,
        (_, Some(m)) => Some(m),
        (_, None) => {
            tmp_dst = dst.map_writable().map_err(|e| {
                dst.memfd()
                    .io_err_with(format!("mmap of {} bytes", dst.alloc_size()), e)
            })?;
            Some(&tmp_dst)
        }
    };

    let copy_piece = |p: &DataRange| -> Result<(), MemError> {
        let (off, n) = (p.offset as usize, p.len as usize);
        let res = match (method, &src_map, dst_map) {
            (CopyMethod::PwriteFromMap, Some(s), _) => {
                s.write_to_fd(dst.memfd().as_fd(), off, n, p.offset)
            }
            (CopyMethod::PreadIntoMap, _, Some(d)) => d.fill_from_fd(src.fd, off, n),
            (CopyMethod::Memcpy, Some(s), Some(d)) => d.copy_from_map(s, off, n),
            _ => unreachable!("mappings are made for the method above"),
        };
        res.map_err(|e| {
            dst.memfd()
                .io_err_with(format!("copy of {n} bytes at {off} from {:?}", src.name), e)
        })
    };

    if threads == 1 {
        pieces.iter().try_for_each(copy_piece)?;
    } else {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_err = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = pieces.get(i) else { break };
                        if let Err(e) = copy_piece(p) {
                            failed.store(true, Ordering::Relaxed);
                            first_err
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                        }
                    }
                });
            }
        });
        if let Some(e) = first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
    }
    let stats = CopyStats {
        bytes,
        ranges: ranges.len(),
        threads,
        method,
        elapsed: started.elapsed(),
    };
    tracing::debug!(
        src = src.name,
        dst = dst.name(),
        bytes,
        ranges = stats.ranges,
        ms = stats.ms(),
        "copied"
    );
    Ok(stats)
}

/// Splits ranges into pieces of at most `max` bytes, cut at multiples of `max`.
fn split(ranges: &[DataRange], max: u64) -> Vec<DataRange> {
    let mut out = Vec::new();
    for r in ranges {
        let mut pos = r.offset;
        let end = r.offset + r.len;
        while pos < end {
            let cut = ((pos / max) + 1) * max;
            let next = cut.min(end);
            out.push(DataRange {
                offset: pos,
                len: next - pos,
            });
            pos = next;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::MMAP_CALLS;

    fn mmaps() -> usize {
        MMAP_CALLS.with(|c| c.get())
    }

    #[test]
    fn split_cuts_at_piece_boundaries() {
        let p = split(
            &[
                DataRange {
                    offset: 4096,
                    len: 20,
                },
                DataRange {
                    offset: 10,
                    len: 25,
                },
            ],
            16,
        );
        let flat: Vec<(u64, u64)> = p.iter().map(|r| (r.offset, r.len)).collect();
        assert_eq!(
            flat,
            vec![(4096, 16), (4112, 4), (10, 6), (16, 16), (32, 3)]
        );
    }

    #[test]
    fn oversized_copy_is_refused_before_any_mmap() {
        let src = MemFd::create("zygote-copy-big-src", 1 << 20).unwrap();
        src.write_at(0, &[7; 4096]).unwrap();
        let dst = Region::create("zygote-copy-small-dst", 64 << 10, false).unwrap();
        for opts in [
            CopyOptions::default(),
            CopyOptions {
                len: Some(1 << 20),
                method: CopyMethod::Memcpy,
                ..Default::default()
            },
            CopyOptions {
                len: Some((64 << 10) + 1),
                ..Default::default()
            },
        ] {
            let before = mmaps();
            let err = dst.copy_from(&src, &opts).unwrap_err();
            assert!(matches!(err, MemError::CopyTooLarge { .. }), "{err}");
            assert_eq!(mmaps(), before, "an mmap happened before the refusal");
        }
        // A length beyond the source is refused too.
        let small_src = MemFd::create("zygote-copy-tiny-src", 4096).unwrap();
        let opts = CopyOptions {
            len: Some(8192),
            ..Default::default()
        };
        let before = mmaps();
        assert!(matches!(
            dst.copy_from(&small_src, &opts),
            Err(MemError::CopyTooLarge { .. })
        ));
        assert_eq!(mmaps(), before);
        // And a fitting length from the same big source is accepted.
        let ok = CopyOptions {
            len: Some(64 << 10),
            ..Default::default()
        };
        assert_eq!(dst.copy_from(&src, &ok).unwrap().bytes, 4096);
    }

    #[test]
    fn every_method_and_thread_count_copies_the_same_bytes() {
        let src = MemFd::create("zygote-copy-methods-src", 40 << 20).unwrap();
        let mut expect = vec![0u8; 40 << 20];
        for (i, off) in [0u64, 5 << 20, (17 << 20) + 4096, 39 << 20]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..(1 << 20) as u32)
                .map(|b| (b as u8) ^ (i as u8 * 31))
                .collect();
            src.write_at(off, &data).unwrap();
            expect[off as usize..off as usize + data.len()].copy_from_slice(&data);
        }
        for method in [
            CopyMethod::PwriteFromMap,
            CopyMethod::PreadIntoMap,
            CopyMethod::Memcpy,
        ] {
            for threads in [1, 2, 3] {
                let dst = Region::create("zygote-copy-methods-dst", 40 << 20, false).unwrap();
                let opts = CopyOptions {
                    len: None,
                    threads,
                    method,
                };
                let st = dst.copy_from(&src, &opts).unwrap();
                assert_eq!(st.bytes, 4 << 20);
                assert_eq!(st.ranges, 4);
                let mut got = vec![0u8; 40 << 20];
                dst.read_at(0, &mut got).unwrap();
                assert!(got == expect, "{method:?} x{threads} differs");
                assert_eq!(dst.data_ranges().unwrap(), src.data_ranges().unwrap());
            }
        }
    }

    #[test]
    fn copy_into_sealed_region_is_refused() {
        let src = MemFd::create("zygote-copy-sealed-src", 8192).unwrap();
        let mut dst = Region::create("zygote-copy-sealed-dst", 8192, false).unwrap();
        dst.seal().unwrap();
        let before = mmaps();
        assert!(matches!(
            dst.copy_from(&src, &CopyOptions::default()),
            Err(MemError::Sealed { .. })
        ));
        assert_eq!(mmaps(), before);
    }
}
