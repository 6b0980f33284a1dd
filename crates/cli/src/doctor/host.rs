//! Host checks: platform, hardware virtualisation, the accelerator, QEMU and
//! qemu-img, the guest kernel and image, free space in the home. The decisions
//! are the ones the daemon makes (zygote-qemu's accel and binary detection,
//! zygote-image's layout); nothing is re-implemented here.

use std::path::Path;

use zygote_qemu::accel::KvmFacts;

use super::Check;

const INSTALL_HINT: &str = "install the host packages: sudo scripts/install-deps.sh (qemu-system-x86 and qemu-utils >= 9.0)";

pub(super) fn checks(home: &Path, image: &str, accel: &str) -> Vec<Check> {
    let mut v = vec![
        platform(),
        hardware_virtualisation(),
        accelerator(accel),
        qemu(),
        qemu_img(),
    ];
    v.extend(image_checks(home, image));
    v.push(home_space(home));
    v
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn platform() -> Check {
    let n = "platform";
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    if os != "linux" || arch != "x86_64" {
        return Check::fail(
            n,
            format!("{os}/{arch}"),
            "zygote runs on Linux x86_64 only (QEMU microvm guests of x86_64)",
        );
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let distro = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|s| s.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown distribution".into());
    let detail = format!("Linux {} x86_64, {distro}", release.trim());
    if is_root() {
        Check::pass(n, format!("{detail}, running as root"))
    } else {
        Check::warn(
            n,
            format!("{detail}, not root: some checks below cannot see everything"),
            "run the daemon (and this check) as root: sudo zygote doctor",
        )
    }
}

fn hardware_virtualisation() -> Check {
    let n = "hardware_virtualisation";
    let facts = KvmFacts::probe();
    match facts.unusable_reason() {
        None => Check::pass(
            n,
            format!(
                "{} in /proc/cpuinfo, /dev/kvm, {} loaded",
                facts.cpu_flag.unwrap_or("?"),
                facts.hw_module.unwrap_or("?")
            ),
        ),
        Some(reason) => {
            let mut hint = String::from(
                "guests run under TCG (software emulation, several times slower); for KVM use \
                 a host with VT-x/AMD-V enabled (nested virtualisation on a cloud VM) and \
                 `modprobe kvm_intel` or `modprobe kvm_amd`",
            );
            if facts.pvm_module {
                hint.push_str("; the kvm_pvm /dev/kvm here is not usable for that");
            }
            Check::warn(n, format!("KVM unusable: {reason}"), hint)
        }
    }
}

fn accelerator(requested: &str) -> Check {
    let n = "accelerator";
    let req = match zygote_qemu::parse_accel(requested) {
        Ok(r) => r,
        Err(e) => return Check::fail(n, e.to_string(), "pass --accel auto, kvm or tcg"),
    };
    match zygote_qemu::choose_accel(req) {
        // The KVM reason is the hardware_virtualisation check's detail; do not repeat it.
        Ok(c) if req.is_none() && c.accel == zygote_qemu::Accel::Tcg => Check::pass(
            n,
            "tcg (auto: KVM is unusable, see hardware_virtualisation; the daemon uses TCG)",
        ),
        Ok(c) => Check::pass(n, format!("{}: {}", c.accel, c.reason)),
        Err(e) => Check::fail(
            n,
            e.to_string(),
            "start the daemon with --accel auto or --accel tcg",
        ),
    }
}

fn fmt_version(v: (u32, u32, u32)) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

fn qemu() -> Check {
    let n = "qemu";
    match zygote_qemu::detect_qemu() {
        Ok(b) => Check::pass(
            n,
            format!("{} {}", b.path.display(), fmt_version(b.version)),
        ),
        Err(e) => Check::fail(
            n,
            e.to_string(),
            format!(
                "{INSTALL_HINT}, or point {} at the binary",
                zygote_qemu::binary::ENV_QEMU
            ),
        ),
    }
}

fn qemu_img() -> Check {
    let n = "qemu_img";
    match zygote_qemu::binary::detect_qemu_img() {
        Ok((p, v)) => Check::pass(n, format!("{} {}", p.display(), fmt_version(v))),
        Err(e) => Check::fail(
            n,
            e.to_string(),
            format!(
                "{INSTALL_HINT}, or point {} at the binary",
                zygote_qemu::binary::ENV_QEMU_IMG
            ),
        ),
    }
}

fn image_checks(home: &Path, image: &str) -> [Check; 2] {
    let build = format!(
        "build it: sudo zygote image build{} --home {}",
        if image == zygote_engine::DEFAULT_IMAGE {
            String::new()
        } else {
            format!(" {image}")
        },
        home.display()
    );
    match zygote_image::resolve(home, image) {
        Ok(info) => {
            let kernel = match std::fs::metadata(&info.kernel) {
                Ok(m) if m.len() > 0 && info.initrd.is_file() => Check::pass(
                    "guest_kernel",
                    format!("{} ({})", info.kernel_version, info.kernel.display()),
                ),
                _ => Check::fail(
                    "guest_kernel",
                    format!(
                        "{} is empty or has no initrd beside it",
                        info.kernel.display()
                    ),
                    build.clone(),
                ),
            };
            let img = Check::pass(
                "image",
                format!(
                    "{} {} ({}, rootfs {} MB) in {}",
                    info.name,
                    &info.id[..12.min(info.id.len())],
                    info.release,
                    info.rootfs_bytes / 1_000_000,
                    info.dir.display()
                ),
            );
            [kernel, img]
        }
        Err(e) => [
            Check::fail(
                "guest_kernel",
                format!(
                    "no guest kernel: image `{image}` is not built in {}",
                    home.display()
                ),
                build.clone(),
            ),
            Check::fail("image", e.to_string(), build),
        ],
    }
}

/// Bytes available to unprivileged users on the filesystem holding `path` (or
/// its nearest existing ancestor), and that ancestor.
fn free_bytes(path: &Path) -> std::io::Result<(u64, std::path::PathBuf)> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        }
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path that outlives the call and `st` points to
    // writable memory for one `statvfs`.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    Ok((st.f_bavail.saturating_mul(st.f_frsize), p))
}

/// Below this the home check fails: an image build alone needs about 2 GB.
const FAIL_BELOW: u64 = 2_000_000_000;
/// Below this it warns: each persisted snapshot writes up to its guest RAM.
const WARN_BELOW: u64 = 10_000_000_000;

fn home_space(home: &Path) -> Check {
    let n = "home_space";
    match free_bytes(home) {
        Err(e) => Check::fail(
            n,
            format!("cannot read free space of {}: {e}", home.display()),
            "pass an existing directory with --home (env ZYGOTE_HOME)",
        ),
        Ok((free, on)) => {
            let gb = free as f64 / 1e9;
            let detail = format!(
                "{gb:.1} GB free on {} (home {})",
                on.display(),
                home.display()
            );
            if free < FAIL_BELOW {
                Check::fail(
                    n,
                    detail,
                    "free space or move the home (--home, env ZYGOTE_HOME): an image build needs about 2 GB",
                )
            } else if free < WARN_BELOW {
                Check::warn(
                    n,
                    detail,
                    "snapshots write memory.bin up to their guest RAM each: keep 10 GB or more free",
                )
            } else {
                Check::pass(n, detail)
            }
        }
    }
}
