//! File requests: upload (`WriteFile` + `Data`… + `DataEnd`), download
//! (`ReadFile`), `Stat`, `List` and `Remove`.
//!
//! Every path must be absolute and free of `..`. Uploads go to a temporary file
//! in the target's directory and are renamed over the target at `DataEnd`, so a
//! reader never sees half a file; special files (devices, FIFOs, `/proc`) are
//! written in place. Errors name the path and map errno to an [`ErrorKind`].
//!
//! Big files may move through the transfer disk instead of frames (see
//! [`xfer`]): an upload's data arrives as `DiskData` extents (mixed freely with
//! `Data`), and a download is a series of `ReadFileToDisk` windows.

#[path = "xfer.rs"]
pub(crate) mod xfer;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;

use zygote_proto::agent::{
    AgentError, DirEntry, ErrorKind, FileStat, Msg, CHUNK, MAX_FRAME, MAX_HEADER,
};

use crate::conn::{Ctx, Reply};
use crate::util::{bad, err};

/// Buffer size for uploads: few, large writes.
const WRITE_BUF: usize = 4 * 1024 * 1024;

/// An upload's next step.
pub(crate) enum UploadMsg {
    /// More bytes.
    Data(Vec<u8>),
    /// More bytes, staged on the transfer disk: `len` bytes at `disk_offset`.
    Disk {
        /// Byte offset on the transfer disk.
        disk_offset: u64,
        /// Bytes to append.
        len: u64,
    },
    /// The last byte has been sent.
    End,
}

/// Check that `path` is absolute and has no `..` component.
pub(crate) fn check_path(path: &str) -> Result<PathBuf, AgentError> {
    let p = Path::new(path);
    let ok = p.is_absolute()
        && !path.contains('\0')
        && !p.components().any(|c| matches!(c, Component::ParentDir));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(bad(format!(
            "path `{path}` is not allowed: use an absolute path without `..` components"
        )))
    }
}

/// Map an I/O error on `path` to an agent error; `what` says what we tried.
pub(crate) fn io_err(what: &str, path: &str, e: &io::Error) -> AgentError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => err(ErrorKind::NotFound, format!("`{path}` does not exist")),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => err(
            ErrorKind::PermissionDenied,
            format!("cannot {what} `{path}`: {e}"),
        ),
        Some(libc::EISDIR) => bad(format!("`{path}` is a directory: cannot {what} it")),
        Some(libc::ENOTDIR) => bad(format!(
            "cannot {what} `{path}`: a component of the path is not a directory"
        )),
        Some(libc::ENOTEMPTY) => bad(format!(
            "directory `{path}` is not empty: pass `recursive: true` to remove it and its contents"
        )),
        Some(libc::EEXIST) => bad(format!("cannot {what} `{path}`: it already exists")),
        _ => err(ErrorKind::Internal, format!("cannot {what} `{path}`: {e}")),
    }
}

fn kind_of(ft: fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else {
        "other"
    }
}

/// Receive an upload and install it at `path`.
pub(crate) fn upload(
    ctx: &Ctx,
    reply: &Reply,
    path: &str,
    mode: Option<u32>,
    parents: bool,
    rx: Receiver<UploadMsg>,
) {
    let mode = mode.unwrap_or(0o644) & 0o7777;
    let mut sink = match open_sink(ctx, reply.id, path, mode, parents) {
        Ok(s) => s,
        Err(e) => {
            reply.error(e);
            return drain(rx);
        }
    };
    // Opened on the first `DiskData`, kept for the rest of the upload.
    let mut disk: Option<(xfer::Disk, xfer::AlignedBuf)> = None;
    loop {
        match rx.recv() {
            Ok(UploadMsg::Data(d)) => {
                if let Err(e) = sink.w.write_all(&d) {
                    sink.abort();
                    reply.error(io_err("write", path, &e));
                    return drain(rx);
                }
            }
            Ok(UploadMsg::Disk { disk_offset, len }) => {
                let r = disk_extent(&mut disk, &mut sink, path, disk_offset, len);
                match r {
                    Ok(()) => reply.send(&Msg::DiskDone { len }, &[]),
                    Err(e) => {
                        sink.abort();
                        reply.error(e);
                        return drain(rx);
                    }
                }
            }
            Ok(UploadMsg::End) => break,
            Err(_) => {
                // Cancelled, or the host went away.
                sink.abort();
                reply.error(err(
                    ErrorKind::Internal,
                    format!("upload of `{path}` was cancelled before `data_end`"),
                ));
                return;
            }
        }
    }
    match sink.commit(mode) {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(io_err("write", path, &e)),
    }
}

/// Append one transfer-disk extent to the upload, opening the disk on first use.
fn disk_extent(
    disk: &mut Option<(xfer::Disk, xfer::AlignedBuf)>,
    sink: &mut Sink,
    path: &str,
    disk_offset: u64,
    len: u64,
) -> Result<(), AgentError> {
    if disk.is_none() {
        *disk = Some((xfer::Disk::open()?, xfer::AlignedBuf::new(xfer::IO_BUF)?));
    }
    let Some((d, buf)) = disk.as_mut() else {
        return Err(err(ErrorKind::Internal, "transfer disk state lost"));
    };
    xfer::copy_from_disk(d, buf, disk_offset, len, |bytes| {
        sink.w
            .write_all(bytes)
            .map_err(|e| io_err("write", path, &e))
    })
}

