//! The transfer disk, host side: bulk file data moves through a per-sandbox
//! sparse raw file (`<sandbox dir>/xfer.img`, the guest's virtio-blk disk with
//! serial `xfer`) instead of the virtio-serial port, which under TCG moves
//! 4 KiB per QEMU main-loop turn.
//!
//! - Upload: the HTTP body is written (`pwrite`) into an extent of the file,
//!   then `DiskData { disk_offset, len }` tells the agent to append it to the
//!   file being written; two extents alternate so the next window is written
//!   while the guest copies the previous one.
//! - Download: `ReadFileToDisk` windows ask the agent to put file bytes on an
//!   extent; the daemon `pread`s them and streams them out, with the next
//!   window already requested into the other extent.
//!
//! QEMU opens the file with the default cache mode (through the host page
//! cache, `cache.direct=off`) and the guest uses `O_DIRECT`, so what either side
//! wrote is what the other reads. Extents come from a small per-sandbox slot
//! allocator, so concurrent transfers never overlap; a freed extent is
//! hole-punched so the file keeps no disk space. Small files (under
//! [`THRESHOLD`]), agents without the feature and sandboxes without the disk
//! use the frame path.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tracing::{debug, warn};
use zygote_proto::agent::{Msg, FEATURE_XFER_DISK};

use super::ReadStream;
use crate::agent_link::{AgentLink, LinkError, Request};
use crate::error::{EngineError, Result};
use crate::ops;

/// File name of the transfer disk in the sandbox directory.
pub(crate) const XFER_IMG: &str = "xfer.img";
/// Apparent size of the transfer disk (sparse: it holds no blocks when idle).
pub(crate) const DISK_BYTES: u64 = 1 << 30;
/// Size of one extent: the most one window moves.
pub(crate) const WINDOW: u64 = 8 << 20;
/// Extents on the disk.
const SLOTS: usize = (DISK_BYTES / WINDOW) as usize;
/// Files at least this big go through the disk.
pub(crate) const THRESHOLD: usize = 1 << 20;
/// Uploads are staged in pieces of this size before each `pwrite`.
const STAGE: usize = 4 << 20;
/// Downloads are read back (and streamed out) in pieces of this size.
const READ_PIECE: u64 = 2 << 20;
/// Time the agent gets to copy one window.
const WINDOW_TIMEOUT: Duration = Duration::from_secs(120);

/// Create the sandbox's (sparse) transfer disk; the path goes to
/// `VmConfig::xfer_disk`.
pub(crate) fn prepare(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(XFER_IMG);
    let io = |source| EngineError::Io {
        what: format!(
            "cannot create the transfer disk {} ({DISK_BYTES} bytes, sparse)",
            path.display()
        ),
        source,
    };
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    f.set_len(DISK_BYTES).map_err(io)?;
    Ok(path)
}

/// One sandbox's open transfer disk and its extent allocator.
pub(crate) struct XferDisk {
    file: File,
    path: PathBuf,
    used: Mutex<[bool; SLOTS]>,
}

/// Open disks by path. Entries are weak: a disk is open only while a transfer
/// holds an extent, so a removed sandbox leaves no descriptor behind.
fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<XferDisk>>> {
    static DISKS: OnceLock<Mutex<HashMap<PathBuf, Weak<XferDisk>>>> = OnceLock::new();
    DISKS.get_or_init(Default::default)
}

impl XferDisk {
    /// The transfer disk of the sandbox in `dir`, if it has one.
    fn open(dir: &Path) -> Option<Arc<XferDisk>> {
        let path = dir.join(XFER_IMG);
        let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(d) = map.get(&path).and_then(Weak::upgrade) {
            return Some(d);
        }
        let file = OpenOptions::new().read(true).write(true).open(&path).ok()?;
        if file.metadata().ok()?.len() < DISK_BYTES {
            return None;
        }
        let d = Arc::new(XferDisk {
            file,
            path: path.clone(),
            used: Mutex::new([false; SLOTS]),
        });
        map.insert(path, Arc::downgrade(&d));
        Some(d)
    }

