//! End-to-end: branch a running sandbox, spawn children from the snapshot, and
//! check what they inherited, what they did not, and that they are fresh.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zygote_proto::api::{
    BranchBody, BranchMode, CreateSnapshot, ExecBody, SnapshotStatus, SpawnBody,
};
use zygote_tests::*;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn spawn_body(tag: &str, n: u32) -> SpawnBody {
    SpawnBody {
        snapshot_tag: tag.into(),
        n: Some(n),
        ..Default::default()
    }
}

/// No guest kernel trouble in any console log under the daemon's home.
fn assert_no_oops(d: &Daemon) {
    for f in files_below(&d.home.join("sandboxes")) {
        if f.file_name().map(|n| n == "console.log").unwrap_or(false) {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            for bad in [
                "Oops",
                "BUG:",
                "Kernel panic",
                "general protection",
                "Call Trace",
            ] {
                assert!(!text.contains(bad), "{bad} in {}:\n{text}", f.display());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn children_inherit_the_branch_point_and_are_fresh_and_isolated() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let c = &d.client;
    let p = d.create().await;
    c.eval(&p.id, "secret = 'warm-1234'\nimport random")
        .await
        .unwrap();
    assert_eq!(
        d.sh(
            &p.id,
            "echo before > /root/before.txt && echo tmp > /tmp/t.txt && sync"
        )
        .await
        .exit_code,
        Some(0)
    );
    // a background counter, ticking every 50 ms (rename: a reader never sees it half written)
    d.sh(&p.id, "nohup sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done' >/dev/null 2>&1 &").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_branch: u64 = d
        .sh(&p.id, "cat /tmp/counter")
        .await
        .stdout
        .trim()
        .parse()
        .unwrap();
    let snap = c
        .branch(
            &p.id,
            &BranchBody {
                tag: Some("fid".into()),
                mode: Some(BranchMode::Copy),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let at_branch: u64 = d
        .sh(&p.id, "cat /tmp/counter")
        .await
        .stdout
        .trim()
        .parse()
        .unwrap();
    assert!(snap.pause_ms.unwrap() > 0.0);
    assert!(snap.memory_bytes > 0 && snap.vmstate_bytes > 0);
    // the parent goes on, unaffected, and writes after the branch
    assert_eq!(
        d.sh(&p.id, "echo after > /root/after.txt").await.exit_code,
        Some(0)
    );
    assert_eq!(
        c.eval(&p.id, "secret").await.unwrap().result.as_deref(),
        Some("'warm-1234'")
    );

    let kids = c.spawn(&spawn_body("fid", 3)).await.unwrap();
    assert_eq!(kids.len(), 3);
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
    let mut urand = Vec::new();
    let mut rands = Vec::new();
    for id in &ids {
        assert_eq!(
            c.eval(id, "secret").await.unwrap().result.as_deref(),
            Some("'warm-1234'"),
            "interpreter state lost in {id}"
        );
        let r = d
            .sh(
                id,
                "cat /root/before.txt /tmp/t.txt; ls /root/after.txt 2>/dev/null || echo no-after",
            )
            .await;
        assert_eq!(r.stdout, "before\ntmp\nno-after\n", "child {id}");
        // the counter resumed from (about) where it was at the stop and keeps going
        let c1: u64 = d
            .sh(id, "cat /tmp/counter")
            .await
            .stdout
            .trim()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let c2: u64 = d
            .sh(id, "cat /tmp/counter")
            .await
            .stdout
            .trim()
            .parse()
            .unwrap();
        // it resumed from its value at the stop (between the parent's readings
        // before and after the branch), not from zero, and ticked on from there
        assert!(
            c1 >= before_branch && c1 <= at_branch + 400,
            "counter {c1}: the parent read {before_branch} before and {at_branch} after the branch"
        );
        assert!(c2 > c1, "counter stopped in {id}: {c1} -> {c2}");
        // wall clock set from the host
        let t: f64 = d.sh(id, "date +%s.%N").await.stdout.trim().parse().unwrap();
        assert!(
            (t - now()).abs() < 1.0,
            "child clock off by {} s",
            t - now()
        );
        hosts.push(d.sh(id, "hostname").await.stdout);
        urand.push(
            d.sh(id, "head -c 16 /dev/urandom | od -An -tx1")
                .await
                .stdout,
        );
        rands.push(c.eval(id, "random.random()").await.unwrap().result.unwrap());
    }
    for v in [&hosts, &urand, &rands] {
        let mut u = v.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), v.len(), "children are not fresh: {v:?}");
    }
    // isolation: a write in one child is invisible to its siblings and the parent
    d.sh(&ids[0], "echo mine > /root/child0.txt").await;
    c.eval(&ids[0], "secret = 'changed'").await.unwrap();
    for other in ids[1..].iter().chain(std::iter::once(&p.id)) {
        assert_eq!(
            c.stat(other, "/root/child0.txt")
                .await
                .unwrap_err()
                .status(),
            Some(404)
        );
        assert_eq!(
            c.eval(other, "secret").await.unwrap().result.as_deref(),
            Some("'warm-1234'")
        );
    }
    // info says where they come from
    let info = c.get(&ids[1]).await.unwrap();
    assert_eq!(info.snapshot_tag.as_deref(), Some("fid"));
    assert_eq!(info.memory.as_deref(), Some("cow"));
    assert_no_oops(&d);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_clear() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let c = &d.client;
    let p = d.create().await;
    let e = c.spawn(&spawn_body("nope", 1)).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(e.to_string().contains("`nope`"), "{e}");
    for bad in ["../x", "-x", "a/b", ""] {
        let e = c
            .branch(
                &p.id,
                &BranchBody {
                    tag: Some(bad.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "tag {bad:?}: {e}");
    }
    c.branch(
        &p.id,
        &BranchBody {
            tag: Some("taken".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = c
        .branch(
            &p.id,
            &BranchBody {
                tag: Some("taken".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("taken"), "{e}");
    let e = c
        .branch("no-such-sandbox", &BranchBody::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
    // a mismatched memory size or vCPU count is refused
    let e = c
        .spawn(&SpawnBody {
            memory_mib: Some(512),
            ..spawn_body("taken", 1)
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("memory_mib 512"), "{e}");
    let e = c
        .spawn(&SpawnBody {
            vcpus: Some(2),
            ..spawn_body("taken", 1)
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    // copy mode on a copy-on-write child
    let kid = c
        .spawn(&spawn_body("taken", 1))
        .await
        .unwrap()
        .remove(0)
        .sandbox
        .unwrap();
    let e = c
        .branch(
            &kid.id,
            &BranchBody {
                mode: Some(BranchMode::Copy),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("copy-on-write"), "{e}");
    // a dead sandbox cannot be branched
    // SAFETY: kill(2) on the child's QEMU, which this test owns.
    unsafe {
        libc::kill(kid.pid.unwrap() as i32, libc::SIGKILL);
    }
    assert!(eventually(Duration::from_secs(5), || qemu_processes(
        &kid.id
    )
    .is_empty()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = c.branch(&kid.id, &BranchBody::default()).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    // a failed branch leaves the parent running
    assert_eq!(d.sh(&p.id, "echo alive").await.stdout, "alive\n");
    assert_eq!(
        c.raw(
            "POST",
            "/v1/sandboxes",
            Some("application/json"),
            br#"{"snapshot_tag":"taken","nn":1}"#.to_vec()
        )
        .await
        .unwrap()
        .0,
        400
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn depth_durability_and_snapshot_objects() {
    if !require_e2e() {
        return;
    }
    let mut d = Daemon::start().await;
    let c = d.client.clone();
    // a snapshot object: boot, warm up, snapshot
    let s = c
        .create_snapshot(&CreateSnapshot {
            tag: "warm".into(),
            warmup: Some("import json, math\nwarm = math.factorial(20)".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(s.status, SnapshotStatus::Ready);
    assert_eq!(c.snapshots().await.unwrap().len(), 1);
    assert!(
        c.list().await.unwrap().is_empty(),
        "the warm-up sandbox was removed"
    );
    let e = c
        .create_snapshot(&CreateSnapshot {
            tag: "warm".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409));

    // depth: a private-memory child can be branched in copy mode; grandchildren see both layers
    let child = c
        .spawn(&SpawnBody {
            private_memory: true,
            ..spawn_body("warm", 1)
        })
        .await
        .unwrap()
        .remove(0)
        .sandbox
        .unwrap();
    assert_eq!(child.memory.as_deref(), Some("own"));
    c.eval(&child.id, "layer2 = warm + 1").await.unwrap();
    d.sh(&child.id, "echo two > /root/layer2").await;
    let s2 = c
        .branch(
            &child.id,
            &BranchBody {
                tag: Some("warm2".into()),
                wait: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s2.status, SnapshotStatus::Ready);
    let gk = c.spawn(&spawn_body("warm2", 2)).await.unwrap();
    for g in &gk {
        let id = &g
            .sandbox
            .as_ref()
            .unwrap_or_else(|| panic!("{:?}", g.error))
            .id;
        assert_eq!(
            c.eval(id, "layer2 - warm").await.unwrap().result.as_deref(),
            Some("1")
        );
        assert_eq!(d.sh(id, "cat /root/layer2").await.stdout, "two\n");
    }

    // deleting a snapshot does not disturb its running children
    let kid = c
        .spawn(&spawn_body("warm", 1))
        .await
        .unwrap()
        .remove(0)
        .sandbox
        .unwrap();
    c.delete_snapshot("warm2").await.unwrap();
    assert_eq!(c.snapshot("warm2").await.unwrap_err().status(), Some(404));
    assert_eq!(
        d.sh(&gk[0].sandbox.as_ref().unwrap().id, "echo ok")
            .await
            .stdout,
        "ok\n"
    );
    let _ = kid;

    // durability: restart the daemon, spawn from the snapshot taken before
    let st = d.stop();
    assert!(st.success());
    let d2 = {
        let log = std::fs::File::create(d.dir.path().join("daemon2.log")).unwrap();
        let child = std::process::Command::new(zygote_bin())
            .args(["daemon", "--socket"])
            .arg(&d.socket)
            .arg("--home")
            .arg(&d.home)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        d.child = Some(child);
        assert!(eventually(Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&d.socket).is_ok()
        }));
        &d
    };
    let snaps = d2.client.snapshots().await.unwrap();
    assert!(
        snaps
            .iter()
            .any(|s| s.tag == "warm" && s.status == SnapshotStatus::Ready),
        "{snaps:?}"
    );
    let k = d2
        .client
        .spawn(&spawn_body("warm", 1))
        .await
        .unwrap()
        .remove(0);
    let id = k.sandbox.unwrap_or_else(|| panic!("{:?}", k.error)).id;
    assert_eq!(
        d2.client.eval(&id, "warm").await.unwrap().result.as_deref(),
        Some("2432902008176640000")
    );
    assert_no_oops(d2);
}

#[tokio::test(flavor = "multi_thread")]
async fn five_successive_branches_and_fork_in_one_call() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let c = &d.client;
    let p = d.create().await;
    let mut pauses = Vec::new();
    for i in 0..5 {
        c.eval(&p.id, &format!("gen = {i}")).await.unwrap();
        let s = c
            .branch(
                &p.id,
                &BranchBody {
                    tag: Some(format!("rep{i}")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        pauses.push(s.pause_ms.unwrap());
    }
    eprintln!("copy-branch pauses (ms): {pauses:?}");
    for i in [0usize, 4] {
        let k = c
            .spawn(&spawn_body(&format!("rep{i}"), 1))
            .await
            .unwrap()
            .remove(0)
            .sandbox
            .unwrap();
        assert_eq!(
            c.eval(&k.id, "gen").await.unwrap().result,
            Some(i.to_string())
        );
        assert_eq!(d.sh(&k.id, "echo disk-ok").await.stdout, "disk-ok\n");
    }
    // fork = branch + spawn
    let r = c
        .fork(
            &p.id,
            &zygote_proto::api::ForkBody {
                n: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.children.len(), 2);
    for k in &r.children {
        let id = &k.sandbox.as_ref().unwrap().id;
        assert_eq!(
            c.eval(id, "gen").await.unwrap().result.as_deref(),
            Some("4")
        );
    }
    let r = c
        .exec(
            &p.id,
            &ExecBody {
                cmd: Some("echo parent-fine".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, "parent-fine\n");
}

/// A guest process rewriting 32 MiB page by page as fast as it can, checking
/// before each write that the page still holds what it wrote there one pass
/// earlier: a write the branch lost shows up as a stale page when the child's
/// writer comes round to it again. On SIGUSR1 it writes its verdict.
const WRITER: &str = r#"
import os, signal
N, P = 8192, 4096
buf = bytearray(N * P)
mv = memoryview(buf)
page = lambda g: g.to_bytes(8, 'little') * (P // 8)
st = {'stop': False}
signal.signal(signal.SIGUSR1, lambda s, f: st.__setitem__('stop', True))
open('/tmp/writer.pid', 'w').write(str(os.getpid()))
g, bad, first_bad = 1, 0, None
prev = bytes(P)
while not st['stop']:
    pg = page(g)
    for i in range(N):
        if mv[i * P:(i + 1) * P] != prev:
            bad += 1
            first_bad = (g, i) if first_bad is None else first_bad
        mv[i * P:(i + 1) * P] = pg
    prev = pg
    g += 1
    open('/tmp/writer.gen', 'w').write(str(g))
open('/tmp/writer.result', 'w').write(('OK' if bad == 0 else 'BAD') + f' passes={g - 1} bad_pages={bad} first={first_bad}')
"#;

/// Poll (async: never block a runtime worker) until a guest path exists.
async fn wait_for_path(d: &Daemon, id: &str, path: &str, timeout: Duration) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < timeout {
        if d.client.stat(id, path).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn gen_of(d: &Daemon, id: &str) -> u64 {
    d.sh(id, "cat /tmp/writer.gen")
        .await
        .stdout
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Let the writer make two more full passes (so every page written before the
/// branch is checked), then ask for its verdict.
async fn verdict(d: &Daemon, id: &str) -> String {
    let g0 = gen_of(d, id).await;
    let t0 = std::time::Instant::now();
    while gen_of(d, id).await < g0 + 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "writer stalled in {id}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.sh(id, "kill -USR1 $(cat /tmp/writer.pid)").await;
    let c = &d.client;
    assert!(
        wait_for_path(d, id, "/tmp/writer.result", Duration::from_secs(60)).await,
        "no verdict in {id}"
    );
    String::from_utf8(c.download(id, "/tmp/writer.result").await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn live_branch_under_load_loses_no_write() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let c = &d.client;
    let p = d.create().await;
    c.upload(&p.id, "/root/writer.py", WRITER.as_bytes().to_vec())
        .await
        .unwrap();
    d.sh(
        &p.id,
        "nohup python3 /root/writer.py >/tmp/writer.log 2>&1 &",
    )
    .await;
    assert!(
        wait_for_path(&d, &p.id, "/tmp/writer.gen", Duration::from_secs(60)).await,
        "writer did not start"
    );
    let mut pauses = Vec::new();
    for i in 0..3 {
        let s = c
            .branch(
                &p.id,
                &BranchBody {
                    tag: Some(format!("load{i}")),
                    mode: Some(BranchMode::Live),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(s.mode, BranchMode::Live);
        pauses.push(s.pause_ms.expect("pause from QMP events"));
    }
    eprintln!("live pauses under a 32 MiB rewrite loop (ms): {pauses:?}");
    let kids = c.spawn(&spawn_body("load2", 2)).await.unwrap();
    for k in &kids {
        let id = &k
            .sandbox
            .as_ref()
            .unwrap_or_else(|| panic!("{:?}", k.error))
            .id;
        let v = verdict(&d, id).await;
        eprintln!("child {id}: {v}");
        assert!(v.starts_with("OK"), "lost writes in child {id}: {v}");
    }
    let v = verdict(&d, &p.id).await;
    assert!(v.starts_with("OK"), "parent: {v}");
    // a live branch of a copy-on-write child works too
    let kid = &kids[0].sandbox.as_ref().unwrap().id;
    let s = c
        .branch(
            kid,
            &BranchBody {
                tag: Some("from-kid".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        s.mode,
        BranchMode::Live,
        "the default for a copy-on-write child"
    );
    let g = c
        .spawn(&spawn_body("from-kid", 1))
        .await
        .unwrap()
        .remove(0)
        .sandbox
        .unwrap();
    assert!(d
        .sh(&g.id, "cat /tmp/writer.result")
        .await
        .stdout
        .starts_with("OK"));
    assert_no_oops(&d);
}
