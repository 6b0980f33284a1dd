//! The transfer disk, guest side: a second virtio-blk device (`serial=xfer`)
//! the host stages bulk file data on, so big files skip the slow virtio-serial
//! port. Uploads copy an extent of the disk into a file ([`copy_from_disk`]);
//! downloads copy a window of a file onto the disk ([`copy_to_disk`]).
//!
//! The disk is opened `O_DIRECT`, so the guest page cache never holds a stale
//! copy of what the host wrote (or hides what we wrote from the host). That
//! needs offsets, lengths and buffers aligned to [`XFER_ALIGN`]: buffers come
//! from [`AlignedBuf`], the host aligns extents, and a short tail is read (or
//! zero-padded and written) as a whole block.

use std::alloc::{self, Layout};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::{mpsc, OnceLock};

use zygote_proto::agent::{
    AgentError, ErrorKind, FEATURE_XFER_DISK, XFER_ALIGN, XFER_DISK_SERIAL, XFER_MAX_LEN,
};

use crate::util::{bad, err};

/// Size of one disk read or write: few, large I/Os.
pub(crate) const IO_BUF: usize = 4 * 1024 * 1024;

/// A zeroed heap buffer aligned to [`XFER_ALIGN`], as `O_DIRECT` requires.
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer owns its allocation exclusively (like a `Vec<u8>`); nothing
// else holds the pointer, so moving it to another thread is sound.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// `len` bytes (rounded up to a whole block), or an error when out of memory.
    pub(crate) fn new(len: usize) -> Result<AlignedBuf, AgentError> {
        let len = round_up(len.max(1) as u64) as usize;
        let layout = Layout::from_size_align(len, XFER_ALIGN as usize)
            .map_err(|e| err(ErrorKind::Internal, format!("bad buffer layout: {e}")))?;
        // SAFETY: `layout` has a non-zero size (at least one block).
        let p = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).ok_or_else(|| {
            err(
                ErrorKind::Internal,
                format!("out of memory for a {len}-byte transfer buffer: give the guest more RAM"),
            )
        })?;
        Ok(AlignedBuf { ptr, layout })
    }

    fn len(&self) -> usize {
        self.layout.size()
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to `layout.size()` initialised (zeroed at
        // allocation) bytes we own, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this same `layout` and is
        // freed exactly once, here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

fn round_up(n: u64) -> u64 {
    n.div_ceil(XFER_ALIGN) * XFER_ALIGN
}

/// Where the transfer disk is and how big it is.
#[derive(Debug, Clone)]
struct Found {
    dev: PathBuf,
    size: u64,
}

/// The block device whose virtio serial is `xfer` (found once, then remembered).
fn find() -> Option<&'static Found> {
    static FOUND: OnceLock<Found> = OnceLock::new();
    if let Some(f) = FOUND.get() {
        return Some(f);
    }
    let found = scan()?;
    Some(FOUND.get_or_init(|| found))
}

fn scan() -> Option<Found> {
    for e in fs::read_dir("/sys/block").ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("vd") {
            continue;
        }
        let serial = fs::read_to_string(e.path().join("serial")).unwrap_or_default();
        if serial.trim_end_matches(['\0', '\n', ' ']) != XFER_DISK_SERIAL {
            continue;
        }
        let sectors: u64 = fs::read_to_string(e.path().join("size"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let dev = PathBuf::from("/dev").join(&name);
        if dev.exists() {
            return Some(Found {
                dev,
                size: sectors * 512,
            });
        }
    }
    None
}

/// The optional features this agent has in this guest.
pub(crate) fn features() -> Vec<String> {
    let mut f = Vec::new();
    if find().is_some() {
        f.push(FEATURE_XFER_DISK.to_string());
    }
    f
}

/// The transfer disk, opened for direct I/O.
pub(crate) struct Disk {
    file: File,
    found: &'static Found,
}

impl Disk {
    /// Open the transfer disk (read-write, `O_DIRECT`).
    pub(crate) fn open() -> Result<Disk, AgentError> {
        let found = find().ok_or_else(|| {
            err(
                ErrorKind::Internal,
                format!(
                    "no transfer disk in this guest (no /sys/block/vd* with serial `{XFER_DISK_SERIAL}`): \
                     the host must attach it, or use plain `write_file`/`read_file`"
                ),
            )
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&found.dev)
            .map_err(|e| {
                err(
                    ErrorKind::Internal,
                    format!("cannot open the transfer disk {}: {e}", found.dev.display()),
                )
            })?;
        Ok(Disk { file, found })
    }

    /// Check an extent the host named: aligned, not too long, inside the disk.
    fn check(&self, disk_offset: u64, len: u64) -> Result<(), AgentError> {
        if !disk_offset.is_multiple_of(XFER_ALIGN) {
            return Err(bad(format!(
                "disk_offset {disk_offset} is not a multiple of {XFER_ALIGN}: align transfer-disk extents"
            )));
        }
        if len > XFER_MAX_LEN {
            return Err(bad(format!(
                "len {len} is over the {XFER_MAX_LEN}-byte cap of one transfer-disk window: send smaller windows"
            )));
        }
        let end = disk_offset.checked_add(round_up(len));
        if end.is_none_or(|e| e > self.found.size) {
            return Err(bad(format!(
                "extent {disk_offset}+{len} runs past the end of the {}-byte transfer disk: \
                 allocate extents inside it",
                self.found.size
            )));
        }
        Ok(())
    }

    fn io_err(&self, what: &str, off: u64, e: &io::Error) -> AgentError {
        err(
            ErrorKind::Internal,
            format!(
                "cannot {what} the transfer disk {} at byte {off}: {e}",
                self.found.dev.display()
            ),
        )
    }
}

/// Read `len` bytes from `disk_offset` of the disk and hand them, in order and
/// in pieces of at most [`IO_BUF`], to `sink`.
///
/// A helper thread reads the next piece while `sink` consumes this one: the
/// disk read is mostly QEMU's work (DMA into guest memory) and the sink's file
/// write is the vCPU's, so the two overlap.
pub(crate) fn copy_from_disk(
    disk: &Disk,
    buf: &mut AlignedBuf,
    disk_offset: u64,
    len: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), AgentError>,
) -> Result<(), AgentError> {
    disk.check(disk_offset, len)?;
    let cap = buf.len() as u64;
    if len <= cap {
        return read_piece(disk, buf, disk_offset, len).and_then(&mut sink);
    }
    let second = AlignedBuf::new(buf.len())?;
    let spare = std::mem::replace(buf, AlignedBuf::new(XFER_ALIGN as usize)?);
    let (free_tx, free_rx) = mpsc::sync_channel::<AlignedBuf>(2);
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<(AlignedBuf, u64), AgentError>>(2);
    let _ = free_tx.send(spare);
    let _ = free_tx.send(second);
    // `move`: the channel ends drop when the consumer returns, so the reader
    // thread always wakes and ends, even after an error.
    let last = std::thread::scope(move |s| {
        s.spawn(move || {
            let mut done = 0u64;
            while done < len {
                let Ok(mut b) = free_rx.recv() else { return };
                let want = cap.min(len - done);
                let r = read_piece(disk, &mut b, disk_offset + done, want).map(|_| ());
                let failed = r.is_err();
                if full_tx.send(r.map(|()| (b, want))).is_err() || failed {
                    return;
                }
                done += want;
            }
        });
        let mut done = 0u64;
        loop {
            let (mut b, want) = match full_rx.recv() {
                Ok(r) => r?,
                Err(_) => {
                    return Err(err(
                        ErrorKind::Internal,
                        "the transfer-disk reader thread stopped early",
                    ))
                }
            };
            sink(&b.as_mut_slice()[..want as usize])?;
            done += want;
            if done >= len {
                return Ok(b);
            }
            let _ = free_tx.send(b);
        }
    })?;
    // Keep a full-size buffer for the next extent of this upload.
    *buf = last;
    Ok(())
}

/// Read `want` bytes at `off` into `buf` (a whole number of blocks).
fn read_piece<'b>(
    disk: &Disk,
    buf: &'b mut AlignedBuf,
    off: u64,
    want: u64,
) -> Result<&'b [u8], AgentError> {
    let b = buf.as_mut_slice();
    disk.file
        .read_exact_at(&mut b[..round_up(want) as usize], off)
        .map_err(|e| disk.io_err("read", off, &e))?;
    Ok(&b[..want as usize])
}