    /// Up to `n` free extents (none when every slot is taken).
    fn alloc(self: &Arc<Self>, n: usize) -> Vec<Extent> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(n);
        for (slot, u) in used.iter_mut().enumerate() {
            if out.len() == n {
                break;
            }
            if !*u {
                *u = true;
                out.push(Extent {
                    disk: self.clone(),
                    slot,
                    leak: false,
                });
            }
        }
        out
    }

    fn io_err(&self, what: &str, off: u64, source: std::io::Error) -> EngineError {
        EngineError::Io {
            what: format!(
                "cannot {what} the transfer disk {} at byte {off}",
                self.path.display()
            ),
            source,
        }
    }
}

/// One allocated extent of [`WINDOW`] bytes; dropping it punches its hole and
/// frees the slot.
pub(crate) struct Extent {
    disk: Arc<XferDisk>,
    slot: usize,
    /// Keep the slot taken forever (a guest write into it may still land).
    leak: bool,
}

impl Extent {
    fn offset(&self) -> u64 {
        self.slot as u64 * WINDOW
    }
}

impl Drop for Extent {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        let fd = self.disk.file.as_raw_fd();
        // SAFETY: fallocate(2) on a descriptor we own, with a range inside the
        // file; it only deallocates blocks (the size is kept) and touches no memory.
        let r = unsafe {
            libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                self.offset() as libc::off_t,
                WINDOW as libc::off_t,
            )
        };
        if r != 0 {
            debug!(error = %std::io::Error::last_os_error(), path = %self.disk.path.display(), "cannot punch a hole in the transfer disk");
        }
        let mut used = self.disk.used.lock().unwrap_or_else(|p| p.into_inner());
        used[self.slot] = false;
    }
}

/// Agent links already asked for their features, with the answer.
type CapsCache = Mutex<Vec<(Weak<AgentLink>, bool)>>;

/// Whether the agent behind `link` has the transfer-disk feature (asked once
/// per link; an agent that predates the question answers with an error: no).
async fn agent_supports(link: &Arc<AgentLink>) -> bool {
    static CAPS: OnceLock<CapsCache> = OnceLock::new();
    let caps = CAPS.get_or_init(Default::default);
    {
        let mut c = caps.lock().unwrap_or_else(|p| p.into_inner());
        c.retain(|(w, _)| w.strong_count() > 0);
        let me = Arc::downgrade(link);
        if let Some((_, yes)) = c.iter().find(|(w, _)| w.ptr_eq(&me)) {
            return *yes;
        }
    }
    let yes = match link.call(&Msg::Capabilities, ops::SMALL_TIMEOUT).await {
        Ok(f) => match f.msg {
            Msg::CapabilitiesOk { features } => features.iter().any(|f| f == FEATURE_XFER_DISK),
            _ => false,
        },
        // An old agent: "unknown variant `capabilities`".
        Err(LinkError::Agent(_)) => false,
        // Not an answer (timeout, closed link): ask again next time.
        Err(e) => {
            debug!(error = %e, "capabilities probe failed; using the frame path");
            return false;
        }
    };
    let mut c = caps.lock().unwrap_or_else(|p| p.into_inner());
    c.push((Arc::downgrade(link), yes));
    yes
}

/// Extents for one transfer, or `None` when the disk path is not available.
async fn extents(link: &Arc<AgentLink>, dir: &Path) -> Option<Vec<Extent>> {
    let disk = XferDisk::open(dir)?;
    if !agent_supports(link).await {
        return None;
    }
    let ex = disk.alloc(2);
    if ex.is_empty() {
        debug!("every transfer-disk extent is in use; using the frame path");
        return None;
    }
    Some(ex)
}

