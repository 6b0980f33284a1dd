//! End-to-end: pre-started children. A warm-up snapshot gets paused QEMUs with
//! its state loaded; a spawn resumes them, and they must be exactly as fresh and
//! as faithful as children started on demand. Deleting the snapshot, stopping
//! the daemon or a daemon crash leave none behind.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zygote_proto::api::{CreateSnapshot, SpawnBody};
use zygote_tests::*;

async fn prestarted(d: &Daemon, tag: &str) -> u32 {
    d.client.snapshot(tag).await.unwrap().prestarted
}

async fn wait_prestarted(d: &Daemon, tag: &str, want: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while prestarted(d, tag).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool of `{tag}` never reached {want} (has {}); daemon log:\n{}",
            prestarted(d, tag).await,
            tail(&d.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prestarted_children_are_faithful_fresh_and_cleaned_up() {
    if !require_e2e() {
        return;
    }
    let mut d = Daemon::start_with(&["--prestart", "2"]).await;
    let c = d.client.clone();
    let home = d.home.display().to_string();
    // A counter ticking 10 times a second in the warm interpreter: a child that
    // had been running while it waited in the pool would be far ahead.
    let warmup = "import threading, time\n\
                  secret = 'pool-42'\n\
                  ticks = [0]\n\
                  def tick():\n    while True:\n        ticks[0] += 1\n        time.sleep(0.1)\n\
                  threading.Thread(target=tick, daemon=True).start()\n\
                  time.sleep(1)\n";
    c.create_snapshot(&CreateSnapshot {
        tag: "hot".into(),
        warmup: Some(warmup.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_prestarted(&d, "hot", 2).await;
    assert!(
        c.list().await.unwrap().is_empty(),
        "pool entries are not sandboxes"
    );
    assert_eq!(
        qemu_processes(&home).len(),
        2,
        "two paused QEMUs in the pool"
    );

    // Let the pool sit: 8 s paused must not show in the children.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let kids = c
        .spawn(&SpawnBody {
            snapshot_tag: "hot".into(),
            n: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    let pooled = kids.iter().filter(|k| k.prestarted).count();
    assert_eq!(
        pooled, 2,
        "two children from the pool, one started fresh: {kids:?}"
    );
    let ids: Vec<String> = kids
        .iter()
        .map(|k| {
            k.sandbox
                .as_ref()
                .unwrap_or_else(|| panic!("child failed: {:?}", k.error))
                .id
                .clone()
        })
        .collect();
    let mut hosts = Vec::new();
    let mut randoms = Vec::new();
    for (k, id) in kids.iter().zip(&ids) {
        let r = c.eval(id, "secret").await.unwrap();
        assert_eq!(r.result.as_deref(), Some("'pool-42'"), "{r:?}");
        let t: u64 = c
            .eval(id, "ticks[0]")
            .await
            .unwrap()
            .result
            .unwrap()
            .parse()
            .unwrap();
        // ~10 at the snapshot; 8 s in the pool running would add ~80.
        assert!(
            t < 50,
            "child {id} (prestarted {}) counted {t} ticks",
            k.prestarted
        );
        let host = d.sh(id, "hostname").await.stdout;
        assert_eq!(host.trim(), format!("zygote-{}", &id[..12]));
        assert_eq!(d.sh(id, "cat /etc/hostname").await.stdout, host);
        hosts.push(host);
        randoms.push(
            d.sh(id, "head -c 16 /dev/urandom | od -An -tx1")
                .await
                .stdout,
        );
        let guest: f64 = d.sh(id, "date +%s.%N").await.stdout.trim().parse().unwrap();
        let host_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            (guest - host_now).abs() < 2.0,
            "child {id} clock {guest} vs host {host_now}"
        );
    }
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "hostnames differ");
    randoms.sort();
    randoms.dedup();
    assert_eq!(randoms.len(), 3, "entropy differs");
    // isolation between a pooled child and its siblings
    d.sh(&ids[0], "echo mine > /root/only0").await;
    for id in &ids[1..] {
        assert_ne!(d.sh(id, "cat /root/only0").await.exit_code, Some(0));
    }

    // The spawn refilled the pool; deleting the snapshot stops its entries and
    // leaves the children running.
    wait_prestarted(&d, "hot", 2).await;
    assert_eq!(qemu_processes(&home).len(), 5);
    c.delete_snapshot("hot").await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || qemu_processes(&home).len() == 3),
        "pool QEMUs still run after the snapshot was deleted: {:?}",
        qemu_processes(&home)
    );
    assert_eq!(d.sh(&ids[2], "echo ok").await.stdout, "ok\n");

    // A daemon killed outright leaves paused pool QEMUs; the next one stops them
    // (running sandboxes it re-adopts: see e2e_readopt; none run here).
    for id in &ids {
        c.remove(id).await.unwrap();
    }
    c.create_snapshot(&CreateSnapshot {
        tag: "hot2".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_prestarted(&d, "hot2", 2).await;
    let mut old = d.child.take().unwrap();
    old.kill().unwrap();
    let _ = old.wait();
    assert!(
        qemu_processes(&home).len() >= 2,
        "pool QEMUs outlive a SIGKILLed daemon"
    );
    // A snapshot whose CPU model differs from what this daemon starts: a copy
    // of hot2 claiming another model (a mismatch would hang the guest).
    let snaps = d.home.join("snapshots");
    std::fs::create_dir_all(snaps.join("cpu-x")).unwrap();
    for f in ["vmstate", "memory.bin"] {
        std::fs::copy(snaps.join("hot2").join(f), snaps.join("cpu-x").join(f)).unwrap();
    }
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snaps.join("hot2/meta.json")).unwrap()).unwrap();
    meta["tag"] = "cpu-x".into();
    meta["machine"]["cpu"] = "Haswell-v4".into();
    std::fs::write(
        snaps.join("cpu-x/meta.json"),
        serde_json::to_vec_pretty(&meta).unwrap(),
    )
    .unwrap();
    let log = std::fs::File::create(d.dir.path().join("daemon2.log")).unwrap();
    d.child = Some(
        std::process::Command::new(zygote_bin())
            .args(["daemon", "--prestart", "0", "--socket"])
            .arg(&d.socket)
            .arg("--home")
            .arg(&d.home)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    assert!(eventually(Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&d.socket).is_ok()
    }));
    assert!(
        eventually(Duration::from_secs(10), || qemu_processes(&home).is_empty()),
        "QEMUs left after recovery: {:?}",
        qemu_processes(&home)
    );
    let dirs = std::fs::read_dir(d.home.join("sandboxes")).unwrap().count();
    assert_eq!(dirs, 0, "runtime directories left after recovery");
    let e = c
        .spawn(&SpawnBody {
            snapshot_tag: "cpu-x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("Haswell-v4"), "{e}");
    assert!(e.to_string().contains("CPU"), "{e}");
    // With --prestart 0 nothing is pre-started and spawns start fresh.
    let k = c
        .spawn(&SpawnBody {
            snapshot_tag: "hot2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    assert!(!k.prestarted && k.sandbox.is_some(), "{k:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(prestarted(&d, "hot2").await, 0);
    let st = d.stop();
    assert!(st.success());
    assert!(qemu_processes(&home).is_empty());
}
