//! The guest's side of volumes: telling the agent what to clear and mount,
//! and putting a child's own disks under its running devices.

use zygote_proto::agent::Msg;

use super::{Attachment, VolumeLease};
use crate::agent_link::AgentLink;
use crate::error::{EngineError, Result};

/// A booted VM's volumes (in its slots from the start): mount them.
pub(crate) async fn mount_booted(link: &AgentLink, list: &[Attachment]) -> Result<()> {
    mount(link, &[], list, false).await
}

/// A child of a snapshot, running, its slots empty: clear the slots its parent
/// had volumes in (those file systems are still mounted in the memory it
/// inherited; the child's empty slots take whatever they still write), then
/// put the lease's disks in their slots and mount them.
pub(crate) async fn fill_child(
    running: &mut crate::vm::Running,
    parent_used: &[u8],
    lease: VolumeLease,
) -> Result<()> {
    if !parent_used.is_empty() {
        mount(&running.link, parent_used, &[], false).await?;
    }
    let list = lease.list().to_vec();
    for a in &list {
        running
            .vm
            .qmp
            .set_volume(a.slot as usize, &a.drive())
            .await?;
    }
    running.vm.volumes = lease;
    mount(&running.link, &[], &list, true).await
}

/// Tell the guest agent: clear slots `reset`, then mount `list` (probing each
/// device again first with `reprobe`).
pub(super) async fn mount(
    link: &AgentLink,
    reset: &[u8],
    list: &[Attachment],
    reprobe: bool,
) -> Result<()> {
    if reset.is_empty() && list.is_empty() {
        return Ok(());
    }
    let msg = Msg::Mounts {
        reset: reset
            .iter()
            .map(|s| zygote_qemu::volume_serial(*s as usize))
            .collect(),
        mounts: list.iter().map(|a| a.mount(reprobe)).collect(),
    };
    let f = link.call(&msg, std::time::Duration::from_secs(30)).await?;
    match f.msg {
        Msg::Ok => Ok(()),
        m => Err(EngineError::Agent(
            crate::agent_link::LinkError::Unexpected(format!("{m:?} to Mounts")),
        )),
    }
}
