//! Directory trees: `MakeDir`, `Rename`, `Walk` (a bounded listing down to a
//! depth) and `Watch` (inotify on a directory, optionally its subdirectories,
//! events streamed until `Cancel`).

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use zygote_proto::agent::{AgentError, ErrorKind, Msg};
use zygote_proto::procs::{FsEvent, FsEventKind, WalkEntry, MAX_WALK_DEPTH, MAX_WALK_ENTRIES};

use crate::conn::Reply;
use crate::files::{check_path, io_err};
use crate::sys;
use crate::util::{bad, err};

/// Most directories one `Watch` follows.
const MAX_WATCHED_DIRS: usize = 4096;

/// `MakeDir`.
pub(crate) fn make_dir(path: &str, parents: bool) -> Result<(), AgentError> {
    let p = check_path(path)?;
    let r = if parents {
        fs::create_dir_all(&p)
    } else {
        fs::create_dir(&p)
    };
    r.map_err(|e| io_err("create directory", path, &e))
}

/// `Rename`.
pub(crate) fn rename(from: &str, to: &str) -> Result<(), AgentError> {
    let (f, t) = (check_path(from)?, check_path(to)?);
    fs::rename(&f, &t).map_err(|e| io_err(&format!("rename to `{to}`"), from, &e))
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

fn entry(path: &Path) -> Option<WalkEntry> {
    let md = fs::symlink_metadata(path).ok()?;
    let target = md
        .file_type()
        .is_symlink()
        .then(|| fs::read_link(path).ok().map(|t| t.display().to_string()))
        .flatten();
    Some(WalkEntry {
        path: path.display().to_string(),
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "/".into()),
        kind: kind_of(md.file_type()).into(),
        size: md.len(),
        mode: md.mode(),
        mtime: md.mtime(),
        target,
    })
}

/// `Walk`: `path`'s entries down to `depth` levels (1: its own entries).
pub(crate) fn walk(path: &str, depth: u32) -> Result<Vec<WalkEntry>, AgentError> {
    if !(1..=MAX_WALK_DEPTH).contains(&depth) {
        return Err(bad(format!(
            "depth {depth} is out of range: pass 1..={MAX_WALK_DEPTH}"
        )));
    }
    let root = check_path(path)?;
    let md = fs::metadata(&root).map_err(|e| io_err("list", path, &e))?;
    if !md.is_dir() {
        return Err(bad(format!("`{path}` is not a directory")));
    }
    let mut out = Vec::new();
    let mut names = match fs::read_dir(&root) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect::<Vec<_>>(),
        Err(e) => return Err(io_err("list", path, &e)),
    };
    names.sort();
    walk_into(names, 1, depth, &mut out, path)?;
    Ok(out)
}

/// Append `names` (and, depth allowing, what their directories hold) to
/// `out` in pre-order: each directory right before its contents.
fn walk_into(
    names: Vec<PathBuf>,
    level: u32,
    depth: u32,
    out: &mut Vec<WalkEntry>,
    root: &str,
) -> Result<(), AgentError> {
    for n in names {
        let Some(e) = entry(&n) else { continue };
        if out.len() == MAX_WALK_ENTRIES {
            return Err(err(
                ErrorKind::TooLarge,
                format!("`{root}` holds more than {MAX_WALK_ENTRIES} entries down to depth {depth}: list less deep or a subdirectory"),
            ));
        }
        let descend = e.kind == "dir" && level < depth;
        out.push(e);
        if descend {
            let mut inner: Vec<PathBuf> = fs::read_dir(&n)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            inner.sort();
            walk_into(inner, level + 1, depth, out, root)?;
        }
    }
    Ok(())
}

/// An inotify instance and the directories it watches.
struct Inotify {
    fd: std::os::fd::OwnedFd,
    dirs: HashMap<i32, PathBuf>,
}

const MASK: u32 = libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF;

