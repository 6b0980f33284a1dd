//! End-to-end: a home on a small filesystem (a tmpfs the test mounts) that
//! fills up. A branch that cannot fit is refused up front with a 507 naming
//! the space; one whose memory cannot be written is removed whole; nothing
//! half-written remains; the daemon keeps serving; once space is freed the
//! next branch works.

use std::process::{Command, Stdio};
use std::time::Duration;

use zygote_client::{Client, Endpoint};
use zygote_proto::api::{BranchBody, SnapshotStatus};
use zygote_tests::*;

/// A tmpfs of `mib` MiB mounted on `dir`, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: std::path::PathBuf, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs on {}", dir.display());
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_mib(dir: &std::path::Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-BM"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches('M')
        .parse()
        .unwrap()
}

/// Fill `dir`'s filesystem until `leave_mib` MiB are free; returns the filler.
fn fill(dir: &std::path::Path, leave_mib: u64) -> std::path::PathBuf {
    let f = dir.join("filler");
    let mib = free_mib(dir).saturating_sub(leave_mib);
    let ok = Command::new("fallocate")
        .args(["-l", &format!("{mib}M")])
        .arg(&f)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    f
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_home_refuses_cleanly_and_recovers() {
    if !require_e2e() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("zygfull")
        .tempdir_in("/tmp")
        .unwrap();
    let home = dir.path().join("home");
    let _fs = Tmpfs::mount(home.clone(), 600);
    std::os::unix::fs::symlink(image_home().join("images"), home.join("images")).unwrap();
    let socket = dir.path().join("d.sock");
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let child = Command::new(zygote_bin())
        .args(["daemon", "--prestart", "0", "--socket"])
        .arg(&socket)
        .arg("--home")
        .arg(&home)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let d = Daemon {
        child: Some(child),
        dir,
        socket: socket.clone(),
        home: home.clone(),
        client: Client::new(Endpoint::Unix(socket)),
    };
    let c = &d.client;
    while c.health().await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p = d.create().await;
    d.sh(&p.id, "python3 -c 'import json' && echo warm").await;

    // Nearly full: the branch is refused before anything is written.
    let filler = fill(&home, 4);
    let e = c.branch(&p.id, &BranchBody::default()).await.unwrap_err();
    assert_eq!(e.status(), Some(507), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("MiB is free") && msg.contains("snapshot rm"),
        "{msg}"
    );
    assert!(c.snapshots().await.unwrap().is_empty());
    let staged: Vec<_> = std::fs::read_dir(home.join("snapshots")).unwrap().collect();
    assert!(staged.is_empty(), "something half-written: {staged:?}");
    assert!(files_below(&home.join("disks")).is_empty());
    // The daemon and the sandbox keep serving.
    assert_eq!(d.sh(&p.id, "echo still").await.stdout, "still\n");

    // Space freed: the next branch works and is on disk.
    std::fs::remove_file(&filler).unwrap();
    let s = c
        .branch(
            &p.id,
            &BranchBody {
                wait: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.status, SnapshotStatus::Ready);
    assert!(home
        .join(format!("snapshots/{}/memory.bin", s.tag))
        .exists());
    c.remove(&p.id).await.unwrap();
    c.delete_snapshot(&s.tag).await.unwrap();
    drop(d);
}
