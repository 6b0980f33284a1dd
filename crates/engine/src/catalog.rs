//! Snapshots as a catalog: warm snapshots made from an image, fork (branch +
//! spawn), listing, persistence of `memory.bin` in the background, and deletion
//! (alone, forced, or with every descendant and child).

use std::collections::BTreeSet;
use std::sync::Arc;

use tracing::{info, warn};

use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::error::{EngineError, Result};
use crate::model::{
    BranchMode, BranchSpec, ChildMemory, CreateSpec, DeleteScope, ForkSpec, Forked,
    SnapshotDeletion, SnapshotSpec, SnapshotStatus, SnapshotView, SpawnSpec,
};
use crate::model::{ExecItem, ExecSpec, ProcessSpec, Program, Readiness};
use crate::sandbox::Sandbox;
use crate::snapshot::Snapshot;
use crate::Engine;

/// How long a warm-up's readiness may take by default.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Run a shell command to its end; its exit code.
async fn run_to_exit(sb: &Sandbox, cmd: &str) -> Result<Option<i32>> {
    let mut items = sb
        .exec(ExecSpec {
            program: Program::Shell(cmd.to_string()),
            env: Default::default(),
            cwd: None,
            stdin: None,
            timeout: Some(Duration::from_secs(10)),
            user: None,
        })
        .await?;
    while let Some(i) = items.next().await {
        if let ExecItem::Exit(x) = i? {
            return Ok(x.code);
        }
    }
    Ok(None)
}