impl Inotify {
    fn add(&mut self, dir: &Path) -> Result<(), AgentError> {
        if self.dirs.len() >= MAX_WATCHED_DIRS {
            return Err(err(
                ErrorKind::TooLarge,
                format!("more than {MAX_WATCHED_DIRS} directories to watch: watch a smaller tree"),
            ));
        }
        let c =
            CString::new(dir.as_os_str().as_bytes()).map_err(|_| bad("path holds a NUL byte"))?;
        let wd = sys::inotify_add_watch(&self.fd, &c, MASK)
            .map_err(|e| io_err("watch", &dir.display().to_string(), &e))?;
        self.dirs.insert(wd, dir.to_path_buf());
        Ok(())
    }

    fn add_tree(&mut self, dir: &Path) -> Result<(), AgentError> {
        self.add(dir)?;
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    self.add_tree(&e.path())?;
                }
            }
        }
        Ok(())
    }
}

fn kind_of_mask(mask: u32) -> Option<FsEventKind> {
    Some(if mask & libc::IN_CREATE != 0 {
        FsEventKind::Create
    } else if mask & (libc::IN_MODIFY | libc::IN_CLOSE_WRITE) != 0 {
        FsEventKind::Write
    } else if mask & (libc::IN_DELETE | libc::IN_DELETE_SELF) != 0 {
        FsEventKind::Remove
    } else if mask & (libc::IN_MOVED_FROM | libc::IN_MOVED_TO) != 0 {
        FsEventKind::Rename
    } else if mask & libc::IN_ATTRIB != 0 {
        FsEventKind::Chmod
    } else {
        return None;
    })
}

/// `Watch`: stream events under `path` until `cancelled`.
pub(crate) fn watch(reply: &Reply, path: &str, recursive: bool, cancelled: &AtomicBool) {
    if let Err(e) = watch_inner(reply, path, recursive, cancelled) {
        reply.error(e);
    }
}

fn watch_inner(
    reply: &Reply,
    path: &str,
    recursive: bool,
    cancelled: &AtomicBool,
) -> Result<(), AgentError> {
    let root = check_path(path)?;
    if !fs::metadata(&root)
        .map_err(|e| io_err("watch", path, &e))?
        .is_dir()
    {
        return Err(bad(format!(
            "`{path}` is not a directory: watch a directory"
        )));
    }
    let fd = sys::inotify_init().map_err(|e| err(ErrorKind::Internal, format!("inotify: {e}")))?;
    let mut ino = Inotify {
        fd,
        dirs: HashMap::new(),
    };
    if recursive {
        ino.add_tree(&root)?;
    } else {
        ino.add(&root)?;
    }
    // The watch is in place: say so, so a caller can act knowing events follow.
    reply.ok();
    let mut buf = vec![0u8; 64 * 1024];
    while !cancelled.load(Ordering::Acquire) && reply.is_current() {
        let ready = sys::poll_one(
            std::os::fd::AsRawFd::as_raw_fd(&ino.fd),
            libc::POLLIN,
            Some(Duration::from_millis(200)),
        )
        .unwrap_or(0);
        if ready == 0 {
            continue;
        }
        let n = match sys::read_fd(&ino.fd, &mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        for (wd, mask, name) in sys::inotify_events(&buf[..n]) {
            let Some(dir) = ino.dirs.get(&wd).cloned() else {
                continue;
            };
            let full = if name.is_empty() {
                dir.clone()
            } else {
                dir.join(&name)
            };
            if recursive && mask & libc::IN_CREATE != 0 && mask & libc::IN_ISDIR != 0 {
                let _ = ino.add_tree(&full);
            }
            if let Some(kind) = kind_of_mask(mask) {
                let ev = FsEvent {
                    kind,
                    path: full.display().to_string(),
                };
                reply.send(&Msg::FsEvent(ev), &[]);
            }
        }
    }
    Ok(())
}
