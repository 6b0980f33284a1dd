//! End-to-end: several sandboxes at once, isolation, removal and daemon
//! shutdown leaving nothing behind, QEMU death, boot reliability.

use std::time::Duration;

use zygote_proto::api::{CreateSandbox, SandboxState};
use zygote_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn four_sandboxes_at_once_are_isolated() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let creates = (0..4).map(|_| d.create_with(CreateSandbox::default()));
    let sbs = futures::future::join_all(creates).await;
    let ids: Vec<String> = sbs.iter().map(|s| s.id.clone()).collect();
    let mut uniq = ids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 4, "ids must differ");
    for id in &ids {
        assert!(
            id.len() >= 20 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "id {id} is not a long random hex string"
        );
    }
    // each writes its own marker, in /tmp (tmpfs) and on its disk
    for (i, id) in ids.iter().enumerate() {
        let r = d
            .sh(
                id,
                &format!("echo {i} > /tmp/mine && echo {i} > /root/disk-mine && sync"),
            )
            .await;
        assert_eq!(r.exit_code, Some(0));
    }
    for (i, id) in ids.iter().enumerate() {
        let r = d.sh(id, "cat /tmp/mine /root/disk-mine").await;
        assert_eq!(
            r.stdout,
            format!("{i}\n{i}\n"),
            "sandbox {id} sees another's file"
        );
        let boot = d.sh(id, "cat /proc/sys/kernel/random/boot_id").await.stdout;
        for other in ids.iter().filter(|o| *o != id) {
            let ob = d
                .sh(other, "cat /proc/sys/kernel/random/boot_id")
                .await
                .stdout;
            assert_ne!(boot, ob, "two sandboxes share a kernel");
        }
    }
    // a file written in one is absent in the others
    d.client
        .upload(&ids[0], "/root/only-here", b"x".to_vec())
        .await
        .unwrap();
    for id in &ids[1..] {
        assert_eq!(
            d.client
                .stat(id, "/root/only-here")
                .await
                .unwrap_err()
                .status(),
            Some(404)
        );
    }
    let listed = d.client.list().await.unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|s| s.state == SandboxState::Running));
}

#[tokio::test(flavor = "multi_thread")]
async fn rm_and_sigterm_leave_nothing_behind() {
    if !require_e2e() {
        return;
    }
    let mut d = Daemon::start().await;
    let a = d.create().await;
    let b = d.create().await;
    let c = d.create().await;
    let daemon_pid = d.pid();
    let sandboxes = d.home.join("sandboxes");
    assert_eq!(qemu_processes(&d.home.display().to_string()).len(), 3);
    assert_eq!(memfds_of(daemon_pid).len(), 3, "one memfd per sandbox");
    let dir_a = sandboxes.join(&a.id);
    assert!(dir_a.join("disk.qcow2").exists() && dir_a.join("agent.sock").exists());

    // rm one
    d.client.remove(&a.id).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || qemu_processes(
            &dir_a.display().to_string()
        )
        .is_empty()),
        "QEMU of a survived rm"
    );
    assert!(
        !dir_a.exists(),
        "sandbox dir (overlay, sockets, console) survived rm"
    );
    assert_eq!(memfds_of(daemon_pid).len(), 2, "memfd of a survived rm");
    assert_eq!(d.client.get(&a.id).await.unwrap_err().status(), Some(404));
    assert_eq!(d.client.list().await.unwrap().len(), 2);

    // SIGTERM with two running (one busy with a long exec)
    let busy = {
        let cl = d.client.clone();
        let id = b.id.clone();
        tokio::spawn(async move {
            cl.exec(
                &id,
                &zygote_proto::api::ExecBody {
                    cmd: Some("sleep 600".into()),
                    ..Default::default()
                },
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = d.stop();
    assert!(
        st.success(),
        "daemon exit status {st:?}: {}",
        tail(&d.log(), 40)
    );
    let _ = busy.await;
    assert!(
        qemu_processes(&d.home.display().to_string()).is_empty(),
        "QEMU survived SIGTERM"
    );
    assert!(!d.socket.exists(), "daemon socket survived SIGTERM");
    let left = files_below(&sandboxes);
    assert!(left.is_empty(), "files survived SIGTERM: {left:?}");
    assert!(
        !std::path::Path::new(&format!("/proc/{daemon_pid}")).exists() || {
            // a zombie until reaped by the test is fine; it holds no fds
            memfds_of(daemon_pid).is_empty()
        }
    );
    let _ = c;
}

#[tokio::test(flavor = "multi_thread")]
async fn qemu_dying_marks_the_sandbox_dead_with_the_reason() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let sb = d.create().await;
    let pid = sb.pid.expect("pid");
    // SAFETY: kill(2) on the sandbox's QEMU, which this test owns.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let mut info = d.client.get(&sb.id).await.unwrap();
    for _ in 0..100 {
        if info.state == SandboxState::Dead {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        info = d.client.get(&sb.id).await.unwrap();
    }
    assert_eq!(info.state, SandboxState::Dead);
    let reason = info.reason.unwrap_or_default();
    assert!(reason.contains("QEMU exited"), "reason: {reason}");
    let e = d
        .client
        .exec(
            &sb.id,
            &zygote_proto::api::ExecBody {
                cmd: Some("true".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("dead"), "{e}");
    // the dead sandbox can be removed and is gone
    d.client.remove(&sb.id).await.unwrap();
    assert!(!d.home.join("sandboxes").join(&sb.id).exists());
}

/// Ten boots in a row, each must reach the agent (no retries in the engine).
#[tokio::test(flavor = "multi_thread")]
async fn consecutive_boots_all_reach_the_agent() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let mut failures = Vec::new();
    for i in 0..10 {
        match d.client.create(&CreateSandbox::default()).await {
            Ok(sb) => {
                d.client.remove(&sb.id).await.unwrap();
            }
            Err(e) => failures.push(format!("boot {i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 10 boots failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_reports_sandboxes_of_a_dead_daemon() {
    if !require_e2e() {
        return;
    }
    let mut d = Daemon::start().await;
    let sb = d.create().await;
    let pid = sb.pid.unwrap();
    // kill the daemon hard: its QEMU stays behind (a new daemon would adopt
    // it: see e2e_readopt); then the QEMU dies too while no daemon runs
    let mut child = d.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // SAFETY: kill(2) on the QEMU pid the daemon reported; no memory effects.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(eventually(Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }));
    // a new daemon on the same home reports it dead, with the reason
    let socket = d.socket.clone();
    let home = d.home.clone();
    let log = std::fs::File::create(d.dir.path().join("daemon2.log")).unwrap();
    let child = std::process::Command::new(zygote_bin())
        .args(["daemon", "--socket"])
        .arg(&socket)
        .arg("--home")
        .arg(&home)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    d.child = Some(child);
    assert!(eventually(Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    }));
    let info = loop {
        match d.client.get(&sb.id).await {
            Ok(i) => break i,
            Err(e) if e.is_connect() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(info.state, SandboxState::Dead);
    assert!(info.reason.unwrap_or_default().contains("daemon"));
    assert!(
        eventually(Duration::from_secs(5), || qemu_processes(
            &home.display().to_string()
        )
        .is_empty()),
        "orphan QEMU not stopped"
    );
    d.client.remove(&sb.id).await.unwrap();
}
