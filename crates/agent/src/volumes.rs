//! Volumes: `Mounts`. A volume is a virtio disk in a slot, found by its
//! serial (`vol0`, ...) under `/sys/block/vd*/serial`. Every slot's device is
//! there from boot (an empty slot is a 0-byte disk), so a child restored from a
//! snapshot has its parent's devices; what changed is the disk behind a slot,
//! which the guest sees only once the device is probed again (unbound from
//! `virtio_blk` and bound back).

use std::path::Path;
use std::time::{Duration, Instant};

use zygote_proto::agent::{AgentError, ErrorKind, MountSpec};

use crate::sys;
use crate::util::{bad, err};

/// How long a re-probed disk may take to come back.
const PROBE_WAIT: Duration = Duration::from_secs(10);
/// The virtio-blk driver's sysfs directory.
const DRIVER: &str = "/sys/bus/virtio/drivers/virtio_blk";

/// `Mounts`: clear the slots in `reset`, then mount each volume.
pub(crate) fn mounts(reset: &[String], mounts: &[MountSpec]) -> Result<(), AgentError> {
    for serial in reset {
        clear_slot(serial)?;
    }
    for m in mounts {
        mount_one(m)?;
    }
    Ok(())
}

fn internal(what: String, e: std::io::Error) -> AgentError {
    err(ErrorKind::Internal, format!("{what}: {e}"))
}

/// The block device (`vdc`) whose serial is `serial`.
fn disk_of(serial: &str) -> Option<String> {
    let dir = std::fs::read_dir("/sys/block").ok()?;
    dir.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let s = std::fs::read_to_string(e.path().join("serial")).ok()?;
        (s.trim() == serial).then_some(name)
    })
}

/// Mount points whose source is `/dev/<disk>`, deepest last.
fn mounted_from(disk: &str) -> Vec<String> {
    let want = format!("/dev/{disk}");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let target = left.split(' ').nth(4)?;
            let source = right.split(' ').nth(1)?;
            (source == want).then(|| unescape(target))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `FS_IOC_SHUTDOWN` (ext4's `EXT4_IOC_SHUTDOWN`, `_IOR('X', 125, __u32)`).
const FS_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
/// Shut down without flushing the journal: nothing more is written.
const SHUTDOWN_NOLOGFLUSH: u32 = 2;

/// Unmount what is mounted from slot `serial` and probe its device again.
/// Each file system is shut down first, so nothing it still holds (dirty
/// pages, a journal commit, a process with a file open on it) ever reaches the
/// device again: the disk in the slot may be another one by now.
fn clear_slot(serial: &str) -> Result<(), AgentError> {
    let disk = disk_of(serial)
        .ok_or_else(|| bad(format!("no disk with serial `{serial}` in this guest")))?;
    for target in mounted_from(&disk).iter().rev() {
        if let Err(e) = sys::ioctl_u32(target, FS_IOC_SHUTDOWN, SHUTDOWN_NOLOGFLUSH) {
            crate::util::log!("cannot shut down the file system on {target}: {e}");
        }
        sys::umount(target, libc::MNT_DETACH)
            .map_err(|e| internal(format!("cannot unmount {target}"), e))?;
    }
    reprobe(&disk, serial)
}

/// Unbind `disk`'s virtio device from its driver and bind it again; wait for
/// the disk with `serial` to be back.
fn reprobe(disk: &str, serial: &str) -> Result<(), AgentError> {
    let link = std::fs::read_link(format!("/sys/block/{disk}/device"))
        .map_err(|e| internal(format!("cannot find the device of {disk}"), e))?;
    let device = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| err(ErrorKind::Internal, format!("{disk}: no device name")))?;
    std::fs::write(format!("{DRIVER}/unbind"), &device)
        .map_err(|e| internal(format!("cannot unbind {device} ({disk})"), e))?;
    std::fs::write(format!("{DRIVER}/bind"), &device)
        .map_err(|e| internal(format!("cannot bind {device} again"), e))?;
    let t0 = Instant::now();
    while disk_of(serial).is_none() {
        if t0.elapsed() > PROBE_WAIT {
            return Err(err(
                ErrorKind::Internal,
                format!("the disk with serial `{serial}` did not come back within {PROBE_WAIT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn mount_one(m: &MountSpec) -> Result<(), AgentError> {
    if !m.path.starts_with('/') || m.path.split('/').any(|c| c == "..") {
        return Err(bad(format!(
            "mount point `{}` must be an absolute path without `..`",
            m.path
        )));
    }
    let mut disk = disk_of(&m.serial)
        .ok_or_else(|| bad(format!("no disk with serial `{}` in this guest", m.serial)))?;
    if m.reprobe {
        reprobe(&disk, &m.serial)?;
        disk = disk_of(&m.serial).unwrap_or(disk);
    }
    std::fs::create_dir_all(&m.path)
        .map_err(|e| internal(format!("cannot create the mount point {}", m.path), e))?;
    let dev = format!("/dev/{disk}");
    if !Path::new(&dev).exists() {
        return Err(err(ErrorKind::Internal, format!("{dev} is missing")));
    }
    let mut flags = libc::MS_NODEV | libc::MS_NOSUID;
    if m.read_only {
        flags |= libc::MS_RDONLY;
    }
    sys::mount(&dev, &m.path, Some("ext4"), flags, None).map_err(|e| {
        internal(
            format!("cannot mount {dev} ({}) on {}", m.serial, m.path),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape("/data"), "/data");
        assert_eq!(unescape("/my\\040dir"), "/my dir");
        assert_eq!(unescape("/a\\134b"), "/a\\b");
        assert_eq!(unescape("/x\\"), "/x\\");
        assert_eq!(unescape("/é\\é"), "/é\\é");
    }

    #[test]
    fn bad_mount_points_are_refused_before_anything_happens() {
        for path in ["data", "/a/../etc"] {
            let e = mount_one(&MountSpec {
                serial: "vol0".into(),
                path: path.into(),
                read_only: false,
                reprobe: false,
            })
            .unwrap_err();
            assert!(e.message.contains("absolute path"), "{e:?}");
        }
    }
}
