//! REST models of the daemon's v1 API (JSON), zygote's own shapes. Inputs deny
//! unknown fields so a misspelt option is a 400 naming it, never silently
//! ignored; answers do not, because a route shared with forkd answers a
//! superset (see [`crate::compat`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// `POST /v1/sandboxes`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateSandbox {
    /// Image name (default `python`).
    #[serde(default)]
    pub image: Option<String>,
    /// Guest RAM in MiB (default 256).
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Virtual CPUs (default 1).
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Environment applied to every exec in this sandbox.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Lifetime in seconds; when it runs out the sandbox is removed (or
    /// paused, with `on_expiry: "pause"`).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// What happens when the lifetime runs out (default `kill`).
    #[serde(default)]
    pub on_expiry: Option<OnExpiry>,
    /// Labels (at most 64; keys of A-Z a-z 0-9 . _ - /, values under 512 bytes).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Volumes to attach (at most 4).
    #[serde(default)]
    pub volumes: Vec<crate::volumes::VolumeMount>,
    /// Its network (default: the daemon's `--network`, internet on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::net::NetworkBody>,
}

/// What happens when a sandbox's lifetime runs out.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum OnExpiry {
    /// Remove it.
    #[default]
    Kill,
    /// Pause it (resume brings it back).
    Pause,
}

/// `POST /v1/sandboxes/{id}/timeout`: a new lifetime, from now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TimeoutBody {
    /// Seconds from now.
    pub timeout_secs: u64,
    /// What happens then (default: unchanged, or `kill`).
    #[serde(default)]
    pub on_expiry: Option<OnExpiry>,
}

/// Lifecycle state of a sandbox.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum SandboxState {
    /// QEMU is starting and the guest is booting.
    Booting,
    /// The agent answered; the sandbox takes work.
    Running,
    /// Paused: a stored snapshot of itself, no VM (`POST .../resume`).
    Paused,
    /// Being removed.
    Stopping,
    /// QEMU exited or the guest stopped answering; `reason` says why.
    Dead,
}

impl SandboxState {
    /// Lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Booting => "booting",
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
            SandboxState::Stopping => "stopping",
            SandboxState::Dead => "dead",
        }
    }
}

/// A sandbox as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SandboxInfo {
    /// Random, unguessable id.
    pub id: String,
    /// Image name.
    pub image: String,
    /// Lifecycle state.
    pub state: SandboxState,
    /// Why it is dead, when it is.
    #[serde(default)]
    pub reason: Option<String>,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Accelerator (`tcg` or `kvm`).
    pub accel: String,
    /// QEMU's pid.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_unix: u64,
    /// Milliseconds from QEMU start to the agent's answer.
    #[serde(default)]
    pub boot_ms: Option<u64>,
    /// When its lifetime ends, seconds since the Unix epoch.
    #[serde(default)]
    pub expires_at_unix: Option<u64>,
    /// What happens then.
    #[serde(default)]
    pub on_expiry: OnExpiry,
    /// Labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Its volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::volumes::VolumeMount>,
    /// Its network, when it has a card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::net::NetworkInfo>,
    /// The snapshot it was spawned from.
    #[serde(default)]
    pub snapshot_tag: Option<String>,
    /// Guest memory: `own` (share=on memfd of its own) or `cow` (copy-on-write
    /// over a snapshot).
    #[serde(default)]
    pub memory: Option<String>,
}

/// `POST /v1/sandboxes/{id}/exec` (and `/exec/stream`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExecBody {
    /// Program and arguments. Exactly one of `argv` and `cmd`.
    #[serde(default)]
    pub argv: Vec<String>,
    /// A shell command line (`/bin/sh -c`).
    #[serde(default)]
    pub cmd: Option<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Text fed to stdin, then closed.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Bytes (base64) fed to stdin, then closed.
    #[serde(default)]
    pub stdin_b64: Option<String>,
    /// Kill the process group after this many seconds.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Run as this guest user (a name in the guest's `/etc/passwd`; default root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The buffered answer keeps at most this many bytes of each stream
    /// (its end; default 4 MiB, at most 64 MiB); the stream route is not
    /// limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

/// Default of [`ExecBody::max_output_bytes`].
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 4 << 20;
/// Most [`ExecBody::max_output_bytes`] accepted.
pub const MAX_OUTPUT_BYTES: u64 = 64 << 20;

