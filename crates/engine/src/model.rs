//! The engine's own vocabulary: what callers ask for (`*Spec`) and what they get
//! back (`*View`, [`Child`], [`Forked`], [`SnapshotDeletion`]). No wire format
//! lives here: the daemon maps its JSON bodies (ours, forkd's, E2B's) onto these
//! types and back, so the engine never sees a field name of an API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use zygote_qemu::Accel;

use crate::error::EngineError;

/// Lifecycle state of a sandbox (see `state.rs` for the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxState {
    /// QEMU is starting and the guest is booting.
    Booting,
    /// The agent answered; the sandbox takes work.
    Running,
    /// Paused: a stored snapshot of itself, no QEMU, no memory; `resume`
    /// brings it back under the same id.
    Paused,
    /// Being removed.
    Stopping,
    /// QEMU exited or the guest stopped answering; the reason says why.
    Dead,
}

impl SandboxState {
    /// Every state, in lifecycle order.
    pub const ALL: [SandboxState; 5] = [
        SandboxState::Booting,
        SandboxState::Running,
        SandboxState::Paused,
        SandboxState::Stopping,
        SandboxState::Dead,
    ];

    /// Lower-case name (stored in the database, shown in errors).
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Booting => "booting",
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
            SandboxState::Stopping => "stopping",
            SandboxState::Dead => "dead",
        }
    }

    /// The state named `s`, if any.
    pub fn parse(s: &str) -> Option<SandboxState> {
        SandboxState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// How a branch captures memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchMode {
    /// Stop, copy the touched RAM into a new memfd, resume (own-memory sandboxes).
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

/// Persistence state of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotStatus {
    /// In memory; `memory.bin` is being written.
    Writing,
    /// On disk and in memory (or loadable from disk).
    Ready,
    /// Persisting failed; the warning says why. Spawning works while the daemon runs.
    Failed,
}

impl SnapshotStatus {
    /// Every status.
    pub const ALL: [SnapshotStatus; 3] = [
        SnapshotStatus::Writing,
        SnapshotStatus::Ready,
        SnapshotStatus::Failed,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotStatus::Writing => "writing",
            SnapshotStatus::Ready => "ready",
            SnapshotStatus::Failed => "failed",
        }
    }
}

/// Where a sandbox's guest RAM lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// A share=on memfd of its own (booted, or a private-memory child).
    Own,
    /// Copy-on-write over a snapshot's sealed memfd.
    Cow,
}

impl MemoryKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryKind::Own => "own",
            MemoryKind::Cow => "cow",
        }
    }
}

/// How children of a snapshot hold their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChildMemory {
    /// `MAP_PRIVATE` over the snapshot's sealed memfd (the default; the pool serves these).
    #[default]
    CopyOnWrite,
    /// A share=on memfd of their own filled from the snapshot (branchable in `copy` mode).
    Private {
        /// Back it with 2 MiB hugepages.
        hugepages: bool,
    },
}

/// What happens when a sandbox's lifetime runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    /// Remove it.
    #[default]
    Kill,
    /// Pause it (a stored snapshot of itself; `resume` brings it back).
    Pause,
}

/// A sandbox's lifetime: when it ends and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    /// Seconds from now (at the call); `None`: no end.
    pub secs: Option<u64>,
    /// What happens then.
    pub on_expiry: Expiry,
}

/// How a daemon networks its sandboxes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// No network cards.
    #[default]
    None,
    /// A namespace per sandbox with NAT out of the host's default route;
    /// host-side addresses come from `pool`.
    Nat {
        /// A /30 of it per sandbox.
        pool: zygote_net::Cidr,
    },
}

/// The network a create or spawn asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkRequest {
    /// The daemon's default (a create) or the snapshot's (a spawn).
    #[default]
    Inherit,
    /// No network card (a create only: a child has its snapshot's devices).
    Off,
    /// A card with this egress policy.
    Policy(zygote_net::Policy),
}

/// A sandbox's network as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkView {
    /// The guest's address (the same in every sandbox).
    pub address: std::net::Ipv4Addr,
    /// Its egress policy.
    pub policy: zygote_net::Policy,
    /// Exposed ports.
    pub ports: Vec<PortView>,
}

/// An exposed guest port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortView {
    /// The guest's TCP port.
    pub port: u16,
    /// Where the host relays it from.
    pub host: std::net::SocketAddr,
}

/// Labels: a string map a caller finds sandboxes by.
pub type Metadata = BTreeMap<String, String>;

/// Which sandboxes a listing shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// Every one of these labels must be present with this value.
    pub metadata: Metadata,
    /// Only sandboxes in this state.
    pub state: Option<SandboxState>,
}

/// Where a volume's data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VolumeSource {
    /// A named volume the daemon owns (`<home>/volumes/<name>.img`).
    Named(String),
    /// A host directory, exported read-only: a copy taken when it is attached.
    HostDir(PathBuf),
}