/// Write a guest file from a stream of chunks, through the transfer disk when
/// the body is at least [`THRESHOLD`] bytes and the sandbox has one.
pub(crate) async fn write_file<S, E>(
    link: &Arc<AgentLink>,
    dir: &Path,
    path: &str,
    mode: Option<u32>,
    mut body: S,
) -> Result<std::result::Result<u64, E>>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
{
    let mut head: VecDeque<Bytes> = VecDeque::new();
    let mut head_len = 0usize;
    let mut ended = false;
    while head_len < THRESHOLD {
        match body.next().await {
            Some(Ok(b)) => {
                head_len += b.len();
                head.push_back(b);
            }
            Some(Err(e)) => return Ok(Err(e)),
            None => {
                ended = true;
                break;
            }
        }
    }
    let ex = if ended {
        None
    } else {
        extents(link, dir).await
    };
    let Some(ex) = ex else {
        let head = futures::stream::iter(head.into_iter().map(Ok::<Bytes, E>));
        return Ok(ops::write_file(link, path, mode, head.chain(body)).await?);
    };
    let t0 = std::time::Instant::now();
    let r = upload(link, ex, path, mode, head, body).await;
    if let Ok(Ok(n)) = &r {
        debug!(
            path,
            bytes = n,
            ms = t0.elapsed().as_millis() as u64,
            "upload through the transfer disk"
        );
    }
    r
}

async fn upload<S, E>(
    link: &AgentLink,
    ex: Vec<Extent>,
    path: &str,
    mode: Option<u32>,
    mut queue: VecDeque<Bytes>,
    mut body: S,
) -> Result<std::result::Result<u64, E>>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
{
    let mut r = link
        .start(
            &Msg::WriteFile {
                path: path.to_string(),
                mode,
                parents: true,
            },
            &[],
        )
        .await?;
    let disk = ex[0].disk.clone();
    let mut free: VecDeque<usize> = (0..ex.len()).collect();
    let mut pending: VecDeque<usize> = VecDeque::new();
    let mut stage: Vec<u8> = Vec::with_capacity(STAGE);
    let mut total = 0u64;
    let mut eof = false;
    while !eof {
        let slot = match free.pop_front() {
            Some(s) => s,
            None => {
                wait_done(&mut r).await?;
                match pending.pop_front() {
                    Some(s) => s,
                    None => return Err(unexpected("an extent acknowledged twice")),
                }
            }
        };
        let base = ex[slot].offset();
        let mut filled = 0u64;
        while filled + (stage.len() as u64) < WINDOW {
            let chunk = match queue.pop_front() {
                Some(c) => c,
                None => match body.next().await {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => {
                        let _ = r.send(&Msg::Cancel, &[]).await;
                        return Ok(Err(e));
                    }
                    None => {
                        eof = true;
                        break;
                    }
                },
            };
            let room = (WINDOW - filled) as usize - stage.len();
            let now = if chunk.len() > room {
                queue.push_front(chunk.slice(room..));
                chunk.slice(..room)
            } else {
                chunk
            };
            stage.extend_from_slice(&now);
            if stage.len() >= STAGE {
                stage = match pwrite(&disk, stage, base + filled).await {
                    Ok((s, n)) => {
                        filled += n;
                        s
                    }
                    Err(e) => {
                        let _ = r.send(&Msg::Cancel, &[]).await;
                        return Err(e);
                    }
                };
            }
        }
        if !stage.is_empty() {
            stage = match pwrite(&disk, stage, base + filled).await {
                Ok((s, n)) => {
                    filled += n;
                    s
                }
                Err(e) => {
                    let _ = r.send(&Msg::Cancel, &[]).await;
                    return Err(e);
                }
            };
        }
        if filled == 0 {
            free.push_front(slot);
            continue;
        }
        r.send(
            &Msg::DiskData {
                disk_offset: base,
                len: filled,
            },
            &[],
        )
        .await?;
        pending.push_back(slot);
        total += filled;
    }
    r.send(&Msg::DataEnd, &[]).await?;
    loop {
        match r.next().await?.msg {
            Msg::DiskDone { .. } => {
                pending.pop_front();
            }
            Msg::Ok if pending.is_empty() => return Ok(Ok(total)),
            other => return Err(unexpected(&format!("{other:?} ending a file write"))),
        }
    }
}

/// Wait for the agent to finish the oldest `DiskData`.
async fn wait_done(r: &mut Request) -> Result<()> {
    match tokio::time::timeout(WINDOW_TIMEOUT, r.next()).await {
        Ok(f) => match f?.msg {
            Msg::DiskDone { .. } => Ok(()),
            other => Err(unexpected(&format!("{other:?} during a file write"))),
        },
        Err(_) => {
            let _ = r.send(&Msg::Cancel, &[]).await;
            Err(LinkError::Timeout(WINDOW_TIMEOUT).into())
        }
    }
}