/// Result of a buffered exec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExecResult {
    /// Exit code; `null` when a signal ended the process.
    pub exit_code: Option<i32>,
    /// The signal that ended the process.
    pub signal: Option<i32>,
    /// The timeout fired.
    pub timed_out: bool,
    /// Standard output (UTF-8, invalid bytes replaced).
    pub stdout: String,
    /// Standard error (UTF-8, invalid bytes replaced).
    pub stderr: String,
    /// Wall time in milliseconds.
    pub duration_ms: f64,
    /// `stdout` is only the end of what the process wrote (see `max_output_bytes`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdout_truncated: bool,
    /// `stderr` is only the end of what the process wrote.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stderr_truncated: bool,
}

/// One line of the NDJSON answer of `POST /v1/sandboxes/{id}/exec/stream`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum ExecEvent {
    /// The process started.
    Started {
        /// Guest pid.
        pid: u32,
    },
    /// Output bytes (base64).
    Stdout {
        /// Base64 of the bytes.
        data_b64: String,
    },
    /// Error-output bytes (base64).
    Stderr {
        /// Base64 of the bytes.
        data_b64: String,
    },
    /// The process ended.
    Exit {
        /// Exit code.
        exit_code: Option<i32>,
        /// Terminating signal.
        signal: Option<i32>,
        /// The timeout fired.
        timed_out: bool,
        /// Wall time in milliseconds.
        duration_ms: f64,
    },
    /// The exec failed before or while running.
    Error {
        /// What went wrong.
        error: String,
        /// The HTTP status the same failure answers outside a stream (404 no
        /// such sandbox, 409 not running, 504 timed out, ...), so clients raise
        /// the same typed error.
        #[serde(default)]
        status: Option<u16>,
    },
}

/// `POST /v1/sandboxes/{id}/eval`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EvalBody {
    /// Python code.
    pub code: String,
}

/// Answer of `PUT /v1/sandboxes/{id}/files`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WriteFileResult {
    /// Guest path written.
    pub path: String,
    /// Bytes written.
    pub bytes: u64,
}

/// Answer of `GET /v1/sandboxes/{id}/files/list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ListResult {
    /// Directory listed.
    pub path: String,
    /// Entries, sorted by name.
    pub entries: Vec<crate::agent::DirEntry>,
}

/// An image as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImageSummary {
    /// Image name.
    pub name: String,
    /// Content hash of this generation.
    pub id: String,
    /// Guest kernel version.
    pub kernel_version: String,
    /// Debian release.
    pub release: String,
    /// Root filesystem size in bytes.
    pub rootfs_bytes: u64,
    /// Build time, seconds since the Unix epoch.
    pub created_unix: u64,
}

/// Every error answer: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    /// What was wrong, with the value, and what to do.
    pub error: String,
}

/// `GET /version`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VersionInfo {
    /// zygote version.
    pub version: String,
    /// API version (`v1`).
    pub api: String,
    /// Agent protocol version.
    pub agent_protocol: u32,
    /// QEMU version in use.
    pub qemu: String,
    /// Accelerator in use.
    pub accel: String,
}

/// `GET /healthz`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    /// Always true when the daemon answers.
    pub ok: bool,
    /// Sandboxes the daemon holds (not told without the token on TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandboxes: Option<usize>,
}

/// Answer of `DELETE /v1/sandboxes/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Removed {
    /// The id removed.
    pub id: String,
    /// Always true.
    pub removed: bool,
}

/// Answer of `POST /v1/sandboxes/{id}/ping`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Pong {
    /// The agent answered.
    pub ok: bool,
    /// Daemon-to-agent round trip in milliseconds.
    pub agent_rtt_ms: f64,
}

/// How a branch captures memory.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum BranchMode {
    /// Stop, copy the touched RAM into a new memfd, resume (share=on sandboxes).
    #[default]
    Copy,
    /// QEMU precopy with pause-before-switchover, the stream split as it arrives.
    Live,
}

impl BranchMode {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BranchMode::Copy => "copy",
            BranchMode::Live => "live",
        }
    }
}

/// `POST /v1/sandboxes/{id}/branch`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BranchBody {
    /// Snapshot tag (default: generated).
    #[serde(default)]
    pub tag: Option<String>,
    /// Capture mode (default `copy` for sandboxes on their own memory).
    #[serde(default)]
    pub mode: Option<BranchMode>,
    /// Back the snapshot memory with 2 MiB hugepages.
    #[serde(default)]
    pub hugepages: bool,
    /// Wait until `memory.bin` is on disk before answering.
    #[serde(default)]
    pub wait: bool,
    /// `live` mode: QEMU's downtime limit in ms (default 20).
    #[serde(default)]
    pub downtime_limit_ms: Option<u64>,
}

