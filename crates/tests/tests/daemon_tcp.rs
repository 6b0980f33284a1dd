//! The daemon on TCP: bearer token required and compared, refused off loopback
//! without one, weak token files refused. No guest is booted here.

use std::process::{Command, Stdio};
use std::time::Duration;

use zygote_client::{Client, Endpoint};
use zygote_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn tcp_needs_the_bearer_token() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "s3cr3t-Token-For-Tests-0123456789\n").unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let tf = token_file.to_str().unwrap().to_string();
    let d = Daemon::start_with(&["--listen", &addr, "--token-file", &tf]).await;

    let good = Client::new(
        Endpoint::from_url(
            &format!("http://{addr}"),
            Some("s3cr3t-Token-For-Tests-0123456789".into()),
            None,
        )
        .unwrap(),
    );
    let h = good.health().await.unwrap();
    assert!(h.ok);
    assert_eq!(good.list().await.unwrap().len(), 0);

    for token in [
        None,
        Some("wrong".to_string()),
        Some("s3cr3t-Token-For-Tests-012345678".to_string()),
    ] {
        let bad = Client::new(
            Endpoint::from_url(&format!("http://{addr}"), token.clone(), None).unwrap(),
        );
        let e = bad.list().await.unwrap_err();
        assert_eq!(e.status(), Some(401), "token {token:?}: {e}");
        assert!(e.to_string().contains("Bearer"), "{e}");
    }
    // the Unix socket needs no token
    assert!(d.client.health().await.unwrap().ok);
}

#[test]
fn non_loopback_without_token_and_weak_tokens_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(zygote_bin())
            .arg("daemon")
            .arg("--socket")
            .arg(tmp.path().join("d.sock"))
            .arg("--home")
            .arg(tmp.path().join("home"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // Every TCP listener needs a token, loopback too.
    for addr in ["0.0.0.0:0", "127.0.0.1:0"] {
        let o = run(&["--listen", addr]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("needs a bearer token") && err.contains("--token-file"),
            "{err}"
        );
    }
    // Off loopback, TLS too (or an explicit --insecure-http).
    let good = tmp.path().join("good");
    std::fs::write(&good, "a-long-enough-token-0123456789\n").unwrap();
    let o = run(&[
        "--listen",
        "0.0.0.0:0",
        "--token-file",
        good.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--tls-cert") && err.contains("--insecure-http"),
        "{err}"
    );

    let weak = tmp.path().join("weak");
    std::fs::write(&weak, "changeme\n").unwrap();
    let o = run(&[
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        weak.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("token"), "{err}");
    assert!(!tmp.path().join("d.sock").exists() || eventually(Duration::from_secs(1), || true));
}

/// Slowloris, bounded and on loopback: clients that trickle a request head
/// (or send nothing) hold every connection slot; the daemon closes them after
/// `--header-timeout-secs`, so a real client waiting behind them is served
/// within about that time, and the Unix socket is served throughout.
#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_others_are_served() {
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    let token = "s3cr3t-Token-For-Tests-0123456789";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let tf = token_file.to_str().unwrap().to_string();
    let d = Daemon::start_with(&[
        "--listen",
        &addr,
        "--token-file",
        &tf,
        "--max-connections",
        "8",
        "--header-timeout-secs",
        "2",
    ])
    .await;

    // Eight slow clients: four trickle a head a byte at a time, four send nothing.
    let mut slow = Vec::new();
    for i in 0..8 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        slow.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let head = b"GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            let mut buf = [0u8; 256];
            for b in head.iter().cycle().take(200) {
                if i % 2 == 1 {
                    break;
                }
                if s.write_all(&[*b]).await.is_err() {
                    return t0.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Closed by the daemon: EOF or a reset.
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return t0.elapsed(),
                    Ok(_) => {}
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The Unix socket is a listener of its own: served at once.
    let t0 = Instant::now();
    assert!(d.client.health().await.unwrap().ok);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());

    // A real TCP client waits for a slot, then is served.
    let good = Client::new(
        Endpoint::from_url(&format!("http://{addr}"), Some(token.into()), None).unwrap(),
    );
    let t0 = Instant::now();
    assert!(good.health().await.unwrap().ok);
    let waited = t0.elapsed();
    assert!(waited < Duration::from_secs(8), "served after {waited:?}");

    for s in slow {
        let held = tokio::time::timeout(Duration::from_secs(10), s)
            .await
            .expect("the daemon closes a slow connection")
            .unwrap();
        assert!(
            held < Duration::from_secs(6),
            "a slow client held its connection {held:?}"
        );
    }
}
