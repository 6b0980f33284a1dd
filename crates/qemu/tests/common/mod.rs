//! Test fixtures for tier-2 tests: a Debian cloud kernel (downloaded once, cached
//! in /var/tmp/zygote-test-kernel) and a busybox initramfs whose /init prints
//! [`MARKER`] on the console and idles.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Printed by the test guest's /init on /dev/console.
pub const MARKER: &str = "ZYGOTE-TEST-MARKER";
/// Where the kernel is cached between runs.
pub const KERNEL_CACHE: &str = "/var/tmp/zygote-test-kernel";

fn sh(script: &str, dir: &Path) -> Result<String, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{script}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn fetch_kernel() -> Result<PathBuf, String> {
    let dir = PathBuf::from(KERNEL_CACHE);
    let kernel = dir.join("vmlinuz");
    if kernel.exists() {
        return Ok(kernel);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {dir:?}: {e}"))?;
    let pkg = sh(
        "apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image/{print $2; exit}'",
        &dir,
    )?;
    if pkg.is_empty() {
        return Err("apt-cache knows no linux-image-cloud-amd64 dependency".into());
    }
    sh(&format!("apt-get download {pkg}"), &dir)?;
    sh(
        "rm -rf x && dpkg-deb -x linux-image-*.deb x && cp x/boot/vmlinuz-* vmlinuz.tmp && mv vmlinuz.tmp vmlinuz",
        &dir,
    )?;
    Ok(kernel)
}

/// The cached test kernel, fetched on first use; `Err(reason)` to skip.
pub fn kernel() -> Result<PathBuf, String> {
    static K: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    K.get_or_init(fetch_kernel).clone()
}

/// Writes a newc initramfs into `dir` and returns its path.
pub fn initramfs(dir: &Path) -> Result<PathBuf, String> {
    let root = dir.join("initramfs-root");
    for d in ["bin", "dev", "proc", "sys"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return Err("/bin/busybox missing (apt-get install busybox-static)".into());
    }
    std::fs::copy(busybox, root.join("bin/busybox")).map_err(|e| e.to_string())?;
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mount -t devtmpfs dev /dev\n\
         /bin/busybox mount -t proc proc /proc\n\
         echo \"{MARKER} uptime=$(/bin/busybox cat /proc/uptime)\" > /dev/console\n\
         while true; do /bin/busybox sleep 1000; done\n"
    );
    let init_path = root.join("init");
    std::fs::write(&init_path, init).map_err(|e| e.to_string())?;
    sh(&format!("chmod 755 {}", init_path.display()), dir)?;
    let out = dir.join("initrd.cpio");
    sh(
        &format!(
            "cd {} && find . | cpio -o -H newc --quiet > {}",
            root.display(),
            out.display()
        ),
        dir,
    )?;
    Ok(out)
}

/// Skips the calling test with a printed reason.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        eprintln!("SKIPPED: {}", format!($($arg)*));
        return;
    }};
}
