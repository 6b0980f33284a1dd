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

/// QEMU's seccomp filter, no_new_privs and a namespace that is not the
/// host's, for every QEMU of this daemon.
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
    }
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
    // Room again once one goes.
    c.remove(&a.id).await.unwrap();
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
