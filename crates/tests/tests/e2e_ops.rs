//! End-to-end operability: `GET /metrics` and the audit log reflect real calls on
//! a real guest (boot, exec, branch, spawn, deliberate 404s); SIGHUP after a
//! rotation makes the daemon write a fresh audit file; TLS on TCP round-trips
//! with the token while plain HTTP to that port fails cleanly; weak token files
//! and unusable TLS files stop the daemon before it starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zygote_client::{Client, Endpoint};
use zygote_proto::api::{BranchBody, SnapshotStatus, SpawnBody};
use zygote_tests::*;

const TOKEN: &str = "Ops-e2e-Token-5f1c9a7e3b2d4068";

/// The value of the one sample line `series` (exact name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn must(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample `{series}` in:\n{text}"))
}

/// Every line of the audit log, parsed (panics on a line that is not JSON).
fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

fn sighup(pid: u32) {
    // SAFETY: kill(2) on our own child's pid with a valid signal.
    let r = unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    assert_eq!(r, 0, "SIGHUP to the daemon failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_audit_lines_follow_real_calls() {
    if !require_e2e() {
        return;
    }
    let logs = tempfile::tempdir().unwrap();
    let audit = logs.path().join("nested/audit.log");
    let mut d = Daemon::start_with(&["--audit-log", audit.to_str().unwrap()]).await;
    let c = &d.client;

    // Real work: boot, exec, branch, one child, two deliberate 404s.
    let p = d.create().await;
    let r = d.sh(&p.id, "echo ops-$((6*7))").await;
    assert_eq!(r.stdout.trim(), "ops-42", "{r:?}");
    let snap = c
        .branch(
            &p.id,
            &BranchBody {
                tag: Some("ops1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("branch: {e}\n{}", tail(&d.log(), 40)));
    let pause_ms = snap.pause_ms.expect("a branch answer carries pause_ms");
    let mode = snap.mode.as_str();
    let kids = c
        .spawn(&SpawnBody {
            snapshot_tag: "ops1".into(),
            n: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let child = kids[0]
        .sandbox
        .as_ref()
        .unwrap_or_else(|| panic!("spawn failed: {:?}", kids[0].error))
        .id
        .clone();
    let (st, _) = c
        .raw("GET", "/v1/sandboxes/no-such-sandbox", None, vec![])
        .await
        .unwrap();
    assert_eq!(st, 404);
    let (st, _) = c.raw("GET", "/no/such/route", None, vec![]).await.unwrap();
    assert_eq!(st, 404);

    let (st, body) = c.raw("GET", "/metrics", None, vec![]).await.unwrap();
    assert_eq!(st, 200);
    let m = String::from_utf8(body).unwrap();
    assert_eq!(must(&m, "zygote_sandboxes{state=\"running\"}"), 2.0, "{m}");
    assert_eq!(must(&m, "zygote_sandboxes{state=\"booting\"}"), 0.0);
    assert_eq!(
        must(&m, "zygote_snapshots{status=\"ready\"}")
            + must(&m, "zygote_snapshots{status=\"writing\"}"),
        1.0
    );
    // the pause histogram holds exactly the pause the branch answered
    let pause = format!("zygote_branch_pause_seconds_count{{mode=\"{mode}\"}}");
    assert_eq!(must(&m, &pause), 1.0, "{m}");
    let sum = must(
        &m,
        &format!("zygote_branch_pause_seconds_sum{{mode=\"{mode}\"}}"),
    );
    assert!(
        (sum - pause_ms / 1000.0).abs() < 1e-6,
        "sum {sum} vs pause_ms {pause_ms}"
    );
    let inf = format!("zygote_branch_pause_seconds_bucket{{mode=\"{mode}\",le=\"+Inf\"}}");
    assert_eq!(must(&m, &inf), 1.0);
    assert_eq!(
        must(
            &m,
            &format!("zygote_branch_seconds_count{{mode=\"{mode}\"}}")
        ),
        1.0
    );
    assert_eq!(must(&m, "zygote_boot_seconds_count"), 1.0);
    let boot_s = must(&m, "zygote_boot_seconds_sum");
    assert!(
        (boot_s * 1000.0 - p.boot_ms.unwrap() as f64).abs() < 1.0,
        "{boot_s} vs {:?}",
        p.boot_ms
    );
    assert_eq!(must(&m, "zygote_spawn_seconds_count{phase=\"ready\"}"), 1.0);
    assert_eq!(
        must(&m, "zygote_spawn_seconds_count{phase=\"running\"}"),
        1.0
    );
    // errors by route: the 404 on a real route and the one no route has
    assert_eq!(
        must(
            &m,
            "zygote_http_errors_total{method=\"GET\",route=\"/v1/sandboxes/{id}\",status=\"404\"}"
        ),
        1.0
    );
    assert_eq!(
        must(
            &m,
            "zygote_http_errors_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ),
        1.0
    );
    assert!(sample(&m, "zygote_http_errors_total{method=\"POST\",route=\"/v1/sandboxes/{id}/exec\",status=\"200\"}").is_none());
    assert_eq!(
        must(&m, "zygote_http_requests_total{method=\"POST\",route=\"/v1/sandboxes/{id}/exec\",status=\"200\"}"),
        1.0
    );
    // memory: two 256 MiB guests, two QEMUs holding RAM, one snapshot's RAM
    assert_eq!(
        must(&m, "zygote_memory_bytes{kind=\"guest_configured\"}"),
        (p.memory_mib * 2 * 1024 * 1024) as f64
    );
    let rss = must(&m, "zygote_memory_bytes{kind=\"qemu_rss\"}");
    assert!(rss > 32.0 * 1024.0 * 1024.0, "qemu_rss {rss}");
    assert!(must(&m, "zygote_memory_bytes{kind=\"qemu_private\"}") > 0.0);
    assert_eq!(
        must(&m, "zygote_memory_bytes{kind=\"snapshot_ram\"}"),
        snap.memory_bytes as f64
    );

    // The spawn made `ops1` hot: its pool of pre-started children refills in the
    // background, and the gauge follows.
    let t0 = Instant::now();
    loop {
        let (_, body) = c.raw("GET", "/metrics", None, vec![]).await.unwrap();
        let m = String::from_utf8(body).unwrap();
        if sample(&m, "zygote_prestarted{snapshot=\"ops1\"}").unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no pre-started child of ops1 in /metrics:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let scrapes = audit_lines(&audit)
        .iter()
        .filter(|l| l["path"] == "/metrics")
        .count();

    // The audit log: one line per call, in order (the start-up health polls first).
    let lines: Vec<serde_json::Value> = audit_lines(&audit)
        .into_iter()
        .filter(|l| l["path"] != "/healthz")
        .take(7)
        .collect();
    let me = std::process::id();
    // 202 while the snapshot's memory.bin is still being written
    let branch_status = if snap.status == SnapshotStatus::Writing {
        202
    } else {
        201
    };
    let expect: &[(&str, &str, u16, Option<&str>)] = &[
        ("POST", "/v1/sandboxes", 201, Some(&p.id)),
        (
            "POST",
            &format!("/v1/sandboxes/{}/exec", p.id),
            200,
            Some(&p.id),
        ),
        (
            "POST",
            &format!("/v1/sandboxes/{}/branch", p.id),
            branch_status,
            Some(&p.id),
        ),
        ("POST", "/v1/snapshots/ops1/spawn", 201, None),
        (
            "GET",
            "/v1/sandboxes/no-such-sandbox",
            404,
            Some("no-such-sandbox"),
        ),
        ("GET", "/no/such/route", 404, None),
        ("GET", "/metrics", 200, None),
    ];
    assert_eq!(lines.len(), expect.len(), "{lines:#?}");
    assert!(scrapes >= 2, "every scrape is audited");
    for (l, (method, path, status, sandbox)) in lines.iter().zip(expect) {
        assert_eq!(l["method"], *method, "{l}");
        assert_eq!(l["path"], *path, "{l}");
        assert_eq!(l["status"], *status, "{l}");
        assert_eq!(l["sandbox"].as_str(), *sandbox, "{l}");
        assert_eq!(l["caller"]["transport"], "unix", "{l}");
        assert_eq!(l["caller"]["uid"], 0, "{l}");
        assert_eq!(l["caller"]["pid"], me, "{l}");
        assert_eq!(l["caller"]["token"], false, "{l}");
        assert!(l["latency_ms"].as_f64().unwrap() >= 0.0, "{l}");
        assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    assert_eq!(lines[2]["snapshot"], "ops1");
    assert_eq!(lines[3]["children"], serde_json::json!([child]));
    assert!(lines[0]["latency_ms"].as_f64().unwrap() >= p.boot_ms.unwrap() as f64);

    // Rotation: rename, SIGHUP, and the next call lands in a fresh file at the path.
    let rotated = logs.path().join("nested/audit.log.1");
    std::fs::rename(&audit, &rotated).unwrap();
    sighup(d.pid());
    assert!(
        eventually(Duration::from_secs(10), || audit.exists()),
        "no fresh audit file after SIGHUP:\n{}",
        tail(&d.log(), 20)
    );
    let info = c.get(&child).await.unwrap();
    assert_eq!(info.id, child);
    let fresh = audit_lines(&audit);
    assert_eq!(fresh.len(), 1, "{fresh:#?}");
    assert_eq!(fresh[0]["path"], format!("/v1/sandboxes/{child}"));
    assert_eq!(fresh[0]["sandbox"], child.as_str());
    let old = audit_lines(&rotated);
    assert_eq!(
        old.last().unwrap()["path"],
        "/metrics",
        "the call after the rotation went to the rotated file"
    );
    assert!(
        d.log().contains("audit log reopened"),
        "{}",
        tail(&d.log(), 20)
    );

    let home = d.home.clone();
    assert!(d.stop().success());
    assert!(
        qemu_processes(home.to_str().unwrap()).is_empty(),
        "QEMU left behind"
    );
}

/// A TLS client trusting exactly `cert_pem`.
fn tls_connector(cert_pem: &str) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// One HTTPS request (HTTP/1.1, `Connection: close`): status and body.
async fn https(
    tls: &tokio_rustls::TlsConnector,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tls.connect(name, tcp).await?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf).await {
        Ok(_) => {}
        // a peer that closes without close_notify; what arrived is the answer
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    Ok((status, body.to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_round_trip_with_the_token_and_plain_http_fails_cleanly() {
    if !require_e2e() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let (cert, key, token_file) = (
        tmp.path().join("cert.pem"),
        tmp.path().join("key.pem"),
        tmp.path().join("token"),
    );
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_with(&[
        "--listen",
        &addr,
        "--token-file",
        token_file.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    let tls = tls_connector(&cert_pem);

    let (st, body) = https(&tls, port, "GET", "/v1/sandboxes", Some(TOKEN))
        .await
        .unwrap();
    assert_eq!((st, body.as_str()), (200, "[]"));
    let (st, body) = https(&tls, port, "GET", "/v1/sandboxes", None)
        .await
        .unwrap();
    assert_eq!(st, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    let (st, body) = https(&tls, port, "GET", "/metrics", None).await.unwrap();
    assert_eq!(st, 401, "/metrics must be behind the token on TCP: {body}");
    let (st, body) = https(&tls, port, "GET", "/metrics", Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(st, 200);
    assert!(
        body.contains("zygote_sandboxes{state=\"running\"} 0"),
        "{body}"
    );

    // Plain HTTP to the TLS port: a clean 400 naming https, not a hang or garbage.
    let plain = Client::new(
        Endpoint::from_url(&format!("http://{addr}"), Some(TOKEN.into()), None).unwrap(),
    );
    let e = plain.list().await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("https://"), "{e}");
    // Bytes that are neither HTTP nor TLS: the connection is closed.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    raw.write_all(&[0u8, 1, 2, 3, 0xff, 0xfe, 0, 0])
        .await
        .unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), raw.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the daemon kept a garbage connection open");
    // A client that does not trust the certificate fails its handshake.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    assert!(https(
        &tls_connector(&other.cert.pem()),
        port,
        "GET",
        "/healthz",
        Some(TOKEN)
    )
    .await
    .is_err());

    // And the daemon keeps serving, over TLS and over its Unix socket.
    let (st, body) = https(&tls, port, "GET", "/healthz", Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(st, 200, "{body}");
    assert!(d.client.health().await.unwrap().ok);

    // The audit log names the TCP peer and whether a token came, never the token.
    let audit = d.home.join("audit.log");
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(TOKEN), "the token leaked into the audit log");
    let tls_lines: Vec<serde_json::Value> = audit_lines(&audit)
        .into_iter()
        .filter(|l| l["caller"]["transport"] == "tls")
        .collect();
    let seen: Vec<(String, u64, bool)> = tls_lines
        .iter()
        .map(|l| {
            let a = l["caller"]["addr"].as_str().unwrap();
            assert!(a.starts_with("127.0.0.1:"), "{l}");
            (
                l["path"].as_str().unwrap().to_string(),
                l["status"].as_u64().unwrap(),
                l["caller"]["token"].as_bool().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64, bool)> = [
        ("/v1/sandboxes", 200, true),
        ("/v1/sandboxes", 401, false),
        ("/metrics", 401, false),
        ("/metrics", 200, true),
        ("/healthz", 200, true),
    ]
    .iter()
    .map(|(p, s, t)| (p.to_string(), *s, *t))
    .collect();
    assert_eq!(seen, want);
}

/// Run `zygote daemon` expecting it to refuse to start; its stderr.
fn refused(dir: &Path, args: &[&str]) -> String {
    let socket = dir.join("d.sock");
    let mut child = Command::new(zygote_bin())
        .arg("daemon")
        .arg("--socket")
        .arg(&socket)
        .arg("--home")
        .arg(dir.join("home"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            // SAFETY: kill(2) on our own child's pid with a valid signal.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
            panic!("the daemon started with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{args:?}: {err}");
    assert!(!socket.exists(), "{args:?}: the socket was created");
    err
}

#[test]
fn weak_token_files_and_unusable_tls_files_refuse_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("token");
    let fs = f.to_str().unwrap();
    for (text, why) in [
        ("", "it is empty"),
        ("\n\n", "it is empty"),
        ("k3Y9\n", "too short (4 characters, fewer than 16)"),
        ("changeme\n", "placeholder (it contains `changeme`)"),
        ("token\n", "placeholder (`token`)"),
        (
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
            "placeholder (only 1 distinct",
        ),
        ("<insert token>\n", "placeholder"),
    ] {
        std::fs::write(&f, text).unwrap();
        let err = refused(tmp.path(), &["--listen", "127.0.0.1:0", "--token-file", fs]);
        assert!(
            err.contains(&format!("token file {fs}: ")),
            "{text:?}: {err}"
        );
        assert!(err.contains(why), "{text:?}: {err}");
        assert!(
            err.contains(&format!("head -c 32 /dev/urandom | base64 > {fs}")),
            "{text:?}: the fix is not named: {err}"
        );
    }
    let err = refused(
        tmp.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            "/nonexistent/token",
        ],
    );
    assert!(
        err.contains("cannot read token file /nonexistent/token"),
        "{err}"
    );

    // TLS: a key that is not PEM, a certificate file without a certificate, and
    // a certificate with the wrong key.
    let a = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let write = |name: &str, text: &str| -> PathBuf {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cert = write("cert.pem", &a.cert.pem());
    let key_b = write("key-b.pem", &b.key_pair.serialize_pem());
    let junk = write("junk.pem", "hello\n");
    // A good token, so the TLS files are what is refused.
    let good = write("good-token", "k3Y9-a-long-enough-token-0123456789\n");
    let tls = |cert: &Path, key: &Path| {
        refused(
            tmp.path(),
            &[
                "--listen",
                "127.0.0.1:0",
                "--token-file",
                good.to_str().unwrap(),
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
        )
    };
    let err = tls(&junk, &key_b);
    assert!(
        err.contains(&format!("TLS certificate {}", junk.display()))
            && err.contains("BEGIN CERTIFICATE"),
        "{err}"
    );
    let err = tls(&cert, &junk);
    assert!(
        err.contains(&format!("TLS key {}", junk.display())) && err.contains("--tls-key"),
        "{err}"
    );
    let err = tls(&cert, &key_b);
    assert!(
        err.contains("cannot be used together") && err.contains("key-b.pem"),
        "{err}"
    );
    // --tls-cert without --listen is a usage error
    let err = refused(
        tmp.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key_b.to_str().unwrap(),
        ],
    );
    assert!(err.contains("--listen"), "{err}");
}
