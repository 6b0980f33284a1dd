//! Where guest RAM pages go: the [`PageSink`] trait, two sinks ([`VecSink`] in
//! memory, [`FileSink`] over any positioned file such as a memfd), and the
//! coalescer that turns runs of contiguous 4 KiB page records into large writes.
//!
//! This module never interprets the stream; the splitter calls it with offsets
//! inside the guest RAM block.

use std::io;
use std::os::unix::fs::FileExt;

/// Receives the guest RAM block's pages at their offsets in the block.
///
/// Offsets and lengths are multiples of the page size (4096). The splitter calls
/// [`PageSink::zero_range`] only for pages it wrote earlier in the same stream
/// (a page that was sent and later became zero): every other zero page is left
/// as it is, so a fresh, sparse target stays sparse.
pub trait PageSink {
    /// Writes `data` (one or more whole pages) at `offset`.
    fn write_pages(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes `len` bytes at `offset` read as zero (punch a hole, or write zeros).
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()>;
}

impl<T: PageSink + ?Sized> PageSink for &mut T {
    fn write_pages(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write_pages(offset, data)
    }
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()> {
        (**self).zero_range(offset, len)
    }
}

fn out_of_range(offset: u64, len: u64, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("range {offset:#x}+{len:#x} is beyond the sink's {size:#x} bytes"),
    )
}

/// An in-memory image of fixed size (tests, small guests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecSink {
    /// The image; starts zero-filled.
    pub data: Vec<u8>,
    /// Number of `write_pages` calls (to observe coalescing).
    pub writes: u64,
    /// Number of `zero_range` calls.
    pub zeroed: u64,
}

impl VecSink {
    /// A zero-filled image of `size` bytes.
    pub fn new(size: usize) -> VecSink {
        VecSink {
            data: vec![0; size],
            writes: 0,
            zeroed: 0,
        }
    }

    fn range(&mut self, offset: u64, len: u64) -> io::Result<&mut [u8]> {
        let size = self.data.len() as u64;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= size)
            .ok_or_else(|| out_of_range(offset, len, size))?;
        // Both bounds are <= data.len(), which is a usize.
        Ok(&mut self.data[offset as usize..end as usize])
    }
}

impl PageSink for VecSink {
    fn write_pages(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.writes += 1;
        self.range(offset, data.len() as u64)?.copy_from_slice(data);
        Ok(())
    }
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.zeroed += 1;
        self.range(offset, len)?.fill(0);
        Ok(())
    }
}

/// Writes pages with `pwrite` into a file of known size (e.g. a memfd opened as a
/// [`std::fs::File`]). `zero_range` writes zeros: it is only called for pages
/// written earlier in the same stream, which are allocated already, so no memory
/// is gained by punching; a sink that must shrink can punch instead.
#[derive(Debug)]
pub struct FileSink<F: FileExt> {
    file: F,
    size: u64,
}

impl<F: FileExt> FileSink<F> {
    /// Wraps `file`; writes beyond `size` are refused.
    pub fn new(file: F, size: u64) -> FileSink<F> {
        FileSink { file, size }
    }

    /// Returns the file.
    pub fn into_inner(self) -> F {
        self.file
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(out_of_range(offset, len, self.size)),
        }
    }
}

impl<F: FileExt> PageSink for FileSink<F> {
    fn write_pages(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(offset, data.len() as u64)?;
        self.file.write_all_at(data, offset)
    }
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64);
            // n <= ZEROS.len(), a usize.
            self.file
                .write_all_at(&ZEROS[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }
}

/// Accumulates contiguous pages and writes them to the sink in one call.
#[derive(Debug)]
pub(crate) struct Coalescer {
    start: u64,
    buf: Vec<u8>,
    limit: usize,
}

impl Coalescer {
    pub(crate) fn new(limit: usize) -> Coalescer {
        Coalescer {
            start: 0,
            buf: Vec::new(),
            limit: limit.max(1),
        }
    }

    /// Adds one page; flushes first if it does not extend the current run.
    /// Returns whether the sink was written. On error returns (run start, run
    /// length, error).
    pub(crate) fn push<S: PageSink>(
        &mut self,
        sink: &mut S,
        offset: u64,
        page: &[u8],
    ) -> Result<bool, (u64, u64, io::Error)> {
        let contiguous = self.start.checked_add(self.buf.len() as u64) == Some(offset);
        let mut wrote = false;
        if !self.buf.is_empty() && (!contiguous || self.buf.len() + page.len() > self.limit) {
            wrote = self.flush(sink)?;
        }
        if self.buf.is_empty() {
            self.start = offset;
        }
        self.buf.extend_from_slice(page);
        Ok(wrote)
    }

    /// Whether `[offset, offset+len)` overlaps the pending run.
    pub(crate) fn overlaps(&self, offset: u64, len: u64) -> bool {
        let end = self.start.saturating_add(self.buf.len() as u64);
        !self.buf.is_empty() && offset < end && offset.saturating_add(len) > self.start
    }

    /// Writes the pending run, if any; returns whether the sink was written.
    pub(crate) fn flush<S: PageSink>(
        &mut self,
        sink: &mut S,
    ) -> Result<bool, (u64, u64, io::Error)> {
        if self.buf.is_empty() {
            return Ok(false);
        }
        let r = sink.write_pages(self.start, &self.buf);
        let len = self.buf.len() as u64;
        self.buf.clear();
        r.map(|()| true).map_err(|e| (self.start, len, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_contiguous_pages_up_to_the_limit() {
        let mut sink = VecSink::new(8 * 4096);
        let mut c = Coalescer::new(3 * 4096);
        for p in [0u64, 1, 2, 3, 5] {
            c.push(&mut sink, p * 4096, &[p as u8 + 1; 4096]).unwrap();
        }
        c.flush(&mut sink).unwrap();
        // 0-2 (limit), 3, 5 (gap).
        assert_eq!(sink.writes, 3);
        assert_eq!(sink.data[4096 * 2], 3);
        assert_eq!(sink.data[4096 * 4], 0);
        assert_eq!(sink.data[4096 * 5], 6);
    }

    #[test]
    fn sinks_refuse_out_of_range_writes() {
        let mut v = VecSink::new(4096);
        assert!(v.write_pages(4096, &[0; 4096]).is_err());
        assert!(v.zero_range(u64::MAX, 4096).is_err());
        let f = tempfile::tempfile().unwrap();
        let mut s = FileSink::new(f, 8192);
        s.write_pages(4096, &[7; 4096]).unwrap();
        assert!(s.write_pages(8192, &[7; 4096]).is_err());
        s.zero_range(4096, 4096).unwrap();
        let mut b = [1u8; 4096];
        s.into_inner().read_exact_at(&mut b, 4096).unwrap();
        assert!(b.iter().all(|&x| x == 0));
    }
}
