//! forkd compatibility: the request bodies our routes share with forkd's v1
//! API are supersets ([`ExecRequest`], [`SpawnRequest`], [`BranchRequest`], in
//! `zygote_proto::compat`); this module validates them and maps forkd's fields
//! onto ours, collecting a warning for each flag that is accepted but means
//! nothing here, and reads `DELETE /v1/snapshots/{tag}?cascade=&force=`.
//! docs/forkd-compat.md documents the mapping. Nothing here knows about QEMU.

use std::collections::HashMap;

use zygote_engine::{DeleteScope, SnapshotDeletion};
use zygote_proto::api::{
    BranchBody, BranchMode, ExecBody, ExecResult, SandboxInfo, SnapshotDeleted, SpawnBody,
};
use zygote_proto::compat::{BranchRequest, ExecRequest, RequestedBranchMode, SpawnRequest};

use crate::error::ApiError;

/// forkd's default exec timeout (its `ExecRequest::timeout_secs`).
pub(crate) const FORKD_EXEC_TIMEOUT_SECS: f64 = 30.0;

/// An exec body, and whether it was forkd-shaped (`args`).
pub(crate) fn exec_body(r: ExecRequest) -> Result<(ExecBody, bool), ApiError> {
    let forkd = r.args.is_some();
    let argv = match r.args {
        None => r.argv,
        Some(_) if !r.argv.is_empty() => {
            return Err(ApiError::bad_request(
                "both `argv` and `args` given: pass the program and its arguments once (`args` is forkd's name for `argv`)",
            ))
        }
        Some(_) if r.cmd.is_some() => {
            return Err(ApiError::bad_request(
                "both `args` and `cmd` given: pass either a program with arguments or a shell command line",
            ))
        }
        Some(a) if a.is_empty() => {
            return Err(ApiError::bad_request(
                "args is empty: pass the program and its arguments, e.g. [\"python3\", \"-c\", \"print(1)\"]",
            ))
        }
        Some(a) => a,
    };
    let timeout_secs = match r.timeout_secs {
        None if forkd => Some(FORKD_EXEC_TIMEOUT_SECS),
        t => t,
    };
    Ok((
        ExecBody {
            argv,
            cmd: r.cmd,
            env: r.env,
            cwd: r.cwd,
            stdin: r.stdin,
            stdin_b64: r.stdin_b64,
            timeout_secs,
            user: r.user,
            max_output_bytes: r.max_output_bytes,
        },
        forkd,
    ))
}

/// forkd's `exit_code` is never null: a signal reads as 128 + its number, the
/// shell's convention (a timeout is SIGKILL: 137).
pub(crate) fn forkd_exit_code(r: &mut ExecResult) {
    if r.exit_code.is_none() {
        r.exit_code = Some(128 + r.signal.unwrap_or(libc::SIGKILL));
    }
}

/// A spawn body, the warnings for its ignored flags, and whether it was
/// forkd-shaped.
pub(crate) fn spawn_body(r: SpawnRequest) -> (SpawnBody, Vec<String>, bool) {
    let forkd = r.per_child_netns.is_some()
        || r.memory_limit_mib.is_some()
        || r.prewarm.is_some()
        || r.live_fork.is_some();
    let mut warn = Vec::new();
    if r.per_child_netns == Some(true) {
        warn.push("per_child_netns ignored: zygote guests have no network interface; exec, eval and files go through the daemon".to_string());
    }
    if let Some(m) = r.memory_limit_mib {
        warn.push(format!("memory_limit_mib {m} ignored: a child always has exactly its snapshot's memory size (see memory_mib in GET /v1/snapshots)"));
    }
    if r.prewarm == Some(true) {
        warn.push("prewarm ignored: a zygote child is ready when this answer returns and its first branch needs no warm-up".to_string());
    }
    let private = r.private_memory || r.live_fork == Some(true);
    let mut hugepages = r.hugepages;
    if hugepages && !private && forkd {
        // forkd: "only meaningful when live_fork: true; ignored otherwise".
        warn.push("hugepages ignored: it applies only with live_fork (private memory); copy-on-write children share the snapshot's pages".to_string());
        hugepages = false;
    }
    (
        SpawnBody {
            snapshot_tag: r.snapshot_tag,
            n: r.n,
            private_memory: private,
            hugepages,
            memory_mib: r.memory_mib,
            vcpus: r.vcpus,
            env: r.env,
            ..Default::default()
        },
        warn,
        forkd,
    )
}

