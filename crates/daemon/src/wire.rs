//! zygote's own JSON shapes (`zygote_proto::api`) mapped onto the engine's
//! types and back. Validation that is about the wire (which of two fields is
//! set, base64, number ranges of a JSON field) happens here; everything about
//! sandboxes is the engine's.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use zygote_engine as eng;
use zygote_proto::api;
use zygote_proto::net as api_net;
use zygote_proto::volumes as api_vol;

use crate::error::{chain, ApiError};

/// Longest exec timeout accepted (a day).
const MAX_EXEC_TIMEOUT_SECS: f64 = 86_400.0;

pub(crate) fn state(s: eng::SandboxState) -> api::SandboxState {
    match s {
        eng::SandboxState::Booting => api::SandboxState::Booting,
        eng::SandboxState::Running => api::SandboxState::Running,
        eng::SandboxState::Paused => api::SandboxState::Paused,
        eng::SandboxState::Stopping => api::SandboxState::Stopping,
        eng::SandboxState::Dead => api::SandboxState::Dead,
    }
}

pub(crate) fn mode(m: eng::BranchMode) -> api::BranchMode {
    match m {
        eng::BranchMode::Copy => api::BranchMode::Copy,
        eng::BranchMode::Live => api::BranchMode::Live,
    }
}

pub(crate) fn engine_mode(m: api::BranchMode) -> eng::BranchMode {
    match m {
        api::BranchMode::Copy => eng::BranchMode::Copy,
        api::BranchMode::Live => eng::BranchMode::Live,
    }
}

pub(crate) fn status(s: eng::SnapshotStatus) -> api::SnapshotStatus {
    match s {
        eng::SnapshotStatus::Writing => api::SnapshotStatus::Writing,
        eng::SnapshotStatus::Ready => api::SnapshotStatus::Ready,
        eng::SnapshotStatus::Failed => api::SnapshotStatus::Failed,
    }
}

pub(crate) fn sandbox(v: eng::SandboxView) -> api::SandboxInfo {
    api::SandboxInfo {
        id: v.id,
        image: v.image,
        state: state(v.state),
        reason: v.reason,
        memory_mib: v.memory_mib,
        vcpus: v.vcpus,
        accel: v.accel.to_string(),
        pid: v.pid,
        created_at_unix: v.created_at_unix,
        boot_ms: v.boot_ms,
        expires_at_unix: v.expires_at_unix,
        on_expiry: on_expiry(v.on_expiry),
        snapshot_tag: v.snapshot_tag,
        memory: v.memory.map(|m| m.as_str().to_string()),
        metadata: v.metadata,
        volumes: v.volumes.into_iter().map(volume_mount).collect(),
        network: v.network.map(network),
    }
}

/// A sandbox's network as the API shows it.
fn network(n: eng::NetworkView) -> api_net::NetworkInfo {
    let cidrs = |l: Vec<eng::Cidr>| l.iter().map(|c| c.to_string()).collect();
    api_net::NetworkInfo {
        address: n.address.to_string(),
        internet: n.policy.internet,
        allow_out: cidrs(n.policy.allow_out),
        deny_out: cidrs(n.policy.deny_out),
        ports: n.ports.into_iter().map(port).collect(),
    }
}

/// An exposed port as the API shows it.
pub(crate) fn port(p: eng::PortView) -> api_net::PortInfo {
    api_net::PortInfo {
        port: p.port,
        host: p.host.to_string(),
    }
}

/// A guest TCP port from a body or path.
pub(crate) fn guest_port(p: u32) -> Result<u16, ApiError> {
    match u16::try_from(p) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(ApiError::bad_request(format!(
            "port {p} is out of range: give a guest TCP port from 1 to 65535"
        ))),
    }
}

/// The egress policy a body asks for; a bad CIDR is a 400 naming it.
pub(crate) fn policy(b: &api_net::NetworkBody) -> Result<eng::Policy, ApiError> {
    let parse = |field: &str, l: &[String]| -> Result<Vec<eng::Cidr>, ApiError> {
        l.iter()
            .map(|c| {
                eng::Cidr::parse(c).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
            })
            .collect()
    };
    let p = eng::Policy {
        internet: b.internet.unwrap_or(true),
        allow_out: parse("allow_out", &b.allow_out)?,
        deny_out: parse("deny_out", &b.deny_out)?,
    };
    p.check()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(p)
}

