//! [`EngineApi`]: the one typed boundary between the engine and whoever drives
//! it. The daemon's HTTP layer maps every route onto a call here and holds only
//! an `Arc<dyn EngineApi>`, so the router is tested in-process against a fake
//! engine (status codes, error bodies, auth) without QEMU.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use zygote_proto::agent::{DirEntry, EvalResult, FileStat};
use zygote_proto::procs::{FsEvent, ProcInfo, WalkEntry};

use crate::error::Result;
use crate::model::{
    ChildOutcome, CreateSpec, DeleteScope, EngineFacts, ExecItems, ExecSpec, FileRead, ForkSpec,
    Forked, ImageView, Lifetime, ListQuery, PortView, ProcessSpec, SandboxView, SnapshotDeletion,
    SnapshotSpec, SnapshotView, SpawnSpec, UploadStream, VolumeView,
};
use crate::{BranchSpec, Engine};

/// Everything the daemon asks of the engine.
#[async_trait::async_trait]
pub trait EngineApi: Send + Sync + 'static {
    /// QEMU version and accelerator.
    fn facts(&self) -> EngineFacts;
    /// Built images.
    fn images(&self) -> Result<Vec<ImageView>>;
    /// Every sandbox, oldest first.
    fn sandboxes(&self) -> Vec<SandboxView>;
    /// The sandboxes a query matches, oldest first.
    fn sandboxes_where(&self, q: &ListQuery) -> Vec<SandboxView>;
    /// A new lifetime, from now.
    async fn set_timeout(&self, id: &str, lifetime: Lifetime) -> Result<SandboxView>;
    /// Pause a running sandbox (a stored snapshot of itself; no VM).
    async fn pause(&self, id: &str) -> Result<SandboxView>;
    /// Resume a paused sandbox under its id.
    async fn resume(&self, id: &str) -> Result<SandboxView>;
    /// Replace a running sandbox's egress policy.
    async fn set_network(&self, id: &str, policy: zygote_net::Policy) -> Result<SandboxView>;
    /// Expose a guest TCP port on the host.
    async fn expose_port(&self, id: &str, port: u16) -> Result<PortView>;
    /// Stop exposing a guest port.
    async fn unexpose_port(&self, id: &str, port: u16) -> Result<()>;
    /// One sandbox.
    fn sandbox(&self, id: &str) -> Result<SandboxView>;
    /// Sandboxes being started right now (not yet listed).
    fn starting(&self) -> usize;
    /// Boot a sandbox from an image; returns once its agent answers.
    async fn create(&self, spec: CreateSpec) -> Result<SandboxView>;
    /// Stop and forget a sandbox.
    async fn remove(&self, id: &str) -> Result<()>;
    /// The agent's round trip.
    async fn ping(&self, id: &str) -> Result<Duration>;
    /// Start a process; its output and exit as a stream.
    async fn exec(&self, id: &str, spec: ExecSpec) -> Result<ExecItems>;
    /// Evaluate Python in the warm interpreter.
    async fn eval(&self, id: &str, code: &str) -> Result<EvalResult>;
    /// Write a guest file; returns the bytes written.
    async fn write_file(
        &self,
        id: &str,
        path: &str,
        mode: Option<u32>,
        body: UploadStream,
    ) -> Result<u64>;
    /// Read a guest file.
    async fn read_file(&self, id: &str, path: &str) -> Result<FileRead>;
    /// Stat a guest path.
    async fn stat(&self, id: &str, path: &str) -> Result<FileStat>;
    /// List a guest directory.
    async fn list_dir(&self, id: &str, path: &str) -> Result<Vec<DirEntry>>;
    /// Remove a guest path.
    async fn remove_path(&self, id: &str, path: &str, recursive: bool) -> Result<()>;
    /// Branch a running sandbox into a snapshot.
    async fn branch(&self, id: &str, spec: BranchSpec) -> Result<SnapshotView>;
    /// Branch and start children from the branch.
    async fn fork(&self, id: &str, spec: ForkSpec) -> Result<Forked>;
    /// Start children of a snapshot.
    async fn spawn(&self, spec: SpawnSpec) -> Result<Vec<ChildOutcome>>;
    /// Boot, warm up and snapshot an image.
    async fn create_snapshot(&self, spec: SnapshotSpec) -> Result<SnapshotView>;
    /// A ready snapshot and everything it needs (its disk chain, its image)
    /// as a bundle: a tar stream (see [`crate::bundle`]).
    async fn export_snapshot(&self, tag: &str) -> Result<BoxStream<'static, Result<bytes::Bytes>>>;
    /// A bundle made a snapshot of this home, under `tag` or its own.
    async fn import_snapshot(
        &self,
        body: UploadStream,
        tag: Option<String>,
    ) -> Result<SnapshotView>;
    /// Every snapshot, oldest first.
    fn snapshots(&self) -> Vec<SnapshotView>;
    /// One snapshot.
    fn snapshot(&self, tag: &str) -> Result<SnapshotView>;
    /// Delete a snapshot (and what `scope` says).
    async fn delete_snapshot(&self, tag: &str, scope: DeleteScope) -> Result<SnapshotDeletion>;
    /// Bytes the persisted snapshots take on disk.
    fn persisted_snapshot_bytes(&self) -> u64;
    /// Start a background process; its pid.
    async fn start_process(&self, id: &str, spec: ProcessSpec) -> Result<u32>;
    /// The background processes.
    async fn processes(&self, id: &str) -> Result<Vec<ProcInfo>>;
    /// Follow a background process (its kept output first with `replay`).
    async fn attach(&self, id: &str, pid: u32, replay: bool) -> Result<ExecItems>;
    /// Input for a background process; `eof` closes its stdin.
    async fn process_input(&self, id: &str, pid: u32, data: Vec<u8>, eof: bool) -> Result<()>;
    /// A signal to a background process.
    async fn signal_process(&self, id: &str, pid: u32, signal: i32) -> Result<()>;
    /// Resize a background process's terminal.
    async fn resize_process(&self, id: &str, pid: u32, rows: u16, cols: u16) -> Result<()>;
    /// Create a directory.
    async fn make_dir(&self, id: &str, path: &str, parents: bool) -> Result<()>;
    /// Rename a path.
    async fn rename(&self, id: &str, from: &str, to: &str) -> Result<()>;
    /// A directory tree down to `depth`.
    async fn walk(&self, id: &str, path: &str, depth: u32) -> Result<Vec<WalkEntry>>;
    /// Events under a directory.
    async fn watch(
        &self,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<BoxStream<'static, Result<FsEvent>>>;
    /// Create a named volume of `size_mib` MiB.
    async fn create_volume(&self, name: &str, size_mib: u64) -> Result<VolumeView>;
    /// Every named volume.
    fn volumes(&self) -> Result<Vec<VolumeView>>;
    /// One named volume.
    fn volume(&self, name: &str) -> Result<VolumeView>;
    /// Delete a named volume nobody holds.
    fn delete_volume(&self, name: &str) -> Result<()>;
}