/// Persistence state of a snapshot.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum SnapshotStatus {
    /// In memory; `memory.bin` is being written.
    Writing,
    /// On disk and in memory (or loadable from disk).
    Ready,
    /// Persisting failed; `warning` says why. Spawning works while the daemon runs.
    Failed,
}

/// A snapshot as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SnapshotInfo {
    /// Tag.
    pub tag: String,
    /// Image the lineage booted from.
    pub image: String,
    /// Sandbox it was taken from.
    #[serde(default)]
    pub branched_from: Option<String>,
    /// Capture mode.
    pub mode: BranchMode,
    /// Persistence state.
    pub status: SnapshotStatus,
    /// Guest RAM in MiB (children must match).
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// CPU model (children must match).
    pub cpu: String,
    /// Accelerator.
    pub accel: String,
    /// Memory is hugetlb-backed.
    pub hugepages: bool,
    /// STOP to RESUME of the parent, from QMP event timestamps.
    #[serde(default)]
    pub pause_ms: Option<f64>,
    /// Time spent copying RAM inside the pause.
    #[serde(default)]
    pub copy_ms: Option<f64>,
    /// Guest RAM bytes captured.
    pub memory_bytes: u64,
    /// Device-state bytes.
    pub vmstate_bytes: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_unix: u64,
    /// A fallback or persistence problem worth knowing.
    #[serde(default)]
    pub warning: Option<String>,
    /// Copy-on-write children pre-started for this snapshot (paused, its state
    /// loaded), waiting to be spawned.
    #[serde(default)]
    pub prestarted: u32,
    /// The snapshot's directory on the host (forkd's `dir`).
    #[serde(default)]
    pub dir: String,
    /// Children can be started from it now: the daemon holds its memory or
    /// `memory.bin` is on disk (forkd's `bootable`).
    #[serde(default)]
    pub bootable: bool,
    /// The snapshot the branched sandbox was itself spawned from (lineage;
    /// `DELETE /v1/snapshots/{tag}?cascade=true` follows it).
    #[serde(default)]
    pub parent_snapshot: Option<String>,
}

/// `POST /v1/snapshots`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateSnapshot {
    /// Image to boot (default `python`).
    #[serde(default)]
    pub image: Option<String>,
    /// Tag.
    pub tag: String,
    /// Python run in the warm interpreter before the snapshot (e.g. `import numpy`).
    #[serde(default)]
    pub warmup: Option<String>,
    /// A shell command started in the background before the snapshot (a
    /// server, a database); it runs on in every child.
    #[serde(default)]
    pub warmup_cmd: Option<String>,
    /// A shell command retried until it exits 0 before the snapshot is taken.
    #[serde(default)]
    pub ready_cmd: Option<String>,
    /// A guest TCP port that must accept (on 127.0.0.1) before the snapshot.
    #[serde(default)]
    pub ready_port: Option<u16>,
    /// How long readiness may take (default 60 s).
    #[serde(default)]
    pub ready_timeout_secs: Option<u64>,
    /// Guest RAM in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// vCPUs.
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Hugepage-backed snapshot memory.
    #[serde(default)]
    pub hugepages: bool,
}

/// `POST /v1/snapshots/{tag}/spawn`: children of a snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SpawnBody {
    /// The snapshot (the route's `{tag}`; when given in the body too it must
    /// be the same).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot_tag: String,
    /// How many children (default 1).
    #[serde(default)]
    pub n: Option<u32>,
    /// Each child gets its own share=on memfd filled from the snapshot (can then be
    /// branched in `copy` mode); default is copy-on-write over the snapshot.
    #[serde(default)]
    pub private_memory: bool,
    /// With `private_memory`: back each child's memory with 2 MiB hugepages.
    #[serde(default)]
    pub hugepages: bool,
    /// Must equal the snapshot's if given.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Must equal the snapshot's if given.
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Environment for every exec in each child.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Each child's lifetime in seconds.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// What happens when it runs out (default `kill`).
    #[serde(default)]
    pub on_expiry: Option<OnExpiry>,
    /// Labels over the snapshot's (children inherit the snapshot's).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Volumes to attach to each child (writable ones only with `n` 1).
    #[serde(default)]
    pub volumes: Vec<crate::volumes::VolumeMount>,
    /// Each child's egress policy (default: the snapshot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::net::NetworkBody>,
}

