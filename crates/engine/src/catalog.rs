//! Snapshots as a catalog: warm snapshots made from an image, fork (branch +
//! spawn), listing, persistence of `memory.bin` in the background, and deletion
//! (alone, forced, or with every descendant and child).

use std::collections::BTreeSet;
use std::sync::Arc;

use tracing::{info, warn};

use crate::error::{EngineError, Result};
use crate::model::{
    BranchMode, BranchSpec, ChildMemory, CreateSpec, DeleteScope, ForkSpec, Forked,
    SnapshotDeletion, SnapshotSpec, SnapshotStatus, SnapshotView, SpawnSpec,
};
use crate::snapshot::Snapshot;
use crate::Engine;

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
                ..Default::default()
            })
            .await?;
        Ok(Forked { snapshot, children })
    }

    pub(crate) fn view_of(&self, snap: &Snapshot) -> SnapshotView {
        snap.view(self.pool.size(&snap.meta.tag))
    }

    /// Snapshots, oldest first.
    pub fn snapshots(&self) -> Vec<SnapshotView> {
        self.snapshots
            .all()
            .iter()
            .map(|s| self.view_of(s))
            .collect()
    }

    /// One snapshot.
    pub fn snapshot(&self, tag: &str) -> Result<SnapshotView> {
        let snap = self.snapshots.get(tag)?;
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
        self.snapshots.get(tag)?;
        let mut subtree = BTreeSet::from([tag.to_string()]);
        let mut order = vec![tag.to_string()];
        if scope == DeleteScope::Cascade {
            let all = self.snapshots.all();
            loop {
                let more: Vec<String> = all
                    .iter()
                    .filter(|s| {
                        !subtree.contains(&s.meta.tag)
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
