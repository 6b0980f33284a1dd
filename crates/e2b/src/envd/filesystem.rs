//! envd's `filesystem.Filesystem` service mapped onto the engine's file
//! calls: stat, make a directory, move, list (to a depth), remove, and
//! directory watches (a stream, or the create / poll / remove trio).

use axum::extract::{Extension, State};
use axum::response::Response;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use zygote_proto::procs::{FsEvent, FsEventKind, WalkEntry};

use super::files::absolute;
use crate::connect::{
    holding, messages, stream_error, stream_response, stream_slot, unary, Code, RpcError,
    StreamRequest, Unary,
};
use crate::route::Target;
use crate::time::rfc3339;
use crate::App;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathRequest {
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveRequest {
    source: String,
    destination: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListDirRequest {
    path: String,
    #[serde(default)]
    depth: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct WatchRequest {
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    include_entry: bool,
    #[serde(default)]
    allow_network_mounts: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct WatcherRequest {
    watcher_id: String,
}

/// `EntryInfo` (int64 `size` as a string, as proto3 JSON writes it).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntryInfo {
    name: String,
    r#type: &'static str,
    path: String,
    size: String,
    mode: u32,
    permissions: String,
    owner: &'static str,
    group: &'static str,
    modified_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    symlink_target: Option<String>,
}

#[derive(Debug, Serialize)]
struct EntryResponse {
    entry: EntryInfo,
}

#[derive(Debug, Serialize)]
struct Entries {
    entries: Vec<EntryInfo>,
}

#[derive(Debug, Serialize)]
struct Empty {}

/// `FILE_TYPE_*` of an agent kind.
fn file_type(kind: &str) -> &'static str {
    match kind {
        "dir" => "FILE_TYPE_DIRECTORY",
        "symlink" => "FILE_TYPE_SYMLINK",
        "file" => "FILE_TYPE_FILE",
        _ => "FILE_TYPE_UNSPECIFIED",
    }
}

/// `ls -l`'s permission string of a mode.
fn permissions(kind: &str, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        "dir" => 'd',
        "symlink" => 'l',
        _ => '-',
    });
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn entry(e: WalkEntry) -> EntryInfo {
    EntryInfo {
        r#type: file_type(&e.kind),
        permissions: permissions(&e.kind, e.mode),
        size: e.size.to_string(),
        mode: e.mode & 0o7777,
        owner: "root",
        group: "root",
        modified_time: rfc3339(e.mtime),
        symlink_target: e.target,
        name: e.name,
        path: e.path,
    }
}

/// The last component of a path (`/` for the root).
pub(crate) fn base_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("/")
        .to_string()
}

/// A path's entry, by stat.
pub(crate) async fn entry_of(app: &App, id: &str, path: &str) -> Result<EntryInfo, RpcError> {
    let s = app.engine.stat(id, path).await?;
    Ok(entry(WalkEntry {
        path: path.to_string(),
        name: base_name(path),
        kind: s.kind,
        size: s.size,
        mode: s.mode,
        mtime: s.mtime,
        target: None,
    }))
}

pub(crate) async fn stat(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(req): Unary<PathRequest>,
) -> Response {
    let r = async {
        Ok(EntryResponse {
            entry: entry_of(&app, &t.id, &absolute(&req.path)).await?,
        })
    };
    unary(r.await)
}

pub(crate) async fn make_dir(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(req): Unary<PathRequest>,
) -> Response {
    let r = async {
        if app.engine.stat(&t.id, &absolute(&req.path)).await.is_ok() {
            return Err(RpcError::new(
                Code::AlreadyExists,
                format!("{} already exists", req.path),
            ));
        }
        app.engine
            .make_dir(&t.id, &absolute(&req.path), true)
            .await?;
        Ok(EntryResponse {
            entry: entry_of(&app, &t.id, &absolute(&req.path)).await?,
        })
    };
    unary(r.await)
}

pub(crate) async fn move_path(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(req): Unary<MoveRequest>,
) -> Response {
    let r = async {
        app.engine
            .rename(&t.id, &absolute(&req.source), &absolute(&req.destination))
            .await?;
        Ok(EntryResponse {
            entry: entry_of(&app, &t.id, &absolute(&req.destination)).await?,
        })
    };
    unary(r.await)
}

pub(crate) async fn list_dir(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(req): Unary<ListDirRequest>,
) -> Response {
    let r = async {
        let depth = req.depth.max(1);
        let entries = app.engine.walk(&t.id, &absolute(&req.path), depth).await?;
        Ok(Entries {
            entries: entries.into_iter().map(entry).collect(),
        })
    };
    unary(r.await)
}

