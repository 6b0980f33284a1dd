//! Tier 2, manual: boots the test guest N times through the zygote API and reports
//! how many reached init, the boot-time p50, and where hung guests' CPU 0 was.
//! Reproduces the TCG boot-hang numbers in `zygote_qemu::timing`:
//!
//! ```text
//! ZYGOTE_BOOT_LOOP=50 cargo test -p zygote-qemu --test boot_loop -- --ignored --nocapture
//! ZYGOTE_BOOT_LOOP=50 ZYGOTE_BOOT_APPEND="console=ttyS0 rdinit=/init quiet" \
//!     cargo test -p zygote-qemu --test boot_loop -- --ignored --nocapture   # without the fix
//! ```

mod common;

use std::time::{Duration, Instant};

use zygote_mem::MemFd;
use zygote_qemu::{
    cpu_model, create_overlay, default_append, detect_qemu, read_tail, Accel, QemuProcess, Qmp,
    VmConfig,
};

const PER_BOOT_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "manual: boots QEMU ZYGOTE_BOOT_LOOP times"]
async fn boot_loop() {
    let n: usize = std::env::var("ZYGOTE_BOOT_LOOP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let append =
        std::env::var("ZYGOTE_BOOT_APPEND").unwrap_or_else(|_| default_append(Accel::Tcg).unwrap());
    let bin = match detect_qemu() {
        Ok(b) => b,
        Err(e) => skip!("{e}"),
    };
    let kernel = match common::kernel() {
        Ok(k) => k,
        Err(e) => skip!("no test kernel: {e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let initrd = common::initramfs(dir.path()).unwrap();
    let base = dir.path().join("base.raw");
    std::fs::File::create(&base)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    eprintln!("append: {append}");

    let mut times = Vec::new();
    let mut hung = Vec::new();
    for i in 0..n {
        let vm = dir.path().join(format!("vm{i}"));
        std::fs::create_dir_all(&vm).unwrap();
        let disk = vm.join("disk.qcow2");
        create_overlay(&base, "raw", &disk).await.unwrap();
        let mem = MemFd::create(&format!("boot-loop-{i}"), 256 << 20).unwrap();
        let cfg = VmConfig {
            accel: Accel::Tcg,
            cpu: cpu_model(Accel::Tcg).into(),
            memory_mib: 256,
            vcpus: 1,
            mem_path: mem.backend_path(),
            mem_share: true,
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            append: append.clone(),
            disk,
            xfer_disk: None,
            volumes: Vec::new(),
            qmp_socket: vm.join("qmp.sock"),
            agent_socket: vm.join("agent.sock"),
            console_log: vm.join("console.log"),
            incoming_defer: false,
            start_paused: false,
            tb_size_mib: None,
            nic: None,
            name: format!("boot-loop-{i}"),
        };
        let start = Instant::now();
        let mut p = QemuProcess::spawn(&bin, &cfg, &[]).unwrap();
        let qmp = Qmp::connect(&cfg.qmp_socket, Duration::from_secs(10))
            .await
            .unwrap();
        let mut reached = None;
        while start.elapsed() < PER_BOOT_TIMEOUT {
            if read_tail(&cfg.console_log, 8192).contains(common::MARKER) {
                reached = Some(start.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match reached {
            Some(t) => {
                eprintln!("boot {i}: marker after {:.2} s", t.as_secs_f64());
                times.push(t);
            }
            None => {
                let regs = qmp.hmp("info registers").await.unwrap_or_default();
                let rip = regs
                    .split_whitespace()
                    .find(|w| w.starts_with("RIP="))
                    .unwrap_or("RIP=?")
                    .to_string();
                // KASLR moves the kernel in 2 MiB steps: RIP mod 2 MiB names the spot
                // (0x002f9f = calibrate_delay+0x37f in Debian's 6.1.0-57 cloud kernel).
                let low = u64::from_str_radix(rip.trim_start_matches("RIP="), 16)
                    .map(|r| format!("{:#08x}", r & 0x1f_ffff))
                    .unwrap_or_default();
                eprintln!("boot {i}: HUNG, {rip} (mod 2 MiB {low})");
                hung.push(low);
            }
        }
        let _ = qmp.quit().await;
        if p.wait_timeout(Duration::from_secs(10)).await.is_err() {
            let _ = p.kill(Duration::from_secs(2)).await;
        }
    }
    times.sort();
    let p50 = times.get(times.len() / 2).map(|t| t.as_secs_f64());
    eprintln!(
        "RESULT: {} of {n} boots reached the marker; p50 {p50:?} s; hung at {hung:?}",
        times.len()
    );
}
