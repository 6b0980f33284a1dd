//! [`Machine`]: the one description of a VM (accelerator, CPU model, memory,
//! vCPUs, page size, kernel, initramfs, command line). A booted sandbox has one,
//! a snapshot records its parent's in `meta.json` as is, and a child must have
//! its snapshot's (see [`Machine::check_child_of`]). [`vm_config`] is the only
//! place a QEMU configuration is built, for every way a VM starts: a boot, a
//! restore over copy-on-write memory, a restore over private memory, a
//! pre-started child.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zygote_qemu::{Accel, VmConfig};

use crate::error::{EngineError, Result};
use crate::rundir::RuntimeDir;
use crate::sandbox::SandboxMemory;
use crate::volumes::Attachment;

/// The QEMU machine type every zygote VM uses.
pub const MACHINE_TYPE: &str = "microvm";

/// A QEMU `-cpu` model. Children must use their parent's exactly (a mismatch
/// hangs the restored guest silently).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cpu(pub String);

impl Cpu {
    /// The model the engine starts under `accel` (see [`zygote_qemu::cpu_model`]).
    pub fn for_accel(accel: Accel) -> Cpu {
        Cpu(zygote_qemu::cpu_model(accel).to_string())
    }

    /// The model's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The page size of the memory a VM runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PageSize {
    /// 4 KiB shmem pages.
    #[default]
    Small,
    /// 2 MiB hugetlb pages.
    Huge,
}

impl PageSize {
    /// The page size of a memory region.
    pub fn of(kind: zygote_mem::PageKind) -> PageSize {
        match kind {
            zygote_mem::PageKind::Huge2M => PageSize::Huge,
            zygote_mem::PageKind::Small => PageSize::Small,
        }
    }

    /// Whether these are hugepages.
    pub fn is_huge(self) -> bool {
        self == PageSize::Huge
    }
}

/// One VM's shape. Everything a child of a snapshot must share with its parent
/// is here, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// Accelerator.
    pub accel: Accel,
    /// `-cpu` model.
    pub cpu: Cpu,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Page size of the memory the VM runs on (a child may differ from its
    /// snapshot here: the device state does not depend on it).
    pub pages: PageSize,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub append: String,
    /// Volume slots (virtio disks present whether or not a volume is in
    /// them); 0 for VMs booted before volumes existed.
    #[serde(default)]
    pub volume_slots: u8,
    /// A virtio-net card (the VM runs in a network namespace of its own);
    /// false for VMs of a daemon with `--network none` or from before
    /// networking.
    #[serde(default)]
    pub nic: bool,
}

impl Machine {
    /// Guest RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }

    /// Refuse to start a child of a snapshot whose machine is `self` under an
    /// engine that starts `accel`, naming the difference.
    pub fn check_restorable(&self, tag: &str, accel: Accel) -> Result<()> {
        if self.accel != accel {
            return Err(EngineError::BadRequest(format!(
                "snapshot `{tag}` was taken under {}, this daemon runs {accel}: children must use the same accelerator",
                self.accel
            )));
        }
        let want = Cpu::for_accel(accel);
        if self.cpu != want {
            return Err(EngineError::BadRequest(format!(
                "snapshot `{tag}` uses CPU model `{}`, this daemon starts `{want}`: a CPU mismatch hangs the guest silently, so it is refused",
                self.cpu
            )));
        }
        Ok(())
    }

    /// The machine of a child with memory of page size `pages`.
    pub fn with_pages(&self, pages: PageSize) -> Machine {
        Machine {
            pages,
            ..self.clone()
        }
    }
}

/// How a VM starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Boot the kernel.
    Boot,
    /// Wait paused for `migrate-incoming` (a child of a snapshot).
    Restore,
}

/// What a VM is attached to: its overlay, its volumes in their slots, its
/// network namespace.
pub(crate) struct Attached<'a> {
    pub(crate) disk: &'a Path,
    pub(crate) volumes: &'a [Attachment],
    pub(crate) net: Option<&'a zygote_net::SandboxNet>,
}

