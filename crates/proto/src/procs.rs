//! Payloads of the agent messages for background processes, terminals and the
//! richer file operations (`Spawn`, `Procs`, `Attach`, `ProcInput`,
//! `ProcSignal`, `ProcResize`, `MakeDir`, `Rename`, `Walk`, `Watch`). Wire
//! types only, like the rest of `agent`.

use serde::{Deserialize, Serialize};

use crate::agent::{ExecRequest, ExitStatus};

/// Most entries one `Walk` answers.
pub const MAX_WALK_ENTRIES: usize = 10_000;
/// Deepest `Walk`.
pub const MAX_WALK_DEPTH: u32 = 32;
/// Bytes of output the agent keeps per background process for a late `Attach`.
pub const PROC_OUTPUT_KEEP: usize = 256 * 1024;
/// Background processes the agent keeps at once (running, or exited and not
/// yet forgotten); exited ones are forgotten oldest first past this.
pub const MAX_PROCS: usize = 256;

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PtySize {
    /// Rows (1-1000).
    pub rows: u16,
    /// Columns (1-1000).
    pub cols: u16,
}

/// A background process to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SpawnProcess {
    /// What to run, as for a foreground exec (its `timeout_ms` bounds the
    /// process's life; `stdin: true` keeps its stdin open for `ProcInput`).
    pub exec: ExecRequest,
    /// Run it on a terminal of this size (stdin, stdout and stderr are the
    /// terminal; its output arrives as `Stdout`).
    #[serde(default)]
    pub pty: Option<PtySize>,
    /// A label to find it by.
    #[serde(default)]
    pub tag: Option<String>,
}

/// A background process as `Procs` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcInfo {
    /// Guest pid.
    pub pid: u32,
    /// The command line (argv joined, or the shell line).
    pub cmd: String,
    /// Its label.
    #[serde(default)]
    pub tag: Option<String>,
    /// It runs on a terminal.
    pub pty: bool,
    /// Its stdin takes input.
    pub stdin: bool,
    /// Start time, seconds since the Unix epoch (guest clock).
    pub started_unix: u64,
    /// How it ended; `None` while it runs.
    #[serde(default)]
    pub exit: Option<ExitStatus>,
}

/// One entry of a `Walk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalkEntry {
    /// Absolute path.
    pub path: String,
    /// Name (the last path component).
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits and file type (`st_mode`).
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Where a symlink points.
    #[serde(default)]
    pub target: Option<String>,
}

/// What happened to a watched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FsEventKind {
    /// Created.
    Create,
    /// Written.
    Write,
    /// Removed.
    Remove,
    /// Renamed (from or to).
    Rename,
    /// Attributes changed.
    Chmod,
}

/// One event of a `Watch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FsEvent {
    /// What happened.
    pub kind: FsEventKind,
    /// The path it happened to.
    pub path: String,
}

/// The display form of a command.
pub fn command_line(e: &ExecRequest) -> String {
    match &e.shell {
        Some(s) => s.clone(),
        None => e.argv.join(" "),
    }
}