/// Copy up to `len` bytes of `file` from `file_offset` onto the disk at
/// `disk_offset` (the last block zero-padded); returns the bytes copied, fewer
/// than `len` only at the end of the file. `path` names the file in errors.
pub(crate) fn copy_to_disk(
    disk: &Disk,
    buf: &mut AlignedBuf,
    file: &File,
    path: &str,
    file_offset: u64,
    disk_offset: u64,
    len: u64,
) -> Result<u64, AgentError> {
    disk.check(disk_offset, len)?;
    let cap = buf.len() as u64;
    let mut done = 0u64;
    while done < len {
        let want = cap.min(len - done) as usize;
        let b = buf.as_mut_slice();
        let mut n = 0usize;
        while n < want {
            match file.read_at(&mut b[n..want], file_offset + done + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(crate::files::io_err("read", path, &e)),
            }
        }
        if n == 0 {
            break;
        }
        let padded = round_up(n as u64) as usize;
        b[n..padded].fill(0);
        let off = disk_offset + done;
        disk.file
            .write_all_at(&b[..padded], off)
            .map_err(|e| disk.io_err("write", off, &e))?;
        done += n as u64;
        if n < want {
            break;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned_whole_blocks() {
        for len in [1, 4096, 4097, IO_BUF] {
            let mut b = AlignedBuf::new(len).unwrap();
            let s = b.as_mut_slice();
            assert_eq!(s.as_ptr() as usize % XFER_ALIGN as usize, 0);
            assert_eq!(s.len() % XFER_ALIGN as usize, 0);
            assert!(s.len() >= len);
            assert!(s.iter().all(|&x| x == 0));
        }
        assert_eq!(round_up(0), 0);
        assert_eq!(round_up(1), 4096);
        assert_eq!(round_up(8192), 8192);
    }
}
