//! A fake engine for the router tests: canned sandboxes and snapshots in
//! memory, every call recorded, any call made to fail on demand.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use zygote_engine::*;
use zygote_proto::agent::{DirEntry, EvalResult, ExitStatus, FileStat};
use zygote_proto::procs::{FsEvent, FsEventKind, ProcInfo, WalkEntry};

/// The fake.
#[derive(Default)]
pub(crate) struct Fake {
    /// Calls made, one line each (`create python`, `exec sb1 argv=[..]`, ...).
    pub(crate) calls: Mutex<Vec<String>>,
    /// The next call fails with this error instead.
    pub(crate) fail: Mutex<Option<EngineError>>,
    /// Children a spawn answers (`None`: one that started).
    pub(crate) child_errors: Mutex<Vec<Option<String>>>,
}

pub(crate) fn sandbox(id: &str) -> SandboxView {
    SandboxView {
        id: id.into(),
        image: "python".into(),
        state: SandboxState::Running,
        reason: None,
        memory_mib: 256,
        vcpus: 1,
        accel: Accel::Tcg,
        pid: Some(4242),
        created_at_unix: 1_700_000_000,
        boot_ms: Some(2000),
        expires_at_unix: None,
        on_expiry: Expiry::Kill,
        snapshot_tag: Some("warm".into()),
        memory: Some(MemoryKind::Cow),
        metadata: [(
            "team".to_string(),
            if id == "sb2" { "b" } else { "a" }.to_string(),
        )]
        .into(),
        volumes: vec![VolumeSpec {
            source: VolumeSource::Named("data".into()),
            path: "/data".into(),
            read_only: false,
        }],
        network: Some(NetworkView {
            address: "10.0.2.2".parse().unwrap(),
            policy: Policy::open(),
            ports: Vec::new(),
        }),
    }
}