pub(crate) async fn remove(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(req): Unary<PathRequest>,
) -> Response {
    let r = async {
        app.engine
            .remove_path(&t.id, &absolute(&req.path), true)
            .await?;
        Ok(Empty {})
    };
    unary(r.await)
}

/// `FilesystemEvent`: the path relative to the watched directory.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventOut {
    pub(crate) name: String,
    pub(crate) r#type: &'static str,
}

/// An agent event as E2B names it, relative to `root`.
pub(crate) fn event_out(root: &str, e: &FsEvent) -> EventOut {
    let root = root.trim_end_matches('/');
    let name = e
        .path
        .strip_prefix(root)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(&e.path)
        .to_string();
    EventOut {
        name,
        r#type: match e.kind {
            FsEventKind::Create => "EVENT_TYPE_CREATE",
            FsEventKind::Write => "EVENT_TYPE_WRITE",
            FsEventKind::Remove => "EVENT_TYPE_REMOVE",
            FsEventKind::Rename => "EVENT_TYPE_RENAME",
            FsEventKind::Chmod => "EVENT_TYPE_CHMOD",
        },
    }
}

/// Refuse what the agent's watch cannot give.
pub(crate) fn check_watch(w: &WatchRequest) -> Result<(), RpcError> {
    if w.include_entry {
        return Err(RpcError::new(
            Code::Unimplemented,
            "watch events with entry info are not supported: leave include_entry off",
        ));
    }
    let _ = w.allow_network_mounts;
    Ok(())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum WatchEvent {
    Start {},
    Filesystem(EventOut),
    Keepalive {},
}

#[derive(Debug, Serialize)]
struct WatchMsg {
    event: WatchEvent,
}

pub(crate) async fn watch_dir(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    req: StreamRequest<WatchRequest>,
) -> Response {
    let w = req.msg;
    let opened = async {
        check_watch(&w)?;
        let slot = stream_slot(&app.streams)?;
        let events = app
            .engine
            .watch(&t.id, &absolute(&w.path), w.recursive)
            .await?;
        Ok::<_, RpcError>((events, slot))
    };
    let (events, slot) = match opened.await {
        Ok(s) => s,
        Err(e) => return stream_error(e),
    };
    let root = absolute(&w.path);
    let start = futures::stream::once(async {
        Ok(WatchMsg {
            event: WatchEvent::Start {},
        })
    });
    let rest = events.map(move |ev| {
        ev.map(|e| WatchMsg {
            event: WatchEvent::Filesystem(event_out(&root, &e)),
        })
        .map_err(RpcError::from)
    });
    let ka = crate::connect::to_json(&WatchMsg {
        event: WatchEvent::Keepalive {},
    })
    .unwrap_or_default();
    stream_response(
        holding(messages(start.chain(rest)), slot),
        req.keepalive.map(|k| (k, ka)),
    )
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WatcherCreated {
    watcher_id: String,
}

#[derive(Debug, Serialize)]
struct WatcherEvents {
    events: Vec<EventOut>,
}

pub(crate) async fn create_watcher(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(w): Unary<WatchRequest>,
) -> Response {
    let r = async {
        check_watch(&w)?;
        let events = app
            .engine
            .watch(&t.id, &absolute(&w.path), w.recursive)
            .await?;
        let id = app.watchers.open(&t.id, &absolute(&w.path), events)?;
        Ok(WatcherCreated { watcher_id: id })
    };
    unary(r.await)
}

pub(crate) async fn get_watcher_events(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(w): Unary<WatcherRequest>,
) -> Response {
    unary(
        app.watchers
            .take(&t.id, &w.watcher_id)
            .map(|events| WatcherEvents { events }),
    )
}

pub(crate) async fn remove_watcher(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(w): Unary<WatcherRequest>,
) -> Response {
    unary(app.watchers.close(&t.id, &w.watcher_id).map(|()| Empty {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_events() {
        assert_eq!(permissions("dir", 0o755), "drwxr-xr-x");
        assert_eq!(permissions("file", 0o640), "-rw-r-----");
        assert_eq!(base_name("/home/user/a.txt"), "a.txt");
        assert_eq!(base_name("/tmp/d/"), "d");
        assert_eq!(base_name("/"), "/");
        let e = event_out(
            "/tmp/w/",
            &FsEvent {
                kind: FsEventKind::Create,
                path: "/tmp/w/sub/f".into(),
            },
        );
        assert_eq!(e.name, "sub/f");
        assert_eq!(e.r#type, "EVENT_TYPE_CREATE");
    }
}
