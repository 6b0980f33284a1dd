//! Branching a running sandbox into a snapshot.
//!
//! `copy` mode (for sandboxes on their own share=on memfd): the destination
//! memfd is created, sized and pre-faulted *before* the stop, and the new disk
//! overlay created; inside the stop the disk moves to that overlay, the device
//! state is saved with `x-ignore-shared` (RAM skipped: tens of KB) and the
//! touched RAM ranges are copied; then the parent resumes and the copy is
//! sealed. The stop sits behind [`PauseGuard`], whose drop resumes the parent,
//! so no error path leaves it stopped.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tracing::{info, warn, Instrument};
use zygote_mem::{CopyOptions, Prefault, Region};
use zygote_qemu::{wait_event, Qmp, QmpEvent};

use crate::disk_switch::{snapshot_meta, BranchFacts, DiskSwitch};
use crate::error::{EngineError, Result};
use crate::lifecycle::new_id;
use crate::machine::PageSize;
use crate::model::{BranchMode, BranchSpec, SandboxState, SnapshotStatus, SnapshotView};
use crate::observe::Timing;
use crate::sandbox::{Sandbox, SandboxMemory};
use crate::snapshot::Snapshot;
use crate::Engine;

/// Room a branch needs beyond its memory: vmstate, metadata, disk flushes.
const SNAPSHOT_SLACK: u64 = 16 << 20;

/// How long the device-state save may take inside the pause.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Resumes the parent when dropped unless [`PauseGuard::resume`] ran.
pub(crate) struct PauseGuard {
    qmp: Arc<Qmp>,
    resumed: bool,
}

impl PauseGuard {
    /// Stop the VM; the guard resumes it on every path.
    pub(crate) async fn stop(qmp: Arc<Qmp>) -> Result<PauseGuard> {
        qmp.execute("stop", json!(null)).await?;
        Ok(PauseGuard {
            qmp,
            resumed: false,
        })
    }

    /// Guard a VM that QEMU itself stopped (pause-before-switchover).
    pub(crate) fn adopt(qmp: Arc<Qmp>) -> PauseGuard {
        PauseGuard {
            qmp,
            resumed: false,
        }
    }

    /// Resume now. Right after a migration completes QEMU may still be
    /// finalizing it and refuse `cont` ("Migration is not finalized yet"):
    /// that answer is retried for a moment.
    pub(crate) async fn resume(mut self) -> Result<()> {
        self.resumed = true;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.qmp.execute("cont", json!(null)).await {
                Ok(_) => return Ok(()),
                Err(e) if e.to_string().contains("not finalized") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                Err(e) => {
                    // Leave the guard armed so its drop tries once more.
                    self.resumed = false;
                    return Err(e.into());
                }
            }
        }
    }
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        if !self.resumed {
            let qmp = self.qmp.clone();
            warn!("branch failed inside the pause: resuming the parent");
            tokio::spawn(async move {
                if let Err(e) = qmp.execute("cont", json!(null)).await {
                    warn!(error = %e, "could not resume the parent after a failed branch");
                }
            });
        }
    }
}