/// A network request in one line.
fn net_line(n: &NetworkRequest) -> String {
    match n {
        NetworkRequest::Inherit => "inherit".into(),
        NetworkRequest::Off => "off".into(),
        NetworkRequest::Policy(p) => format!(
            "internet={} allow={} deny={}",
            p.internet,
            p.allow_out
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
            p.deny_out
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

pub(crate) fn volume(name: &str) -> VolumeView {
    VolumeView {
        name: name.into(),
        size_bytes: 64 << 20,
        allocated_bytes: 4 << 20,
        created_at_unix: 1_700_000_002,
        holders: vec![("sb1".into(), false)],
    }
}

pub(crate) fn snapshot(tag: &str, status: SnapshotStatus) -> SnapshotView {
    SnapshotView {
        tag: tag.into(),
        image: "python".into(),
        branched_from: Some("sb1".into()),
        parent_snapshot: None,
        mode: BranchMode::Copy,
        status,
        memory_mib: 256,
        vcpus: 1,
        cpu: "max".into(),
        accel: Accel::Tcg,
        hugepages: false,
        pause_ms: Some(12.5),
        copy_ms: Some(3.0),
        memory_bytes: 1 << 27,
        vmstate_bytes: 70_000,
        created_at_unix: 1_700_000_001,
        warning: None,
        prestarted: 2,
        dir: PathBuf::from("/home/snapshots").join(tag),
        bootable: true,
    }
}

impl Fake {
    fn call(&self, line: String) -> Result<()> {
        self.calls.lock().unwrap().push(line);
        match self.fail.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn known(&self, id: &str) -> Result<()> {
        if id == "sb1" || id == "sb2" {
            Ok(())
        } else {
            Err(EngineError::NotFound { id: id.into() })
        }
    }

    fn known_tag(&self, tag: &str) -> Result<()> {
        if tag == "warm" {
            Ok(())
        } else {
            Err(EngineError::SnapshotNotFound { tag: tag.into() })
        }
    }

    /// The calls made so far.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl EngineApi for Fake {
    fn facts(&self) -> EngineFacts {
        EngineFacts {
            qemu_version: "10.0.2".into(),
            accel: Accel::Tcg,
            accel_reason: "no hardware virtualisation".into(),
        }
    }

    fn images(&self) -> Result<Vec<ImageView>> {
        self.call("images".into())?;
        Ok(vec![ImageView {
            name: "python".into(),
            id: "abc".into(),
            kernel_version: "6.1.0".into(),
            release: "bookworm".into(),
            rootfs_bytes: 1 << 30,
            created_unix: 1,
        }])
    }

    fn sandboxes(&self) -> Vec<SandboxView> {
        vec![sandbox("sb1"), sandbox("sb2")]
    }

    fn sandbox(&self, id: &str) -> Result<SandboxView> {
        self.known(id)?;
        Ok(sandbox(id))
    }

    fn sandboxes_where(&self, q: &ListQuery) -> Vec<SandboxView> {
        ["sb1", "sb2", "sb3"]
            .iter()
            .map(|id| sandbox(id))
            .filter(|s| q.metadata.iter().all(|(k, v)| s.metadata.get(k) == Some(v)))
            .filter(|s| q.state.is_none_or(|st| st == s.state))
            .collect()
    }

    async fn set_timeout(&self, id: &str, lifetime: Lifetime) -> Result<SandboxView> {
        self.known(id)?;
        self.call(format!(
            "timeout {id} {:?} {:?}",
            lifetime.secs, lifetime.on_expiry
        ))?;
        let mut v = sandbox(id);
        v.expires_at_unix = lifetime.secs.map(|s| 1_700_000_000 + s);
        v.on_expiry = lifetime.on_expiry;
        Ok(v)
    }

    async fn pause(&self, id: &str) -> Result<SandboxView> {
        self.known(id)?;
        self.call(format!("pause {id}"))?;
        let mut v = sandbox(id);
        v.state = SandboxState::Paused;
        v.memory = None;
        Ok(v)
    }

    async fn resume(&self, id: &str) -> Result<SandboxView> {
        self.known(id)?;
        self.call(format!("resume {id}"))?;
        Ok(sandbox(id))
    }

    async fn set_network(&self, id: &str, policy: Policy) -> Result<SandboxView> {
        self.known(id)?;
        self.call(format!(
            "network {id} internet={} allow={:?} deny={:?}",
            policy.internet,
            policy
                .allow_out
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
            policy
                .deny_out
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
        ))?;
        let mut v = sandbox(id);
        if let Some(n) = v.network.as_mut() {
            n.policy = policy;
        }
        Ok(v)
    }

    async fn expose_port(&self, id: &str, port: u16) -> Result<PortView> {
        self.known(id)?;
        self.call(format!("expose {id} {port}"))?;
        Ok(PortView {
            port,
            host: "127.0.0.1:40000".parse().unwrap(),
        })
    }

    async fn unexpose_port(&self, id: &str, port: u16) -> Result<()> {
        self.known(id)?;
        self.call(format!("unexpose {id} {port}"))
    }

    fn starting(&self) -> usize {
        1
    }

    async fn create(&self, spec: CreateSpec) -> Result<SandboxView> {
        self.call(format!(
            "create {} mem={:?} env={:?}{}",
            spec.image.as_deref().unwrap_or("-"),
            spec.memory_mib,
            spec.env,
            if spec.volumes.is_empty() {
                String::new()
            } else {
                format!(" volumes={:?}", spec.volumes)
            }
        ))?;
        if spec.network != NetworkRequest::Inherit {
            self.call(format!("  network {}", net_line(&spec.network)))?;
        }
        Ok(sandbox("sb9"))
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.known(id)?;
        self.call(format!("remove {id}"))
    }

    async fn ping(&self, id: &str) -> Result<Duration> {
        self.known(id)?;
        self.call(format!("ping {id}"))?;
        Ok(Duration::from_micros(1500))
    }

    async fn exec(&self, id: &str, spec: ExecSpec) -> Result<ExecItems> {
        self.known(id)?;
        self.call(format!(
            "exec {id} {:?} timeout={:?} stdin={:?}",
            spec.program, spec.timeout, spec.stdin
        ))?;
        let signal = matches!(&spec.program, Program::Shell(c) if c == "kill");
        let exit = ExitStatus {
            code: if signal { None } else { Some(3) },
            signal: signal.then_some(9),
            timed_out: signal,
        };
        let items = vec![
            Ok(ExecItem::Started(77)),
            Ok(ExecItem::Stdout(Bytes::from_static(b"out\n"))),
            Ok(ExecItem::Stderr(Bytes::from_static(b"err\n"))),
            Ok(ExecItem::Exit(exit)),
        ];
        Ok(futures::stream::iter(items).boxed())
    }

    async fn eval(&self, id: &str, code: &str) -> Result<EvalResult> {
        self.known(id)?;
        self.call(format!("eval {id} {code}"))?;
        Ok(EvalResult {
            result: Some("2".into()),
            error: code.contains("raise").then(|| "ValueError: x".into()),
            traceback: None,
            stdout: String::new(),
            stderr: String::new(),
        })
    }

    async fn write_file(
        &self,
        id: &str,
        path: &str,
        mode: Option<u32>,
        mut body: UploadStream,
    ) -> Result<u64> {
        self.known(id)?;
        let mut n = 0u64;
        while let Some(c) = body.next().await {
            n += c.map_err(EngineError::UploadBroken)?.len() as u64;
        }
        self.call(format!("write {id} {path} mode={mode:?} bytes={n}"))?;
        Ok(n)
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<FileRead> {
        self.known(id)?;
        self.call(format!("read {id} {path}"))?;
        let chunks = vec![
            Ok(Bytes::from_static(b"hel")),
            Ok(Bytes::from_static(b"lo")),
        ];
        Ok(FileRead {
            size: 5,
            mode: 0o100640,
            chunks: futures::stream::iter(chunks).boxed(),
        })
    }

    async fn stat(&self, id: &str, path: &str) -> Result<FileStat> {
        self.known(id)?;
        self.call(format!("stat {id} {path}"))?;
        Ok(FileStat {
            size: 5,
            mode: 0o100644,
            kind: "file".into(),
            mtime: 1,
        })
    }

    async fn list_dir(&self, id: &str, path: &str) -> Result<Vec<DirEntry>> {
        self.known(id)?;
        self.call(format!("list {id} {path}"))?;
        Ok(vec![DirEntry {
            name: "a.txt".into(),
            kind: "file".into(),
            size: 1,
        }])
    }

    async fn remove_path(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        self.known(id)?;
        self.call(format!("rmpath {id} {path} recursive={recursive}"))
    }

    async fn branch(&self, id: &str, spec: BranchSpec) -> Result<SnapshotView> {
        self.known(id)?;
        self.call(format!(
            "branch {id} mode={:?} wait={}",
            spec.mode, spec.wait
        ))?;
        let status = if spec.wait {
            SnapshotStatus::Ready
        } else {
            SnapshotStatus::Writing
        };
        Ok(snapshot(spec.tag.as_deref().unwrap_or("b1"), status))
    }

    async fn fork(&self, id: &str, spec: ForkSpec) -> Result<Forked> {
        self.known(id)?;
        self.call(format!("fork {id} n={:?}", spec.count))?;
        Ok(Forked {
            snapshot: snapshot("f1", SnapshotStatus::Writing),
            children: vec![
                Ok(child("c1")),
                Err(EngineError::Conflict("no room".into())),
            ],
        })
    }

    async fn spawn(&self, spec: SpawnSpec) -> Result<Vec<ChildOutcome>> {
        self.known_tag(&spec.snapshot)?;
        self.call(format!(
            "spawn {} n={:?} memory={:?}",
            spec.snapshot, spec.count, spec.memory
        ))?;
        if spec.network != NetworkRequest::Inherit {
            self.call(format!("  network {}", net_line(&spec.network)))?;
        }
        let plan = self.child_errors.lock().unwrap().clone();
        let plan = if plan.is_empty() { vec![None] } else { plan };
        Ok(plan
            .into_iter()
            .enumerate()
            .map(|(i, e)| match e {
                None => Ok(child(&format!("c{}", i + 1))),
                Some(e) => Err(EngineError::Conflict(e)),
            })
            .collect())
    }

    async fn create_snapshot(&self, spec: SnapshotSpec) -> Result<SnapshotView> {
        self.call(format!("snapshot {} warmup={:?}", spec.tag, spec.warmup))?;
        Ok(snapshot(&spec.tag, SnapshotStatus::Ready))
    }

    async fn export_snapshot(
        &self,
        tag: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes>>> {
        self.call(format!("export {tag}"))?;
        self.known_tag(tag)?;
        Ok(futures::stream::iter([Ok(bytes::Bytes::from_static(b"bundle"))]).boxed())
    }

    async fn import_snapshot(
        &self,
        body: UploadStream,
        tag: Option<String>,
    ) -> Result<SnapshotView> {
        let data: Vec<bytes::Bytes> = body
            .try_collect::<Vec<_>>()
            .await
            .map_err(EngineError::UploadBroken)?;
        self.call(format!(
            "import {tag:?} {} bytes",
            data.iter().map(|b| b.len()).sum::<usize>()
        ))?;
        Ok(snapshot(
            tag.as_deref().unwrap_or("imported"),
            SnapshotStatus::Ready,
        ))
    }

    fn snapshots(&self) -> Vec<SnapshotView> {
        vec![snapshot("warm", SnapshotStatus::Ready)]
    }

    fn snapshot(&self, tag: &str) -> Result<SnapshotView> {
        self.known_tag(tag)?;
        Ok(snapshot(tag, SnapshotStatus::Ready))
    }

    async fn delete_snapshot(&self, tag: &str, scope: DeleteScope) -> Result<SnapshotDeletion> {
        self.known_tag(tag)?;
        self.call(format!("delete-snapshot {tag} {scope:?}"))?;
        Ok(SnapshotDeletion {
            deleted_snapshots: vec![tag.into()],
            removed_sandboxes: if scope == DeleteScope::Cascade {
                vec!["c1".into()]
            } else {
                vec![]
            },
            running_children: if scope == DeleteScope::Cascade {
                vec![]
            } else {
                vec!["c1".into()]
            },
        })
    }

    fn persisted_snapshot_bytes(&self) -> u64 {
        4096
    }

    async fn start_process(&self, id: &str, spec: ProcessSpec) -> Result<u32> {
        self.known(id)?;
        self.call(format!(
            "start {id} {:?} stdin={} pty={:?} tag={:?} user={:?}",
            spec.exec.program, spec.stdin, spec.pty, spec.tag, spec.exec.user
        ))?;
        Ok(77)
    }

    async fn processes(&self, id: &str) -> Result<Vec<ProcInfo>> {
        self.known(id)?;
        Ok(vec![ProcInfo {
            pid: 77,
            cmd: "python3 -m http.server".into(),
            tag: Some("web".into()),
            pty: false,
            stdin: true,
            started_unix: 1,
            exit: None,
        }])
    }

    async fn attach(&self, id: &str, pid: u32, replay: bool) -> Result<ExecItems> {
        self.known(id)?;
        self.call(format!("attach {id} {pid} replay={replay}"))?;
        if pid != 77 {
            return Err(EngineError::BadRequest(format!(
                "no background process with pid {pid}"
            )));
        }
        let items = vec![
            Ok(ExecItem::Stdout(Bytes::from_static(b"serving\n"))),
            Ok(ExecItem::Exit(ExitStatus {
                code: None,
                signal: Some(15),
                timed_out: false,
            })),
        ];
        Ok(futures::stream::iter(items).boxed())
    }

    async fn process_input(&self, id: &str, pid: u32, data: Vec<u8>, eof: bool) -> Result<()> {
        self.known(id)?;
        self.call(format!(
            "input {id} {pid} {:?} eof={eof}",
            String::from_utf8_lossy(&data)
        ))
    }

    async fn signal_process(&self, id: &str, pid: u32, signal: i32) -> Result<()> {
        self.known(id)?;
        self.call(format!("signal {id} {pid} {signal}"))
    }

    async fn resize_process(&self, id: &str, pid: u32, rows: u16, cols: u16) -> Result<()> {
        self.known(id)?;
        self.call(format!("resize {id} {pid} {rows}x{cols}"))
    }

    async fn make_dir(&self, id: &str, path: &str, parents: bool) -> Result<()> {
        self.known(id)?;
        self.call(format!("mkdir {id} {path} parents={parents}"))
    }

    async fn rename(&self, id: &str, from: &str, to: &str) -> Result<()> {
        self.known(id)?;
        self.call(format!("rename {id} {from} {to}"))
    }

    async fn walk(&self, id: &str, path: &str, depth: u32) -> Result<Vec<WalkEntry>> {
        self.known(id)?;
        self.call(format!("walk {id} {path} {depth}"))?;
        Ok(vec![WalkEntry {
            path: format!("{path}/a"),
            name: "a".into(),
            kind: "dir".into(),
            size: 0,
            mode: 0o40755,
            mtime: 1,
            target: None,
        }])
    }

    async fn watch(
        &self,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<futures::stream::BoxStream<'static, Result<FsEvent>>> {
        self.known(id)?;
        self.call(format!("watch {id} {path} recursive={recursive}"))?;
        let ev = FsEvent {
            kind: FsEventKind::Create,
            path: format!("{path}/new"),
        };
        Ok(futures::stream::iter(vec![Ok(ev)]).boxed())
    }

    async fn create_volume(&self, name: &str, size_mib: u64) -> Result<VolumeView> {
        self.call(format!("create_volume {name} {size_mib}"))?;
        Ok(volume(name))
    }

    fn volumes(&self) -> Result<Vec<VolumeView>> {
        self.call("volumes".into())?;
        Ok(vec![volume("data")])
    }

    fn volume(&self, name: &str) -> Result<VolumeView> {
        self.call(format!("volume {name}"))?;
        if name == "data" {
            Ok(volume(name))
        } else {
            Err(EngineError::VolumeNotFound { name: name.into() })
        }
    }

    fn delete_volume(&self, name: &str) -> Result<()> {
        self.call(format!("delete_volume {name}"))
    }
}

fn child(id: &str) -> Child {
    Child {
        sandbox: sandbox(id),
        running_ms: 4.5,
        ready_ms: 20.0,
        prestarted: true,
    }
}

/// An env map.
pub(crate) fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