/// A branch body for sandbox `id` and the warnings to add to the answer.
/// `sandbox` looks the sandbox up (only `full`/`diff` need to know its memory).
pub(crate) fn branch_body(
    id: &str,
    r: BranchRequest,
    sandbox: impl FnOnce() -> Result<SandboxInfo, ApiError>,
) -> Result<(BranchBody, Vec<String>), ApiError> {
    let legacy_diff = r.diff == Some(true);
    let legacy_live = r.live == Some(true);
    let measure = r.measure_diff == Some(true);
    if r.mode.is_some() && (legacy_diff || legacy_live) {
        return Err(ApiError::bad_request(
            "both `mode` and the legacy `diff`/`live` booleans given: set only `mode`",
        ));
    }
    if u8::from(legacy_diff) + u8::from(legacy_live) + u8::from(measure) > 1 {
        return Err(ApiError::bad_request(
            "set at most one of `diff`, `live` and `measure_diff` (or use `mode`)",
        ));
    }
    let forkd = matches!(
        r.mode,
        Some(RequestedBranchMode::Full | RequestedBranchMode::Diff)
    ) || r.diff.is_some()
        || r.live.is_some()
        || r.measure_diff.is_some()
        || r.parent_tag.is_some();
    let requested = match r.mode {
        Some(m) => Some(m),
        None if legacy_diff => Some(RequestedBranchMode::Diff),
        None if legacy_live => Some(RequestedBranchMode::Live),
        None => None,
    };
    let mut warn = Vec::new();
    let mode = match requested {
        None => None,
        Some(RequestedBranchMode::Copy) => Some(BranchMode::Copy),
        Some(RequestedBranchMode::Live) => Some(BranchMode::Live),
        Some(m @ (RequestedBranchMode::Full | RequestedBranchMode::Diff)) => {
            let name = if m == RequestedBranchMode::Full {
                "full"
            } else {
                warn.push("zygote has no diff snapshots: mode `diff` was taken as `full` (every touched page is captured)".to_string());
                "diff"
            };
            let info = sandbox()?;
            if info.memory.as_deref() == Some("cow") {
                warn.push(format!(
                    "mode `{name}` was taken as `live`: sandbox `{id}` runs copy-on-write over snapshot `{}`, which `copy` cannot read",
                    info.snapshot_tag.unwrap_or_default()
                ));
                Some(BranchMode::Live)
            } else {
                Some(BranchMode::Copy)
            }
        }
    };
    if measure {
        warn.push("measure_diff ignored: zygote has no diff snapshots to measure; pause_ms and copy_ms are always reported".to_string());
    }
    if let Some(p) = &r.parent_tag {
        warn.push(format!("parent_tag `{p}` ignored: zygote snapshots do not chain (each stands alone); the lineage is in parent_snapshot"));
    }
    Ok((
        BranchBody {
            tag: r.tag,
            mode,
            hugepages: r.hugepages,
            wait: r.wait.unwrap_or(forkd),
            downtime_limit_ms: r.downtime_limit_ms,
        },
        warn,
    ))
}

/// Join warnings onto an existing one.
pub(crate) fn join_warnings(first: Option<String>, more: &[String]) -> Option<String> {
    let all: Vec<String> = first.into_iter().chain(more.iter().cloned()).collect();
    (!all.is_empty()).then(|| all.join("; "))
}

fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(v) => Err(ApiError::bad_request(format!(
            "{name} `{v}` is not a boolean: pass ?{name}=true or ?{name}=false"
        ))),
    }
}

/// What `DELETE /v1/snapshots/{tag}` deletes, from `?cascade=` and `?force=`:
///
/// - plain, or `force=true`: the snapshot goes; its running children keep
///   running (QEMU holds their memory and disk files until they are removed),
///   and snapshots branched from them stay usable (zygote snapshots stand
///   alone). Without `force` the answer warns about the running children.
/// - `cascade=true`: the whole subtree goes: the snapshot, every snapshot
///   whose `parent_snapshot` chain leads to it, and every sandbox spawned from
///   any of them.
/// - both: 400 (forkd refuses the pair too).
pub(crate) fn delete_scope(q: &HashMap<String, String>) -> Result<DeleteScope, ApiError> {
    match (flag(q, "cascade")?, flag(q, "force")?) {
        (true, true) => Err(ApiError::bad_request(
            "cascade and force given together: cascade removes the snapshot's children and descendants, force leaves them; pick one",
        )),
        (true, false) => Ok(DeleteScope::Cascade),
        (false, true) => Ok(DeleteScope::Force),
        (false, false) => Ok(DeleteScope::Snapshot),
    }
}

