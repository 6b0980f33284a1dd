//! The initramfs: an uncompressed newc cpio with busybox, the virtio modules and `/init`.
//!
//! Owns the newc writer (deterministic: every entry is root-owned with mtime 0,
//! so identical inputs give identical bytes), the `/init` script and the list of
//! busybox applets linked in. It writes one file and touches nothing else.

use std::fs;
use std::path::Path;

use crate::error::ImageError;
use crate::modules::Module;

/// The `/init` template; `@MODULES@` becomes the load order.
pub(crate) const INIT_TEMPLATE: &str = include_str!("init.sh");

/// How long `/init` waits for `/dev/vda`, in its 10 ms polling steps.
const ROOT_WAIT_TICKS: u32 = 1000;

/// Busybox applets `/init` uses (plus a few for debugging with `rdinit=/bin/sh`).
const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "umount",
    "insmod",
    "switch_root",
    "sleep",
    "echo",
    "cat",
    "ls",
    "tr",
    "poweroff",
    "reboot",
    "mkdir",
    "dmesg",
    "lsmod",
    "uname",
];

/// Renders `/init` for the given module load order.
pub(crate) fn init_script(modules: &[Module]) -> String {
    let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
    INIT_TEMPLATE
        .replace("@MODULES@", &names.join(" "))
        .replace("@WAIT_TICKS@", &ROOT_WAIT_TICKS.to_string())
        .replace("@WAIT_SECS@", &(ROOT_WAIT_TICKS / 100).to_string())
}

/// Writes the initramfs to `out`, uncompressed: the kernel unpacks it at
/// boot, and under TCG inflating the gzip'd 1.1 MB (2.2 MB raw) archive cost
/// about 0.1 s of emulated CPU per boot (6 interleaved boots each, min to
/// `HelloOk` 3.29 s gzip vs 3.19 s raw); the extra megabyte is only read by
/// QEMU from the page cache.
pub(crate) fn write(out: &Path, busybox: &[u8], modules: &[Module]) -> Result<(), ImageError> {
    let cpio = archive(busybox, modules, &init_script(modules));
    fs::write(out, cpio).map_err(ImageError::io("write", out))
}

/// The uncompressed newc archive.
pub(crate) fn archive(busybox: &[u8], modules: &[Module], init: &str) -> Vec<u8> {
    let mut w = Newc::default();
    for d in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "newroot",
        "lib",
        "lib/modules",
    ] {
        w.dir(d);
    }
    // The kernel opens /dev/console before running /init; without the node the
    // init has no stdout and its messages vanish.
    w.chardev("dev/console", 0o600, 5, 1);
    w.chardev("dev/null", 0o666, 1, 3);
    w.file("bin/busybox", 0o755, busybox);
    for a in APPLETS {
        w.symlink(&format!("bin/{a}"), "busybox");
    }
    for m in modules {
        w.file(&format!("lib/modules/{}.ko", m.name), 0o644, &m.bytes);
    }
    w.file("init", 0o755, init.as_bytes());
    w.finish()
}

/// A minimal newc ("070701") cpio writer.
#[derive(Default)]
struct Newc {
    buf: Vec<u8>,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Newc {
    fn dir(&mut self, name: &str) {
        self.entry(name, S_IFDIR | 0o755, 2, (0, 0), b"");
    }
    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | perm, 1, (0, 0), data);
    }
    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }
    fn chardev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | perm, 1, (major, minor), b"");
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let ino = if name == "TRAILER!!!" { 0 } else { self.ino };
        let fields: [u32; 13] = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), b"");
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn module(name: &str) -> Module {
        Module {
            name: name.into(),
            bytes: vec![1, 2, 3],
        }
    }

    #[test]
    fn init_has_modules_in_order() {
        let s = init_script(&[module("virtio_ring"), module("virtio")]);
        assert!(s.contains("for m in virtio_ring virtio; do"), "{s}");
        assert!(!s.contains('@'), "unexpanded placeholder in {s}");
        assert!(s.starts_with("#!/bin/sh\n"));
    }

    #[test]
    fn archive_is_aligned_and_terminated() {
        let a = archive(b"busybox", &[module("virtio")], "#!/bin/sh\n");
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        let tail = String::from_utf8_lossy(&a[a.len() - 32..]).into_owned();
        assert!(tail.contains("TRAILER!!!"), "{tail:?}");
        // Deterministic.
        assert_eq!(a, archive(b"busybox", &[module("virtio")], "#!/bin/sh\n"));
    }

    #[test]
    fn archive_lists_with_cpio_tool() {
        let Some(cpio) = host::find_tool("cpio") else {
            eprintln!("skipping archive_lists_with_cpio_tool: `cpio` not installed");
            return;
        };
        let a = archive(b"busybox", &[module("virtio")], "#!/bin/sh\n");
        let mut child = Command::new(cpio)
            .args(["-t", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn cpio");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&a)
            .expect("write");
        let out = child.wait_with_output().expect("cpio");
        assert!(out.status.success());
        let list = String::from_utf8_lossy(&out.stdout);
        for want in [
            "init",
            "bin/busybox",
            "bin/sh",
            "dev/console",
            "lib/modules/virtio.ko",
        ] {
            assert!(
                list.lines().any(|l| l == want),
                "{want} missing from {list}"
            );
        }
    }
}