/// The network a create or spawn body asks for.
fn network_request(
    b: Option<api_net::NetworkBody>,
    create: bool,
) -> Result<eng::NetworkRequest, ApiError> {
    let Some(b) = b else {
        return Ok(eng::NetworkRequest::Inherit);
    };
    match b.enabled {
        Some(false) if !create => Err(ApiError::bad_request(
            "network.enabled applies on create only: a child has its snapshot's network card (set internet: false to cut it off)",
        )),
        Some(false) => {
            if b.internet.is_some() || !b.allow_out.is_empty() || !b.deny_out.is_empty() {
                return Err(ApiError::bad_request(
                    "network.enabled is false, so internet, allow_out and deny_out mean nothing: drop them or enable the network",
                ));
            }
            Ok(eng::NetworkRequest::Off)
        }
        _ => Ok(eng::NetworkRequest::Policy(policy(&b)?)),
    }
}

/// A volume as the API shows it on a sandbox.
pub(crate) fn volume_mount(v: eng::VolumeSpec) -> api_vol::VolumeMount {
    let (name, host_path) = match v.source {
        eng::VolumeSource::Named(n) => (Some(n), None),
        eng::VolumeSource::HostDir(p) => (None, Some(p.to_string_lossy().into_owned())),
    };
    api_vol::VolumeMount {
        name,
        host_path,
        path: v.path,
        read_only: v.read_only,
    }
}

/// The volumes a body asks for.
pub(crate) fn volume_specs(v: Vec<api_vol::VolumeMount>) -> Result<Vec<eng::VolumeSpec>, ApiError> {
    v.into_iter()
        .map(|m| {
            let source = match (m.name, m.host_path) {
                (Some(n), None) => eng::VolumeSource::Named(n),
                (None, Some(p)) => eng::VolumeSource::HostDir(p.into()),
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request(format!(
                        "volume at {} names both `name` and `host_path`: give one",
                        m.path
                    )))
                }
                (None, None) => {
                    return Err(ApiError::bad_request(format!(
                        "volume at {} names neither `name` nor `host_path`: give one",
                        m.path
                    )))
                }
            };
            Ok(eng::VolumeSpec {
                source,
                path: m.path,
                read_only: m.read_only,
            })
        })
        .collect()
}

/// A named volume as the API shows it.
pub(crate) fn volume(v: eng::VolumeView) -> api_vol::VolumeInfo {
    api_vol::VolumeInfo {
        name: v.name,
        size_bytes: v.size_bytes,
        allocated_bytes: v.allocated_bytes,
        created_at_unix: v.created_at_unix,
        holders: v
            .holders
            .into_iter()
            .map(|(sandbox, read_only)| api_vol::VolumeHolder { sandbox, read_only })
            .collect(),
    }
}

pub(crate) fn on_expiry(e: eng::Expiry) -> api::OnExpiry {
    match e {
        eng::Expiry::Kill => api::OnExpiry::Kill,
        eng::Expiry::Pause => api::OnExpiry::Pause,
    }
}

/// A lifetime from a body's `timeout_secs` and `on_expiry`.
pub(crate) fn lifetime(secs: Option<u64>, on: Option<api::OnExpiry>) -> eng::Lifetime {
    eng::Lifetime {
        secs,
        on_expiry: match on.unwrap_or_default() {
            api::OnExpiry::Kill => eng::Expiry::Kill,
            api::OnExpiry::Pause => eng::Expiry::Pause,
        },
    }
}