/// Poll `query-migrate` until it completes (or fails).
pub(crate) async fn wait_migration(qmp: &Qmp, timeout: Duration) -> Result<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_micros(500);
    loop {
        let v = qmp.execute("query-migrate", json!(null)).await?;
        match v.get("status").and_then(|s| s.as_str()).unwrap_or("") {
            "completed" => return Ok(v),
            "failed" | "cancelled" => {
                let why = v
                    .get("error-desc")
                    .and_then(|d| d.as_str())
                    .unwrap_or("no reason given");
                return Err(EngineError::Conflict(format!("migration failed: {why}")));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            let _ = qmp.execute("migrate_cancel", json!(null)).await;
            return Err(EngineError::Conflict(format!(
                "migration did not complete within {timeout:?}: cancelled"
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(5));
    }
}

fn event_ts(ev: &Option<QmpEvent>) -> Option<u64> {
    ev.as_ref().map(|e| e.timestamp_us)
}

impl Engine {
    /// Branch a running sandbox into a new snapshot; the parent keeps running.
    pub async fn branch(self: &Arc<Self>, id: &str, spec: BranchSpec) -> Result<SnapshotView> {
        self.check_open()?;
        let sb = self.get(id)?;
        self.admit_snapshot(sb.machine.memory_mib)?;
        let span = sb.span.clone();
        let t0 = Instant::now();
        let branched = self.branch_inner(&sb, &spec, None).instrument(span).await;
        // The disk moved to a new overlay (even if the branch failed after the
        // switch): record it for a restarted daemon, outside the pause.
        if sb.state() == SandboxState::Running {
            sb.record_runtime();
        }
        let snap = match branched {
            Ok(s) => s,
            // `rm` won the race: say so rather than how QMP broke.
            Err(e) if sb.state() != SandboxState::Running => {
                return Err(EngineError::Conflict(format!(
                    "sandbox `{id}` was removed during the branch ({}): no snapshot was made",
                    crate::error_chain(&e)
                )))
            }
            Err(e) => return Err(e),
        };
        self.observe(Timing::Branched {
            mode: snap.meta.mode,
            pause_ms: snap.meta.pause_ms,
            call_ms: t0.elapsed().as_secs_f64() * 1e3,
        });
        self.persist_in_background(&snap);
        if spec.wait && snap.wait_persisted().await == SnapshotStatus::Failed {
            // Asked to wait for a snapshot on disk and it could not be written:
            // no half-persisted snapshot stays behind.
            let why = snap.view(0).warning.unwrap_or_default();
            let tag = snap.meta.tag.clone();
            let _ = self.delete_snapshot(&tag, crate::DeleteScope::Force).await;
            if why.contains("No space left") {
                let root = self.cfg.home.join("snapshots");
                return Err(EngineError::DiskFull {
                    what: format!("snapshot `{tag}`'s memory ({why})"),
                    free_mib: crate::disks::free_bytes(&root).unwrap_or(0) >> 20,
                    path: root.display().to_string(),
                    needed_mib: snap.meta.memory_bytes.div_ceil(1 << 20),
                });
            }
            return Err(EngineError::Conflict(format!(
                "snapshot `{tag}` could not be written to disk ({why}); it was removed"
            )));
        }
        Ok(self.view_of(&snap))
    }

    /// The branch itself; `owner` marks the snapshot as that paused sandbox.
    pub(crate) async fn branch_inner(
        self: &Arc<Self>,
        sb: &Arc<Sandbox>,
        spec: &BranchSpec,
        owner: Option<String>,
    ) -> Result<Arc<Snapshot>> {
        let _one = sb.branch_lock.lock().await;
        let memory = sb.memory.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mode = match (spec.mode, &memory) {
            (Some(BranchMode::Copy), Some(SandboxMemory::Cow(_))) => {
                return Err(EngineError::Conflict(format!(
                    "sandbox `{}` runs copy-on-write over snapshot `{}`, so `copy` mode cannot see its memory: use mode `live`, or spawn children with private_memory",
                    sb.id,
                    sb.snapshot_tag.clone().unwrap_or_default()
                )))
            }
            (Some(m), _) => m,
            (None, Some(SandboxMemory::Cow(_))) => BranchMode::Live,
            (None, _) => BranchMode::Copy,
        };
        let tag = match &spec.tag {
            Some(t) => t.clone(),
            // Unique by construction: two branches in one second never collide.
            None => format!("{}-{}", &sb.id[..8.min(sb.id.len())], &new_id()[..8]),
        };
        // Admission: never start a branch the home cannot hold.
        let needed = match &memory {
            Some(SandboxMemory::Own(r)) => r.allocated_bytes().unwrap_or(r.size()),
            // What a copy-on-write child wrote is not cheaply known: its size.
            Some(SandboxMemory::Cow(r)) => r.size(),
            None => 0,
        } + SNAPSHOT_SLACK;
        crate::disks::ensure_room(
            &self.cfg.home.join("snapshots"),
            needed,
            &format!("a {} branch of sandbox `{}`", mode.as_str(), sb.id),
        )?;
        let _reservation = self.snapshots.reserve(&tag)?;
        let qmp = sb.guest()?.qmp.clone();
        match mode {
            BranchMode::Copy => {
                let Some(SandboxMemory::Own(src)) = memory else {
                    return Err(EngineError::NotRunning {
                        id: sb.id.clone(),
                        state: sb.state().as_str(),
                        reason: Some("its memory is gone".into()),
                    });
                };
                self.branch_copy(sb, &qmp, &src, &tag, spec.hugepages, owner)
                    .await
            }
            BranchMode::Live => {
                let downtime = spec
                    .downtime_limit_ms
                    .unwrap_or(crate::live::DEFAULT_DOWNTIME_MS);
                if !(1..=10_000).contains(&downtime) {
                    return Err(EngineError::BadRequest(format!(
                        "downtime_limit_ms {downtime} is out of range: pass 1..=10000"
                    )));
                }
                self.branch_live(sb, &qmp, &tag, spec.hugepages, downtime, owner)
                    .await
            }
        }
    }

    async fn branch_copy(
        self: &Arc<Self>,
        sb: &Arc<Sandbox>,
        qmp: &Arc<Qmp>,
        src: &Arc<Region>,
        tag: &str,
        hugepages: bool,
        owner: Option<String>,
    ) -> Result<Arc<Snapshot>> {
        let t_prep = Instant::now();
        let staging = self.snapshots.staging(tag)?;
        let vmstate = staging.path().join("vmstate");
        let sw = DiskSwitch::prepare(&self.snapshots, sb, tag).await?;

        // The destination, sized and pre-faulted over the ranges the guest has
        // touched, before the stop.
        let size = src.size();
        let src2 = src.clone();
        let name = format!("zygote-snap-{tag}");
        let dst = tokio::task::spawn_blocking(move || -> Result<Region> {
            let ranges = src2.data_ranges()?;
            Ok(Region::prepare_destination(
                &name,
                size,
                hugepages,
                &Prefault::Ranges(ranges),
            )?)
        })
        .await
        .map_err(|e| {
            EngineError::Conflict(format!("preparing the snapshot memory failed: {e}"))
        })??;
        let warning = dst.warning().map(str::to_string);
        qmp.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [
                {"capability": "events", "state": true},
                {"capability": "x-ignore-shared", "state": true},
                {"capability": "pause-before-switchover", "state": false},
            ]}),
        )
        .await?;
        let prep_ms = t_prep.elapsed().as_secs_f64() * 1e3;

        // ---- the pause ----
        let mut events = qmp.events();
        let guard = PauseGuard::stop(qmp.clone()).await?;
        let t_stop = Instant::now();
        sw.switch(qmp, sb).await?;
        // QEMU writes the file itself: no shell (its seccomp filter forbids
        // spawning one).
        let uri = format!("file:{}", plain_path(&vmstate)?);
        qmp.execute("migrate", json!({ "uri": uri })).await?;
        wait_migration(qmp, MIGRATE_TIMEOUT).await?;
        let t_copy = Instant::now();
        let src3 = src.clone();
        let (dst, stats) = tokio::task::spawn_blocking(move || {
            let stats = dst.copy_from(src3.memfd(), &CopyOptions::default());
            (dst, stats)
        })
        .await
        .map_err(|e| EngineError::Conflict(format!("the memory copy failed: {e}")))?;
        let stats = stats?;
        let copy_ms = t_copy.elapsed().as_secs_f64() * 1e3;
        guard.resume().await?;
        let wall_pause_ms = t_stop.elapsed().as_secs_f64() * 1e3;
        // ---- resumed ----

        let stop_ev = wait_event(&mut events, Duration::from_secs(5), |e| e.name == "STOP").await;
        let resume_ev =
            wait_event(&mut events, Duration::from_secs(5), |e| e.name == "RESUME").await;
        let pause_ms = match (event_ts(&stop_ev), event_ts(&resume_ev)) {
            (Some(a), Some(b)) if b >= a => (b - a) as f64 / 1e3,
            _ => wall_pause_ms,
        };
        let mut dst = dst;
        let sealed = tokio::task::spawn_blocking(move || dst.seal().map(|_| dst))
            .await
            .map_err(|e| EngineError::Conflict(format!("sealing failed: {e}")))??;
        let vmstate_bytes = std::fs::metadata(&vmstate).map(|m| m.len()).unwrap_or(0);
        info!(%tag, pause_ms, copy_ms, prep_ms, bytes = stats.bytes, vmstate_bytes, "branched (copy)");
        let meta = snapshot_meta(
            sb,
            tag,
            &sw,
            BranchFacts {
                mode: BranchMode::Copy,
                pages: PageSize::of(sealed.kind()),
                pause_ms: Some(pause_ms),
                copy_ms: Some(copy_ms),
                memory_bytes: stats.bytes,
                vmstate_bytes,
                warning,
                owner,
            },
        );
        self.snapshots.commit(staging, meta, Arc::new(sealed))
    }
}

/// A path safe to put in a QEMU migration URI (`file:`, whose options follow
/// a comma): refuse anything odd rather than escape it.
fn plain_path(p: &Path) -> Result<String> {
    let s = p.to_string_lossy().to_string();
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    {
        Ok(s)
    } else {
        Err(EngineError::BadRequest(format!(
            "path {s:?} has characters a QEMU migration URI cannot carry: use a home directory path of letters, digits and . _ - /"
        )))
    }
}
