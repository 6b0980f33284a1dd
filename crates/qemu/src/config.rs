//! [`VmConfig`]: everything that goes on one QEMU command line, and
//! [`VmConfig::args`], the only place that command line is written. Pure: no I/O.

use std::path::{Path, PathBuf};

use crate::{Accel, QemuError};

/// The base of the guest kernel command line.
///
/// `console=ttyS0` sends the kernel's and init's output to the `-serial` chardev
/// (the console log); `rdinit=/init` runs the initramfs init; `quiet` keeps boot
/// fast (each printk to the emulated 8250 costs TCG time); `panic=-1` turns a
/// guest kernel panic into a reboot, which `-no-reboot` turns into QEMU exiting,
/// so the daemon marks the sandbox dead instead of leaving it hung.
///
/// The rest trims boot work that a sandbox never needs (measured under TCG on
/// a loaded 2-CPU host with `initcall_debug`; 8 interleaved boots each, p50
/// to `HelloOk` 4.55 s -> 3.94 s together with the TCG-only additions of
/// [`crate::default_append`]):
/// * `cryptomgr.notests`: the crypto self-tests (`crypto_algapi_init`,
///   ~0.5 s of emulated CPU);
/// * `initcall_blacklist=crypto_kdf108_init,init_kprobe_trace`: the KDF
///   self-test `cryptomgr.notests` does not cover (~0.13 s) and the kprobe
///   tracing interface (~0.1 s); neither is used by anything in the guest;
/// * `pci=off` (microvm has no PCI), `8250.nr_uarts=1` (one console UART, not
///   four probed ports), `no_timer_check`, `nowatchdog` (no soft-lockup
///   timer ticking in every idle sandbox), `audit=0`, `random.trust_cpu=on`.
///
/// **Under TCG this is not enough**: boot with [`crate::default_append`], which
/// adds `tsc_early_khz=<host TSC kHz>`. Without it a boot hangs whenever the host
/// is busy while the guest calibrates its TSC against the PIT (0 of 50 boots
/// reached init on a loaded 2-CPU host; see [`crate::timing`] for the evidence).
pub const DEFAULT_APPEND: &str = "console=ttyS0 rdinit=/init quiet panic=-1 \
    cryptomgr.notests initcall_blacklist=crypto_kdf108_init,init_kprobe_trace \
    pci=off 8250.nr_uarts=1 no_timer_check nowatchdog audit=0 random.trust_cpu=on";

/// One QEMU microvm: a guest booted from a kernel and initramfs, RAM in a
/// daemon-owned file, one qcow2 disk, one virtio-serial port for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Accelerator.
    pub accel: Accel,
    /// `-cpu` model; must match the parent's for a restored child
    /// (see [`crate::cpu_model`]).
    pub cpu: String,
    /// Guest RAM in MiB; must equal the memory file's size.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// The RAM file (`/proc/<daemon pid>/fd/<n>` of a memfd).
    pub mem_path: PathBuf,
    /// `share=on` (writes reach the file; parents) or `share=off` (private
    /// copy-on-write mapping; children of a snapshot).
    pub mem_share: bool,
    /// Guest kernel (bzImage).
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Kernel command line (start from [`DEFAULT_APPEND`]).
    pub append: String,
    /// The sandbox's qcow2 overlay, attached as virtio-blk `d0`.
    pub disk: PathBuf,
    /// The bulk file-transfer disk: a raw (sparse) file attached as virtio-blk
    /// `x0` with `serial=xfer`, through the host page cache so the daemon's own
    /// reads and writes of the file stay coherent with QEMU's. `None`: no disk.
    pub xfer_disk: Option<PathBuf>,
    /// Volume slots in order, attached as virtio-blk `v<N>` with `serial=vol<N>`
    /// after every other disk. A slot's device exists whether or not a volume
    /// is in it (an empty slot is a 0-byte null disk), so a child of a snapshot
    /// has its parent's devices whatever its volumes are.
    pub volumes: Vec<Option<VolumeDrive>>,
    /// QMP unix socket (QEMU listens).
    pub qmp_socket: PathBuf,
    /// Agent unix socket (QEMU listens; the guest sees port `agent`).
    pub agent_socket: PathBuf,
    /// The serial console is written here.
    pub console_log: PathBuf,
    /// `-incoming defer` (a child waiting for `migrate-incoming`).
    pub incoming_defer: bool,
    /// `-S`: do not start the vCPUs until `cont`.
    pub start_paused: bool,
    /// TCG translation-block cache size in MiB (`-accel tcg,tb-size=N`); smaller
    /// saves QEMU process memory per VM. Ignored under KVM.
    pub tb_size_mib: Option<u32>,
    /// `-name` (shown in `ps` and QMP `query-name`).
    pub name: String,
    /// A virtio-net card on a tap; QEMU then runs inside the tap's network
    /// namespace. `None`: no network card.
    pub nic: Option<Nic>,
}