#[async_trait::async_trait]
impl EngineApi for Arc<Engine> {
    fn facts(&self) -> EngineFacts {
        EngineFacts {
            qemu_version: self.qemu_version(),
            accel: self.accel.accel,
            accel_reason: self.accel.reason.clone(),
        }
    }

    fn images(&self) -> Result<Vec<ImageView>> {
        Engine::images(self)
    }

    async fn create_volume(&self, name: &str, size_mib: u64) -> Result<VolumeView> {
        self.check_open()?;
        self.volumes.create(name, size_mib).await
    }

    fn volumes(&self) -> Result<Vec<VolumeView>> {
        self.volumes.list()
    }

    fn volume(&self, name: &str) -> Result<VolumeView> {
        self.volumes.view(name)
    }

    fn delete_volume(&self, name: &str) -> Result<()> {
        self.volumes.delete(name)
    }

    fn sandboxes(&self) -> Vec<SandboxView> {
        self.list()
    }

    fn sandbox(&self, id: &str) -> Result<SandboxView> {
        Ok(self.get(id)?.view())
    }

    fn sandboxes_where(&self, q: &ListQuery) -> Vec<SandboxView> {
        self.list_where(q)
    }

    async fn set_timeout(&self, id: &str, lifetime: Lifetime) -> Result<SandboxView> {
        Engine::set_timeout(self, id, lifetime).await
    }

    async fn pause(&self, id: &str) -> Result<SandboxView> {
        Engine::pause(self, id).await
    }

    async fn resume(&self, id: &str) -> Result<SandboxView> {
        Engine::resume(self, id).await
    }

    async fn set_network(&self, id: &str, policy: zygote_net::Policy) -> Result<SandboxView> {
        Engine::set_network(self, id, policy).await
    }

    async fn expose_port(&self, id: &str, port: u16) -> Result<PortView> {
        Engine::expose_port(self, id, port).await
    }

    async fn unexpose_port(&self, id: &str, port: u16) -> Result<()> {
        Engine::unexpose_port(self, id, port).await
    }

