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
use crate::model::{Child, ChildMemory, ChildOutcome, NetworkRequest, SpawnSpec};
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
        match (&spec.network, m.machine.nic) {
            (NetworkRequest::Off, true) => {
                return Err(EngineError::BadRequest(format!(
                    "snapshot `{}` has a network card and its children keep it: pass {{\"internet\": false}} to cut them off instead",
                    m.tag
                )))
            }
            (NetworkRequest::Policy(_), false) => {
                return Err(EngineError::BadRequest(format!(
                    "snapshot `{}` has no network card (its parent was created without a network), so its children cannot have one: create the parent with a network",
                    m.tag
                )))
            }
            (NetworkRequest::Policy(p), true) => p.check()?,
            _ => {}
        }
        if m.machine.nic && self.net.is_none() {
            return Err(EngineError::BadRequest(format!(
                "snapshot `{}` has a network card and this daemon runs with --network none: start it with --network nat",
                m.tag
            )));
        }
        let n = spec.count.unwrap_or(1);
        if !(1..=MAX_CHILDREN).contains(&n) {
            return Err(EngineError::BadRequest(format!(
                "n {n} is out of range: pass 1..={MAX_CHILDREN}"
            )));
        }
        let _admitted = self.admit(n as usize, m.machine.memory_mib)?;
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
        let (warm, id) = match pre {
            Some(p) => {
                let running = p.into_running();
                let id = running.vm.id.clone();
                (Some(running), id)
            }
            None => (None, new_id()),
        };
        let span = tracing::info_span!("sandbox", id = %id);
        let policy = match &spec.network {
            NetworkRequest::Policy(p) => Some(p.clone()),
            NetworkRequest::Inherit | NetworkRequest::Off => None,
        };
        let started = self.launching(async {
            // Taken first, so a volume someone holds fails the child early.
            let lease = self
                .volumes
                .attach(&id, &spec.volumes, snap.meta.machine.volume_slots)
                .await?;
            // Every child starts with its slots empty (pre-started ones too):
            // its volumes go in once its parent's are cleared.
            let (mut running, running_ms) = match warm {
                Some(w) => self.wake_child(w, t0).await?,
                None => {
                    let empty = VolumeLease::existing(Vec::new());
                    let vm = self
                        .load_child(&id, snap, snap_mem, spec.memory, empty, policy.clone())
                        .await?;
                    self.resume_child(vm, t0).await?
                }
            };
            crate::volumes::fill_child(&mut running, &snap.meta.volume_slots_used, lease).await?;
            // A pre-started child runs with the snapshot's policy: the spawn's
            // replaces it before anyone is told the child is ready.
            if let (Some(p), Some(n)) = (&policy, &running.vm.net) {
                if prestarted && n.policy() != *p {
                    let (n, p) = (n.clone(), p.clone());
                    tokio::task::spawn_blocking(move || n.set_policy(p))
                        .await
                        .map_err(|e| {
                            EngineError::Conflict(format!("setting the policy failed: {e}"))
                        })??;
                }
            }
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