/// `-sandbox`: QEMU's seccomp filter for every VM.
pub const SECCOMP: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// A virtio-net card backed by a tap device in a network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The namespace file (`/run/netns/<name>`); QEMU is started inside it.
    pub netns: PathBuf,
    /// The tap's name there.
    pub tap: String,
    /// The guest's MAC.
    pub mac: String,
    /// Use the kernel's vhost-net (only where `/dev/vhost-net` exists and the
    /// accelerator is KVM).
    pub vhost: bool,
}

/// A disk image in a volume slot. Always writable at the device, so every
/// slot offers the guest the same virtio features (a child's devices must
/// accept what its parent negotiated); read-only views are copy-on-write
/// overlays the caller owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDrive {
    /// The image file.
    pub path: PathBuf,
    /// `qcow2` (an overlay) rather than `raw`.
    pub qcow2: bool,
}

/// The serial a guest finds volume slot `slot` by.
pub fn volume_serial(slot: usize) -> String {
    format!("vol{slot}")
}

/// The block node of volume slot `slot`: a `raw` node whose `file` child is
/// the slot's disk (a 0-byte `null-co` when empty), so the disk can be swapped
/// under the running device (see [`crate::Qmp::set_volume`]).
pub fn volume_node(slot: usize) -> String {
    format!("v{slot}")
}

/// The `-blockdev` of volume slot `slot` holding `drive`.
fn volume_blockdev(slot: usize, drive: Option<&VolumeDrive>) -> String {
    let node = volume_node(slot);
    match drive {
        None => format!("driver=raw,node-name={node},discard=unmap,file.driver=null-co,file.size=0"),
        Some(d) if d.qcow2 => format!(
            "driver=raw,node-name={node},discard=unmap,file.driver=qcow2,file.discard=unmap,file.file.driver=file,file.file.filename={}",
            path_opt(&d.path)
        ),
        Some(d) => format!(
            "driver=raw,node-name={node},discard=unmap,file.driver=file,file.discard=unmap,file.filename={}",
            path_opt(&d.path)
        ),
    }
}

/// Escapes a value for QEMU's `key=value,...` option syntax (a comma is doubled).
fn opt(value: &str) -> String {
    value.replace(',', ",,")
}

fn path_opt(p: &Path) -> String {
    opt(&p.to_string_lossy())
}