    fn starting(&self) -> usize {
        self.launches_in_flight()
    }

    async fn create(&self, spec: CreateSpec) -> Result<SandboxView> {
        Engine::create(self, spec).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        Engine::remove(self, id).await
    }

    async fn ping(&self, id: &str) -> Result<Duration> {
        self.get(id)?.ping().await
    }

    async fn exec(&self, id: &str, mut spec: ExecSpec) -> Result<ExecItems> {
        spec.timeout = spec.timeout.or(self.cfg.limits.exec_timeout);
        self.get(id)?.exec(spec).await
    }

    async fn eval(&self, id: &str, code: &str) -> Result<EvalResult> {
        self.get(id)?.eval(code).await
    }

    async fn write_file(
        &self,
        id: &str,
        path: &str,
        mode: Option<u32>,
        body: UploadStream,
    ) -> Result<u64> {
        self.get(id)?.write_file(path, mode, body).await
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<FileRead> {
        self.get(id)?.read_file(path).await
    }

    async fn stat(&self, id: &str, path: &str) -> Result<FileStat> {
        self.get(id)?.stat(path).await
    }

    async fn list_dir(&self, id: &str, path: &str) -> Result<Vec<DirEntry>> {
        self.get(id)?.list(path).await
    }

    async fn remove_path(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        self.get(id)?.remove_path(path, recursive).await
    }

    async fn branch(&self, id: &str, spec: BranchSpec) -> Result<SnapshotView> {
        Engine::branch(self, id, spec).await
    }

    async fn fork(&self, id: &str, spec: ForkSpec) -> Result<Forked> {
        Engine::fork(self, id, spec).await
    }

    async fn spawn(&self, spec: SpawnSpec) -> Result<Vec<ChildOutcome>> {
        Engine::spawn(self, spec).await
    }

    async fn create_snapshot(&self, spec: SnapshotSpec) -> Result<SnapshotView> {
        Engine::create_snapshot(self, spec).await
    }

    async fn export_snapshot(&self, tag: &str) -> Result<BoxStream<'static, Result<bytes::Bytes>>> {
        self.check_open()?;
        Ok(Engine::export_snapshot(self, tag).await?.into_stream())
    }

    async fn import_snapshot(
        &self,
        body: UploadStream,
        tag: Option<String>,
    ) -> Result<SnapshotView> {
        self.check_open()?;
        Engine::import_snapshot(self, body, tag).await
    }

    fn snapshots(&self) -> Vec<SnapshotView> {
        Engine::snapshots(self)
    }

    fn snapshot(&self, tag: &str) -> Result<SnapshotView> {
        Engine::snapshot(self, tag)
    }

    async fn delete_snapshot(&self, tag: &str, scope: DeleteScope) -> Result<SnapshotDeletion> {
        Engine::delete_snapshot(self, tag, scope).await
    }

    fn persisted_snapshot_bytes(&self) -> u64 {
        self.snapshots.persisted_bytes()
    }

    async fn start_process(&self, id: &str, spec: ProcessSpec) -> Result<u32> {
        self.get(id)?.start_process(spec).await
    }

    async fn processes(&self, id: &str) -> Result<Vec<ProcInfo>> {
        self.get(id)?.processes().await
    }

    async fn attach(&self, id: &str, pid: u32, replay: bool) -> Result<ExecItems> {
        self.get(id)?.attach(pid, replay).await
    }

    async fn process_input(&self, id: &str, pid: u32, data: Vec<u8>, eof: bool) -> Result<()> {
        self.get(id)?.process_input(pid, &data, eof).await
    }

    async fn signal_process(&self, id: &str, pid: u32, signal: i32) -> Result<()> {
        self.get(id)?.signal_process(pid, signal).await
    }

    async fn resize_process(&self, id: &str, pid: u32, rows: u16, cols: u16) -> Result<()> {
        self.get(id)?.resize_process(pid, rows, cols).await
    }

    async fn make_dir(&self, id: &str, path: &str, parents: bool) -> Result<()> {
        self.get(id)?.make_dir(path, parents).await
    }

    async fn rename(&self, id: &str, from: &str, to: &str) -> Result<()> {
        self.get(id)?.rename(from, to).await
    }

    async fn walk(&self, id: &str, path: &str, depth: u32) -> Result<Vec<WalkEntry>> {
        self.get(id)?.walk(path, depth).await
    }

    async fn watch(
        &self,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<BoxStream<'static, Result<FsEvent>>> {
        self.get(id)?.watch(path, recursive).await
    }
}
