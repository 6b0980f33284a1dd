//! Confinement and limits with real guests: every QEMU (booted, pre-started,
//! restored) under its seccomp filter with no_new_privs and in its sandbox's
//! network namespace; quotas answered with a 429 naming the limit; a guest
//! that prints without end bounded in the daemon (exec output) and on disk
//! (the console log).

use std::time::Duration;

use zygote_proto::api::{BranchBody, CreateSandbox, ExecBody, SpawnBody};
use zygote_tests::{eventually, qemu_processes, require_e2e, Daemon};

fn status_field(pid: u32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn netns(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The directories of QEMU `pid`'s own cgroup (v1: its memory, cpu and pids
/// groups; v2: its one group), each checked to be zygote's.
fn cgroup_dirs(pid: u32) -> Vec<std::path::PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let ctrl = match (v2, ctrls) {
            (true, "") => "",
            (false, c)
                if ["memory", "cpu", "pids"]
                    .iter()
                    .any(|x| c.split(',').any(|y| y == *x)) =>
            {
                ["memory", "cpu", "pids"]
                    .into_iter()
                    .find(|x| c.split(',').any(|y| y == *x))
                    .unwrap()
            }
            _ => continue,
        };
        assert!(
            path.starts_with("/zygote/"),
            "QEMU {pid} is in {ctrl}:{path}, not a zygote cgroup"
        );
        dirs.push(
            std::path::Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join(&path[1..]),
        );
    }
    assert_eq!(dirs.len(), if v2 { 1 } else { 3 }, "QEMU {pid}: {text}");
    // v1: memory, cpu, pids in that order.
    dirs.sort_by_key(|d| {
        ["memory", "cpu", "pids"]
            .iter()
            .position(|c| d.starts_with(format!("/sys/fs/cgroup/{c}/")))
    });
    dirs
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// QEMU `pid` (a 256 MiB, 1-vCPU guest) is capped: memory at guest RAM plus
/// the 256 MiB allowance the test asks for, CPU at two CPUs' worth, 256 tasks.
fn capped(pid: u32) -> Vec<std::path::PathBuf> {
    let dirs = cgroup_dirs(pid);
    let want_mem = ((256u64 + 256) << 20).to_string();
    if dirs.len() == 1 {
        assert_eq!(read(&dirs[0].join("memory.max")), want_mem, "QEMU {pid}");
        assert_eq!(
            read(&dirs[0].join("cpu.max")),
            "200000 100000",
            "QEMU {pid}"
        );
        assert_eq!(read(&dirs[0].join("pids.max")), "256", "QEMU {pid}");
    } else {
        assert_eq!(
            read(&dirs[0].join("memory.limit_in_bytes")),
            want_mem,
            "QEMU {pid}"
        );
        assert_eq!(
            read(&dirs[1].join("cpu.cfs_quota_us")),
            "200000",
            "QEMU {pid}"
        );
        assert_eq!(read(&dirs[2].join("pids.max")), "256", "QEMU {pid}");
    }
    dirs
}

/// QEMU's seccomp filter, no_new_privs, a namespace that is not the host's
/// and a capped cgroup of its own, for every QEMU of this daemon.
fn confined(d: &Daemon) -> Vec<u32> {
    let host = netns(std::process::id());
    let pids = qemu_processes(&d.home.to_string_lossy());
    for &p in &pids {
        assert_eq!(
            status_field(p, "Seccomp"),
            "2",
            "QEMU {p} has no seccomp filter"
        );
        assert_eq!(status_field(p, "NoNewPrivs"), "1", "QEMU {p}");
        assert_ne!(
            netns(p),
            host,
            "QEMU {p} runs in the host's network namespace"
        );
        capped(p);
    }
    let groups: std::collections::HashSet<_> = pids.iter().map(|&p| cgroup_dirs(p)).collect();
    assert_eq!(
        groups.len(),
        pids.len(),
        "every QEMU has a cgroup of its own"
    );
    pids
}

#[tokio::test(flavor = "multi_thread")]
async fn every_qemu_is_filtered_and_quotas_answer_429() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start_with(&[
        "--prestart",
        "1",
        "--cgroup-overhead-mib",
        "256",
        "--max-sandboxes",
        "3",
        "--max-guest-memory-mib",
        "800",
        "--max-snapshots",
        "1",
    ])
    .await;
    let c = &d.client;
    let a = d.create().await;
    // 256 + 600 passes the memory limit.
    let e = c
        .create(&CreateSandbox {
            memory_mib: Some(600),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(429), "{e}");
    assert!(e.to_string().contains("--max-guest-memory-mib"), "{e}");
    let snap = c.branch(&a.id, &BranchBody::default()).await.unwrap();
    let e = c.branch(&a.id, &BranchBody::default()).await.unwrap_err();
    assert_eq!(e.status(), Some(429), "{e}");
    assert!(e.to_string().contains("--max-snapshots"), "{e}");
    // A restored child (the first spawn makes the snapshot hot), then a
    // pre-started one once the pool has filled.
    let spawn_one = || async {
        let k = c
            .spawn(&SpawnBody {
                snapshot_tag: snap.tag.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        k.into_iter().next().unwrap()
    };
    let first = spawn_one().await;
    assert!(first.sandbox.is_some() && !first.prestarted, "{first:?}");
    let t0 = std::time::Instant::now();
    while c.snapshot(&snap.tag).await.unwrap().prestarted < 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the pool never filled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = spawn_one().await;
    assert!(second.sandbox.is_some() && second.prestarted, "{second:?}");
    // The pool refills (a QEMU counts once it is a pre-started child: a
    // QEMU still parsing its options has no filter yet).
    let t0 = std::time::Instant::now();
    while c.snapshot(&snap.tag).await.unwrap().prestarted < 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the pool never refilled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pids = confined(&d);
    assert_eq!(pids.len(), 4, "three sandboxes and a pre-started child");
    // A fourth sandbox passes --max-sandboxes.
    let e = c
        .spawn(&SpawnBody {
            snapshot_tag: snap.tag.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(429), "{e}");
    assert!(
        e.to_string().contains("--max-sandboxes 3")
            || e.to_string().contains("at most 3 sandboxes"),
        "{e}"
    );
    // Room again once one goes; its cgroup goes with it.
    let a_groups = cgroup_dirs(a.pid.expect("a running sandbox has a pid"));
    c.remove(&a.id).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || a_groups
            .iter()
            .all(|g| !g.exists())),
        "the cgroups of a removed sandbox stay: {a_groups:?}"
    );
    let again = d.create().await;
    assert_eq!(again.state, zygote_proto::api::SandboxState::Running);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_prints_without_end_is_bounded() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start_with(&["--prestart", "0"]).await;
    let c = &d.client;
    let sb = d.create().await;
    // Buffered exec keeps the end of each stream, flagged.
    let r = c
        .exec(
            &sb.id,
            &ExecBody {
                cmd: Some("head -c 12000000 /dev/zero | tr '\\0' y; echo END".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(r.stdout_truncated && !r.stderr_truncated);
    assert_eq!(r.stdout.len(), 4 << 20);
    assert!(
        r.stdout.ends_with("yEND\n"),
        "{:?}",
        &r.stdout[r.stdout.len() - 10..]
    );
    let r = c
        .exec(
            &sb.id,
            &ExecBody {
                cmd: Some("echo 0123456789".into()),
                max_output_bytes: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((r.stdout.as_str(), r.stdout_truncated), ("789\n", true));
    // `yes` for 10 s: the daemon's peak RSS stays under 200 MiB.
    let r = c
        .exec(
            &sb.id,
            &ExecBody {
                cmd: Some("yes".into()),
                timeout_secs: Some(10.0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(r.timed_out && r.stdout_truncated);
    let hwm_kib: u64 = status_field(d.pid(), "VmHWM")
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    assert!(hwm_kib < 200 << 10, "daemon peak RSS {hwm_kib} KiB");
    // The console: 12 MB printed, a log under its cap once the daemon looked.
    let log = d.home.join("sandboxes").join(&sb.id).join("console.log");
    d.sh(
        &sb.id,
        "head -c 12000000 /dev/zero | tr '\\0' c > /dev/ttyS0",
    )
    .await;
    let capped = eventually(Duration::from_secs(10), || {
        std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) <= 4 << 20
    });
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(capped, "console log is {len} bytes");
    let text = std::fs::read(&log).unwrap();
    assert!(
        String::from_utf8_lossy(&text).contains("[zygote: the console log passed"),
        "never cut"
    );
    // The sandbox still answers.
    assert_eq!(d.sh(&sb.id, "echo alive").await.stdout, "alive\n");
}

/// A QEMU that grows past its cgroup's memory cap (here a guest filling its
/// RAM under a 16 MiB allowance for QEMU itself) is killed by the kernel
/// alone: its sandbox is dead with the reason, its neighbour and the daemon
/// keep serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_qemu_past_its_memory_cap_dies_alone() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start_with(&["--prestart", "0", "--cgroup-overhead-mib", "16"]).await;
    let c = &d.client;
    let victim = d.create().await;
    let neighbour = d.create().await;
    // Touch 150 MiB more of guest RAM: with QEMU's own ~120 MiB (TCG) it does not fit.
    let _ = c
        .exec(
            &victim.id,
            &ExecBody {
                cmd: Some(
                    "python3 -c 'b = bytearray(150 << 20); b[::4096] = b\"\\x01\" * len(range(0, len(b), 4096)); print(len(b))'"
                        .into(),
                ),
                timeout_secs: Some(60.0),
                ..Default::default()
            },
        )
        .await;
    let mut reason = String::new();
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let v = c.get(&victim.id).await.unwrap();
        if v.state == zygote_proto::api::SandboxState::Dead {
            reason = v.reason.unwrap_or_default();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        reason.contains("OOM killer") && reason.contains("cgroup"),
        "reason: {reason:?}"
    );
    let r = c
        .exec(
            &neighbour.id,
            &ExecBody {
                cmd: Some("echo alive".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, "alive\n");
    assert!(c.health().await.unwrap().ok);
}

/// The disk quotas: snapshots' bytes together (`--max-snapshot-gib`, a 429
/// naming it) and the free space the daemon keeps (`--min-free-disk-gib`,
/// a 507 naming it); both refuse before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn disk_quotas_answer_429_and_507() {
    if !require_e2e() {
        return;
    }
    // 0.3 GiB: one 256 MiB snapshot fits, a second could not.
    let d = Daemon::start_with(&["--prestart", "0", "--max-snapshot-gib", "0.3"]).await;
    let c = &d.client;
    let a = d.create().await;
    let wait = BranchBody {
        wait: true,
        ..Default::default()
    };
    c.branch(&a.id, &wait).await.unwrap();
    let e = c.branch(&a.id, &wait).await.unwrap_err();
    assert_eq!(e.status(), Some(429), "{e}");
    assert!(e.to_string().contains("--max-snapshot-gib"), "{e}");
    assert_eq!(c.snapshots().await.unwrap().len(), 1);
    drop(d);

    // More free space kept than any disk has: nothing starts, nothing snapshots.
    let d = Daemon::start_with(&["--prestart", "0", "--min-free-disk-gib", "1000000"]).await;
    let e = d
        .client
        .create(&CreateSandbox::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(507), "{e}");
    assert!(e.to_string().contains("--min-free-disk-gib"), "{e}");
    assert!(d.client.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_from_a_config_file_and_a_default_exec_timeout() {
    if !require_e2e() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zygote.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_sandboxes = 1\nexec_timeout_secs = 2\nmax_snapshots = 7\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    // The flag wins over the file (7 snapshots); the file's other keys hold.
    let d = Daemon::start_with(&["--prestart", "0", "--config", cfg, "--max-snapshots", "7"]).await;
    let a = d.create().await;
    let e = d
        .client
        .create(&CreateSandbox::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(429), "{e}");
    assert!(e.to_string().contains("at most 1 sandboxes"), "{e}");
    // An exec that names no timeout ends at the daemon's default; one that
    // names its own keeps it.
    let t0 = std::time::Instant::now();
    let r = d.sh(&a.id, "sleep 30").await;
    assert!(r.timed_out, "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let r = d
        .client
        .exec(
            &a.id,
            &ExecBody {
                cmd: Some("sleep 3; echo done".into()),
                timeout_secs: Some(10.0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!r.timed_out && r.stdout == "done\n", "{r:?}");
    drop(d);

    // A key that does not exist: the daemon refuses to start, naming it.
    std::fs::write(&config, "[limits]\nmax_sandbox = 1\n").unwrap();
    let out = std::process::Command::new(zygote_tests::zygote_bin())
        .args(["daemon", "--socket"])
        .arg(dir.path().join("s.sock"))
        .arg("--home")
        .arg(dir.path().join("home"))
        .args(["--config", cfg])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("max_sandbox"),
        "{text}"
    );
}