/// The last output of the warm-up process, for an error message.
async fn warmup_tail(sb: &Sandbox, pid: u32) -> String {
    let Ok(mut items) = sb.attach(pid, true).await else {
        return String::new();
    };
    let mut out = Vec::new();
    while let Ok(Some(Ok(i))) = tokio::time::timeout(Duration::from_millis(300), items.next()).await
    {
        match i {
            ExecItem::Stdout(b) | ExecItem::Stderr(b) => out.extend_from_slice(&b),
            ExecItem::Exit(x) => {
                out.extend_from_slice(format!("\n(it exited: {x:?})").as_bytes());
                break;
            }
            ExecItem::Started(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&out);
    let tail: String = text
        .chars()
        .rev()
        .take(2000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- warmup_cmd output ---\n{tail}")
    }
}

impl Engine {
    /// Write `memory.bin` off the pause path; `status` goes writing → ready.
    pub(crate) fn persist_in_background(self: &Arc<Self>, snap: &Arc<Snapshot>) {
        let snap = snap.clone();
        tokio::spawn(async move {
            let s2 = snap.clone();
            let res = tokio::task::spawn_blocking(move || -> Result<u64> {
                let region = s2.memory()?;
                Ok(region.persist(&s2.memory_bin())?.bytes_written)
            })
            .await;
            match res {
                Ok(Ok(bytes)) => {
                    info!(tag = %snap.meta.tag, bytes, "snapshot memory persisted");
                    snap.set_status(SnapshotStatus::Ready, None);
                }
                Ok(Err(e)) => {
                    warn!(tag = %snap.meta.tag, error = %e, "persisting snapshot memory failed");
                    let _ = std::fs::remove_file(snap.dir.join("memory.bin.tmp"));
                    snap.set_status(
                        SnapshotStatus::Failed,
                        Some(format!("memory.bin could not be written: {e}")),
                    );
                }
                Err(e) => snap.set_status(
                    SnapshotStatus::Failed,
                    Some(format!("persist task failed: {e}")),
                ),
            }
        });
    }

    /// Boot an image, run the warm-up in its interpreter, snapshot it, and remove
    /// the booted sandbox.
    pub async fn create_snapshot(self: &Arc<Self>, req: SnapshotSpec) -> Result<SnapshotView> {
        self.check_open()?;
        self.admit_snapshot(req.memory_mib.unwrap_or(crate::DEFAULT_MEMORY_MIB))?;
        crate::snapshot::validate_tag(&req.tag)?;
        if self.snapshots.get(&req.tag).is_ok() {
            return Err(EngineError::Conflict(format!(
                "snapshot tag `{}` is taken: pick another tag or delete the snapshot first",
                req.tag
            )));
        }
        let sandbox = self
            .create(CreateSpec {
                image: req.image.clone(),
                memory_mib: req.memory_mib,
                vcpus: req.vcpus,
                ..Default::default()
            })
            .await?;
        let res = async {
            let sb = self.get(&sandbox.id)?;
            if let Some(code) = &req.warmup {
                let r = sb.eval(code).await?;
                if let Some(err) = r.error {
                    return Err(EngineError::BadRequest(format!(
                        "the warm-up raised {err}: fix the warm-up code\n{}",
                        r.traceback.unwrap_or_default()
                    )));
                }
            }
            self.warm_up_commands(&sb, &req).await?;
            self.branch(
                &sandbox.id,
                BranchSpec {
                    tag: Some(req.tag.clone()),
                    mode: Some(BranchMode::Copy),
                    hugepages: req.hugepages,
                    wait: true,
                    downtime_limit_ms: None,
                },
            )
            .await
        }
        .await;
        let _ = self.remove(&sandbox.id).await;
        if res.is_ok() {
            // A warm-up snapshot exists to be forked: have children ready.
            self.refill_pool(&req.tag);
        }
        res
    }

    /// A warm snapshot's shell warm-up: start `warmup_cmd` in the background,
    /// then wait until the readiness check passes.
    async fn warm_up_commands(&self, sb: &Sandbox, req: &SnapshotSpec) -> Result<()> {
        let started = match &req.warmup_cmd {
            Some(cmd) => Some(
                sb.start_process(ProcessSpec {
                    exec: ExecSpec {
                        program: Program::Shell(cmd.clone()),
                        env: Default::default(),
                        cwd: None,
                        stdin: None,
                        timeout: None,
                        user: None,
                    },
                    stdin: false,
                    pty: None,
                    tag: Some("warmup".into()),
                })
                .await?,
            ),
            None => None,
        };
        let Some(ready) = &req.ready else {
            return Ok(());
        };
        let check = match ready {
            Readiness::Command(c) => c.clone(),
            Readiness::Port(p) => format!(
                "if command -v python3 >/dev/null; then python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {p}), 1)' 2>/dev/null; else bash -c 'exec 3<>/dev/tcp/127.0.0.1/{p}' 2>/dev/null; fi"
            ),
        };
        let limit = req.ready_timeout.unwrap_or(READY_TIMEOUT);
        let deadline = Instant::now() + limit;
        loop {
            let exit = run_to_exit(sb, &check).await?;
            if exit == Some(0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let tail = match started {
                    Some(pid) => warmup_tail(sb, pid).await,
                    None => String::new(),
                };
                let what = match ready {
                    Readiness::Command(c) => format!("`{c}` did not exit 0"),
                    Readiness::Port(p) => format!("port {p} did not accept"),
                };
                return Err(EngineError::BadRequest(format!(
                    "the warm-up was not ready within {limit:?}: {what}; check warmup_cmd and the readiness check{tail}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Branch a sandbox and start children from the snapshot in one call.
    pub async fn fork(self: &Arc<Self>, id: &str, spec: ForkSpec) -> Result<Forked> {
        let snapshot = self
            .branch(
                id,
                BranchSpec {
                    tag: spec.tag.clone(),
                    mode: spec.mode,
                    hugepages: spec.hugepages,
                    wait: false,
                    downtime_limit_ms: None,
                },
            )
            .await?;
        let memory = if spec.private_memory {
            ChildMemory::Private {
                hugepages: spec.hugepages,
            }
        } else {
            ChildMemory::CopyOnWrite
        };
        let children = self
            .spawn(SpawnSpec {
                snapshot: snapshot.tag.clone(),
                count: spec.count,
                memory,
                lifetime: spec.lifetime,
                metadata: spec.metadata.clone(),
                ..Default::default()
            })
            .await?;
        Ok(Forked { snapshot, children })
    }

    pub(crate) fn view_of(&self, snap: &Snapshot) -> SnapshotView {
        snap.view(self.pool.size(&snap.meta.tag))
    }

    /// Snapshots, oldest first (not the ones paused sandboxes own).
    pub fn snapshots(&self) -> Vec<SnapshotView> {
        self.snapshots
            .all()
            .iter()
            .filter(|s| s.meta.owner.is_none())
            .map(|s| self.view_of(s))
            .collect()
    }

    /// A snapshot callers may use (a paused sandbox's own is not one).
    pub(crate) fn public_snapshot(&self, tag: &str) -> Result<Arc<Snapshot>> {
        let snap = self.snapshots.get(tag)?;
        if snap.meta.owner.is_some() {
            return Err(EngineError::SnapshotNotFound {
                tag: tag.to_string(),
            });
        }
        Ok(snap)
    }

    /// One snapshot.
    pub fn snapshot(&self, tag: &str) -> Result<SnapshotView> {
        let snap = self.public_snapshot(tag)?;
        Ok(self.view_of(&snap))
    }

    /// Delete a snapshot (and with [`DeleteScope::Cascade`] its descendants and
    /// every sandbox spawned from any of them). Without a cascade, running
    /// children keep running: QEMU holds their memory and disk files until they
    /// are removed, and snapshots branched from them stay usable.
    pub async fn delete_snapshot(
        self: &Arc<Self>,
        tag: &str,
        scope: DeleteScope,
    ) -> Result<SnapshotDeletion> {
        self.public_snapshot(tag)?;
        let mut subtree = BTreeSet::from([tag.to_string()]);
        let mut order = vec![tag.to_string()];
        if scope == DeleteScope::Cascade {
            let all = self.snapshots.all();
            loop {
                let more: Vec<String> = all
                    .iter()
                    .filter(|s| {
                        s.meta.owner.is_none()
                            && !subtree.contains(&s.meta.tag)
                            && s.meta
                                .parent_snapshot
                                .as_ref()
                                .is_some_and(|p| subtree.contains(p))
                    })
                    .map(|s| s.meta.tag.clone())
                    .collect();
                if more.is_empty() {
                    break;
                }
                for t in more {
                    subtree.insert(t.clone());
                    order.push(t);
                }
            }
        }
        let children: Vec<String> = self
            .map()
            .values()
            .filter(|s| s.snapshot_tag.as_ref().is_some_and(|t| subtree.contains(t)))
            .map(|s| s.id.clone())
            .collect();
        let mut out = SnapshotDeletion::default();
        match scope {
            DeleteScope::Cascade => {
                for id in &children {
                    match self.remove(id).await {
                        Ok(()) => out.removed_sandboxes.push(id.clone()),
                        Err(EngineError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            DeleteScope::Snapshot | DeleteScope::Force => out.running_children = children,
        }
        for t in order.iter().rev() {
            match self.delete_one_snapshot(t).await {
                Ok(()) => out.deleted_snapshots.push(t.clone()),
                Err(EngineError::SnapshotNotFound { .. }) if t != tag => {}
                Err(e) => return Err(e),
            }
        }
        out.deleted_snapshots.reverse();
        Ok(out)
    }

    /// Delete one snapshot. One still writing `memory.bin` is deleted once the
    /// write ends (a tag taken again at once must not meet the old writer).
    async fn delete_one_snapshot(&self, tag: &str) -> Result<()> {
        let snap = self.snapshots.get(tag)?;
        self.drain_pool(tag);
        snap.wait_persisted().await;
        self.snapshots.delete(tag)
    }
}