impl VmConfig {
    /// Checks the fields [`VmConfig::args`] cannot express.
    pub fn validate(&self) -> Result<(), QemuError> {
        let bad = |field, value: String, fix| Err(QemuError::InvalidConfig { field, value, fix });
        if self.memory_mib == 0 {
            return bad("memory_mib", "0".into(), "give the guest at least 64 MiB");
        }
        if self.vcpus == 0 {
            return bad("vcpus", "0".into(), "give the guest at least one vCPU");
        }
        if self.cpu.is_empty() || self.cpu.contains(char::is_whitespace) {
            return bad(
                "cpu",
                self.cpu.clone(),
                "use a QEMU CPU model such as \"max\"",
            );
        }
        if self.name.contains(',') || self.name.is_empty() {
            return bad(
                "name",
                self.name.clone(),
                "use a non-empty name without commas",
            );
        }
        if let Some(n) = &self.nic {
            let ok = |v: &str| {
                !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b':' || b == b'-' || b == b'_')
            };
            if !ok(&n.tap) || n.tap.len() > 15 {
                return bad(
                    "nic.tap",
                    n.tap.clone(),
                    "use an interface name of at most 15 letters, digits, - or _",
                );
            }
            if !ok(&n.mac) {
                return bad(
                    "nic.mac",
                    n.mac.clone(),
                    "use a MAC such as 52:54:00:12:34:56",
                );
            }
        }
        for (field, p) in [("kernel", &self.kernel), ("initrd", &self.initrd)] {
            // -kernel/-initrd take a plain path; -initrd splits on commas.
            if p.to_string_lossy().contains(',') {
                return bad(field, p.display().to_string(), "use a path without commas");
            }
        }
        if self.accel == Accel::Tcg
            && !self.append.contains("tsc_early_khz=")
            && !self.incoming_defer
        {
            tracing::warn!(
                name = %self.name,
                append = %self.append,
                "TCG boot without tsc_early_khz= may hang in calibrate_delay when the host \
                 is busy; build the command line with zygote_qemu::default_append"
            );
        }
        Ok(())
    }

    /// The QEMU arguments (without the binary), following the recipe in
    /// `qemu-fork-recipe.md`. Serial console and QMP use explicit `-chardev`s so
    /// every path goes through the same comma escaping.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::with_capacity(64);
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let mem = format!("{}M", self.memory_mib);

        push(&["-M", "microvm,memory-backend=mem"]);
        let accel = match (self.accel, self.tb_size_mib) {
            (Accel::Tcg, Some(n)) => format!("tcg,tb-size={n}"),
            (accel, _) => accel.to_string(),
        };
        push(&["-accel", &accel]);
        push(&[
            "-cpu",
            &self.cpu,
            "-m",
            &mem,
            "-smp",
            &self.vcpus.to_string(),
        ]);
        let backend = format!(
            "memory-backend-file,id=mem,size={mem},mem-path={},share={}",
            path_opt(&self.mem_path),
            if self.mem_share { "on" } else { "off" }
        );
        push(&["-object", &backend]);
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        // QEMU's seccomp filter: no obsolete system calls, no setuid, no
        // fork/exec (migrations go to files and sockets, never `exec:`), no
        // scheduler or affinity changes.
        push(&["-sandbox", SECCOMP]);
        // Appended to, so the daemon can cut the log back while QEMU writes.
        let console = format!(
            "file,id=console,path={},append=on",
            path_opt(&self.console_log)
        );
        push(&["-chardev", &console, "-serial", "chardev:console"]);
        push(&["-kernel", &self.kernel.to_string_lossy()]);
        push(&["-initrd", &self.initrd.to_string_lossy()]);
        push(&["-append", &self.append]);
        let qmp = format!(
            "socket,id=qmp,path={},server=on,wait=off",
            path_opt(&self.qmp_socket)
        );
        push(&["-chardev", &qmp, "-mon", "chardev=qmp,mode=control"]);
        let agent = format!(
            "socket,id=agent,path={},server=on,wait=off",
            path_opt(&self.agent_socket)
        );
        push(&["-chardev", &agent]);
        let drive = format!("id=d0,file={},format=qcow2,if=none", path_opt(&self.disk));
        push(&["-drive", &drive]);
        if let Some(x) = &self.xfer_disk {
            let drive = format!(
                "id=x0,file={},format=raw,if=none,cache.direct=off",
                path_opt(x)
            );
            push(&["-drive", &drive]);
        }
        push(&[
            "-device",
            "virtio-serial-device",
            "-device",
            "virtserialport,chardev=agent,name=agent",
            "-device",
            "virtio-blk-device,drive=d0",
        ]);
        if self.xfer_disk.is_some() {
            push(&["-device", "virtio-blk-device,drive=x0,serial=xfer"]);
        }
        for (i, v) in self.volumes.iter().enumerate() {
            let blockdev = volume_blockdev(i, v.as_ref());
            let device = format!(
                "virtio-blk-device,drive={},serial={},write-cache=on",
                volume_node(i),
                volume_serial(i)
            );
            push(&["-blockdev", &blockdev, "-device", &device]);
        }
        push(&["-device", "virtio-rng-device"]);
        // Last, so machines without a card keep their devices' order.
        if let Some(n) = &self.nic {
            let netdev = format!(
                "tap,id=n0,ifname={},script=no,downscript=no,vhost={}",
                n.tap,
                if n.vhost { "on" } else { "off" }
            );
            let device = format!("virtio-net-device,netdev=n0,mac={}", n.mac);
            push(&["-netdev", &netdev, "-device", &device]);
        }
        if self.start_paused {
            push(&["-S"]);
        }
        if self.incoming_defer {
            push(&["-incoming", "defer"]);
        }
        push(&["-name", &self.name]);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VmConfig {
        VmConfig {
            accel: Accel::Tcg,
            cpu: "max".into(),
            memory_mib: 256,
            vcpus: 1,
            mem_path: "/proc/1/fd/7".into(),
            mem_share: true,
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd.gz".into(),
            append: DEFAULT_APPEND.into(),
            disk: "/s/gen1.qcow2".into(),
            xfer_disk: None,
            volumes: Vec::new(),
            qmp_socket: "/s/qmp.sock".into(),
            agent_socket: "/s/agent.sock".into(),
            console_log: "/s/console.log".into(),
            incoming_defer: false,
            start_paused: false,
            tb_size_mib: None,
            name: "sb1".into(),
            nic: None,
        }
    }

    fn value_of(args: &[String], flag: &str) -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn parent_command_line() {
        let a = cfg().args();
        assert_eq!(value_of(&a, "-M"), ["microvm,memory-backend=mem"]);
        assert_eq!(value_of(&a, "-accel"), ["tcg"]);
        assert_eq!(value_of(&a, "-cpu"), ["max"]);
        assert_eq!(value_of(&a, "-m"), ["256M"]);
        assert_eq!(value_of(&a, "-smp"), ["1"]);
        assert_eq!(
            value_of(&a, "-object"),
            ["memory-backend-file,id=mem,size=256M,mem-path=/proc/1/fd/7,share=on"]
        );
        assert_eq!(
            value_of(&a, "-drive"),
            ["id=d0,file=/s/gen1.qcow2,format=qcow2,if=none"]
        );
        assert_eq!(value_of(&a, "-append"), [DEFAULT_APPEND]);
        assert_eq!(
            value_of(&a, "-device"),
            [
                "virtio-serial-device",
                "virtserialport,chardev=agent,name=agent",
                "virtio-blk-device,drive=d0",
                "virtio-rng-device"
            ]
        );
        for f in ["-nodefaults", "-no-user-config", "-no-reboot"] {
            assert!(a.iter().any(|x| x == f), "{f} missing");
        }
        assert!(!a.iter().any(|x| x == "-S" || x == "-incoming"));
        assert_eq!(a.last().map(String::as_str), Some("sb1"));
        cfg().validate().unwrap();
    }

    #[test]
    fn child_command_line_and_escaping() {
        let mut c = cfg();
        c.mem_share = false;
        c.incoming_defer = true;
        c.start_paused = true;
        c.tb_size_mib = Some(16);
        c.console_log = "/s/we,ird/console.log".into();
        let a = c.args();
        assert_eq!(value_of(&a, "-accel"), ["tcg,tb-size=16"]);
        assert!(value_of(&a, "-object")[0].ends_with("share=off"));
        assert_eq!(value_of(&a, "-incoming"), ["defer"]);
        assert!(a.iter().any(|x| x == "-S"));
        assert!(value_of(&a, "-chardev")
            .contains(&"file,id=console,path=/s/we,,ird/console.log,append=on".to_string()));
        c.accel = Accel::Kvm;
        assert_eq!(value_of(&c.args(), "-accel"), ["kvm"]);
    }

    #[test]
    fn transfer_disk_is_a_second_raw_virtio_blk_with_a_serial() {
        let mut c = cfg();
        c.xfer_disk = Some("/s/x,fer.img".into());
        let a = c.args();
        assert_eq!(
            value_of(&a, "-drive"),
            [
                "id=d0,file=/s/gen1.qcow2,format=qcow2,if=none",
                "id=x0,file=/s/x,,fer.img,format=raw,if=none,cache.direct=off"
            ]
        );
        let devices = value_of(&a, "-device");
        let d0 = devices
            .iter()
            .position(|d| d == "virtio-blk-device,drive=d0");
        let x0 = devices
            .iter()
            .position(|d| d == "virtio-blk-device,drive=x0,serial=xfer");
        assert!(d0.is_some() && x0.is_some() && d0 < x0, "{devices:?}");
    }

    #[test]
    fn volume_slots_follow_the_other_disks_and_empty_ones_keep_their_device() {
        let mut c = cfg();
        c.xfer_disk = Some("/s/xfer.img".into());
        c.volumes = vec![
            None,
            Some(VolumeDrive {
                path: "/v/data.img".into(),
                qcow2: false,
            }),
            Some(VolumeDrive {
                path: "/s/view.qcow2".into(),
                qcow2: true,
            }),
        ];
        let a = c.args();
        assert_eq!(
            value_of(&a, "-drive").len(),
            2,
            "the root and transfer disks"
        );
        assert_eq!(
            value_of(&a, "-blockdev"),
            [
                "driver=raw,node-name=v0,discard=unmap,file.driver=null-co,file.size=0",
                "driver=raw,node-name=v1,discard=unmap,file.driver=file,file.discard=unmap,file.filename=/v/data.img",
                "driver=raw,node-name=v2,discard=unmap,file.driver=qcow2,file.discard=unmap,file.file.driver=file,file.file.filename=/s/view.qcow2",
            ]
        );
        let devices = value_of(&a, "-device");
        let x0 = devices.iter().position(|d| d.contains("drive=x0")).unwrap();
        for i in 0..3 {
            let v = devices
                .iter()
                .position(|d| {
                    *d == format!("virtio-blk-device,drive=v{i},serial=vol{i},write-cache=on")
                })
                .unwrap_or_else(|| panic!("slot {i}: {devices:?}"));
            assert!(v > x0, "volumes come after the transfer disk");
        }
        // The same slots empty: the same devices.
        let mut empty = c.clone();
        empty.volumes = vec![None, None, None];
        assert_eq!(value_of(&empty.args(), "-device"), devices);
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = cfg();
        c.memory_mib = 0;
        assert!(c.validate().unwrap_err().to_string().contains("memory_mib"));
        let mut c = cfg();
        c.initrd = "/a,b".into();
        assert!(c.validate().unwrap_err().to_string().contains("initrd"));
    }
}