/// One child of a spawn: a sandbox or why it failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SpawnResult {
    /// The child, when it started.
    #[serde(default)]
    pub sandbox: Option<SandboxInfo>,
    /// Why it did not.
    #[serde(default)]
    pub error: Option<String>,
    /// Milliseconds from the request to the child running (after `cont`).
    #[serde(default)]
    pub running_ms: Option<f64>,
    /// Milliseconds from the request to the child's agent answering.
    #[serde(default)]
    pub ready_ms: Option<f64>,
    /// The child came from the snapshot's pool of pre-started QEMUs (its vmstate
    /// already loaded, paused), so the request only had to resume it.
    #[serde(default)]
    pub prestarted: bool,
}

/// `POST /v1/sandboxes/{id}/fork`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ForkBody {
    /// Children to start (default 1).
    #[serde(default)]
    pub n: Option<u32>,
    /// Branch mode (default: what works for the sandbox).
    #[serde(default)]
    pub mode: Option<BranchMode>,
    /// Tag of the intermediate snapshot (default: generated).
    #[serde(default)]
    pub tag: Option<String>,
    /// Children get private memory.
    #[serde(default)]
    pub private_memory: bool,
    /// Hugepages for the snapshot and private children.
    #[serde(default)]
    pub hugepages: bool,
    /// Each child's lifetime in seconds.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// What happens when it runs out (default `kill`).
    #[serde(default)]
    pub on_expiry: Option<OnExpiry>,
    /// Labels over the parent's (children inherit the parent's).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Answer of `POST /v1/sandboxes/{id}/fork`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ForkResult {
    /// The snapshot taken.
    pub snapshot: SnapshotInfo,
    /// The children.
    pub children: Vec<SpawnResult>,
}

/// Answer of `DELETE /v1/snapshots/{tag}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SnapshotDeleted {
    /// The tag asked for.
    pub tag: String,
    /// Always true.
    pub deleted: bool,
    /// Every snapshot deleted: `tag` and, with `?cascade=true`, its descendants.
    #[serde(default)]
    pub deleted_snapshots: Vec<String>,
    /// Sandboxes removed (`?cascade=true`: every child of a deleted snapshot).
    #[serde(default)]
    pub removed_sandboxes: Vec<String>,
    /// Children of `tag` that keep running (without `?cascade=true`).
    #[serde(default)]
    pub running_children: Vec<String>,
    /// Something worth knowing about what was (not) done.
    #[serde(default)]
    pub warning: Option<String>,
}

/// `POST /v1/sandboxes/{id}/processes`: a background process (or a terminal).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProcessStart {
    /// Program and arguments. Exactly one of `argv` and `cmd`.
    #[serde(default)]
    pub argv: Vec<String>,
    /// A shell command line (`/bin/sh -c`).
    #[serde(default)]
    pub cmd: Option<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default `/`, or the user's home).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Run as this guest user (default root).
    #[serde(default)]
    pub user: Option<String>,
    /// Keep its stdin open for `POST .../stdin` (a terminal always takes input).
    #[serde(default)]
    pub stdin: bool,
    /// Run it on a terminal of this size.
    #[serde(default)]
    pub pty: Option<crate::procs::PtySize>,
    /// A label to find it by.
    #[serde(default)]
    pub tag: Option<String>,
    /// Kill its process group after this many seconds.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

/// `POST /v1/sandboxes/{id}/processes/{pid}/signal`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SignalBody {
    /// Signal number (e.g. 15 for SIGTERM, 9 for SIGKILL, 2 for SIGINT).
    pub signal: i32,
}

/// `POST /v1/sandboxes/{id}/files/rename`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RenameBody {
    /// Absolute source path.
    pub from: String,
    /// Absolute destination path.
    pub to: String,
}

/// Answer of `GET /v1/sandboxes/{id}/files/walk`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WalkResult {
    /// Directory walked.
    pub path: String,
    /// Depth walked.
    pub depth: u32,
    /// Entries, each directory right before its contents.
    pub entries: Vec<crate::procs::WalkEntry>,
}

/// One file of `POST /v1/sandboxes/{id}/files/batch`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BatchFile {
    /// Absolute guest path (parents are created).
    pub path: String,
    /// Text content. Exactly one of `data` and `data_b64`.
    #[serde(default)]
    pub data: Option<String>,
    /// Bytes, base64.
    #[serde(default)]
    pub data_b64: Option<String>,
    /// Octal permission bits as a string, e.g. "755".
    #[serde(default)]
    pub mode: Option<String>,
}

/// `POST /v1/sandboxes/{id}/files/batch`: several files in one call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BatchWrite {
    /// The files, written in order.
    pub files: Vec<BatchFile>,
}