/// A volume attached to a sandbox, or to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// What is attached.
    pub source: VolumeSource,
    /// Absolute mount point in the guest.
    pub path: String,
    /// Mounted read-only; the guest's writes (if it remounts) go to a
    /// copy-on-write view of its own, never to the volume.
    pub read_only: bool,
}

/// A named volume as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeView {
    /// Name.
    pub name: String,
    /// Size of its disk in bytes.
    pub size_bytes: u64,
    /// Bytes the host has allocated for it.
    pub allocated_bytes: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_unix: u64,
    /// Sandboxes holding it, and whether read-only.
    pub holders: Vec<(String, bool)>,
}

/// A new sandbox booted from an image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateSpec {
    /// Image name (default [`crate::DEFAULT_IMAGE`]).
    pub image: Option<String>,
    /// Guest RAM in MiB (default [`crate::DEFAULT_MEMORY_MIB`]).
    pub memory_mib: Option<u64>,
    /// vCPUs (default 1).
    pub vcpus: Option<u32>,
    /// Environment for every exec.
    pub env: BTreeMap<String, String>,
    /// Lifetime.
    pub lifetime: Lifetime,
    /// Labels.
    pub metadata: Metadata,
    /// Volumes to attach.
    pub volumes: Vec<VolumeSpec>,
    /// Its network.
    pub network: NetworkRequest,
}

/// Children of a snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpawnSpec {
    /// The snapshot.
    pub snapshot: String,
    /// How many (default 1).
    pub count: Option<u32>,
    /// How each child holds its memory.
    pub memory: ChildMemory,
    /// Environment for every exec in each child.
    pub env: BTreeMap<String, String>,
    /// When given, must equal the snapshot's guest RAM.
    pub expect_memory_mib: Option<u64>,
    /// When given, must equal the snapshot's vCPUs.
    pub expect_vcpus: Option<u32>,
    /// Each child's lifetime.
    pub lifetime: Lifetime,
    /// Labels over the snapshot's (which children inherit).
    pub metadata: Metadata,
    /// Volumes to attach to each child (read-only ones only when `count` > 1).
    pub volumes: Vec<VolumeSpec>,
    /// Each child's egress policy (default: the snapshot's).
    pub network: NetworkRequest,
}

/// A branch of a running sandbox into a snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BranchSpec {
    /// Snapshot tag (default: generated).
    pub tag: Option<String>,
    /// Capture mode (default: `copy` for own memory, `live` for copy-on-write).
    pub mode: Option<BranchMode>,
    /// Back the snapshot's memory with 2 MiB hugepages.
    pub hugepages: bool,
    /// Return only once `memory.bin` is on disk.
    pub wait: bool,
    /// `live` mode: QEMU's downtime limit in ms (default 20).
    pub downtime_limit_ms: Option<u64>,
}

/// A branch and children from it, in one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForkSpec {
    /// Children (default 1).
    pub count: Option<u32>,
    /// Branch mode.
    pub mode: Option<BranchMode>,
    /// Tag of the intermediate snapshot (default: generated).
    pub tag: Option<String>,
    /// Children get private memory.
    pub private_memory: bool,
    /// Hugepages for the snapshot and private children.
    pub hugepages: bool,
    /// Each child's lifetime.
    pub lifetime: Lifetime,
    /// Labels over the parent's (which children inherit).
    pub metadata: Metadata,
}

/// A warm snapshot made from an image: boot, warm up, branch, remove the sandbox.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotSpec {
    /// Tag.
    pub tag: String,
    /// Image (default [`crate::DEFAULT_IMAGE`]).
    pub image: Option<String>,
    /// Python run in the warm interpreter before the snapshot.
    pub warmup: Option<String>,
    /// A shell command started in the background (it runs on in children).
    pub warmup_cmd: Option<String>,
    /// Readiness: a shell command that must exit 0, or a port that must accept.
    pub ready: Option<Readiness>,
    /// How long readiness may take.
    pub ready_timeout: Option<Duration>,
    /// Guest RAM in MiB.
    pub memory_mib: Option<u64>,
    /// vCPUs.
    pub vcpus: Option<u32>,
    /// Hugepage-backed snapshot memory.
    pub hugepages: bool,
}

/// What must hold before a warm snapshot is taken.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// This shell command exits 0.
    Command(String),
    /// This guest TCP port accepts on 127.0.0.1.
    Port(u16),
}

/// What to delete with a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeleteScope {
    /// The snapshot; its running children keep running (a warning names them).
    #[default]
    Snapshot,
    /// The snapshot, and its running children keep running without a warning.
    Force,
    /// The snapshot, every snapshot descended from it and every sandbox spawned
    /// from any of them.
    Cascade,
}

/// What a program run in the guest is.
#[derive(Debug, Clone, PartialEq)]
pub enum Program {
    /// A program and its arguments.
    Argv(Vec<String>),
    /// A shell command line (`/bin/sh -c`).
    Shell(String),
}

/// A process to run in a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecSpec {
    /// What to run.
    pub program: Program,
    /// Extra environment (over the sandbox's).
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Bytes fed to stdin, then closed.
    pub stdin: Option<Vec<u8>>,
    /// Kill the process group after this long.
    pub timeout: Option<Duration>,
    /// Run as this guest user (default root).
    pub user: Option<String>,
}