fn unexpected(what: &str) -> EngineError {
    EngineError::Agent(LinkError::Unexpected(what.to_string()))
}

/// Write `buf` at `off` off the async threads; gives the (cleared) buffer back.
async fn pwrite(disk: &Arc<XferDisk>, mut buf: Vec<u8>, off: u64) -> Result<(Vec<u8>, u64)> {
    let d = disk.clone();
    let join = tokio::task::spawn_blocking(move || {
        let r = d.file.write_all_at(&buf, off);
        let n = buf.len() as u64;
        buf.clear();
        r.map(|()| (buf, n)).map_err(|e| d.io_err("write", off, e))
    })
    .await;
    join.map_err(|e| EngineError::Io {
        what: format!("the transfer-disk writer task failed: {e}"),
        source: std::io::Error::other(e.to_string()),
    })?
}

/// Start reading a guest file: through the transfer disk when the sandbox has
/// one and the file is a regular file of at least [`THRESHOLD`] bytes (smaller
/// ones come back inline in the first answer).
pub(crate) async fn read_file(link: &Arc<AgentLink>, dir: &Path, path: &str) -> Result<ReadStream> {
    let Some(ex) = extents(link, dir).await else {
        return Ok(ops::read_file(link, path).await?);
    };
    let mut first = link
        .start(
            &Msg::ReadFileToDisk {
                path: path.to_string(),
                file_offset: 0,
                disk_offset: ex[0].offset(),
                len: WINDOW,
                inline_below: THRESHOLD as u64,
            },
            &[],
        )
        .await?;
    let f = match tokio::time::timeout(WINDOW_TIMEOUT, first.next()).await {
        Ok(f) => f?,
        Err(_) => {
            // The guest may still write this window: keep its extent out of use.
            ex.into_iter().for_each(|mut e| e.leak = true);
            return Err(LinkError::Timeout(WINDOW_TIMEOUT).into());
        }
    };
    let Msg::DiskReadOk {
        size,
        mode,
        len,
        inline,
        regular,
    } = f.msg
    else {
        return Err(unexpected(&format!("{:?} opening a file", f.msg)));
    };
    if !regular {
        drop(ex);
        return Ok(ops::read_file(link, path).await?);
    }
    if inline {
        let mut data = Bytes::from(f.payload);
        data.truncate(size.min(len) as usize);
        return Ok(ReadStream::inline(size, mode, data));
    }
    let mut d = DiskRead {
        link: link.clone(),
        path: path.to_string(),
        ex,
        size,
        next_off: len.min(size),
        current: Some(Window {
            slot: 0,
            pos: 0,
            len: len.min(size),
        }),
        pending: VecDeque::new(),
        sent: 0,
    };
    if d.ex.len() > 1 {
        d.issue(1).await?;
    }
    debug!(path, size, "download through the transfer disk");
    Ok(ReadStream::disk(size, mode, Box::new(d)))
}

/// A window on an extent being streamed out.
struct Window {
    slot: usize,
    pos: u64,
    len: u64,
}

/// A download through the transfer disk.
pub(crate) struct DiskRead {
    link: Arc<AgentLink>,
    path: String,
    ex: Vec<Extent>,
    size: u64,
    /// The file offset of the next window to request.
    next_off: u64,
    current: Option<Window>,
    /// Requested windows, oldest first: (request, slot).
    pending: VecDeque<(Request, usize)>,
    sent: u64,
}

impl DiskRead {
    /// Ask for the next window into `slot` (nothing when the file is all asked for).
    async fn issue(&mut self, slot: usize) -> std::result::Result<(), LinkError> {
        if self.next_off >= self.size {
            return Ok(());
        }
        let len = WINDOW.min(self.size - self.next_off);
        let req = self
            .link
            .start(
                &Msg::ReadFileToDisk {
                    path: self.path.clone(),
                    file_offset: self.next_off,
                    disk_offset: self.ex[slot].offset(),
                    len,
                    inline_below: 0,
                },
                &[],
            )
            .await?;
        self.pending.push_back((req, slot));
        self.next_off += len;
        Ok(())
    }

