//! End-to-end: a daemon restart keeps sandboxes running. After a crash
//! (SIGKILL) or an upgrade exit (SIGUSR2), the next daemon on the same home
//! re-adopts every QEMU that still runs: the sandbox keeps its id, pid, guest
//! memory, interpreter state and processes, and can still exec, branch (`copy`
//! needs its memory taken back) and be spawned from.

use std::time::Duration;

use zygote_proto::api::{BranchBody, BranchMode, SandboxState, SpawnBody};
use zygote_tests::*;

/// How the first daemon goes.
#[derive(Clone, Copy, Debug)]
enum Exit {
    Crash,
    Upgrade,
}

/// Stop the daemon of `d` as `how` says, then start a new one on the same
/// home and socket.
async fn restart(d: &mut Daemon, how: Exit) {
    let mut old = d.child.take().expect("a running daemon");
    match how {
        Exit::Crash => old.kill().unwrap(),
        Exit::Upgrade => {
            // SAFETY: kill(2) on our child's pid; no memory effects.
            unsafe { libc::kill(old.id() as i32, libc::SIGUSR2) };
        }
    }
    let status = old.wait().unwrap();
    if let Exit::Upgrade = how {
        assert!(status.success(), "the upgrade exit is clean: {status}");
    }
    let log = std::fs::File::options()
        .append(true)
        .open(d.dir.path().join("daemon.log"))
        .unwrap();
    d.child = Some(
        std::process::Command::new(zygote_bin())
            .args(["daemon", "--socket"])
            .arg(&d.socket)
            .arg("--home")
            .arg(&d.home)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let socket = d.socket.clone();
    assert!(eventually(Duration::from_secs(30), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    }));
    while d.client.health().await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn counter(d: &Daemon, id: &str) -> u64 {
    let out = d.sh(id, "cat /tmp/counter").await.stdout;
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("counter: {out:?}"))
}

async fn keeps_running_across(how: Exit) {
    let mut d = Daemon::start_with(&["--prestart", "0"]).await;
    let c = d.client.clone();
    let parent = d.create().await;
    c.eval(&parent.id, "secret = 'kept-4242'").await.unwrap();
    d.sh(
        &parent.id,
        "nohup sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.t; mv /tmp/counter.t /tmp/counter; sleep 0.1; done' >/dev/null 2>&1 &",
    )
    .await;
    // A copy-on-write child of it too.
    let snap = c
        .branch(
            &parent.id,
            &BranchBody {
                tag: Some("before".into()),
                wait: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let kid = c
        .spawn(&SpawnBody {
            snapshot_tag: snap.tag.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0)
        .sandbox
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = counter(&d, &parent.id).await;
    let pids = (parent.pid, kid.pid);

    restart(&mut d, how).await;

    for (id, pid) in [(&parent.id, pids.0), (&kid.id, pids.1)] {
        let info = c.get(id).await.unwrap();
        assert_eq!(
            info.state,
            SandboxState::Running,
            "{how:?}: {info:?}\n{}",
            d.log()
        );
        assert_eq!(info.pid, pid, "the same QEMU");
        let r = c.eval(id, "secret").await.unwrap();
        assert_eq!(
            r.result.as_deref(),
            Some("'kept-4242'"),
            "{how:?} {id}: {r:?}"
        );
    }
    // The parent's processes ran on, and its own memory came back: `copy` works.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(counter(&d, &parent.id).await > before);
    let s = c
        .branch(
            &parent.id,
            &BranchBody {
                mode: Some(BranchMode::Copy),
                wait: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{how:?}: copy branch after re-adoption: {e}\n{}", d.log()));
    let g = c
        .spawn(&SpawnBody {
            snapshot_tag: s.tag,
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0)
        .sandbox
        .unwrap();
    let r = c.eval(&g.id, "secret").await.unwrap();
    assert_eq!(r.result.as_deref(), Some("'kept-4242'"));
    // The copy-on-write child branches live.
    c.branch(
        &kid.id,
        &BranchBody {
            mode: Some(BranchMode::Live),
            wait: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // A plain SIGTERM still stops everything.
    let home = d.home.display().to_string();
    d.stop();
    assert!(
        eventually(Duration::from_secs(10), || qemu_processes(&home).is_empty()),
        "QEMUs left after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_survive_a_daemon_crash() {
    if !require_e2e() {
        return;
    }
    keeps_running_across(Exit::Crash).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_survive_an_upgrade_exit() {
    if !require_e2e() {
        return;
    }
    keeps_running_across(Exit::Upgrade).await;
}
