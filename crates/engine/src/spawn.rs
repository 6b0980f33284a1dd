//! Spawning: children of a snapshot. Each child is a sandbox with its own
//! overlay and sockets, memory either copy-on-write (`MAP_PRIVATE` over the
//! sealed snapshot memfd, share=off) or private (its own share=on memfd filled
//! from the snapshot). Copy-on-write children come from the snapshot's pool of
//! pre-started QEMUs first; the rest are loaded here (see `vm.rs`).

use std::sync::Arc;
use std::time::Instant;

use tracing::{warn, Instrument};
use zygote_mem::Region;

use crate::error::{EngineError, Result};
use crate::lifecycle::new_id;
use crate::model::{Child, ChildMemory, ChildOutcome, SpawnSpec};
use crate::observe::Timing;
use crate::pool::Prestarted;
use crate::sandbox::{Expires, Spec};
use crate::snapshot::Snapshot;
use crate::volumes::VolumeLease;
use crate::{paths, Engine};

/// Most children one request may ask for.
pub(crate) const MAX_CHILDREN: u32 = 64;

impl Engine {
    /// Start children of a snapshot; each child succeeds or fails alone.
    pub async fn spawn(self: &Arc<Self>, spec: SpawnSpec) -> Result<Vec<ChildOutcome>> {
        self.check_open()?;
        let t0 = Instant::now();
        let snap = self.public_snapshot(&spec.snapshot)?;
        let m = &snap.meta;
        if let Some(mib) = spec.expect_memory_mib {
            if mib != m.machine.memory_mib {
                return Err(EngineError::BadRequest(format!(
                    "memory_mib {mib} differs from snapshot `{}`'s {} MiB: a child must have exactly its parent's memory size (omit memory_mib)",
                    m.tag, m.machine.memory_mib
                )));
            }
        }
        if let Some(v) = spec.expect_vcpus {
            if v != m.machine.vcpus {
                return Err(EngineError::BadRequest(format!(
                    "vcpus {v} differs from snapshot `{}`'s {}: a child must have exactly its parent's vCPUs (omit vcpus)",
                    m.tag, m.machine.vcpus
                )));
            }
        }
        m.machine.check_restorable(&m.tag, self.accel.accel)?;
        let n = spec.count.unwrap_or(1);
        if !(1..=MAX_CHILDREN).contains(&n) {
            return Err(EngineError::BadRequest(format!(
                "n {n} is out of range: pass 1..={MAX_CHILDREN}"
            )));
        }
        for k in spec.env.keys() {
            paths::env_name(k)?;
        }
        crate::lifecycle::check_lifetime(&spec.lifetime)?;
        crate::lifecycle::check_labels(&spec.metadata)?;
        self.volumes
            .check(&spec.volumes, m.machine.volume_slots, n)?;
        let snap_mem = {
            let s = snap.clone();
            tokio::task::spawn_blocking(move || s.memory())
                .await
                .map_err(|e| {
                    EngineError::Conflict(format!("loading snapshot memory failed: {e}"))
                })??
        };
        let cow = spec.memory == ChildMemory::CopyOnWrite;
        // Copy-on-write children are served first from the snapshot's pool of
        // pre-started QEMUs (paused, vmstate loaded); the rest start fresh.
        let mut pooled = if cow {
            self.pool.take(&snap, n as usize)
        } else {
            Vec::new()
        };
        let children = (0..n).map(|_| {
            let e = self.clone();
            let snap = snap.clone();
            let mem = snap_mem.clone();
            let spec = spec.clone();
            let pre = pooled.pop();
            async move { e.spawn_child(&snap, mem, &spec, pre, t0).await }
        });
        let results = futures::future::join_all(children).await;
        for _ in results.iter().filter(|r| r.is_err()) {
            self.observe(Timing::SpawnFailed);
        }
        if cow {
            self.refill_pool(&snap.meta.tag);
        }
        Ok(results)
    }

    async fn spawn_child(
        self: &Arc<Self>,
        snap: &Arc<Snapshot>,
        snap_mem: Arc<Region>,
        spec: &SpawnSpec,
        pre: Option<Prestarted>,
        t0: Instant,
    ) -> ChildOutcome {
        let prestarted = pre.is_some();
        let (vm, id) = match pre {
            Some(p) => {
                let vm = p.into_vm();
                let id = vm.id.clone();
                (Some(vm), id)
            }
            None => (None, new_id()),
        };
        let span = tracing::info_span!("sandbox", id = %id);
        let started = self.launching(async {
            // Taken first, so a volume someone holds fails the child early.
            let lease = self
                .volumes
                .attach(&id, &spec.volumes, snap.meta.machine.volume_slots)
                .await?;
            // Every child starts with its slots empty (pre-started ones too):
            // its volumes go in once its parent's are cleared.
            let vm = match vm {
                Some(vm) => vm,
                None => {
                    let empty = VolumeLease::existing(Vec::new());
                    self.load_child(&id, snap, snap_mem, spec.memory, empty)
                        .await?
                }
            };
            let (mut running, running_ms) = self.resume_child(vm, t0).await?;
            crate::volumes::fill_child(&mut running, &snap.meta.volume_slots_used, lease).await?;
            Ok::<_, EngineError>((running, running_ms))
        });
        let (running, running_ms) = started
            .instrument(span.clone())
            .await
            .inspect_err(|e| warn!(parent: &span, error = %e, "child failed"))?;
        let ready_ms = running.ready_ms;
        self.observe(Timing::Spawned {
            running_ms,
            ready_ms,
            prestarted,
        });
        // Labels: the snapshot's, with the spawn's over them.
        let mut metadata = snap.meta.metadata.clone();
        metadata.extend(spec.metadata.clone());
        let sb = self.register(
            running,
            Spec {
                image: snap.meta.image.clone(),
                env: spec.env.clone(),
                metadata,
            },
            Expires::from_now(spec.lifetime),
            Some(snap.meta.tag.clone()),
            crate::lifecycle::now_unix(),
        )?;
        Ok(Child {
            sandbox: sb.view(),
            running_ms,
            ready_ms,
            prestarted,
        })
    }
}