/// A listing's query from `?state=` and `?metadata.KEY=VALUE` parameters.
pub(crate) fn list_query(
    q: &std::collections::HashMap<String, String>,
) -> Result<eng::ListQuery, ApiError> {
    let mut out = eng::ListQuery::default();
    for (k, v) in q {
        if let Some(key) = k.strip_prefix("metadata.") {
            out.metadata.insert(key.to_string(), v.clone());
        } else if k == "state" {
            out.state = Some(eng::SandboxState::parse(v).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "state `{v}` is not a sandbox state: pass running, paused, dead, booting or stopping"
                ))
            })?);
        } else if k != "limit" && k != "next_token" {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{k}`: allowed are state, limit, next_token and metadata.KEY"
            )));
        }
    }
    Ok(out)
}

pub(crate) fn snapshot(v: eng::SnapshotView) -> api::SnapshotInfo {
    api::SnapshotInfo {
        tag: v.tag,
        image: v.image,
        branched_from: v.branched_from,
        mode: mode(v.mode),
        status: status(v.status),
        memory_mib: v.memory_mib,
        vcpus: v.vcpus,
        cpu: v.cpu,
        accel: v.accel.to_string(),
        hugepages: v.hugepages,
        pause_ms: v.pause_ms,
        copy_ms: v.copy_ms,
        memory_bytes: v.memory_bytes,
        vmstate_bytes: v.vmstate_bytes,
        created_at_unix: v.created_at_unix,
        warning: v.warning,
        prestarted: v.prestarted,
        dir: v.dir.display().to_string(),
        bootable: v.bootable,
        parent_snapshot: v.parent_snapshot,
    }
}

pub(crate) fn image(v: eng::ImageView) -> api::ImageSummary {
    api::ImageSummary {
        name: v.name,
        id: v.id,
        kernel_version: v.kernel_version,
        release: v.release,
        rootfs_bytes: v.rootfs_bytes,
        created_unix: v.created_unix,
    }
}

pub(crate) fn create(b: api::CreateSandbox) -> Result<eng::CreateSpec, ApiError> {
    Ok(eng::CreateSpec {
        image: b.image,
        memory_mib: b.memory_mib,
        vcpus: b.vcpus,
        env: b.env,
        lifetime: lifetime(b.timeout_secs, b.on_expiry),
        metadata: b.metadata,
        volumes: volume_specs(b.volumes)?,
        network: network_request(b.network, true)?,
    })
}

/// The spawn of `tag` a body asks for.
pub(crate) fn spawn(tag: &str, b: api::SpawnBody) -> Result<eng::SpawnSpec, ApiError> {
    if !b.snapshot_tag.is_empty() && b.snapshot_tag != tag {
        return Err(ApiError::bad_request(format!(
            "snapshot_tag `{}` in the body differs from `{tag}` in the path: name the snapshot once, in the path",
            b.snapshot_tag
        )));
    }
    let memory = match (b.private_memory, b.hugepages) {
        (true, hugepages) => eng::ChildMemory::Private { hugepages },
        (false, false) => eng::ChildMemory::CopyOnWrite,
        (false, true) => {
            return Err(ApiError::bad_request(
                "hugepages applies to private_memory children: set private_memory too (copy-on-write children share the snapshot's pages)",
            ))
        }
    };
    Ok(eng::SpawnSpec {
        snapshot: tag.to_string(),
        count: b.n,
        memory,
        env: b.env,
        expect_memory_mib: b.memory_mib,
        expect_vcpus: b.vcpus,
        lifetime: lifetime(b.timeout_secs, b.on_expiry),
        metadata: b.metadata,
        volumes: volume_specs(b.volumes)?,
        network: network_request(b.network, false)?,
    })
}

pub(crate) fn child(c: eng::ChildOutcome) -> api::SpawnResult {
    match c {
        Ok(c) => api::SpawnResult {
            sandbox: Some(sandbox(c.sandbox)),
            error: None,
            running_ms: Some(c.running_ms),
            ready_ms: Some(c.ready_ms),
            prestarted: c.prestarted,
        },
        Err(e) => api::SpawnResult {
            sandbox: None,
            error: Some(chain(&e)),
            running_ms: None,
            ready_ms: None,
            prestarted: false,
        },
    }
}

pub(crate) fn branch(b: api::BranchBody) -> eng::BranchSpec {
    eng::BranchSpec {
        tag: b.tag,
        mode: b.mode.map(engine_mode),
        hugepages: b.hugepages,
        wait: b.wait,
        downtime_limit_ms: b.downtime_limit_ms,
    }
}

pub(crate) fn fork(b: api::ForkBody) -> eng::ForkSpec {
    eng::ForkSpec {
        count: b.n,
        mode: b.mode.map(engine_mode),
        tag: b.tag,
        private_memory: b.private_memory,
        hugepages: b.hugepages,
        lifetime: lifetime(b.timeout_secs, b.on_expiry),
        metadata: b.metadata,
    }
}

pub(crate) fn forked(f: eng::Forked) -> api::ForkResult {
    api::ForkResult {
        snapshot: snapshot(f.snapshot),
        children: f.children.into_iter().map(child).collect(),
    }
}

pub(crate) fn warm_snapshot(b: api::CreateSnapshot) -> Result<eng::SnapshotSpec, ApiError> {
    let ready = match (b.ready_cmd, b.ready_port) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "both ready_cmd and ready_port given: pass one readiness check",
            ))
        }
        (Some(c), None) => Some(eng::Readiness::Command(c)),
        (None, Some(0)) => {
            return Err(ApiError::bad_request(
                "ready_port 0 is not a port: pass 1-65535",
            ))
        }
        (None, Some(p)) => Some(eng::Readiness::Port(p)),
        (None, None) => None,
    };
    let ready_timeout = match b.ready_timeout_secs {
        Some(0) => {
            return Err(ApiError::bad_request(
                "ready_timeout_secs 0 leaves no time: pass seconds, or omit it (60)",
            ))
        }
        Some(t) if t > 3600 => {
            return Err(ApiError::bad_request(format!(
                "ready_timeout_secs {t} is over an hour: pass at most 3600"
            )))
        }
        t => t.map(Duration::from_secs),
    };
    Ok(eng::SnapshotSpec {
        tag: b.tag,
        image: b.image,
        warmup: b.warmup,
        warmup_cmd: b.warmup_cmd,
        ready,
        ready_timeout,
        memory_mib: b.memory_mib,
        vcpus: b.vcpus,
        hugepages: b.hugepages,
    })
}

/// The buffered exec's cap on each stream.
pub(crate) fn max_output(asked: Option<u64>) -> Result<usize, ApiError> {
    match asked {
        None => Ok(api::DEFAULT_MAX_OUTPUT_BYTES as usize),
        Some(n) if (1..=api::MAX_OUTPUT_BYTES).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::bad_request(format!(
            "max_output_bytes {n} is out of range: pass 1..={} (or stream the output with /exec/stream)",
            api::MAX_OUTPUT_BYTES
        ))),
    }
}

/// The last `cap` bytes of a stream, and whether anything before them was
/// dropped. Memory stays under twice the cap whatever the guest writes.
pub(crate) struct Tail {
    cap: usize,
    buf: Vec<u8>,
    dropped: bool,
}

impl Tail {
    pub(crate) fn new(cap: usize) -> Tail {
        Tail {
            cap,
            buf: Vec::new(),
            dropped: false,
        }
    }

    pub(crate) fn push(&mut self, b: &[u8]) {
        let b = if b.len() > self.cap {
            self.dropped = true;
            &b[b.len() - self.cap..]
        } else {
            b
        };
        self.buf.extend_from_slice(b);
        if self.buf.len() > 2 * self.cap {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
            self.dropped = true;
        }
    }

    /// The text (UTF-8, invalid bytes replaced) and whether it was cut.
    pub(crate) fn finish(mut self) -> (String, bool) {
        if self.buf.len() > self.cap {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
            self.dropped = true;
        }
        (
            String::from_utf8_lossy(&self.buf).into_owned(),
            self.dropped,
        )
    }
}

/// The exec a body asks for.
pub(crate) fn exec(b: api::ExecBody) -> Result<eng::ExecSpec, ApiError> {
    let api::ExecBody {
        argv,
        cmd,
        env,
        cwd,
        stdin,
        stdin_b64,
        timeout_secs,
        user,
        max_output_bytes: _,
    } = b;
    let program = match (argv.is_empty(), cmd) {
        (false, Some(_)) => {
            return Err(ApiError::bad_request(
                "both `argv` and `cmd` are set: pass exactly one",
            ))
        }
        (_, Some(c)) => eng::Program::Shell(c),
        (_, None) => eng::Program::Argv(argv),
    };
    let timeout = match timeout_secs {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 && t <= MAX_EXEC_TIMEOUT_SECS => {
            Some(Duration::from_millis((t * 1000.0).ceil() as u64))
        }
        Some(t) => {
            return Err(ApiError::bad_request(format!(
                "timeout_secs {t} is out of range: pass a number of seconds above 0 and at most {MAX_EXEC_TIMEOUT_SECS}"
            )))
        }
    };
    let stdin = match (stdin, stdin_b64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "both `stdin` and `stdin_b64` are set: pass one",
            ))
        }
        (Some(s), None) => Some(s.into_bytes()),
        (None, Some(b)) => Some(B64.decode(&b).map_err(|e| {
            ApiError::bad_request(format!(
                "stdin_b64 is not valid base64 ({e}): encode the bytes with standard base64"
            ))
        })?),
        (None, None) => None,
    };
    Ok(eng::ExecSpec {
        program,
        env,
        cwd,
        stdin,
        timeout,
        user,
    })
}

/// The background process a body asks for.
pub(crate) fn process(b: api::ProcessStart) -> Result<eng::ProcessSpec, ApiError> {
    let api::ProcessStart {
        argv,
        cmd,
        env,
        cwd,
        user,
        stdin,
        pty,
        tag,
        timeout_secs,
    } = b;
    let exec = exec(api::ExecBody {
        argv,
        cmd,
        env,
        cwd,
        stdin: None,
        stdin_b64: None,
        timeout_secs,
        user,
        max_output_bytes: None,
    })?;
    if let Some(t) = &tag {
        if t.len() > 256 {
            return Err(ApiError::bad_request(format!(
                "tag is {} bytes: keep it under 256",
                t.len()
            )));
        }
    }
    Ok(eng::ProcessSpec {
        exec,
        stdin,
        pty: pty.map(|p| (p.rows, p.cols)),
        tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_end_within_twice_its_cap() {
        let mut t = Tail::new(4);
        t.push(b"ab");
        t.push(b"cd");
        assert_eq!(t.finish(), ("abcd".to_string(), false));
        let mut t = Tail::new(4);
        for _ in 0..1000 {
            t.push(b"0123456789");
            assert!(t.buf.len() <= 8);
        }
        assert_eq!(t.finish(), ("6789".to_string(), true));
        assert_eq!(max_output(None).unwrap(), 4 << 20);
        assert!(max_output(Some(0))
            .unwrap_err()
            .message
            .contains("max_output_bytes 0"));
        assert!(max_output(Some(1 << 40)).is_err());
    }

    #[test]
    fn exec_bodies_map_or_name_the_problem() {
        let spec = exec(api::ExecBody {
            cmd: Some("echo hi".into()),
            stdin_b64: Some(B64.encode(b"\x00\x01")),
            timeout_secs: Some(0.0015),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(spec.program, eng::Program::Shell("echo hi".into()));
        assert_eq!(spec.stdin.as_deref(), Some(&b"\x00\x01"[..]));
        assert_eq!(spec.timeout, Some(Duration::from_millis(2)));
        let bad = |b: api::ExecBody| exec(b).unwrap_err().message;
        assert!(bad(api::ExecBody {
            argv: vec!["a".into()],
            cmd: Some("b".into()),
            ..Default::default()
        })
        .contains("both `argv` and `cmd`"));
        assert!(bad(api::ExecBody {
            argv: vec!["a".into()],
            timeout_secs: Some(-1.0),
            ..Default::default()
        })
        .contains("timeout_secs -1"));
        assert!(bad(api::ExecBody {
            argv: vec!["a".into()],
            stdin_b64: Some("%%".into()),
            ..Default::default()
        })
        .contains("stdin_b64"));
    }

    #[test]
    fn spawn_bodies_map_or_name_the_problem() {
        let s = spawn(
            "t",
            api::SpawnBody {
                private_memory: true,
                hugepages: true,
                n: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.memory, eng::ChildMemory::Private { hugepages: true });
        assert_eq!((s.snapshot.as_str(), s.count), ("t", Some(3)));
        let e = spawn(
            "t",
            api::SpawnBody {
                hugepages: true,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.message.contains("private_memory"), "{}", e.message);
        let e = spawn(
            "t",
            api::SpawnBody {
                snapshot_tag: "u".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.message.contains("`u`") && e.message.contains("`t`"));
    }
}
