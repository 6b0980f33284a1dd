//! End-to-end: volumes on real guests. A named volume outlives its sandboxes,
//! is held writable by one sandbox or read-only by many, is never part of a
//! snapshot (a child of a parent with a volume does not see it; a child gets
//! its own), stays mounted across pause and resume, and a host directory is
//! exported read-only.

use zygote_proto::api::{CreateSandbox, SpawnBody};
use zygote_proto::volumes::VolumeMount;
use zygote_tests::*;

fn named(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: Some(name.into()),
        host_path: None,
        path: path.into(),
        read_only,
    }
}

fn with(volumes: Vec<VolumeMount>) -> CreateSandbox {
    CreateSandbox {
        volumes,
        ..Default::default()
    }
}

/// The mount points in the guest that come from volume disks.
async fn volume_mounts(d: &Daemon, id: &str) -> String {
    d.sh(
        id,
        "grep ' /data\\| /ref\\| /other' /proc/mounts | cut -d' ' -f2,4 | cut -d, -f1 | sort",
    )
    .await
    .stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_outlives_its_sandboxes_with_one_writer_or_many_readers() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start_with(&["--prestart", "0"]).await;
    let c = &d.client;
    let v = c.create_volume("data", 64).await.unwrap();
    assert_eq!(v.size_bytes, 64 << 20);
    let a = d
        .create_with(with(vec![named("data", "/data", false)]))
        .await;
    assert_eq!(a.volumes, vec![named("data", "/data", false)]);
    assert_eq!(volume_mounts(&d, &a.id).await, "/data rw\n");
    let r = d
        .sh(&a.id, "echo kept > /data/f && sync && cat /data/f")
        .await;
    assert_eq!(r.stdout, "kept\n", "{r:?}");
    let e = c
        .create(&with(vec![named("data", "/data", true)]))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("held writable by sandbox {}", a.id)),
        "{e}"
    );
    let e = c.delete_volume("data").await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    c.remove(&a.id).await.unwrap();

    // Two readers at once; neither can change the volume.
    let b = d
        .create_with(with(vec![named("data", "/data", true)]))
        .await;
    let r2 = d
        .create_with(with(vec![named("data", "/data", true)]))
        .await;
    for id in [&b.id, &r2.id] {
        assert_eq!(d.sh(id, "cat /data/f").await.stdout, "kept\n");
        assert_eq!(volume_mounts(&d, id).await, "/data ro\n");
        let w = d.sh(id, "echo x > /data/g").await;
        assert_ne!(
            w.exit_code,
            Some(0),
            "a read-only volume took a write: {w:?}"
        );
    }
    // A guest that remounts its view writable changes only its view.
    let w = d
        .sh(
            &b.id,
            "mount -o remount,rw /data && echo mine > /data/f && sync && cat /data/f",
        )
        .await;
    assert_eq!(w.stdout, "mine\n", "{w:?}");
    assert_eq!(d.sh(&r2.id, "cat /data/f").await.stdout, "kept\n");
    let holders = c.volume("data").await.unwrap().holders;
    assert_eq!(holders.len(), 2);
    assert!(holders.iter().all(|h| h.read_only));
    let e = c
        .create(&with(vec![named("data", "/data", false)]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("held read-only"), "{e}");
    c.remove(&b.id).await.unwrap();
    c.remove(&r2.id).await.unwrap();
    // Views go with their sandboxes; the volume stays until removed.
    assert!(files_below(&d.home.join("volumes/.attach")).is_empty());
    assert!(c.volume("data").await.unwrap().holders.is_empty());
    c.delete_volume("data").await.unwrap();
    assert!(c.volumes().await.unwrap().is_empty());
    // Bad input is named.
    for (vols, needle) in [
        (
            vec![named("nope", "/data", false)],
            "no volume named `nope`",
        ),
        (vec![named("x", "/etc", false)], "/etc"),
        (
            vec![named("x", "/a", false), named("x", "/b", true)],
            "named twice",
        ),
    ] {
        let e = c.create(&with(vols)).await.unwrap_err();
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_is_not_part_of_a_snapshot_and_children_get_their_own() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start_with(&["--prestart", "1"]).await;
    let c = &d.client;
    c.create_volume("mine", 32).await.unwrap();
    c.create_volume("kids", 32).await.unwrap();
    let p = d
        .create_with(with(vec![named("mine", "/data", false)]))
        .await;
    d.sh(&p.id, "echo parent > /data/who && sync").await;
    let snap = c.branch(&p.id, &Default::default()).await.unwrap();

    // A child without volumes: the parent's volume is not mounted in it.
    let plain = c
        .spawn(&SpawnBody {
            snapshot_tag: snap.tag.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let plain = plain[0].sandbox.clone().expect("a child");
    assert_eq!(volume_mounts(&d, &plain.id).await, "");
    let r = d.sh(&plain.id, "cat /data/who").await;
    assert_ne!(r.exit_code, Some(0), "the parent's volume leaked: {r:?}");

    // A child with a volume of its own sees it, not the parent's.
    let kid = c
        .spawn(&SpawnBody {
            snapshot_tag: snap.tag.clone(),
            volumes: vec![named("kids", "/data", false)],
            ..Default::default()
        })
        .await
        .unwrap();
    let kid = kid[0].sandbox.clone().unwrap_or_else(|| panic!("{kid:?}"));
    assert!(!kid.volumes.is_empty());
    let r = d
        .sh(
            &kid.id,
            "ls /data; echo kid > /data/who && sync && cat /data/who",
        )
        .await;
    assert_eq!(r.stdout, "lost+found\nkid\n", "{r:?}");
    // The parent kept its own, and it still writes to it.
    let r = d
        .sh(&p.id, "cat /data/who && echo again >> /data/who && sync")
        .await;
    assert_eq!(r.stdout, "parent\n", "{r:?}");

    // The parent's volume is held: a child cannot take it writable, and a
    // writable volume is not given to several children.
    let r = c
        .spawn(&SpawnBody {
            snapshot_tag: snap.tag.clone(),
            volumes: vec![named("mine", "/data", false)],
            ..Default::default()
        })
        .await
        .unwrap();
    let err = r[0].error.clone().unwrap_or_default();
    assert!(err.contains("held writable"), "{r:?}");
    let e = c
        .spawn(&SpawnBody {
            snapshot_tag: snap.tag.clone(),
            n: Some(2),
            volumes: vec![named("kids", "/data", false)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    // The volume files are where the daemon keeps volumes, never among the
    // snapshot's disks.
    let disks = files_below(&d.home.join("disks"));
    assert!(disks
        .iter()
        .all(|p| !p.to_string_lossy().contains("volumes")));
    // Nothing of the parent's file system (still mounted in the memory the
    // children inherited) reached the children's disks: both volumes, seen
    // from a fresh sandbox, hold what their own writers wrote.
    for sb in c.list().await.unwrap() {
        c.remove(&sb.id).await.unwrap();
    }
    let check = d
        .create_with(with(vec![
            named("mine", "/data", true),
            named("kids", "/other", true),
        ]))
        .await;
    let r = d.sh(&check.id, "cat /data/who /other/who").await;
    assert_eq!(r.stdout, "parent\nagain\nkid\n", "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_stay_mounted_across_pause_and_host_directories_are_read_only() {
    if !require_e2e() {
        return;
    }
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(host.path().join("ref/sub")).unwrap();
    std::fs::write(host.path().join("ref/sub/answer.txt"), "42\n").unwrap();
    let root = host.path().to_str().unwrap().to_string();
    let mut d = Daemon::start_with(&["--prestart", "0", "--volume-host-root", &root]).await;
    let c = &d.client;
    c.create_volume("logs", 32).await.unwrap();
    let sb = d
        .create_with(with(vec![
            named("logs", "/data", false),
            VolumeMount {
                name: None,
                host_path: Some(host.path().join("ref").to_string_lossy().into_owned()),
                path: "/ref".into(),
                read_only: true,
            },
        ]))
        .await;
    assert_eq!(d.sh(&sb.id, "cat /ref/sub/answer.txt").await.stdout, "42\n");
    assert_eq!(volume_mounts(&d, &sb.id).await, "/data rw\n/ref ro\n");
    // A writer that keeps its file open across the pause.
    d.sh(
        &sb.id,
        "nohup sh -c 'exec 3>>/data/log; i=0; while :; do i=$((i+1)); echo $i >&3; sleep 0.1; done' >/dev/null 2>&1 &",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    c.pause(&sb.id).await.unwrap();
    let held = c.volume("logs").await.unwrap().holders;
    assert_eq!(held.len(), 1, "a paused sandbox keeps its volume");
    let e = c
        .create(&with(vec![named("logs", "/data", false)]))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    c.resume(&sb.id).await.unwrap();
    let lines = |s: String| s.lines().count();
    let before = lines(d.sh(&sb.id, "cat /data/log").await.stdout);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let after = lines(d.sh(&sb.id, "cat /data/log").await.stdout);
    assert!(
        after > before && before > 2,
        "the writer goes on: {before} then {after}"
    );
    assert_eq!(d.sh(&sb.id, "cat /ref/sub/answer.txt").await.stdout, "42\n");
    // An upgrade restart: the sandbox is re-adopted and holds its volume still.
    let mut old = d.child.take().unwrap();
    // SAFETY: kill(2) on our child's pid; no memory effects.
    unsafe { libc::kill(old.id() as i32, libc::SIGUSR2) };
    assert!(old.wait().unwrap().success());
    d.relaunch(&["--prestart", "0", "--volume-host-root", &root])
        .await;
    let c = &d.client;
    assert_eq!(c.volume("logs").await.unwrap().holders.len(), 1);
    let e = c
        .create(&with(vec![named("logs", "/data", false)]))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(lines(d.sh(&sb.id, "cat /data/log").await.stdout) > after);
    // Host paths outside the root are refused.
    let e = c
        .create(&with(vec![VolumeMount {
            name: None,
            host_path: Some("/etc".into()),
            path: "/ref".into(),
            read_only: true,
        }]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--volume-host-root"), "{e}");
    c.remove(&sb.id).await.unwrap();
    assert!(c.volume("logs").await.unwrap().holders.is_empty());
}
