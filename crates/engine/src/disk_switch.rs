//! The disk half of a branch, shared by `copy` and `live`: before the pause the
//! next overlay is created (its header already naming the frozen generation's
//! permanent path) and the current overlay gets that permanent name as a hard
//! link; inside the pause QEMU moves to the next overlay. Also the snapshot
//! metadata both modes record.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use zygote_qemu::Qmp;

use crate::disks::DiskHold;
use crate::error::{EngineError, Result};
use crate::lifecycle::now_unix;
use crate::machine::PageSize;
use crate::model::BranchMode;
use crate::sandbox::{DiskState, Sandbox};
use crate::snapshot::{SnapshotMeta, Snapshots, FORMAT_VERSION};

/// A prepared disk switch.
pub(crate) struct DiskSwitch {
    /// The disk as it was before the branch.
    pub(crate) disk: DiskState,
    /// The frozen generation's permanent path (in `<home>/disks`).
    pub(crate) frozen: PathBuf,
    /// Keeps `frozen` from garbage collection until the snapshot names it.
    _frozen_hold: DiskHold,
    /// QEMU moved to `next_top`: the files are the sandbox's from then on.
    switched: std::sync::atomic::AtomicBool,
    /// The overlay the sandbox moves to.
    pub(crate) next_top: PathBuf,
}

impl DiskSwitch {
    /// Outside the pause: the next overlay and the frozen generation's name.
    pub(crate) async fn prepare(snaps: &Snapshots, sb: &Sandbox, tag: &str) -> Result<DiskSwitch> {
        let disk = sb.disk.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let frozen = snaps.new_disk_path(tag);
        let frozen_hold = snaps.hold(vec![frozen.clone()]);
        let next_top = sb.dir.overlay(disk.generation + 1);
        zygote_qemu::create_overlay_unchecked(&frozen, "qcow2", disk.virtual_size, &next_top)
            .await?;
        // A second name for the current top (renaming an image QEMU has open
        // makes its later inactivation fail with EFAULT); its content freezes at
        // the switch.
        if let Err(source) = std::fs::hard_link(&disk.top, &frozen) {
            let _ = std::fs::remove_file(&next_top);
            return Err(EngineError::Io {
                what: format!("cannot link {} to {}", disk.top.display(), frozen.display()),
                source,
            });
        }
        Ok(DiskSwitch {
            disk,
            frozen,
            _frozen_hold: frozen_hold,
            next_top,
            switched: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Inside the pause: QEMU writes to the next overlay from now on.
    pub(crate) async fn switch(&self, qmp: &Qmp, sb: &Sandbox) -> Result<()> {
        qmp.execute(
            "blockdev-snapshot-sync",
            json!({"device": "d0", "snapshot-file": self.next_top, "format": "qcow2", "mode": "existing"}),
        )
        .await?;
        self.switched
            .store(true, std::sync::atomic::Ordering::SeqCst);
        *sb.disk.lock().unwrap_or_else(|p| p.into_inner()) = DiskState {
            top: self.next_top.clone(),
            chain: self.disk.chain.extended(self.frozen.clone()),
            virtual_size: self.disk.virtual_size,
            generation: self.disk.generation + 1,
        };
        Ok(())
    }
}

impl Drop for DiskSwitch {
    /// A branch that failed before the switch leaves neither file behind.
    fn drop(&mut self) {
        if !self.switched.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = std::fs::remove_file(&self.frozen);
            let _ = std::fs::remove_file(&self.next_top);
        }
    }
}

/// What a branch measured, for the metadata.
pub(crate) struct BranchFacts {
    pub(crate) mode: BranchMode,
    /// Page size of the snapshot's memory.
    pub(crate) pages: PageSize,
    pub(crate) pause_ms: Option<f64>,
    pub(crate) copy_ms: Option<f64>,
    pub(crate) memory_bytes: u64,
    pub(crate) vmstate_bytes: u64,
    pub(crate) warning: Option<String>,
    /// The paused sandbox the snapshot is, if it is one.
    pub(crate) owner: Option<String>,
}

/// The metadata of a snapshot of `sb` whose disk is `switch.frozen`.
pub(crate) fn snapshot_meta(
    sb: &Arc<Sandbox>,
    tag: &str,
    switch: &DiskSwitch,
    f: BranchFacts,
) -> SnapshotMeta {
    SnapshotMeta {
        format_version: FORMAT_VERSION,
        tag: tag.to_string(),
        image: sb.spec.image.clone(),
        branched_from: Some(sb.id.clone()),
        parent_snapshot: sb.snapshot_tag.clone(),
        mode: f.mode,
        machine: sb.machine.with_pages(f.pages),
        disk: switch.frozen.clone(),
        disk_bytes: switch.disk.virtual_size,
        disk_chain: switch.disk.chain.paths().to_vec(),
        pause_ms: f.pause_ms,
        copy_ms: f.copy_ms,
        memory_bytes: f.memory_bytes,
        vmstate_bytes: f.vmstate_bytes,
        created_at_unix: now_unix(),
        warning: f.warning,
        metadata: sb.spec.metadata.clone(),
        owner: f.owner,
        volume_slots_used: sb.volumes.iter().map(|a| a.slot).collect(),
        network: sb.net().map(|n| n.policy()),
    }
}