/// The answer of a deletion of `tag`.
pub(crate) fn deleted(tag: &str, scope: DeleteScope, d: SnapshotDeletion) -> SnapshotDeleted {
    let warning = (scope == DeleteScope::Snapshot && !d.running_children.is_empty()).then(|| {
        format!(
            "{} child sandbox(es) of `{tag}` keep running: {}; pass ?cascade=true to remove them with it",
            d.running_children.len(),
            d.running_children.join(", ")
        )
    });
    SnapshotDeleted {
        tag: tag.to_string(),
        deleted: true,
        deleted_snapshots: d.deleted_snapshots,
        removed_sandboxes: d.removed_sandboxes,
        running_children: d.running_children,
        warning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> ExecRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn forkd_exec_maps_args_and_default_timeout() {
        let (b, forkd) = exec_body(req(serde_json::json!({"args": ["echo", "hi"]}))).unwrap();
        assert!(forkd);
        assert_eq!(b.argv, ["echo", "hi"]);
        assert_eq!(b.timeout_secs, Some(30.0));
        let (b, forkd) = exec_body(req(
            serde_json::json!({"argv": ["true"], "timeout_secs": 2}),
        ))
        .unwrap();
        assert!(!forkd);
        assert_eq!(b.timeout_secs, Some(2.0));
        let (b, _) = exec_body(req(serde_json::json!({"cmd": "true"}))).unwrap();
        assert_eq!(b.timeout_secs, None);
        for bad in [
            serde_json::json!({"args": []}),
            serde_json::json!({"args": ["a"], "argv": ["b"]}),
            serde_json::json!({"args": ["a"], "cmd": "b"}),
        ] {
            let e = exec_body(req(bad.clone())).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
            assert!(e.message.contains("args"), "{}", e.message);
        }
        let e = serde_json::from_value::<ExecRequest>(serde_json::json!({"arg": ["x"]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`arg`"), "{e}");
    }

    #[test]
    fn signals_read_as_128_plus() {
        let mut r = ExecResult {
            exit_code: None,
            signal: Some(9),
            timed_out: true,
            stdout: String::new(),
            stderr: String::new(),
            duration_ms: 1.0,
            stdout_truncated: false,
            stderr_truncated: false,
        };
        forkd_exit_code(&mut r);
        assert_eq!(r.exit_code, Some(137));
        r.exit_code = Some(3);
        forkd_exit_code(&mut r);
        assert_eq!(r.exit_code, Some(3));
    }

    #[test]
    fn forkd_spawn_flags_map_or_warn() {
        let r: SpawnRequest = serde_json::from_value(serde_json::json!({
            "snapshot_tag": "py", "n": 2, "per_child_netns": true, "live_fork": true,
            "memory_limit_mib": 256, "prewarm": true, "hugepages": false
        }))
        .unwrap();
        let (b, w, forkd) = spawn_body(r);
        assert!(forkd && b.private_memory && !b.hugepages);
        assert_eq!(b.n, Some(2));
        let w = w.join("\n");
        for f in ["per_child_netns", "memory_limit_mib 256", "prewarm"] {
            assert!(w.contains(f), "{w}");
        }
        // forkd ignores hugepages without live_fork; ours keeps it (and the engine refuses).
        let r: SpawnRequest = serde_json::from_value(
            serde_json::json!({"snapshot_tag": "py", "hugepages": true, "per_child_netns": false}),
        )
        .unwrap();
        let (b, w, _) = spawn_body(r);
        assert!(
            !b.hugepages && w.len() == 1 && w[0].contains("hugepages"),
            "{w:?}"
        );
        let r: SpawnRequest =
            serde_json::from_value(serde_json::json!({"snapshot_tag": "py", "hugepages": true}))
                .unwrap();
        let (b, w, forkd) = spawn_body(r);
        assert!(b.hugepages && w.is_empty() && !forkd);
    }

    fn sandbox(memory: &str) -> SandboxInfo {
        serde_json::from_value(serde_json::json!({
            "id": "sb1", "image": "python", "state": "running", "memory_mib": 256,
            "vcpus": 1, "accel": "tcg", "created_at_unix": 1, "snapshot_tag": "py",
            "memory": memory,
        }))
        .unwrap()
    }

    fn branch(v: serde_json::Value, memory: &str) -> Result<(BranchBody, String), ApiError> {
        let r: BranchRequest = serde_json::from_value(v).unwrap();
        branch_body("sb1", r, || Ok(sandbox(memory))).map(|(b, w)| (b, w.join("\n")))
    }

    #[test]
    fn forkd_branch_modes_map_onto_ours() {
        use serde_json::json;
        // ours: defaults untouched, no lookup needed
        let r: BranchRequest = serde_json::from_value(json!({"tag": "t"})).unwrap();
        let (b, w) = branch_body("sb1", r, || panic!("no lookup for our shape")).unwrap();
        assert_eq!((b.mode, b.wait, w.len()), (None, false, 0));
        let (b, _) = branch(json!({"mode": "live"}), "own").unwrap();
        assert_eq!((b.mode, b.wait), (Some(BranchMode::Live), false));
        // forkd: full -> copy (live on a copy-on-write child), wait defaults to true
        let (b, w) = branch(json!({"mode": "full"}), "own").unwrap();
        assert_eq!(
            (b.mode, b.wait, w.as_str()),
            (Some(BranchMode::Copy), true, "")
        );
        let (b, w) = branch(json!({"mode": "full", "wait": false}), "cow").unwrap();
        assert_eq!((b.mode, b.wait), (Some(BranchMode::Live), false));
        assert!(w.contains("taken as `live`") && w.contains("`py`"), "{w}");
        let (b, w) = branch(json!({"diff": true}), "own").unwrap();
        assert_eq!((b.mode, b.wait), (Some(BranchMode::Copy), true));
        assert!(w.contains("no diff snapshots"), "{w}");
        let (b, _) = branch(json!({"live": true}), "own").unwrap();
        assert_eq!((b.mode, b.wait), (Some(BranchMode::Live), true));
        let (b, w) = branch(json!({"measure_diff": true, "parent_tag": "py"}), "own").unwrap();
        assert_eq!((b.mode, b.wait), (None, true));
        assert!(
            w.contains("measure_diff ignored") && w.contains("parent_tag `py`"),
            "{w}"
        );
        // ambiguous combinations are refused, as forkd does
        for bad in [
            json!({"mode": "full", "diff": true}),
            json!({"mode": "live", "live": true}),
            json!({"diff": true, "live": true}),
            json!({"diff": true, "measure_diff": true}),
        ] {
            let e = branch(bad.clone(), "own").unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
        let e = serde_json::from_value::<BranchRequest>(json!({"mode": "fast"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fast"), "{e}");
    }

    #[test]
    fn delete_scopes() {
        let q = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(
            delete_scope(&q("cascade", "1")).unwrap(),
            DeleteScope::Cascade
        );
        assert_eq!(
            delete_scope(&q("force", "true")).unwrap(),
            DeleteScope::Force
        );
        assert_eq!(
            delete_scope(&HashMap::new()).unwrap(),
            DeleteScope::Snapshot
        );
        let both = HashMap::from([
            ("cascade".to_string(), "true".to_string()),
            ("force".to_string(), "true".to_string()),
        ]);
        assert_eq!(delete_scope(&both).unwrap_err().status, 400);
        let d = SnapshotDeletion {
            deleted_snapshots: vec!["t".into()],
            removed_sandboxes: vec![],
            running_children: vec!["c1".into()],
        };
        let w = deleted("t", DeleteScope::Snapshot, d.clone())
            .warning
            .unwrap();
        assert!(w.contains("c1") && w.contains("cascade"), "{w}");
        assert!(deleted("t", DeleteScope::Force, d).warning.is_none());
    }

    #[test]
    fn delete_flags() {
        let q = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert!(flag(&q("cascade", "true"), "cascade").unwrap());
        assert!(!flag(&q("cascade", "0"), "cascade").unwrap());
        let e = flag(&q("force", "yes"), "force").unwrap_err();
        assert!(e.message.contains("force `yes`"), "{}", e.message);
    }
}