    /// The next piece of the file; `Ok(None)` at the end.
    pub(crate) async fn next(&mut self) -> std::result::Result<Option<Bytes>, LinkError> {
        loop {
            if let Some(w) = &mut self.current {
                if w.pos < w.len {
                    let n = READ_PIECE.min(w.len - w.pos);
                    let slot = w.slot;
                    let off = self.ex[slot].offset() + w.pos;
                    w.pos += n;
                    let drained = w.pos == w.len;
                    let bytes = pread(&self.ex[slot].disk, off, n).await?;
                    if drained {
                        self.current = None;
                        self.issue(slot).await?;
                    }
                    self.sent += n;
                    return Ok(Some(bytes));
                }
                let slot = w.slot;
                self.current = None;
                self.issue(slot).await?;
            }
            let Some((mut req, slot)) = self.pending.pop_front() else {
                return Ok(None);
            };
            let f = match tokio::time::timeout(WINDOW_TIMEOUT, req.next()).await {
                Ok(f) => f?,
                Err(_) => {
                    self.ex[slot].leak = true;
                    return Err(LinkError::Timeout(WINDOW_TIMEOUT));
                }
            };
            match f.msg {
                Msg::DiskReadOk { len: 0, .. } => {
                    // The file shrank: stop short (the reader sees a short body).
                    warn!(path = %self.path, sent = self.sent, size = self.size, "file shrank during a download");
                    return Ok(None);
                }
                Msg::DiskReadOk { len, .. } => {
                    let left = self.size - self.sent;
                    self.current = Some(Window {
                        slot,
                        pos: 0,
                        len: len.min(left),
                    });
                }
                other => {
                    return Err(LinkError::Unexpected(format!(
                        "{other:?} during a file read"
                    )))
                }
            }
        }
    }
}

impl Drop for DiskRead {
    fn drop(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // Windows still being written by the guest: free their extents only
        // once the agent says it is done, so no later transfer gets them early.
        let pending = std::mem::take(&mut self.pending);
        let ex = std::mem::take(&mut self.ex);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            ex.into_iter().for_each(|mut e| e.leak = true);
            return;
        };
        rt.spawn(async move {
            let mut ex = ex;
            for (mut req, slot) in pending {
                if tokio::time::timeout(WINDOW_TIMEOUT, req.next())
                    .await
                    .is_err()
                {
                    ex[slot].leak = true;
                }
            }
            drop(ex);
        });
    }
}

/// Read `n` bytes at `off` off the async threads.
async fn pread(disk: &Arc<XferDisk>, off: u64, n: u64) -> std::result::Result<Bytes, LinkError> {
    let d = disk.clone();
    let join = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; n as usize];
        d.file
            .read_exact_at(&mut buf, off)
            .map(|()| Bytes::from(buf))
            .map_err(|e| {
                LinkError::Unexpected(format!(
                    "cannot read the transfer disk {} at byte {off}: {e}",
                    d.path.display()
                ))
            })
    })
    .await;
    join.map_err(|e| LinkError::Unexpected(format!("the transfer-disk reader task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_do_not_overlap_and_free_punches_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = prepare(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), DISK_BYTES);
        let d = XferDisk::open(dir.path()).unwrap();
        let a = d.alloc(2);
        let b = d.alloc(SLOTS);
        assert_eq!(a.len() + b.len(), SLOTS);
        assert!(d.alloc(1).is_empty(), "every slot is taken");
        let mut offs: Vec<u64> = a.iter().chain(&b).map(Extent::offset).collect();
        offs.sort_unstable();
        offs.dedup();
        assert_eq!(offs.len(), SLOTS);
        d.file
            .write_all_at(&vec![7u8; 1 << 20], a[0].offset())
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        let blocks = || std::fs::metadata(&p).unwrap().blocks();
        assert!(blocks() >= 2048);
        drop(a);
        assert_eq!(blocks(), 0, "freeing an extent punches its hole");
        assert_eq!(d.alloc(2).len(), 2);
        // The same directory gets the same allocator while a transfer runs.
        let again = XferDisk::open(dir.path()).unwrap();
        assert!(Arc::ptr_eq(&d, &again));
    }
}
