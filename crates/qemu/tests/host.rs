//! Tier 2: a real QEMU on this host, booting a tiny busybox guest under the full
//! zygote command line with a zygote-mem memfd as its RAM.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::MARKER;
use serde_json::Value;
use zygote_mem::MemFd;
use zygote_qemu::accel::KvmFacts;
use zygote_qemu::{
    choose_accel, cpu_model, create_overlay, default_append, detect_qemu, read_tail, wait_event,
    Accel, QemuBinary, QemuProcess, Qmp, VmConfig,
};

const MEM_MIB: u64 = 256;
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn qemu_or_skip() -> Option<QemuBinary> {
    match detect_qemu() {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

fn config(dir: &Path, mem: &MemFd, kernel: &Path, initrd: &Path, disk: &Path) -> VmConfig {
    VmConfig {
        accel: Accel::Tcg,
        cpu: cpu_model(Accel::Tcg).into(),
        memory_mib: MEM_MIB,
        vcpus: 1,
        mem_path: mem.backend_path(),
        mem_share: true,
        kernel: kernel.into(),
        initrd: initrd.into(),
        append: default_append(Accel::Tcg).unwrap(),
        disk: disk.into(),
        xfer_disk: None,
        volumes: Vec::new(),
        qmp_socket: dir.join("qmp.sock"),
        agent_socket: dir.join("agent.sock"),
        console_log: dir.join("console.log"),
        incoming_defer: false,
        start_paused: false,
        tb_size_mib: Some(32),
        nic: None,
        name: "zygote-test".into(),
    }
}

async fn overlay(dir: &Path) -> std::path::PathBuf {
    let base = dir.join("base.raw");
    std::fs::File::create(&base)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let ov = dir.join("gen1.qcow2");
    create_overlay(&base, "raw", &ov).await.unwrap();
    ov
}

#[test]
fn version_is_detected_from_the_binary() {
    let Some(bin) = qemu_or_skip() else { return };
    let out = std::process::Command::new(&bin.path)
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (ma, mi, mc) = bin.version;
    assert!(
        text.contains(&format!("version {ma}.{mi}.{mc}"))
            || text.contains(&format!("version {ma}.{mi} ")),
        "{text}"
    );
    assert!(bin.version >= (9, 0, 0));
}

#[test]
fn accel_on_this_host() {
    let facts = KvmFacts::probe();
    let choice = choose_accel(None).unwrap();
    eprintln!("accel: {} ({})", choice.accel, choice.reason);
    match facts.unusable_reason() {
        Some(_) => {
            assert_eq!(choice.accel, Accel::Tcg);
            if facts.pvm_module {
                assert!(choice.reason.contains("kvm_pvm"), "{}", choice.reason);
            }
            if facts.cpu_flag.is_none() {
                assert!(choice.reason.contains("vmx"), "{}", choice.reason);
            }
            let e = choose_accel(Some(Accel::Kvm)).unwrap_err();
            assert!(e.to_string().contains("--accel tcg"), "{e}");
        }
        None => assert_eq!(choice.accel, Accel::Kvm),
    }
}

#[tokio::test]
async fn overlay_has_the_base_as_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    let ov = overlay(dir.path()).await;
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&ov)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["format"], "qcow2");
    assert_eq!(v["backing-filename-format"], "raw");
    assert!(v["backing-filename"]
        .as_str()
        .unwrap()
        .ends_with("base.raw"));
    let err = create_overlay(
        &dir.path().join("missing"),
        "raw",
        &dir.path().join("o.qcow2"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test]
async fn a_failing_qemu_reports_its_stderr() {
    let Some(bin) = qemu_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mem = MemFd::create("zygote-test-bad", MEM_MIB << 20).unwrap();
    let mut cfg = config(
        dir.path(),
        &mem,
        Path::new("/nonexistent/vmlinuz"),
        Path::new("/nonexistent/initrd"),
        &dir.path().join("no-such-disk.qcow2"),
    );
    cfg.name = "zygote-test-bad".into();
    let mut p = QemuProcess::spawn(&bin, &cfg, &[]).unwrap();
    let exit = p.wait_timeout(Duration::from_secs(30)).await.unwrap();
    assert!(!exit.status.expect("our child has a status").success());
    assert!(exit.stderr_tail.contains("no-such-disk"), "{exit}");
    let msg = p.exited_error(exit).to_string();
    assert!(
        msg.contains("zygote-test-bad") && msg.contains("no-such-disk"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_a_tiny_guest_with_memfd_ram() {
    let Some(bin) = qemu_or_skip() else { return };
    let kernel = match common::kernel() {
        Ok(k) => k,
        Err(e) => skip!("no test kernel: {e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let initrd = match common::initramfs(dir.path()) {
        Ok(i) => i,
        Err(e) => skip!("cannot build the initramfs: {e}"),
    };
    let disk = overlay(dir.path()).await;
    let mem = MemFd::create("zygote-test-ram", MEM_MIB << 20).unwrap();
    let cfg = config(dir.path(), &mem, &kernel, &initrd, &disk);
    let allocated_before = mem.allocated_bytes().unwrap();

    let start = Instant::now();
    let mut p = QemuProcess::spawn(&bin, &cfg, &[]).unwrap();
    let qmp = Qmp::connect(&cfg.qmp_socket, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(qmp.query_status().await.unwrap(), "running");

    // The marker on the console.
    loop {
        let log = read_tail(&cfg.console_log, 64 << 10);
        if log.contains(MARKER) {
            eprintln!(
                "marker after {:?}: {}",
                start.elapsed(),
                log.lines().find(|l| l.contains(MARKER)).unwrap_or("")
            );
            break;
        }
        if let Some(exit) = p.try_wait().await.unwrap() {
            panic!("QEMU exited before the marker: {exit}");
        }
        assert!(
            start.elapsed() < BOOT_TIMEOUT,
            "no marker after {BOOT_TIMEOUT:?}; console: {log:?}; qemu: {}",
            p.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The guest's RAM is our memfd.
    let allocated = mem.allocated_bytes().unwrap();
    eprintln!(
        "memfd allocated: {} -> {} bytes",
        allocated_before, allocated
    );
    assert!(allocated >= allocated_before + (16 << 20), "{allocated}");
    assert!(!mem.data_ranges().unwrap().is_empty());

    // stop / cont produce STOP / RESUME with timestamps, from a second task too.
    let mut ev = qmp.events();
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    qmp.stop().await.unwrap();
    let stop = wait_event(&mut ev, Duration::from_secs(5), |e| e.name == "STOP")
        .await
        .expect("STOP event");
    assert_eq!(qmp.query_status().await.unwrap(), "paused");
    qmp.cont().await.unwrap();
    let resume = wait_event(&mut ev, Duration::from_secs(5), |e| e.name == "RESUME")
        .await
        .expect("RESUME event");
    assert!(stop.timestamp_us + 2_000_000 > t0 && stop.timestamp_us <= resume.timestamp_us);
    eprintln!(
        "pause STOP->RESUME {} us",
        resume.timestamp_us - stop.timestamp_us
    );
    assert_eq!(qmp.query_status().await.unwrap(), "running");

    // QMP errors carry class and command.
    let err = qmp
        .execute("no-such-command", Value::Null)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CommandNotFound"), "{err}");

    // quit ends the process; later commands fail with QmpClosed.
    qmp.quit().await.unwrap();
    let exit = p.wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert!(
        exit.status.expect("our child has a status").success(),
        "{exit}"
    );
    let err = qmp.query_status().await.unwrap_err();
    assert!(
        matches!(err, zygote_qemu::QemuError::QmpClosed { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn kill_ends_a_running_qemu() {
    let Some(bin) = qemu_or_skip() else { return };
    let kernel = match common::kernel() {
        Ok(k) => k,
        Err(e) => skip!("no test kernel: {e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let initrd = common::initramfs(dir.path()).unwrap();
    let disk = overlay(dir.path()).await;
    let mem = MemFd::create("zygote-test-kill", MEM_MIB << 20).unwrap();
    let mut cfg = config(dir.path(), &mem, &kernel, &initrd, &disk);
    cfg.start_paused = true;
    cfg.name = "zygote-test-kill".into();
    let mut p = QemuProcess::spawn(&bin, &cfg, &[]).unwrap();
    let qmp = Qmp::connect(&cfg.qmp_socket, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(qmp.query_status().await.unwrap(), "prelaunch");
    let exit = p.kill(Duration::from_secs(5)).await.unwrap();
    let status = exit.status.expect("our child has a status");
    assert!(!status.success() || status.code() == Some(0), "{exit}");
    assert!(p.try_wait().await.unwrap().is_some());
}

#[tokio::test]
async fn a_volume_slot_takes_a_new_disk_under_its_device() {
    let Some(bin) = qemu_or_skip() else { return };
    let kernel = match common::kernel() {
        Ok(k) => k,
        Err(e) => skip!("no test kernel: {e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let initrd = common::initramfs(dir.path()).unwrap();
    let disk = overlay(dir.path()).await;
    let vol = dir.path().join("vol.img");
    std::fs::File::create(&vol)
        .unwrap()
        .set_len(48 << 20)
        .unwrap();
    let mem = MemFd::create("zygote-test-vol", MEM_MIB << 20).unwrap();
    let mut cfg = config(dir.path(), &mem, &kernel, &initrd, &disk);
    cfg.start_paused = true;
    cfg.name = "zygote-test-vol".into();
    cfg.volumes = vec![None, None];
    let mut p = QemuProcess::spawn(&bin, &cfg, &[]).unwrap();
    let qmp = Qmp::connect(&cfg.qmp_socket, Duration::from_secs(10))
        .await
        .unwrap();
    let size_of = |blocks: &Value, node: &str| {
        blocks
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["inserted"]["node-name"] == node)
            .map(|b| b["inserted"]["image"]["virtual-size"].as_u64().unwrap())
    };
    let before = qmp.execute("query-block", Value::Null).await.unwrap();
    assert_eq!(
        size_of(&before, "v1"),
        Some(0),
        "an empty slot is a 0-byte disk"
    );
    qmp.set_volume(
        1,
        &zygote_qemu::VolumeDrive {
            path: vol.clone(),
            qcow2: false,
        },
    )
    .await
    .unwrap();
    let after = qmp.execute("query-block", Value::Null).await.unwrap();
    assert_eq!(size_of(&after, "v1"), Some(48 << 20));
    assert_eq!(size_of(&after, "v0"), Some(0));
    let e = qmp
        .set_volume(
            0,
            &zygote_qemu::VolumeDrive {
                path: dir.path().join("absent.img"),
                qcow2: false,
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("absent.img"), "{e}");
    let after = qmp.execute("query-block", Value::Null).await.unwrap();
    assert_eq!(
        size_of(&after, "v0"),
        Some(0),
        "a failed swap leaves the slot as it was"
    );
    p.kill(Duration::from_secs(5)).await.unwrap();
}
