//! forkd's shapes on the routes zygote shares with forkd's v1 API
//! (`docs/forkd-compat.md` has the whole mapping).
//!
//! Requests are supersets of zygote's own bodies (still `deny_unknown_fields`,
//! so a typo is a 400 naming the field): the daemon validates them, maps
//! forkd's fields onto ours and says in `warning` which accepted flags mean
//! nothing here. Answers are zygote's plus forkd's field names. Nothing of
//! forkd's leaks into [`crate::api`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::api::{SandboxInfo, SpawnResult};

/// Body of `POST /v1/sandboxes/{id}/exec` (and `/exec/stream`): [`ExecBody`](crate::api::ExecBody)
/// plus forkd's `args`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExecRequest {
    /// Program and arguments (zygote).
    #[serde(default)]
    pub argv: Vec<String>,
    /// Program and arguments (forkd). With `args` the timeout defaults to 30 s
    /// and `exit_code` is never null (128 + signal when a signal ended it).
    #[serde(default)]
    pub args: Option<Vec<String>>,
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
    /// Run as this guest user (zygote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// See [`crate::api::ExecBody::max_output_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

/// Body of `POST /v1/sandboxes` with `snapshot_tag`: [`SpawnBody`](crate::api::SpawnBody) plus
/// forkd's `CreateSandboxRequest` fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SpawnRequest {
    /// Snapshot to start from.
    pub snapshot_tag: String,
    /// How many children (default 1).
    #[serde(default)]
    pub n: Option<u32>,
    /// Children on their own share=on memfd (branchable in `copy` mode).
    #[serde(default)]
    pub private_memory: bool,
    /// With private memory: 2 MiB hugepages.
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
    /// forkd: a network namespace per child. Accepted and ignored (no guest network here).
    #[serde(default)]
    pub per_child_netns: Option<bool>,
    /// forkd: a cgroup memory cap. Accepted and ignored (a child has its snapshot's size).
    #[serde(default)]
    pub memory_limit_mib: Option<u64>,
    /// forkd: fault in every page after restore. Accepted and ignored.
    #[serde(default)]
    pub prewarm: Option<bool>,
    /// forkd: memfd-backed RAM for live branches; taken as `private_memory`.
    #[serde(default)]
    pub live_fork: Option<bool>,
}

/// A branch mode as a request may name it: ours (`copy`, `live`) or forkd's
/// (`full`, `diff`, `live`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum RequestedBranchMode {
    /// zygote's stop-and-copy.
    Copy,
    /// Live (precopy) branch.
    Live,
    /// forkd: whole memory under the pause; taken as `copy` (`live` for a
    /// copy-on-write child, which `copy` cannot read).
    Full,
    /// forkd: dirty-page diff; zygote has none, taken as `full`.
    Diff,
}

/// Body of `POST /v1/sandboxes/{id}/branch`: [`BranchBody`](crate::api::BranchBody) plus forkd's
/// `BranchSandboxRequest` fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BranchRequest {
    /// Snapshot tag (default: generated).
    #[serde(default)]
    pub tag: Option<String>,
    /// Capture mode.
    #[serde(default)]
    pub mode: Option<RequestedBranchMode>,
    /// Back the snapshot memory with 2 MiB hugepages.
    #[serde(default)]
    pub hugepages: bool,
    /// Wait until `memory.bin` is on disk. Default false, or true when the body
    /// is forkd-shaped (`mode` `full`/`diff`, or `diff`, `live`,
    /// `measure_diff`, `parent_tag` given), as forkd's default is.
    #[serde(default)]
    pub wait: Option<bool>,
    /// `live` mode: QEMU's downtime limit in ms (default 20).
    #[serde(default)]
    pub downtime_limit_ms: Option<u64>,
    /// forkd (legacy): same as `mode: "diff"`.
    #[serde(default)]
    pub diff: Option<bool>,
    /// forkd (legacy): same as `mode: "live"`.
    #[serde(default)]
    pub live: Option<bool>,
    /// forkd: measurement hook. Accepted and ignored.
    #[serde(default)]
    pub measure_diff: Option<bool>,
    /// forkd: diff-chain parent. Accepted and ignored (zygote snapshots stand
    /// alone; lineage is in `parent_snapshot`).
    #[serde(default)]
    pub parent_tag: Option<String>,
}

/// Answer of `POST /v1/sandboxes/{id}/eval`: the agent's result plus forkd's
/// `exit_code` (0, or 1 when the code raised).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EvalAnswer {
    /// `repr` of the trailing expression, when there was one and it was not None.
    pub result: Option<String>,
    /// The exception line (`ValueError: ...`) when the code raised.
    pub error: Option<String>,
    /// The formatted traceback when the code raised.
    #[serde(default)]
    pub traceback: Option<String>,
    /// What the code printed to stdout.
    #[serde(default)]
    pub stdout: String,
    /// What the code printed to stderr.
    #[serde(default)]
    pub stderr: String,
    /// 0, or 1 when the code raised.
    pub exit_code: i64,
}

impl From<crate::agent::EvalResult> for EvalAnswer {
    fn from(r: crate::agent::EvalResult) -> EvalAnswer {
        EvalAnswer {
            exit_code: i64::from(r.error.is_some()),
            result: r.result,
            error: r.error,
            traceback: r.traceback,
            stdout: r.stdout,
            stderr: r.stderr,
        }
    }
}

impl From<EvalAnswer> for crate::agent::EvalResult {
    fn from(a: EvalAnswer) -> crate::agent::EvalResult {
        crate::agent::EvalResult {
            result: a.result,
            error: a.error,
            traceback: a.traceback,
            stdout: a.stdout,
            stderr: a.stderr,
        }
    }
}

/// One child in the answer of `POST /v1/sandboxes` with `snapshot_tag`:
/// zygote's [`SpawnResult`] plus forkd's flat `SandboxInfo` fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ForkdChild {
    /// zygote's answer.
    #[serde(flatten)]
    pub result: SpawnResult,
    /// The child's id, as in `sandbox` (forkd's flat shape).
    #[serde(default)]
    pub id: Option<String>,
    /// The snapshot it was spawned from (forkd's shape).
    #[serde(default)]
    pub snapshot_tag: Option<String>,
    /// Creation time, seconds since the Unix epoch (forkd's shape).
    #[serde(default)]
    pub created_at_unix: Option<u64>,
    /// QEMU's pid (forkd's shape).
    #[serde(default)]
    pub pid: Option<u32>,
    /// Request flags that were accepted but mean nothing here, and why.
    #[serde(default)]
    pub warning: Option<String>,
}

impl ForkdChild {
    /// zygote's answer with forkd's flat fields mirroring `sandbox`.
    pub fn new(result: SpawnResult, warning: Option<String>) -> ForkdChild {
        let s: Option<&SandboxInfo> = result.sandbox.as_ref();
        ForkdChild {
            id: s.map(|s| s.id.clone()),
            snapshot_tag: s.and_then(|s| s.snapshot_tag.clone()),
            created_at_unix: s.map(|s| s.created_at_unix),
            pid: s.and_then(|s| s.pid),
            warning,
            result,
        }
    }
}

/// Answer of `POST /v1/sandboxes/{id}/ping`: zygote's [`crate::api::Pong`]
/// plus forkd's `pong`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PingAnswer {
    /// zygote's answer.
    #[serde(flatten)]
    pub pong: crate::api::Pong,
    /// Always true (forkd's `pong`).
    #[serde(rename = "pong")]
    pub forkd_pong: bool,
}
