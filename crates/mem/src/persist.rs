//! Snapshot memory on disk: [`Region::persist`] writes a region to a sparse file
//! and [`Region::from_file`] loads one back, both sparse-aware.
//!
//! Owns the file format, which is the raw guest memory at its offsets (what QEMU
//! itself maps), with holes for pages never written or all zero. The logical
//! size is the file's length. No header: versioning and checksums belong to the
//! snapshot metadata beside it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::copy::{copy_source, Source};
use crate::map::RawMap;
use crate::{sys, CopyOptions, CopyStats, MemError, Region};

/// Zero detection granularity when persisting: runs of all-zero blocks this
/// large are left as holes.
const ZERO_BLOCK: usize = 64 << 10;

/// What [`Region::persist`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistStats {
    /// Bytes written to the file (zero blocks skipped).
    pub bytes_written: u64,
    /// Pwrite calls made (runs of non-zero blocks).
    pub runs: usize,
    /// Wall time, fsyncs included.
    pub elapsed: Duration,
}

fn file_err(op: impl Into<String>, path: &Path) -> impl FnOnce(std::io::Error) -> MemError + '_ {
    let op = op.into();
    move |source| MemError::File {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Region {
    /// Writes the region's logical contents to `path` durably: a sparse file of
    /// [`Region::size`] bytes, written to `<path>.tmp`, fsynced, renamed over
    /// `path`, and the directory fsynced. Only data ranges are read, and blocks
    /// that are all zero are left as holes.
    pub fn persist(&self, path: &Path) -> Result<PersistStats, MemError> {
        let started = Instant::now();
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(file_err("create", &tmp))?;
        file.set_len(self.size())
            .map_err(file_err("set_len", &tmp))?;
        let map = RawMap::shared(self.memfd.as_fd(), self.alloc_size(), false).map_err(|e| {
            self.memfd
                .io_err_with("read-only mmap for persist".into(), e)
        })?;
        let mut stats = PersistStats {
            bytes_written: 0,
            runs: 0,
            elapsed: Duration::ZERO,
        };
        for r in self.data_ranges()? {
            let (start, end) = (r.offset as usize, (r.offset + r.len) as usize);
            let mut pos = start;
            while pos < end {
                // Skip zero blocks, then extend a run of non-zero ones.
                let block = |p: usize| ZERO_BLOCK.min(end - p);
                let zero = map
                    .is_zero(pos, block(pos))
                    .map_err(|e| self.memfd.io_err_with(format!("read at {pos}"), e))?;
                if zero {
                    pos += block(pos);
                    continue;
                }
                let run_start = pos;
                while pos < end
                    && !map
                        .is_zero(pos, block(pos))
                        .map_err(|e| self.memfd.io_err_with(format!("read at {pos}"), e))?
                {
                    pos += block(pos);
                }
                map.write_to_fd(file.as_fd(), run_start, pos - run_start, run_start as u64)
                    .map_err(file_err(
                        format!("pwrite of {} bytes at {run_start} to", pos - run_start),
                        &tmp,
                    ))?;
                stats.bytes_written += (pos - run_start) as u64;
                stats.runs += 1;
            }
        }
        sys::fsync(file.as_fd()).map_err(file_err("fsync", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(file_err(format!("rename {tmp:?} to"), path))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let d = File::open(dir).map_err(file_err("open directory", dir))?;
            sys::fsync(d.as_fd()).map_err(file_err("fsync directory", dir))?;
        }
        stats.elapsed = started.elapsed();
        tracing::debug!(
            name = self.name(),
            ?path,
            bytes = stats.bytes_written,
            "region persisted"
        );
        Ok(stats)
    }

    /// Loads a `memory.bin` (as written by [`Region::persist`], or any raw memory
    /// image) into a new region called `name` of the file's length, copying only
    /// the file's data ranges (`SEEK_DATA` on the file). `hugepages` as in
    /// [`Region::create`], fallback included.
    pub fn from_file(
        path: &Path,
        name: &str,
        hugepages: bool,
    ) -> Result<(Region, CopyStats), MemError> {
        let file = File::open(path).map_err(file_err("open", path))?;
        let size = file.metadata().map_err(file_err("stat", path))?.len();
        let region = Region::create(name, size, hugepages)?;
        let source = Source {
            fd: file.as_fd(),
            size,
            name: path.display().to_string(),
        };
        let stats = copy_source(&source, &region, &CopyOptions::default())?;
        Ok((region, stats))
    }
}
