//! PID 1 duties: the early mounts, standard fds, hostname and loopback at boot,
//! and the orderly power-off on `Shutdown`.
//!
//! Reaping lives in [`crate::reaper`]. Nothing here runs unless the agent is the
//! guest's init, except the dev-mode shutdown (kill our own children, exit).

use std::fs;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use crate::conn::Ctx;
use crate::sys;
use crate::util::{lock, log};

/// Grace between SIGTERM and SIGKILL at shutdown.
const TERM_GRACE: Duration = Duration::from_millis(1500);

struct MountSpec {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: libc::c_ulong,
    data: Option<&'static str>,
}

const MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: Some("gid=5,mode=620,ptmxmode=666"),
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some("mode=0755"),
    },
];

/// Whether `target` is already a mount point (per /proc/self/mounts).
fn is_mounted(target: &str) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(target))
        })
        .unwrap_or(false)
}

/// Boot-time setup as the guest's init. Failures are logged, never fatal.
pub(crate) fn init() {
    for m in MOUNTS {
        let _ = fs::create_dir_all(m.target);
        if is_mounted(m.target) {
            continue;
        }
        match sys::mount(m.source, m.target, Some(m.fstype), m.flags, m.data) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => log!("mount {} on {}: {e}", m.fstype, m.target),
        }
        if m.target == "/dev" {
            ensure_std_fds();
        }
    }
    // /dev may have been mounted (and skipped above) by an initramfs init.
    ensure_std_fds();
    for (link, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, link);
    }
    // Images link /etc/hostname to the tmpfs file set_hostname writes (a restore
    // then renames the guest without an ext4 write); older images carry a file.
    let h = fs::read_to_string("/etc/hostname").unwrap_or_default();
    let h = match h.trim() {
        h if crate::system::valid_hostname(h) => h.to_string(),
        _ => crate::system::DEFAULT_HOSTNAME.to_string(),
    };
    if let Err(e) = crate::system::set_hostname(&h) {
        log!("setting the hostname {h}: {e}");
    }
    if let Err(e) = sys::loopback_up() {
        log!("loopback up: {e}");
    }
    network_up();
    std::env::set_var("PATH", crate::util::BASE_ENV[0].1);
}

/// With a network card (`eth0`): the address every sandbox's guest has, the
/// default route and the resolver (the gateway, which forwards to the host's).
fn network_up() {
    use zygote_proto::guest_net::{GATEWAY, GUEST_ADDR, GUEST_IF, PREFIX};
    if !std::path::Path::new("/sys/class/net")
        .join(GUEST_IF)
        .exists()
    {
        return;
    }
    match sys::configure_link(GUEST_IF, GUEST_ADDR, PREFIX, GATEWAY) {
        Ok(()) => {
            // A symlink (debootstrap leaves one to systemd-resolved) is replaced.
            let _ = fs::remove_file("/etc/resolv.conf");
            if let Err(e) = fs::write("/etc/resolv.conf", format!("nameserver {GATEWAY}\n")) {
                log!("writing /etc/resolv.conf: {e}");
            }
        }
        Err(e) => log!("configuring {GUEST_IF}: {e}"),
    }
}

/// Make sure fds 0-2 are open (on the console, else /dev/null), so the port we
/// open later can never land on them and receive our log lines.
fn ensure_std_fds() {
    if (0..3).all(sys::fd_is_open) {
        return;
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
        .or_else(|_| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
        });
    if let Ok(f) = f {
        for fd in 0..3 {
            if !sys::fd_is_open(fd) {
                let _ = sys::dup2(f.as_raw_fd(), fd);
            }
        }
        if f.as_raw_fd() > 2 {
            drop(f);
        } else {
            // It landed on a standard fd itself: keep it open there.
            let _ = f.into_raw_fd();
        }
    }
}

/// Power off: stop processes, sync, remount read-only, `reboot`. In dev mode
/// (not PID 1) only our own children are killed and the agent exits.
pub(crate) fn shutdown(ctx: &Ctx) -> ! {
    ctx.out().flush();
    log!("shutting down");
    if !ctx.pid1 {
        for (_, pgid) in lock(&ctx.exec_groups).drain() {
            let _ = sys::kill(-pgid, libc::SIGKILL);
        }
        ctx.interp.kill();
        std::process::exit(0);
    }
    let _ = sys::kill(-1, libc::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < TERM_GRACE {
        ctx.reaper.reap_all();
        // kill(-1, 0) fails with ESRCH once no other process is left.
        if sys::kill(-1, 0).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = sys::kill(-1, libc::SIGKILL);
    ctx.reaper.reap_all();
    sys::sync();
    for t in ["/tmp", "/run", "/dev/shm", "/dev/pts"] {
        let _ = sys::umount(t, libc::MNT_DETACH);
    }
    if let Err(e) = sys::mount("none", "/", None, libc::MS_REMOUNT | libc::MS_RDONLY, None) {
        log!("remount / read-only: {e}");
    }
    sys::sync();
    let e = sys::reboot(libc::RB_POWER_OFF);
    log!("power off failed ({e}); rebooting (QEMU -no-reboot exits)");
    let e = sys::reboot(libc::RB_AUTOBOOT);
    log!("reboot failed: {e}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