/// The QEMU configuration of the VM `name` with machine `m` in `dir`, on
/// `memory`, attached to `to`. The only place a [`VmConfig`] is built.
pub(crate) fn vm_config(
    name: &str,
    m: &Machine,
    dir: &RuntimeDir,
    memory: &SandboxMemory,
    to: Attached<'_>,
    start: Start,
) -> VmConfig {
    let Attached { disk, volumes, net } = to;
    let (mem_path, mem_share) = match memory {
        SandboxMemory::Own(r) => (r.backend_path(), true),
        SandboxMemory::Cow(r) => (r.backend_path(), false),
    };
    let restore = start == Start::Restore;
    VmConfig {
        accel: m.accel,
        cpu: m.cpu.0.clone(),
        memory_mib: m.memory_mib,
        vcpus: m.vcpus,
        mem_path,
        mem_share,
        kernel: m.kernel.clone(),
        initrd: m.initrd.clone(),
        append: m.append.clone(),
        disk: disk.to_path_buf(),
        // Boots and children carry the same devices, or a child cannot load
        // its parent's state (see xfer.rs).
        xfer_disk: Some(dir.xfer_disk()),
        volumes: crate::volumes::drives(m.volume_slots, volumes),
        qmp_socket: dir.qmp_socket(),
        agent_socket: dir.agent_socket(),
        console_log: dir.console_log(),
        incoming_defer: restore,
        start_paused: restore,
        tb_size_mib: None,
        name: name.to_string(),
        nic: net.map(|n| zygote_qemu::Nic {
            netns: n.path(),
            tap: zygote_net::TAP.to_string(),
            mac: zygote_net::GUEST_MAC.to_string(),
            vhost: m.accel == Accel::Kvm && Path::new("/dev/vhost-net").exists(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            accel: Accel::Tcg,
            cpu: Cpu::for_accel(Accel::Tcg),
            memory_mib: 256,
            vcpus: 1,
            pages: PageSize::Small,
            kernel: "/i/vmlinuz".into(),
            initrd: "/i/initrd.img".into(),
            append: "console=ttyS0".into(),
            volume_slots: 2,
            nic: false,
        }
    }

    #[test]
    fn json_round_trip_and_unknown_fields_refused() {
        let m = machine();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["accel"], "tcg");
        assert_eq!(v["pages"], "small");
        assert_eq!(v["cpu"], "max");
        assert_eq!(serde_json::from_value::<Machine>(v.clone()).unwrap(), m);
        // A machine stored before volumes has no slots.
        let mut old = v.clone();
        old.as_object_mut().unwrap().remove("volume_slots");
        assert_eq!(
            serde_json::from_value::<Machine>(old).unwrap().volume_slots,
            0
        );
        let mut bad = v;
        bad["extra"] = 1.into();
        assert!(serde_json::from_value::<Machine>(bad).is_err());
    }

    #[test]
    fn restore_checks_name_the_difference() {
        let m = machine();
        m.check_restorable("t", Accel::Tcg).unwrap();
        let e = m.check_restorable("t", Accel::Kvm).unwrap_err().to_string();
        assert!(e.contains("tcg") && e.contains("kvm"), "{e}");
        let mut other = machine();
        other.cpu = Cpu("qemu64".into());
        let e = other
            .check_restorable("t", Accel::Tcg)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`qemu64`") && e.contains("`max`"), "{e}");
    }

    #[test]
    fn boot_and_restore_differ_only_in_how_they_start() {
        let d = tempfile::tempdir().unwrap();
        let dir = RuntimeDir::create(d.path(), "abc").unwrap();
        let mem = std::sync::Arc::new(zygote_mem::Region::create("t", 1 << 20, false).unwrap());
        let own = SandboxMemory::Own(mem.clone());
        let boot = vm_config(
            "n",
            &machine(),
            &dir,
            &own,
            Attached {
                disk: &dir.overlay(1),
                volumes: &[],
                net: None,
            },
            Start::Boot,
        );
        let cow = SandboxMemory::Cow(mem);
        let child = vm_config(
            "n",
            &machine(),
            &dir,
            &cow,
            Attached {
                disk: &dir.overlay(1),
                volumes: &[],
                net: None,
            },
            Start::Restore,
        );
        assert_eq!(boot.volumes, vec![None, None], "every slot is there, empty");
        assert!(boot.mem_share && !boot.incoming_defer && !boot.start_paused);
        assert!(!child.mem_share && child.incoming_defer && child.start_paused);
        assert_eq!(boot.xfer_disk, child.xfer_disk);
        assert_eq!(boot.qmp_socket, dir.path().join("qmp.sock"));
    }
}
