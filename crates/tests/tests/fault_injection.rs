//! Fault injection: SIGKILL the daemon at a random moment of a random
//! operation (spawn, `copy` and `live` branches, a branch whose memory is still
//! being written, snapshot deletes, warm snapshots whose pool refills, removals),
//! start a new daemon on the same home, and check the invariants:
//!
//! - every snapshot listed is ready and a child starts from it;
//! - every sandbox listed as running runs (an exec answers);
//! - the QEMUs naming the home are exactly the running sandboxes';
//! - runtime directories are exactly the running sandboxes', snapshot
//!   directories exactly the snapshots', and no staging directory is left;
//! - once everything is removed, no QEMU, directory or disk generation is left.
//!
//! `ZYGOTE_FAULT_KILLS` sets the number of kills (CI: a few; `scripts/faults.sh`
//! runs hundreds) and `ZYGOTE_FAULT_SEED` the random seed (printed, so a failing
//! run can be replayed).

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use zygote_proto::api::{BranchBody, BranchMode, CreateSnapshot, SandboxState, SpawnBody};
use zygote_tests::*;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Kill the daemon of `d` outright and start a new one on the same home.
async fn crash_and_restart(d: &mut Daemon) {
    let mut old = d.child.take().expect("a daemon");
    old.kill().unwrap();
    old.wait().unwrap();
    let log = std::fs::File::options()
        .append(true)
        .open(d.dir.path().join("daemon.log"))
        .unwrap();
    d.child = Some(
        Command::new(zygote_bin())
            .args(["daemon", "--prestart", "1", "--socket"])
            .arg(&d.socket)
            .arg("--home")
            .arg(&d.home)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let t0 = std::time::Instant::now();
    while d.client.health().await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the restarted daemon did not come up:\n{}",
            tail(&d.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names_in(dir: &std::path::Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The invariants, right after a restart (before anything refills a pool).
async fn check(d: &Daemon, round: u64) {
    let c = &d.client;
    let sandboxes = c.list().await.unwrap();
    let running: Vec<_> = sandboxes
        .iter()
        .filter(|s| s.state == SandboxState::Running)
        .collect();
    let mut pids: Vec<u32> = running.iter().filter_map(|s| s.pid).collect();
    pids.sort();
    let mut qemus = qemu_processes(&d.home.display().to_string());
    qemus.sort();
    assert_eq!(
        qemus,
        pids,
        "round {round}: QEMUs vs running sandboxes\n{}",
        tail(&d.log(), 60)
    );
    let dirs = names_in(&d.home.join("sandboxes"));
    let ids: HashSet<String> = running.iter().map(|s| s.id.clone()).collect();
    assert_eq!(
        dirs, ids,
        "round {round}: runtime directories vs running sandboxes"
    );
    for s in &running {
        let r = d.sh(&s.id, "echo up").await;
        assert_eq!(r.stdout, "up\n", "round {round}: {} does not answer", s.id);
    }
    let snaps = c.snapshots().await.unwrap();
    let tags: HashSet<String> = snaps.iter().map(|s| s.tag.clone()).collect();
    assert_eq!(
        names_in(&d.home.join("snapshots")),
        tags,
        "round {round}: snapshot directories"
    );
    for s in &snaps {
        assert_eq!(
            s.status,
            zygote_proto::api::SnapshotStatus::Ready,
            "round {round}: {s:?}"
        );
        assert!(s.bootable, "round {round}: {s:?}");
    }
    if let Some(s) = snaps.first() {
        let k = c
            .spawn(&SpawnBody {
                snapshot_tag: s.tag.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .remove(0);
        let kid = k
            .sandbox
            .unwrap_or_else(|| panic!("round {round}: {:?}", k.error));
        assert_eq!(d.sh(&kid.id, "echo kid").await.stdout, "kid\n");
        c.remove(&kid.id).await.unwrap();
    }
}

/// Start one random operation in the background.
fn start_op(
    d: &Daemon,
    rng: &mut rand::rngs::StdRng,
    round: u64,
) -> (&'static str, tokio::task::JoinHandle<()>) {
    let c = d.client.clone();
    let op = rng.gen_range(0..7);
    let name = [
        "spawn",
        "branch-copy",
        "branch-live",
        "branch-nowait",
        "delete-snapshot",
        "warm-snapshot",
        "remove",
    ][op];
    let task = tokio::spawn(async move {
        let list = c.list().await.unwrap_or_default();
        let running: Vec<_> = list
            .into_iter()
            .filter(|s| s.state == SandboxState::Running)
            .collect();
        let snaps = c.snapshots().await.unwrap_or_default();
        let own = running.iter().find(|s| s.memory.as_deref() == Some("own"));
        let any = running.first();
        let _ = match op {
            0 if !snaps.is_empty() => c
                .spawn(&SpawnBody {
                    snapshot_tag: snaps[round as usize % snaps.len()].tag.clone(),
                    n: Some(2),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            1 if own.is_some() => c
                .branch(
                    &own.unwrap().id,
                    &BranchBody {
                        mode: Some(BranchMode::Copy),
                        ..Default::default()
                    },
                )
                .await
                .map(|_| ()),
            2 if any.is_some() => c
                .branch(
                    &any.unwrap().id,
                    &BranchBody {
                        mode: Some(BranchMode::Live),
                        ..Default::default()
                    },
                )
                .await
                .map(|_| ()),
            3 if own.is_some() => c
                .branch(&own.unwrap().id, &BranchBody::default())
                .await
                .map(|_| ()),
            4 if snaps.len() > 1 => c.delete_snapshot(&snaps[0].tag).await,
            5 => c
                .create_snapshot(&CreateSnapshot {
                    tag: format!("warm{round}"),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            6 if running.len() > 2 => c.remove(&running[running.len() - 1].id).await,
            _ => Ok(()),
        };
    });
    (name, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_kills_at_random_points_leave_consistent_state() {
    if !require_e2e() {
        return;
    }
    let kills = env_u64("ZYGOTE_FAULT_KILLS", 6);
    let seed = env_u64("ZYGOTE_FAULT_SEED", rand::random::<u32>() as u64);
    eprintln!("fault injection: {kills} kills, ZYGOTE_FAULT_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut d = Daemon::start_with(&["--prestart", "1"]).await;
    let p = d.create().await;
    d.client
        .branch(
            &p.id,
            &BranchBody {
                tag: Some("base".into()),
                wait: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut ops = std::collections::BTreeMap::new();
    for round in 0..kills {
        // Keep a parent with its own memory and a snapshot around.
        let list = d.client.list().await.unwrap();
        if !list
            .iter()
            .any(|s| s.memory.as_deref() == Some("own") && s.state == SandboxState::Running)
        {
            d.create().await;
        }
        let (name, task) = start_op(&d, &mut rng, round);
        *ops.entry(name).or_insert(0u32) += 1;
        let delay = rng.gen_range(0..900);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        crash_and_restart(&mut d).await;
        task.abort();
        check(&d, round).await;
    }
    eprintln!("fault injection: {kills} kills held every invariant; operations hit: {ops:?}");
    // Everything removed: nothing at all is left.
    for s in d.client.list().await.unwrap() {
        d.client.remove(&s.id).await.unwrap();
    }
    for s in d.client.snapshots().await.unwrap() {
        d.client.delete_snapshot(&s.tag).await.unwrap();
    }
    let home = d.home.display().to_string();
    assert!(eventually(Duration::from_secs(10), || qemu_processes(
        &home
    )
    .is_empty()));
    assert!(names_in(&d.home.join("sandboxes")).is_empty());
    assert!(names_in(&d.home.join("snapshots")).is_empty());
    assert!(
        files_below(&d.home.join("disks")).is_empty(),
        "{:?}",
        files_below(&d.home.join("disks"))
    );
}
