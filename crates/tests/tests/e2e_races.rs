//! End-to-end: the races docs/reliability.md names, each with its defined
//! outcome, on real guests: two branches of one sandbox at once, a branch
//! during an exec, `rm` during a branch, deleting a snapshot during a spawn
//! from it and while its memory is being written. After each, nothing is
//! half-written and nothing is left.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use zygote_proto::api::{BranchBody, BranchMode, ExecBody, SnapshotStatus, SpawnBody};
use zygote_tests::*;

/// No staging directory, and every disk generation belongs to a snapshot the
/// daemon lists (call with no sandbox left, so no chain is in use).
async fn assert_consistent(d: &Daemon) {
    let snaps: HashSet<String> = d
        .client
        .snapshots()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.tag)
        .collect();
    for e in std::fs::read_dir(d.home.join("snapshots"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        assert!(
            snaps.contains(&name),
            "a snapshot directory no snapshot owns: {name}"
        );
    }
    let disks: Vec<PathBuf> = files_below(&d.home.join("disks"));
    for f in disks {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            snaps.iter().any(|t| name.starts_with(&format!("{t}-"))),
            "a disk generation no snapshot needs: {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_branches_serialize_and_get_unique_tags() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let c = &d.client;
    let p = d.create().await;
    // Two at once, default tags: both succeed (one waits for the other).
    let body = BranchBody::default();
    let (a, b) = tokio::join!(c.branch(&p.id, &body), c.branch(&p.id, &body));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.tag, b.tag, "default tags never collide");
    // And in a loop, as an agent checkpointing would: no `tag is taken`.
    let mut tags = HashSet::new();
    for _ in 0..3 {
        let s = c
            .branch(
                &p.id,
                &BranchBody {
                    mode: Some(BranchMode::Live),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(tags.insert(s.tag));
    }
    c.remove(&p.id).await.unwrap();
    assert_consistent(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_branch_during_an_exec_leaves_the_exec_whole() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let c = d.client.clone();
    let p = d.create().await;
    let id = p.id.clone();
    let exec = tokio::spawn(async move {
        c.exec(
            &id,
            &ExecBody {
                cmd: Some("for i in 1 2 3 4 5; do echo $i; sleep 0.3; done; echo done".into()),
                ..Default::default()
            },
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let s = d
        .client
        .branch(&p.id, &BranchBody::default())
        .await
        .unwrap();
    let r = exec.await.unwrap().unwrap();
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(r.stdout, "1\n2\n3\n4\n5\ndone\n", "{r:?}");
    // The snapshot caught the loop mid-way; its child runs from there.
    let kid = d
        .client
        .spawn(&SpawnBody {
            snapshot_tag: s.tag.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0)
        .sandbox
        .unwrap();
    assert_eq!(d.sh(&kid.id, "echo alive").await.stdout, "alive\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn rm_during_a_branch_makes_no_snapshot_and_leaves_nothing() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let mut raced = 0;
    for delay_ms in [0u64, 30, 120] {
        let p = d.create().await;
        // Some memory to move, so the live branch takes a while.
        d.sh(&p.id, "head -c 64M /dev/urandom > /dev/shm/fill")
            .await;
        let c = d.client.clone();
        let id = p.id.clone();
        let branch = tokio::spawn(async move {
            c.branch(
                &id,
                &BranchBody {
                    mode: Some(BranchMode::Live),
                    ..Default::default()
                },
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        d.client.remove(&p.id).await.unwrap();
        match branch.await.unwrap() {
            Ok(s) => {
                // The branch finished first: its snapshot is whole.
                assert!(d.client.snapshot(&s.tag).await.is_ok());
            }
            Err(e) => {
                raced += 1;
                assert_eq!(e.status(), Some(409), "{e}");
                let msg = e.to_string();
                assert!(
                    msg.contains("removed during the branch") || msg.contains("no sandbox"),
                    "{msg}"
                );
            }
        }
        assert_eq!(d.client.health().await.unwrap().sandboxes, Some(0));
        assert_consistent(&d).await;
    }
    // A 64 MiB live branch under TCG takes far longer than the first delay.
    assert!(
        raced > 0,
        "rm never overtook the branch: the race was not tested"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_snapshot_during_a_spawn_or_a_write() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start_with(&["--prestart", "0"]).await;
    let c = &d.client;
    let p = d.create().await;
    c.branch(
        &p.id,
        &BranchBody {
            tag: Some("gone".into()),
            wait: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // A spawn and a delete at once: each child starts or fails alone, clearly.
    let three = SpawnBody {
        snapshot_tag: "gone".into(),
        n: Some(3),
        ..Default::default()
    };
    let (kids, del) = tokio::join!(c.spawn(&three), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.delete_snapshot("gone").await
    });
    del.unwrap();
    let started: Vec<String> = match kids {
        Ok(list) => list
            .into_iter()
            .filter_map(|k| match (k.sandbox, k.error) {
                (Some(s), _) => Some(s.id),
                (None, Some(e)) => {
                    assert!(e.contains("gone"), "a failed child says why: {e}");
                    None
                }
                (None, None) => panic!("a child with neither sandbox nor error"),
            })
            .collect(),
        Err(e) => {
            assert_eq!(e.status(), Some(404), "{e}");
            Vec::new()
        }
    };
    // Children that started keep their disk: they run, and can still branch.
    for k in &started {
        assert_eq!(d.sh(k, "echo ok").await.stdout, "ok\n");
        let s = c
            .branch(
                k,
                &BranchBody {
                    mode: Some(BranchMode::Live),
                    wait: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        c.delete_snapshot(&s.tag).await.unwrap();
    }
    // A delete while memory.bin is written, then the tag again at once.
    let s = c
        .branch(
            &p.id,
            &BranchBody {
                tag: Some("writing".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.status, SnapshotStatus::Writing);
    c.delete_snapshot("writing").await.unwrap();
    let again = c
        .branch(
            &p.id,
            &BranchBody {
                tag: Some("writing".into()),
                wait: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(again.status, SnapshotStatus::Ready);
    assert!(d.home.join("snapshots/writing/memory.bin").exists());
    for k in started.iter().chain([&p.id]) {
        c.remove(k).await.unwrap();
    }
    c.delete_snapshot("writing").await.unwrap();
    assert_consistent(&d).await;
    assert!(files_below(&d.home.join("disks")).is_empty());
}
