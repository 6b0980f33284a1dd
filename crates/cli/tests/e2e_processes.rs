//! End-to-end: background processes, terminals and directory trees on real
//! guests, through the REST client and the CLI (the shell driven under tmux,
//! as a person would).

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use zygote_proto::api::{ExecBody, ExecEvent, ProcessStart};
use zygote_proto::procs::PtySize;
use zygote_tests::*;

fn text(ev: &ExecEvent) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    match ev {
        ExecEvent::Stdout { data_b64 } | ExecEvent::Stderr { data_b64 } => {
            String::from_utf8_lossy(&b64.decode(data_b64).unwrap()).into_owned()
        }
        _ => String::new(),
    }
}

/// Follow `pid` until `needle` shows up (or the stream ends); what it printed.
async fn output_until(d: &Daemon, id: &str, pid: u32, replay: bool, needle: &str) -> String {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let c = d.client.clone();
    let sink = seen.clone();
    let fut = c.process_output(id, pid, replay, move |ev| {
        sink.lock().unwrap().push_str(&text(ev))
    });
    // The stream runs until exit: stop reading once the needle is there.
    let deadline = Instant::now() + Duration::from_secs(30);
    tokio::pin!(fut);
    loop {
        tokio::select! {
            _ = &mut fut => return seen.lock().unwrap().clone(),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                let s = seen.lock().unwrap().clone();
                if s.contains(needle) || Instant::now() > deadline {
                    return s;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_background_server_listed_reattached_and_killed() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let c = &d.client;
    let sb = d.create().await;
    let p = c
        .start_process(
            &sb.id,
            &ProcessStart {
                cmd: Some("python3 -u -m http.server 8000 --bind 127.0.0.1".into()),
                tag: Some("web".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(p.exit.is_none() && p.tag.as_deref() == Some("web"));
    // It serves: a foreground exec in the same guest fetches from it.
    let t0 = Instant::now();
    loop {
        let r = d
            .sh(&sb.id, "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/').status)\"")
            .await;
        if r.stdout.trim() == "200" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the server never answered: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = c.processes(&sb.id).await.unwrap();
    assert!(listed
        .iter()
        .any(|q| q.pid == p.pid && q.cmd.contains("http.server")));
    // A second client re-attaches and sees what it logged before (replayed).
    let other = zygote_client::Client::new(zygote_client::Endpoint::Unix(d.socket.clone()));
    let mut seen = String::new();
    let c2 = other.clone();
    let id = sb.id.clone();
    let follower = tokio::spawn(async move {
        c2.process_output(&id, p.pid, true, |ev| seen.push_str(&text(ev)))
            .await
            .map(|end| (end, seen))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill_process(&sb.id, p.pid).await.unwrap();
    let (end, seen) = follower.await.unwrap().unwrap();
    assert!(seen.contains("GET / HTTP"), "{seen:?}");
    assert!(
        matches!(
            end,
            ExecEvent::Exit {
                signal: Some(9),
                ..
            }
        ),
        "{end:?}"
    );
    let listed = c.processes(&sb.id).await.unwrap();
    let q = listed.iter().find(|q| q.pid == p.pid).unwrap();
    assert_eq!(q.exit.as_ref().unwrap().signal, Some(9));
    // Unknown pids and sandboxes are clear errors.
    let e = c.kill_process(&sb.id, 999_999).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let e = c.processes("no-such-sandbox").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_streams_and_a_python_repl_on_a_terminal() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let c = &d.client;
    let sb = d.create().await;
    // stdin in pieces, then closed.
    let p = c
        .start_process(
            &sb.id,
            &ProcessStart {
                argv: vec!["sh".into(), "-c".into(), "tr a-z A-Z".into()],
                stdin: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    c.process_stdin(&sb.id, p.pid, b"first ".to_vec(), false)
        .await
        .unwrap();
    c.process_stdin(&sb.id, p.pid, b"second\n".to_vec(), true)
        .await
        .unwrap();
    let out = output_until(&d, &sb.id, p.pid, true, "SECOND").await;
    assert!(out.contains("FIRST SECOND"), "{out:?}");
    // An interactive python3 on a terminal.
    let py = c
        .start_process(
            &sb.id,
            &ProcessStart {
                argv: vec!["python3".into(), "-i".into(), "-q".into()],
                pty: Some(PtySize { rows: 24, cols: 80 }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(py.pty);
    c.process_stdin(&sb.id, py.pid, b"x = 6 * 7\n".to_vec(), false)
        .await
        .unwrap();
    c.process_stdin(&sb.id, py.pid, b"print('answer', x)\n".to_vec(), false)
        .await
        .unwrap();
    let out = output_until(&d, &sb.id, py.pid, true, "answer 42").await;
    assert!(out.contains("answer 42"), "{out:?}");
    c.resize_process(&sb.id, py.pid, 40, 100).await.unwrap();
    c.process_stdin(
        &sb.id,
        py.pid,
        b"import os; print(os.get_terminal_size())\n".to_vec(),
        false,
    )
    .await
    .unwrap();
    // Replay from the start: python may answer before a live attach subscribes.
    let out = output_until(&d, &sb.id, py.pid, true, "lines=40").await;
    assert!(out.contains("columns=100, lines=40"), "{out:?}");
    c.process_stdin(&sb.id, py.pid, b"exit(5)\n".to_vec(), false)
        .await
        .unwrap();
    let end = c
        .process_output(&sb.id, py.pid, false, |_| {})
        .await
        .unwrap();
    assert!(
        matches!(
            end,
            ExecEvent::Exit {
                exit_code: Some(5),
                ..
            }
        ),
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trees_users_and_the_cli() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let c = &d.client;
    let sb = d.create().await;
    c.make_dir(&sb.id, "/srv/app/static", true).await.unwrap();
    let (st, body) = c
        .raw(
            "POST",
            &format!("/v1/sandboxes/{}/files/batch", sb.id),
            Some("application/json"),
            serde_json::to_vec(&serde_json::json!({"files": [
                {"path": "/srv/app/main.py", "data": "print('hi')\n"},
                {"path": "/srv/app/static/x.bin", "data_b64": "AAEC", "mode": "600"}
            ]}))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    c.rename(&sb.id, "/srv/app/main.py", "/srv/app/app.py")
        .await
        .unwrap();
    let w = c.walk(&sb.id, "/srv", 3).await.unwrap();
    let paths: Vec<&str> = w.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/srv/app",
            "/srv/app/app.py",
            "/srv/app/static",
            "/srv/app/static/x.bin"
        ]
    );
    let x = w.entries.iter().find(|e| e.name == "x.bin").unwrap();
    assert_eq!((x.size, x.mode & 0o777), (3, 0o600));
    let e = c.rename(&sb.id, "/srv/nope", "/srv/x").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    // user=
    let r = c
        .exec(
            &sb.id,
            &ExecBody {
                cmd: Some("id -un".into()),
                user: Some("nobody".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, "nobody\n");
    // The CLI: exec -d, ps, attach, kill.
    let z = |args: &[&str]| {
        Command::new(zygote_bin())
            .args(args)
            .env("ZYGOTE_SOCKET", &d.socket)
            .output()
            .unwrap()
    };
    let o = z(&[
        "exec",
        "-d",
        &sb.id,
        "--tag",
        "ticker",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do echo tick $i; sleep 0.2; done",
    ]);
    assert!(o.status.success(), "{o:?}");
    let pid = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = z(&["ps", &sb.id]);
    let ps = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(ps.contains("ticker") && ps.contains(&pid), "{ps}");
    let o = z(&["attach", &sb.id, &pid]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "tick 1\ntick 2\ntick 3\n"
    );
    assert!(o.status.success());
    let o = z(&["exec", "-d", &sb.id, "--", "sleep", "600"]);
    let pid = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(z(&["kill", &sb.id, &pid, "-s", "15"]).status.success());
    let o = z(&["attach", &sb.id, &pid]);
    assert_eq!(o.status.code(), Some(128 + 15), "{o:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn zygote_shell_under_tmux() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let sb = d.create().await;
    let session = format!("zyg{}", std::process::id());
    let cmd = format!(
        "ZYGOTE_SOCKET={} {} shell {}",
        d.socket.display(),
        zygote_bin(),
        sb.id
    );
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().unwrap();
    let o = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "30",
        &cmd,
    ]);
    assert!(o.status.success(), "{o:?}");
    let pane = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).to_string()
    };
    let wait_for = |needle: &str| {
        let t0 = Instant::now();
        loop {
            let p = pane();
            if p.contains(needle) {
                return p;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{needle:?} never showed:\n{p}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("#");
    tmux(&[
        "send-keys",
        "-t",
        &session,
        "echo hello-$((6*7)) && stty size",
        "Enter",
    ]);
    let p = wait_for("hello-42");
    assert!(
        p.contains("30 120"),
        "the guest terminal follows tmux's size:\n{p}"
    );
    // A resize reaches the guest.
    tmux(&["resize-window", "-t", &session, "-x", "100", "-y", "25"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", &session, "stty size", "Enter"]);
    wait_for("25 100");
    tmux(&["send-keys", "-t", &session, "exit", "Enter"]);
    let t0 = Instant::now();
    while tmux(&["has-session", "-t", &session]).status.success() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the shell did not end:\n{}",
            pane()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