/// Swallow the rest of a failed upload so its frames raise no further errors.
fn drain(rx: Receiver<UploadMsg>) {
    while let Ok(m) = rx.recv() {
        if matches!(m, UploadMsg::End) {
            return;
        }
    }
}

struct Sink {
    w: BufWriter<File>,
    /// The temporary file to rename over `target`; `None` when writing in place.
    tmp: Option<PathBuf>,
    target: PathBuf,
}

impl Sink {
    fn abort(self) {
        if let Some(t) = &self.tmp {
            let _ = fs::remove_file(t);
        }
    }

    fn commit(self, mode: u32) -> io::Result<()> {
        let Sink { w, tmp, target } = self;
        let res = (|| {
            let f = w.into_inner().map_err(|e| e.into_error())?;
            if tmp.is_some() {
                f.set_permissions(fs::Permissions::from_mode(mode))?;
            }
            drop(f);
            if let Some(t) = &tmp {
                fs::rename(t, &target)?;
            }
            Ok(())
        })();
        if res.is_err() {
            if let Some(t) = &tmp {
                let _ = fs::remove_file(t);
            }
        }
        res
    }
}

fn open_sink(ctx: &Ctx, id: u64, path: &str, mode: u32, parents: bool) -> Result<Sink, AgentError> {
    let target = check_path(path)?;
    let parent = target
        .parent()
        .ok_or_else(|| bad(format!("`{path}` has no parent directory: name a file")))?;
    let name = target
        .file_name()
        .ok_or_else(|| bad(format!("`{path}` does not name a file")))?;
    match fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => {
            return Err(bad(format!(
                "`{path}` is a directory: cannot write it as a file"
            )))
        }
        Ok(m) if !m.is_file() && !m.file_type().is_symlink() => {
            // Devices, FIFOs, sockets: write in place.
            let f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&target)
                .map_err(|e| io_err("write", path, &e))?;
            return Ok(Sink {
                w: BufWriter::with_capacity(WRITE_BUF, f),
                tmp: None,
                target,
            });
        }
        _ => {}
    }
    if parents {
        fs::create_dir_all(parent)
            .map_err(|e| io_err("create the parent directory of", path, &e))?;
    } else if !parent.is_dir() {
        return Err(err(
            ErrorKind::NotFound,
            format!(
                "parent directory of `{path}` does not exist: create it or pass `parents: true`"
            ),
        ));
    }
    let tmp = parent.join(format!(
        ".{}.zygote-{}-{}.tmp",
        name.to_string_lossy(),
        id,
        ctx.seq()
    ));
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
    {
        Ok(f) => Ok(Sink {
            w: BufWriter::with_capacity(WRITE_BUF, f),
            tmp: Some(tmp),
            target,
        }),
        // A directory we may not create files in (e.g. under /proc or /sys):
        // fall back to writing the existing target in place.
        Err(e) if target.exists() => {
            let f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&target)
                .map_err(|_| io_err("write", path, &e))?;
            Ok(Sink {
                w: BufWriter::with_capacity(WRITE_BUF, f),
                tmp: None,
                target,
            })
        }
        Err(e) => Err(io_err("write", path, &e)),
    }
}

/// Stream a file: `ReadStart`, `Data`…, `DataEnd`.
pub(crate) fn read_file(reply: &Reply, path: &str, cancelled: &AtomicBool) {
    if let Err(e) = read_file_inner(reply, path, cancelled) {
        reply.error(e);
    }
}

fn read_file_inner(reply: &Reply, path: &str, cancelled: &AtomicBool) -> Result<(), AgentError> {
    let p = check_path(path)?;
    let mut f = File::open(&p).map_err(|e| io_err("read", path, &e))?;
    let meta = f.metadata().map_err(|e| io_err("read", path, &e))?;
    if meta.is_dir() {
        return Err(bad(format!(
            "`{path}` is a directory: use `list` to see its entries"
        )));
    }
    reply.send(
        &Msg::ReadStart {
            size: meta.len(),
            mode: meta.mode() & 0o7777,
        },
        &[],
    );
    let mut buf = vec![0u8; CHUNK];
    loop {
        if cancelled.load(Ordering::Acquire) {
            return Err(err(
                ErrorKind::Internal,
                format!("read of `{path}` was cancelled"),
            ));
        }
        if !reply.is_current() {
            return Ok(());
        }
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read", path, &e)),
        };
        reply.send(&Msg::Data, &buf[..n]);
    }
    reply.send(&Msg::DataEnd, &[]);
    Ok(())
}

/// Largest inline answer to `ReadFileToDisk` (it must fit one frame).
const INLINE_MAX: u64 = (MAX_FRAME - MAX_HEADER) as u64;

