//! End-to-end: pause and resume, lifetimes, labels and warm-up servers, on
//! real guests.

use std::time::{Duration, Instant};

use zygote_proto::api::{CreateSandbox, CreateSnapshot, OnExpiry, SandboxState, SpawnBody};
use zygote_tests::*;

async fn counter(d: &Daemon, id: &str) -> u64 {
    let out = d.sh(id, "cat /tmp/counter").await.stdout;
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("counter: {out:?}"))
}

const COUNTER: &str = "nohup sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.t; mv /tmp/counter.t /tmp/counter; sleep 0.1; done' >/dev/null 2>&1 &";

#[tokio::test(flavor = "multi_thread")]
async fn pause_frees_the_vm_and_resume_brings_everything_back_even_after_a_restart() {
    if !require_e2e() {
        return;
    }
    let mut d = Daemon::start_with(&["--prestart", "0"]).await;
    let c = d.client.clone();
    let sb = d.create().await;
    c.eval(&sb.id, "kept = 'paused-and-back'").await.unwrap();
    d.sh(&sb.id, COUNTER).await;
    d.sh(&sb.id, "echo on-disk > /root/file").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = counter(&d, &sb.id).await;
    let pid = sb.pid.unwrap();

    let p = c.pause(&sb.id).await.unwrap();
    assert_eq!(
        (p.state, p.pid, p.memory.clone()),
        (SandboxState::Paused, None, None)
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "its QEMU is gone"
    );
    assert!(
        c.snapshots().await.unwrap().is_empty(),
        "its snapshot is not listed"
    );
    let e = c.eval(&sb.id, "1").await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    let e = c.pause(&sb.id).await.unwrap_err();
    assert_eq!(e.status(), Some(409));

    // A paused sandbox survives a daemon restart.
    assert!(d.stop().success());
    d.relaunch(&["--prestart", "0"]).await;
    let info = c.get(&sb.id).await.unwrap();
    assert_eq!(info.state, SandboxState::Paused);

    let r = c.resume(&sb.id).await.unwrap();
    assert_eq!(r.state, SandboxState::Running);
    assert_eq!(r.id, sb.id);
    let v = c.eval(&sb.id, "kept").await.unwrap();
    assert_eq!(v.result.as_deref(), Some("'paused-and-back'"));
    assert_eq!(d.sh(&sb.id, "cat /root/file").await.stdout, "on-disk\n");
    let after = counter(&d, &sb.id).await;
    assert!(
        after >= before,
        "the counter kept its value: {after} < {before}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        counter(&d, &sb.id).await > after,
        "and it counts on after the resume"
    );
    let e = c.resume(&sb.id).await.unwrap_err();
    assert_eq!(e.status(), Some(409));
    // Paused again, then removed: its snapshot goes with it.
    c.pause(&sb.id).await.unwrap();
    c.remove(&sb.id).await.unwrap();
    assert!(files_below(&d.home.join("snapshots")).is_empty());
    assert!(files_below(&d.home.join("disks")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn lifetimes_end_children_and_labels_find_them() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start_with(&["--prestart", "0"]).await;
    let c = &d.client;
    let parent = d
        .create_with(CreateSandbox {
            metadata: [("team".to_string(), "red".to_string())].into(),
            ..Default::default()
        })
        .await;
    let snap = c.branch(&parent.id, &Default::default()).await.unwrap();
    let kids = c
        .spawn(&SpawnBody {
            snapshot_tag: snap.tag.clone(),
            n: Some(2),
            timeout_secs: Some(3),
            metadata: [("run".to_string(), "7".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<String> = kids
        .iter()
        .map(|k| k.sandbox.as_ref().unwrap().id.clone())
        .collect();
    let pids: Vec<u32> = kids
        .iter()
        .map(|k| k.sandbox.as_ref().unwrap().pid.unwrap())
        .collect();
    let k0 = c.get(&ids[0]).await.unwrap();
    assert_eq!(
        k0.metadata.get("team").map(String::as_str),
        Some("red"),
        "inherited"
    );
    assert_eq!(k0.metadata.get("run").map(String::as_str), Some("7"));
    assert!(k0.expires_at_unix.is_some());
    // Labels filter.
    let red = c
        .list_where(&[("team".into(), "red".into())], None)
        .await
        .unwrap();
    assert_eq!(red.len(), 3);
    let run7 = c
        .list_where(&[("run".into(), "7".into())], Some("running"))
        .await
        .unwrap();
    assert_eq!(run7.len(), 2);
    // One child's lifetime is extended; the other goes after 3 s, QEMU too.
    c.set_timeout(&ids[1], 60, None).await.unwrap();
    let t0 = Instant::now();
    while c.get(&ids[0]).await.is_ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the child outlived its 3 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "it went too early"
    );
    assert!(eventually(Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{}", pids[0])).exists()
    }));
    assert_eq!(c.get(&ids[1]).await.unwrap().state, SandboxState::Running);
    // A lifetime that pauses.
    let p = c
        .set_timeout(&ids[1], 1, Some(OnExpiry::Pause))
        .await
        .unwrap();
    assert_eq!(p.on_expiry, OnExpiry::Pause);
    let t0 = Instant::now();
    while c.get(&ids[1]).await.unwrap().state != SandboxState::Paused {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "not paused on expiry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bulk remove by label, through the CLI.
    let o = std::process::Command::new(zygote_bin())
        .args(["rm", "-l", "team=red"])
        .env("ZYGOTE_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(c.list().await.unwrap().is_empty());
    let e = c
        .create(&CreateSandbox {
            metadata: [("bad key".to_string(), "x".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("bad key"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_up_server_runs_in_every_child() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let c = &d.client;
    // A small database-like server: it counts its clients.
    let server = "python3 -u -c \"import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 7777)); s.listen(); n=0\nwhile True:\n c,_=s.accept(); n+=1; c.sendall(b'pg-like %d\\\\n' % n); c.close()\"";
    c.create_snapshot(&CreateSnapshot {
        tag: "db".into(),
        warmup_cmd: Some(server.into()),
        ready_port: Some(7777),
        ..Default::default()
    })
    .await
    .unwrap();
    let kids = c
        .spawn(&SpawnBody {
            snapshot_tag: "db".into(),
            n: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    let ask = "python3 -c \"import socket; print(socket.create_connection(('127.0.0.1', 7777)).recv(64).decode().strip())\"";
    for k in &kids {
        let id = &k.sandbox.as_ref().unwrap().id;
        let r = d.sh(id, ask).await;
        // Each child has its own copy of the server, which had served the
        // readiness check once before the snapshot.
        assert_eq!(r.stdout.trim(), "pg-like 2", "{r:?}");
        let ps = c.processes(id).await.unwrap();
        assert!(
            ps.iter()
                .any(|p| p.tag.as_deref() == Some("warmup") && p.exit.is_none()),
            "{ps:?}"
        );
    }
    let e = c
        .create_snapshot(&CreateSnapshot {
            tag: "never".into(),
            warmup_cmd: Some("echo starting; sleep 1; echo crashed; exit 3".into()),
            ready_port: Some(7778),
            ready_timeout_secs: Some(3),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    let msg = e.to_string();
    assert!(
        msg.contains("port 7778") && msg.contains("crashed"),
        "{msg}"
    );
}
