//! `live` branches: QEMU precopy migration streams RAM to the daemon while the
//! guest runs; `pause-before-switchover` stops it for the last round, where the
//! disk switches to a new overlay; the stream is split as it arrives into the
//! snapshot's memory and a RAM-less vmstate (crate `zygote-stream`). Works for
//! every sandbox (copy-on-write children included); the pause is about the
//! downtime limit plus a few ms, whatever the RAM size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tracing::info;
use zygote_mem::{Prefault, Region};
use zygote_qemu::{wait_event, Qmp};
use zygote_stream::{split_reader, PageSink, SplitOptions};

use crate::branch::{wait_migration, PauseGuard};
use crate::disk_switch::{snapshot_meta, BranchFacts, DiskSwitch};
use crate::error::{EngineError, Result};
use crate::machine::PageSize;
use crate::model::BranchMode;
use crate::sandbox::Sandbox;
use crate::snapshot::Snapshot;
use crate::Engine;

/// Default `downtime-limit` in ms: the measured pause was 15-35 ms at 10-50.
pub(crate) const DEFAULT_DOWNTIME_MS: u64 = 20;
/// How long a live migration may run before it is cancelled.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Pages from the stream, written into a region.
struct RegionSink<'a>(&'a Region);

fn io_err(e: zygote_mem::MemError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl PageSink for RegionSink<'_> {
    fn write_pages(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write_at(offset, data).map_err(io_err)
    }

    fn zero_range(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        let zeros = vec![0u8; (len as usize).min(1 << 20)];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.0
                .write_at(offset + done, &zeros[..n])
                .map_err(io_err)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Accept QEMU's migration stream on `listener` (within the convergence
/// timeout: a QEMU that dies first never connects) and split it in a thread:
/// pages into `dst`, the RAM-less device state into `vm_path`. Aborting the
/// task before the connection leaves no thread behind.
fn receive(
    listener: tokio::net::UnixListener,
    vm_path: std::path::PathBuf,
    dst: Region,
) -> tokio::task::JoinHandle<Result<(Region, zygote_stream::SplitStats)>> {
    tokio::spawn(async move {
        let accepted = tokio::time::timeout(CONVERGE_TIMEOUT, listener.accept()).await;
        let conn = match accepted {
            Ok(Ok((conn, _))) => conn,
            Ok(Err(source)) => {
                return Err(EngineError::Io {
                    what: "accepting the migration stream".into(),
                    source,
                })
            }
            Err(_) => {
                return Err(EngineError::Conflict(format!(
                    "QEMU did not open the migration stream within {CONVERGE_TIMEOUT:?}"
                )))
            }
        };
        let conn = conn
            .into_std()
            .and_then(|c| c.set_nonblocking(false).map(|_| c))
            .map_err(|source| EngineError::Io {
                what: "taking the migration stream".into(),
                source,
            })?;
        tokio::task::spawn_blocking(move || {
            let out = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(&vm_path).map_err(|source| EngineError::Io {
                    what: format!("cannot create {}", vm_path.display()),
                    source,
                })?,
            );
            let reader = std::io::BufReader::with_capacity(1 << 20, conn);
            let split = split_reader(reader, SplitOptions::default(), RegionSink(&dst), out)
                .map_err(|e| {
                    EngineError::Conflict(format!("the migration stream could not be split: {e}"))
                })?;
            let stats = split.stats;
            drop(split.out);
            Ok((dst, stats))
        })
        .await
        .map_err(|e| EngineError::Conflict(format!("the stream receiver failed: {e}")))?
    })
}

/// A task aborted when its handle goes: a branch that fails early stops
/// waiting for a stream that will never come.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Engine {
    pub(crate) async fn branch_live(
        self: &Arc<Self>,
        sb: &Arc<Sandbox>,
        qmp: &Arc<Qmp>,
        tag: &str,
        hugepages: bool,
        downtime_ms: u64,
        owner: Option<String>,
    ) -> Result<Arc<Snapshot>> {
        let staging = self.snapshots.staging(tag)?;
        let vmstate = staging.path().join("vmstate");
        let size = sb.machine.memory_bytes();
        let name = format!("zygote-snap-{tag}");
        let dst = tokio::task::spawn_blocking(move || {
            Region::prepare_destination(&name, size, hugepages, &Prefault::None)
        })
        .await
        .map_err(|e| {
            EngineError::Conflict(format!("preparing the snapshot memory failed: {e}"))
        })??;
        let warning = dst.warning().map(str::to_string);

        // The receiving end: a socket in the staging dir, split in a thread.
        let sock = staging.path().join("mig.sock");
        let listener = tokio::net::UnixListener::bind(&sock).map_err(|source| EngineError::Io {
            what: format!("cannot listen on {}", sock.display()),
            source,
        })?;
        let mut receiver = AbortOnDrop(receive(listener, vmstate.clone(), dst));

        let sw = DiskSwitch::prepare(&self.snapshots, sb, tag).await?;
        qmp.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [
                {"capability": "events", "state": true},
                {"capability": "x-ignore-shared", "state": false},
                {"capability": "pause-before-switchover", "state": true},
            ]}),
        )
        .await?;
        qmp.execute(
            "migrate-set-parameters",
            json!({"downtime-limit": downtime_ms, "max-bandwidth": 10_737_418_240u64}),
        )
        .await?;
        let mut events = qmp.events();
        let t_mig = Instant::now();
        let uri = format!("unix:{}", sock.display());
        let started = qmp.execute("migrate", json!({ "uri": uri })).await;
        if let Err(e) = started {
            return Err(e.into());
        }
        // Wait for the guest to be stopped for the last round.
        let mut stop_us = None;
        let pre = wait_event(&mut events, CONVERGE_TIMEOUT, |e| {
            if e.name == "STOP" {
                stop_us = Some(e.timestamp_us);
            }
            e.name == "MIGRATION"
                && matches!(
                    e.data.get("status").and_then(|s| s.as_str()),
                    Some("pre-switchover") | Some("failed") | Some("cancelled")
                )
        })
        .await;
        let status = pre.as_ref().and_then(|e| {
            e.data
                .get("status")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        });
        if status.as_deref() != Some("pre-switchover") {
            let _ = qmp.execute("migrate_cancel", json!(null)).await;
            let _ = qmp.execute("cont", json!(null)).await;
            return Err(EngineError::Conflict(format!(
                "the live migration did not converge within {CONVERGE_TIMEOUT:?} (status {}): cancelled, the parent runs on",
                status.unwrap_or_else(|| "unknown".into())
            )));
        }
        // ---- the pause (QEMU stopped the guest) ----
        let guard = PauseGuard::adopt(qmp.clone());
        if let Err(e) = sw.switch(qmp, sb).await {
            let _ = qmp.execute("migrate_cancel", json!(null)).await;
            return Err(e);
        }
        qmp.execute("migrate-continue", json!({"state": "pre-switchover"}))
            .await?;
        let done = wait_migration(qmp, Duration::from_secs(30)).await?;
        guard.resume().await?;
        // ---- resumed ----
        let mig_ms = t_mig.elapsed().as_secs_f64() * 1e3;
        if stop_us.is_none() {
            stop_us = wait_event(&mut events, Duration::from_secs(1), |e| e.name == "STOP")
                .await
                .map(|e| e.timestamp_us);
        }
        let resume_ev =
            wait_event(&mut events, Duration::from_secs(5), |e| e.name == "RESUME").await;
        let pause_ms = match (stop_us, resume_ev) {
            (Some(a), Some(b)) if b.timestamp_us >= a => Some((b.timestamp_us - a) as f64 / 1e3),
            _ => None,
        };
        let (mut dst, stats) = (&mut receiver.0)
            .await
            .map_err(|e| EngineError::Conflict(format!("the stream receiver failed: {e}")))??;
        let ram = stats.blocks.iter().find(|b| b.name == "mem").map(|b| b.len);
        if ram != Some(size) {
            return Err(EngineError::Conflict(format!(
                "the migration stream's guest RAM block is {ram:?} bytes, the sandbox has {size}: refusing the snapshot"
            )));
        }
        let dst = tokio::task::spawn_blocking(move || dst.seal().map(|_| dst))
            .await
            .map_err(|e| EngineError::Conflict(format!("sealing failed: {e}")))??;
        let vmstate_bytes = std::fs::metadata(&vmstate).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&sock);
        let downtime = done.get("downtime").and_then(|v| v.as_u64());
        info!(%tag, ?pause_ms, ?downtime, mig_ms, pages = stats.pages, vmstate_bytes, "branched (live)");
        let meta = snapshot_meta(
            sb,
            tag,
            &sw,
            BranchFacts {
                mode: BranchMode::Live,
                pages: PageSize::of(dst.kind()),
                pause_ms,
                copy_ms: None,
                memory_bytes: stats.pages * 4096,
                vmstate_bytes,
                warning,
                owner,
            },
        );
        self.snapshots.commit(staging, meta, Arc::new(dst))
    }
}
