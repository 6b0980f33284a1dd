//! Tier-3 test: a real image build and boot (root, debootstrap, network to the
//! Debian mirror, QEMU, gcc). Slow (1-2 min cold), so it runs only with
//! `ZYGOTE_IMAGE_TESTS=1`; otherwise it prints why it skipped.
//!
//! `ZYGOTE_IMAGE_TEST_HOME` reuses a home (and its debootstrap cache) across
//! runs; by default a fresh temporary home is used.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` to run the real build test.
const ENV_RUN: &str = "ZYGOTE_IMAGE_TESTS";
/// Optional home directory to build into (default: a temporary directory).
const ENV_HOME: &str = "ZYGOTE_IMAGE_TEST_HOME";

fn skip_reason() -> Option<String> {
    if std::env::var(ENV_RUN).as_deref() != Ok("1") {
        return Some(format!(
            "set {ENV_RUN}=1 to run (needs root, debootstrap, network, qemu)"
        ));
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    if uid.split_whitespace().nth(2) != Some("0") {
        return Some("not root".into());
    }
    for tool in [
        "/usr/sbin/debootstrap",
        "/usr/bin/qemu-system-x86_64",
        "/usr/bin/gcc",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} missing (scripts/install-deps.sh)"));
        }
    }
    None
}

fn agent_ok(dir: &Path) -> PathBuf {
    let out = dir.join("agent-ok");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/agent-ok.c");
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .expect("run gcc");
    assert!(st.success(), "gcc -static failed (is libc6-dev installed?)");
    out
}

/// Boots the image; returns the console output.
fn boot(info: &zygote_image::ImageInfo) -> String {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M", "microvm", "-accel", "tcg", "-cpu", "max", "-m", "256M",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", "stdio", "-kernel"])
        .arg(&info.kernel)
        .arg("-initrd")
        .arg(&info.initrd)
        .arg("-append")
        .arg(zygote_qemu::default_append(zygote_qemu::Accel::Tcg).expect("host TSC rate"))
        .arg("-drive")
        .arg(format!(
            "id=d0,file={},format=raw,if=none,snapshot=on",
            info.rootfs.display()
        ))
        .args([
            "-device",
            "virtio-blk-device,drive=d0",
            "-device",
            "virtio-serial-device",
        ])
        .args(["-device", "virtio-rng-device"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qemu");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    out
}

#[test]
fn build_boot_and_rebuild() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping build_boot_and_rebuild: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = std::env::var_os(ENV_HOME)
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("home"));
    let agent = agent_ok(tmp.path());
    let recipe = zygote_image::load_recipe(None).expect("builtin recipe");
    let opts = zygote_image::BuildOptions {
        home: &home,
        agent_bin: &agent,
    };

    let t = Instant::now();
    let mut steps = Vec::new();
    let first = zygote_image::build(&recipe, &opts, &mut |p| steps.push(p)).expect("build");
    eprintln!(
        "first build: {:.1}s cached={} steps={steps:?}",
        t.elapsed().as_secs_f64(),
        first.cached
    );
    let info = &first.image;
    for p in [&info.kernel, &info.initrd, &info.rootfs] {
        assert!(p.is_file(), "{} missing", p.display());
    }
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&info.rootfs)
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );

    // Unchanged: a no-op in well under a second.
    let t = Instant::now();
    let again = zygote_image::build(&recipe, &opts, &mut |_| {}).expect("rebuild");
    let secs = t.elapsed().as_secs_f64();
    assert!(again.cached, "unchanged recipe rebuilt");
    assert_eq!(again.image.id, info.id);
    assert!(secs < 1.0, "cached rebuild took {secs:.2}s");

    let resolved = zygote_image::resolve(&home, "python").expect("resolve");
    assert_eq!(resolved.id, info.id);
    assert_eq!(zygote_image::list(&home).expect("list").len(), 1);

    // The image boots to the agent with the virtio modules loaded.
    let console = boot(info);
    assert!(
        console.contains("AGENT-OK pid=1"),
        "agent not reached; console:\n{console}"
    );
    for m in ["virtio_blk", "virtio_console", "virtio_mmio", "virtio_rng"] {
        assert!(
            console.contains(&format!("MODULE {m} ")),
            "{m} not loaded; console:\n{console}"
        );
    }

    // A misspelt package is named in the error.
    let bad = zygote_image::parse_recipe(
        "name = \"bad\"\nrelease = \"bookworm\"\npackages = [\"pyhton3\"]\n",
        Path::new("bad.toml"),
        Path::new("/"),
    )
    .expect("parse");
    let err = zygote_image::build(&bad, &opts, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`pyhton3`") && msg.contains("bad.toml"),
        "{msg}"
    );
}
