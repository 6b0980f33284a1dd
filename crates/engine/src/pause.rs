//! Pause and resume. Pausing branches a running sandbox into a snapshot that
//! sandbox owns (hidden from listings, written to disk before anything is let
//! go), stops its QEMU and frees its memory; the sandbox stays listed,
//! `paused`, under its id. Resuming starts its VM again from that snapshot
//! under the same id (processes, interpreter state, files as they were) and
//! deletes the snapshot. A paused sandbox survives a daemon restart: its row
//! and its snapshot are on disk.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::{info, Instrument};

use crate::error::{EngineError, Result};
use crate::model::{
    BranchMode, BranchSpec, ChildMemory, SandboxState, SandboxView, SnapshotStatus,
};
use crate::sandbox::{Command, Sandbox, SandboxMemory, Spec};
use crate::volumes::VolumeLease;
use crate::Engine;

/// The tag of the snapshot a paused sandbox `id` is.
pub(crate) fn paused_tag(id: &str) -> String {
    format!("paused-{id}")
}

impl Engine {
    /// Pause a running sandbox: store it as a snapshot of itself, stop its VM.
    pub async fn pause(self: &Arc<Self>, id: &str) -> Result<SandboxView> {
        self.check_open()?;
        let sb = self.get(id)?;
        let st = sb.state();
        if st != SandboxState::Running {
            return Err(EngineError::Conflict(format!(
                "sandbox `{id}` is {}: only a running sandbox can be paused",
                st.as_str()
            )));
        }
        let _admitted = self.admit(1, sb.machine.memory_mib)?;
        let span = sb.span.clone();
        async move {
            let t0 = Instant::now();
            let own = matches!(
                *sb.memory.lock().unwrap_or_else(|p| p.into_inner()),
                Some(SandboxMemory::Own(_))
            );
            let spec = BranchSpec {
                tag: Some(paused_tag(id)),
                mode: Some(if own { BranchMode::Copy } else { BranchMode::Live }),
                hugepages: false,
                wait: true,
                downtime_limit_ms: None,
            };
            let snap = self.branch_inner(&sb, &spec, Some(id.to_string())).await?;
            self.persist_in_background(&snap);
            if snap.wait_persisted().await != SnapshotStatus::Ready {
                let why = snap.view(0).warning.unwrap_or_default();
                let _ = self.snapshots.delete(&snap.meta.tag);
                return Err(EngineError::Conflict(format!(
                    "sandbox `{id}` could not be paused: its snapshot was not written ({why}); it keeps running"
                )));
            }
            let paused = Arc::new(sb.paused(snap.meta.tag.clone(), own));
            // Swap the entry, then stop the VM: nobody sees the sandbox gone.
            self.map().insert(id.to_string(), paused.clone());
            stop(&sb).await;
            sb.dir.remove();
            paused.record_paused()?;
            info!(ms = t0.elapsed().as_secs_f64() * 1e3, "paused");
            Ok(paused.view())
        }
        .instrument(span)
        .await
    }

    /// Resume a paused sandbox under the same id.
    pub async fn resume(self: &Arc<Self>, id: &str) -> Result<SandboxView> {
        self.check_open()?;
        let sb = self.get(id)?;
        let Some(p) = sb.paused.clone() else {
            return Err(EngineError::Conflict(format!(
                "sandbox `{id}` is {}: only a paused sandbox can be resumed",
                sb.state().as_str()
            )));
        };
        let span = sb.span.clone();
        async move {
            let _one = sb.branch_lock.lock().await;
            if !self.get(id).is_ok_and(|now| Arc::ptr_eq(&now, &sb)) {
                return Err(EngineError::Conflict(format!(
                    "sandbox `{id}` was resumed or removed meanwhile"
                )));
            }
            let t0 = Instant::now();
            let snap = self.snapshots.get(&p.snapshot)?;
            let s2 = snap.clone();
            let mem = tokio::task::spawn_blocking(move || s2.memory())
                .await
                .map_err(|e| {
                    EngineError::Conflict(format!("loading the paused memory failed: {e}"))
                })??;
            let memory = if p.own_memory {
                ChildMemory::Private {
                    hugepages: snap.meta.machine.pages.is_huge(),
                }
            } else {
                ChildMemory::CopyOnWrite
            };
            let vm = self
                .launching(self.load_child(
                    id,
                    &snap,
                    mem,
                    memory,
                    VolumeLease::existing(sb.volumes.clone()),
                    None,
                ))
                .await?;
            let (running, _) = self.launching(self.resume_child(vm, t0)).await?;
            let resumed = self.register(
                running,
                Spec {
                    image: sb.spec.image.clone(),
                    env: sb.spec.env.clone(),
                    metadata: sb.spec.metadata.clone(),
                },
                sb.expires(),
                sb.snapshot_tag.clone(),
                sb.created_at_unix,
            )?;
            // The resumed VM holds the disk chain; the snapshot can go.
            let _ = self.snapshots.delete(&p.snapshot);
            info!(ms = t0.elapsed().as_secs_f64() * 1e3, "resumed");
            Ok(resumed.view())
        }
        .instrument(span)
        .await
    }
}

/// Stop a sandbox's QEMU (its supervisor frees the memory) and wait.
pub(crate) async fn stop(sb: &Sandbox) {
    if let Some(g) = &sb.guest {
        let (done, wait) = oneshot::channel();
        if g.cmd.send(Command::Stop { done }).await.is_ok() {
            let _ = wait.await;
        }
    }
}