/// One `ReadFileToDisk` window: `DiskReadOk`, with the bytes on the transfer
/// disk, or inline when the whole file is under `inline_below`.
pub(crate) fn read_to_disk(
    reply: &Reply,
    path: &str,
    file_offset: u64,
    disk_offset: u64,
    len: u64,
    inline_below: u64,
) {
    match read_to_disk_inner(path, file_offset, disk_offset, len, inline_below) {
        Ok((msg, payload)) => reply.send(&msg, &payload),
        Err(e) => reply.error(e),
    }
}

fn read_to_disk_inner(
    path: &str,
    file_offset: u64,
    disk_offset: u64,
    len: u64,
    inline_below: u64,
) -> Result<(Msg, Vec<u8>), AgentError> {
    let p = check_path(path)?;
    let f = File::open(&p).map_err(|e| io_err("read", path, &e))?;
    let meta = f.metadata().map_err(|e| io_err("read", path, &e))?;
    if meta.is_dir() {
        return Err(bad(format!(
            "`{path}` is a directory: use `list` to see its entries"
        )));
    }
    let (size, mode) = (meta.len(), meta.mode() & 0o7777);
    let answer = |len, inline, regular| Msg::DiskReadOk {
        size,
        mode,
        len,
        inline,
        regular,
    };
    if !meta.is_file() {
        // Devices, FIFOs, /proc-like files: no offsets, maybe no end.
        return Ok((answer(0, false, false), Vec::new()));
    }
    if size < inline_below.min(INLINE_MAX) {
        let want = len.min(INLINE_MAX);
        let mut data = Vec::with_capacity(want.min(size) as usize);
        let mut r = &f;
        r.seek(SeekFrom::Start(file_offset))
            .and_then(|_| r.take(want).read_to_end(&mut data))
            .map_err(|e| io_err("read", path, &e))?;
        return Ok((answer(data.len() as u64, true, true), data));
    }
    let disk = xfer::Disk::open()?;
    let mut buf = xfer::AlignedBuf::new(xfer::IO_BUF)?;
    let n = xfer::copy_to_disk(&disk, &mut buf, &f, path, file_offset, disk_offset, len)?;
    Ok((answer(n, false, true), Vec::new()))
}

/// `Stat` (does not follow a final symlink).
pub(crate) fn stat(reply: &Reply, path: &str) {
    let r = check_path(path).and_then(|p| {
        let m = fs::symlink_metadata(&p).map_err(|e| io_err("stat", path, &e))?;
        Ok(FileStat {
            size: m.len(),
            mode: m.mode(),
            kind: kind_of(m.file_type()).into(),
            mtime: m.mtime(),
        })
    });
    match r {
        Ok(s) => reply.send(&Msg::StatOk(s), &[]),
        Err(e) => reply.error(e),
    }
}

/// `List`: entries sorted by name.
pub(crate) fn list(reply: &Reply, path: &str) {
    let r = check_path(path).and_then(|p| {
        let rd = fs::read_dir(&p).map_err(|e| io_err("list", path, &e))?;
        let mut entries = Vec::new();
        for e in rd {
            let e = e.map_err(|e| io_err("list", path, &e))?;
            let (kind, size) = match e.metadata() {
                Ok(m) => (kind_of(m.file_type()), m.len()),
                Err(_) => ("other", 0),
            };
            entries.push(DirEntry {
                name: e.file_name().to_string_lossy().into_owned(),
                kind: kind.into(),
                size,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    });
    match r {
        Ok(entries) => reply.send(&Msg::ListOk { entries }, &[]),
        Err(e) => reply.error(e),
    }
}

/// `Remove` a file, symlink or (empty, or with `recursive`) directory.
pub(crate) fn remove(reply: &Reply, path: &str, recursive: bool) {
    let r = check_path(path).and_then(|p| {
        if p.parent().is_none() {
            return Err(bad("refusing to remove `/`: name something inside it"));
        }
        let m = fs::symlink_metadata(&p).map_err(|e| io_err("remove", path, &e))?;
        let res = if m.is_dir() {
            if recursive {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_dir(&p)
            }
        } else {
            fs::remove_file(&p)
        };
        res.map_err(|e| io_err("remove", path, &e))
    });
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute_without_dotdot() {
        assert!(check_path("/tmp/x").is_ok());
        assert!(check_path("/tmp/./x").is_ok());
        assert!(check_path("tmp/x").is_err());
        assert!(check_path("/tmp/../etc").is_err());
        assert!(check_path("/..").is_err());
        assert!(check_path("").is_err());
        assert!(check_path("/a\0b").is_err());
        let e = check_path("x/../y").unwrap_err();
        assert!(e.message.contains("x/../y"));
    }

    #[test]
    fn errno_maps_to_kinds() {
        let k = |n| io_err("read", "/p", &io::Error::from_raw_os_error(n)).kind;
        assert_eq!(k(libc::ENOENT), ErrorKind::NotFound);
        assert_eq!(k(libc::EACCES), ErrorKind::PermissionDenied);
        assert_eq!(k(libc::EISDIR), ErrorKind::BadRequest);
        assert_eq!(k(libc::ENOTDIR), ErrorKind::BadRequest);
        assert_eq!(k(libc::EIO), ErrorKind::Internal);
    }
}