/// A background process to start in a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// What to run (`stdin` bytes are not taken: send input after the start).
    pub exec: ExecSpec,
    /// Keep its stdin open for input.
    pub stdin: bool,
    /// Run it on a terminal of (rows, cols).
    pub pty: Option<(u16, u16)>,
    /// A label to find it by.
    pub tag: Option<String>,
}

/// A sandbox as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxView {
    /// Random, unguessable id.
    pub id: String,
    /// Image name.
    pub image: String,
    /// Lifecycle state.
    pub state: SandboxState,
    /// Why it is dead, when it is.
    pub reason: Option<String>,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Accelerator.
    pub accel: Accel,
    /// QEMU's pid.
    pub pid: Option<u32>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_unix: u64,
    /// Milliseconds from QEMU start (or the spawn request) to the agent's answer.
    pub boot_ms: Option<u64>,
    /// When its lifetime ends, seconds since the Unix epoch.
    pub expires_at_unix: Option<u64>,
    /// What happens then.
    pub on_expiry: Expiry,
    /// The snapshot it was spawned from.
    pub snapshot_tag: Option<String>,
    /// Where its guest RAM lives, while it holds any.
    pub memory: Option<MemoryKind>,
    /// Labels.
    pub metadata: Metadata,
    /// Its volumes.
    pub volumes: Vec<VolumeSpec>,
    /// Its network, when it has a card.
    pub network: Option<NetworkView>,
}

/// A snapshot as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotView {
    /// Tag.
    pub tag: String,
    /// Image the lineage booted from.
    pub image: String,
    /// Sandbox it was taken from.
    pub branched_from: Option<String>,
    /// The snapshot that sandbox was itself spawned from.
    pub parent_snapshot: Option<String>,
    /// Capture mode.
    pub mode: BranchMode,
    /// Persistence state.
    pub status: SnapshotStatus,
    /// Guest RAM in MiB (children match it).
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// CPU model.
    pub cpu: String,
    /// Accelerator.
    pub accel: Accel,
    /// Memory is hugetlb-backed.
    pub hugepages: bool,
    /// STOP to RESUME of the parent, from QMP event timestamps.
    pub pause_ms: Option<f64>,
    /// Time spent copying RAM inside the pause.
    pub copy_ms: Option<f64>,
    /// Guest RAM bytes captured.
    pub memory_bytes: u64,
    /// Device-state bytes.
    pub vmstate_bytes: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_unix: u64,
    /// A fallback or persistence problem worth knowing.
    pub warning: Option<String>,
    /// Copy-on-write children pre-started for it (paused, state loaded).
    pub prestarted: u32,
    /// Its directory on the host.
    pub dir: PathBuf,
    /// Children can be started from it now.
    pub bootable: bool,
}

/// An image as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageView {
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

/// A child that started.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    /// The child.
    pub sandbox: SandboxView,
    /// Milliseconds from the request to the child running (after `cont`).
    pub running_ms: f64,
    /// Milliseconds from the request to the child's agent answering.
    pub ready_ms: f64,
    /// It came from the snapshot's pool of pre-started QEMUs.
    pub prestarted: bool,
}

/// One child of a spawn: started, or why not (each child succeeds or fails alone).
pub type ChildOutcome = Result<Child, EngineError>;

/// A fork's snapshot and children.
#[derive(Debug)]
pub struct Forked {
    /// The snapshot taken.
    pub snapshot: SnapshotView,
    /// The children.
    pub children: Vec<ChildOutcome>,
}

/// What a snapshot deletion did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotDeletion {
    /// Every snapshot deleted, the one asked for first.
    pub deleted_snapshots: Vec<String>,
    /// Sandboxes removed (cascade).
    pub removed_sandboxes: Vec<String>,
    /// Children that keep running (no cascade).
    pub running_children: Vec<String>,
}

/// Engine-wide facts for `/version` and doctor.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineFacts {
    /// QEMU version.
    pub qemu_version: String,
    /// Accelerator in use.
    pub accel: Accel,
    /// Why that accelerator.
    pub accel_reason: String,
}

/// One item of a running exec.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecItem {
    /// The process started with this guest pid.
    Started(u32),
    /// Output bytes.
    Stdout(Bytes),
    /// Error-output bytes.
    Stderr(Bytes),
    /// The process ended; the stream ends after this.
    Exit(zygote_proto::agent::ExitStatus),
}

/// A running exec's items, ending after [`ExecItem::Exit`] (or an error).
pub type ExecItems = BoxStream<'static, Result<ExecItem, EngineError>>;

/// Bytes a caller uploads; an error breaks the upload off.
pub type UploadStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// A guest file being read.
pub struct FileRead {
    /// File size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Its bytes, in chunks.
    pub chunks: BoxStream<'static, Result<Bytes, EngineError>>,
}

impl std::fmt::Debug for FileRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRead")
            .field("size", &self.size)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}
