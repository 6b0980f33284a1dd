//! End-to-end: bad input gets a clear 4xx naming the value, and the daemon
//! keeps serving (the same sandbox still runs commands afterwards).

use zygote_proto::api::{CreateSandbox, ExecBody};
use zygote_tests::*;

fn error_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("error body is not JSON: {}", String::from_utf8_lossy(body)));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no `error` field in {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_clearly_and_the_daemon_keeps_serving() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let sb = d.create().await;
    let c = &d.client;
    let id = sb.id.as_str();
    let json = Some("application/json");

    // unknown image
    let e = c
        .create(&CreateSandbox {
            image: Some("no-such-image".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(
        e.to_string().contains("no-such-image") && e.to_string().contains("zygote image build"),
        "{e}"
    );
    let e = c
        .create(&CreateSandbox {
            image: Some("../etc".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");

    // sizes out of range
    let e = c
        .create(&CreateSandbox {
            memory_mib: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("memory_mib 1"), "{e}");
    let e = c
        .create(&CreateSandbox {
            vcpus: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));

    // empty argv, both argv and cmd
    let e = c.exec(id, &ExecBody::default()).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("argv is empty"), "{e}");
    let e = c
        .exec(
            id,
            &ExecBody {
                argv: vec!["true".into()],
                cmd: Some("true".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    let e = c
        .exec(
            id,
            &ExecBody {
                argv: vec!["true".into()],
                timeout_secs: Some(-1.0),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("timeout_secs -1"), "{e}");

    // relative and `..` file paths, on every file route
    for p in ["tmp/x", "/tmp/../etc/passwd", ""] {
        let e = c.upload(id, p, b"x".to_vec()).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "upload {p}: {e}");
        let e = c.download(id, p).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "download {p}: {e}");
        let e = c.stat(id, p).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "stat {p}: {e}");
        let e = c.remove_path(id, p, false).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "remove {p}: {e}");
    }
    let e = c.download(id, "/tmp/../etc/passwd").await.unwrap_err();
    assert!(e.to_string().contains("`/tmp/../etc/passwd`"), "{e}");
    let (st, body) = c
        .raw("GET", &format!("/v1/sandboxes/{id}/files"), None, vec![])
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert!(error_of(&body).contains("`path`"));

    // malformed JSON, wrong types, unknown fields, missing content type
    let (st, body) = c
        .raw("POST", "/v1/sandboxes", json, b"{not json".to_vec())
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert!(
        error_of(&body).contains("malformed JSON"),
        "{}",
        error_of(&body)
    );
    let (st, body) = c
        .raw(
            "POST",
            "/v1/sandboxes",
            json,
            br#"{"memory_mib": "lots"}"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert!(
        error_of(&body).contains("memory_mib"),
        "{}",
        error_of(&body)
    );
    let (st, body) = c
        .raw(
            "POST",
            "/v1/sandboxes",
            json,
            br#"{"imaeg": "python"}"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert!(error_of(&body).contains("imaeg"), "{}", error_of(&body));
    let (st, body) = c
        .raw(
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            json,
            br#"{"argv": ["true"], "shell": true}"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert!(error_of(&body).contains("shell"), "{}", error_of(&body));
    let (st, _) = c
        .raw(
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            None,
            br#"{"argv": ["true"]}"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(st, 400);

    // an oversized agent frame: refused with 413, the link stays usable
    let huge = "x = 1\n".repeat(40_000); // 240 KB of code > the 64 KiB header cap
    let e = c.eval(id, &huge).await.unwrap_err();
    assert_eq!(e.status(), Some(413), "{e}");
    assert!(e.to_string().contains("frame cap"), "{e}");
    let e = c
        .exec(
            id,
            &ExecBody {
                argv: vec!["echo".into(), "y".repeat(2_000_000)],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(413), "{e}");

    // unknown ids and routes
    for (m, p) in [
        ("GET", "/v1/sandboxes/0123456789abcdef01234567".to_string()),
        ("DELETE", "/v1/sandboxes/nope".to_string()),
        ("POST", "/v1/sandboxes/nope/eval".to_string()),
        ("GET", "/v1/sandboxes/nope/files?path=/x".to_string()),
        ("GET", "/v1/nothing-here".to_string()),
    ] {
        let body = if m == "POST" {
            br#"{"code": "1"}"#.to_vec()
        } else {
            vec![]
        };
        let (st, b) = c.raw(m, &p, json, body).await.unwrap();
        assert_eq!(st, 404, "{m} {p}");
        assert!(!error_of(&b).is_empty());
    }
    let (st, b) = c
        .raw("GET", "/v1/sandboxes/nope", None, vec![])
        .await
        .unwrap();
    assert_eq!(st, 404);
    assert!(error_of(&b).contains("`nope`"));

    // every route, ours and forkd-shaped: one bad input or more each, answered
    // with a 4xx whose message names the bad value. `bi` is a snapshot of the
    // running sandbox (no extra boot) so spawn checks get past the tag.
    let (st, b) = c
        .raw(
            "POST",
            &format!("/v1/sandboxes/{id}/branch"),
            json,
            br#"{"tag": "bi", "wait": true}"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    let sbp = format!("/v1/sandboxes/{id}");
    let cases: Vec<(&str, String, Option<&str>, u16, &str)> = vec![
        // input-less routes: a wrong method
        ("POST", "/healthz".into(), None, 405, "POST"),
        ("DELETE", "/version".into(), None, 405, "/version"),
        ("PUT", "/openapi.json".into(), None, 405, "PUT"),
        ("POST", "/v1/images".into(), None, 405, "/v1/images"),
        ("PUT", "/v1/sandboxes".into(), None, 405, "PUT"),
        ("PATCH", "/v1/snapshots".into(), None, 405, "PATCH"),
        ("PATCH", format!("{sbp}/ping"), None, 405, "PATCH"),
        // POST /v1/sandboxes: ours without snapshot_tag, forkd's with it
        (
            "POST",
            "/v1/sandboxes".into(),
            Some(r#"{"image": "python", "n": 2}"#),
            400,
            "`n`",
        ),
        (
            "POST",
            "/v1/sandboxes".into(),
            Some(r#"{"snapshot_tag": "nope", "n": 2, "per_child_netns": true}"#),
            404,
            "`nope`",
        ),
        (
            "POST",
            "/v1/sandboxes".into(),
            Some(r#"{"snapshot_tag": "../etc"}"#),
            400,
            "`../etc`",
        ),
        (
            "POST",
            "/v1/sandboxes".into(),
            Some(r#"{"snapshot_tag": "bi", "live_frok": true}"#),
            400,
            "live_frok",
        ),
        (
            "POST",
            "/v1/sandboxes".into(),
            Some(r#"{"snapshot_tag": "bi", "n": 0}"#),
            400,
            "n 0",
        ),
        (
            "POST",
            "/v1/sandboxes".into(),
            Some(r#"{"snapshot_tag": "bi", "n": 1000, "per_child_netns": false}"#),
            400,
            "n 1000",
        ),
        (
            "POST",
            "/v1/sandboxes".into(),
            Some(r#"{"snapshot_tag": "bi", "n": "two"}"#),
            400,
            "two",
        ),
        (
            "POST",
            "/v1/sandboxes".into(),
            Some(r#"{"snapshot_tag": "bi", "memory_mib": 512}"#),
            400,
            "memory_mib 512",
        ),
        (
            "POST",
            "/v1/sandboxes".into(),
            Some(r#"{"snapshot_tag": "bi", "hugepages": true}"#),
            400,
            "hugepages",
        ),
        // branch and fork
        (
            "POST",
            format!("{sbp}/branch"),
            Some(r#"{"mode": "fast"}"#),
            400,
            "fast",
        ),
        (
            "POST",
            format!("{sbp}/branch"),
            Some(r#"{"mode": "full", "diff": true}"#),
            400,
            "`mode`",
        ),
        (
            "POST",
            format!("{sbp}/branch"),
            Some(r#"{"diff": true, "live": true}"#),
            400,
            "`live`",
        ),
        (
            "POST",
            format!("{sbp}/branch"),
            Some(r#"{"tag": "../x"}"#),
            400,
            "`../x`",
        ),
        (
            "POST",
            format!("{sbp}/branch"),
            Some(r#"{"tag": "bi", "mode": "full"}"#),
            409,
            "`bi`",
        ),
        (
            "POST",
            format!("{sbp}/branch"),
            Some(r#"{"tagg": "x"}"#),
            400,
            "tagg",
        ),
        (
            "POST",
            format!("{sbp}/branch"),
            Some(r#"{"mode": "live", "downtime_limit_ms": 0}"#),
            400,
            "downtime_limit_ms 0",
        ),
        (
            "POST",
            "/v1/sandboxes/nope/branch".into(),
            Some(r#"{"mode": "full"}"#),
            404,
            "`nope`",
        ),
        (
            "POST",
            format!("{sbp}/fork"),
            Some(r#"{"n": "x"}"#),
            400,
            "\"x\"",
        ),
        (
            "POST",
            "/v1/sandboxes/nope/fork".into(),
            Some("{}"),
            404,
            "`nope`",
        ),
        (
            "POST",
            "/v1/sandboxes/nope/ping".into(),
            None,
            404,
            "`nope`",
        ),
        // exec, forkd's {args, timeout_secs} and ours; the stream
        (
            "POST",
            format!("{sbp}/exec"),
            Some(r#"{"args": []}"#),
            400,
            "args is empty",
        ),
        (
            "POST",
            format!("{sbp}/exec"),
            Some(r#"{"args": "ls"}"#),
            400,
            "\"ls\"",
        ),
        (
            "POST",
            format!("{sbp}/exec"),
            Some(r#"{"args": ["true"], "timeout_secs": -1}"#),
            400,
            "timeout_secs -1",
        ),
        (
            "POST",
            format!("{sbp}/exec"),
            Some(r#"{"args": ["a"], "argv": ["b"]}"#),
            400,
            "`argv`",
        ),
        (
            "POST",
            format!("{sbp}/exec"),
            Some(r#"{"args": ["true"], "timeout": 5}"#),
            400,
            "`timeout`",
        ),
        (
            "POST",
            "/v1/sandboxes/nope/exec".into(),
            Some(r#"{"args": ["true"]}"#),
            404,
            "`nope`",
        ),
        (
            "POST",
            format!("{sbp}/exec/stream"),
            Some(r#"{"args": []}"#),
            400,
            "args is empty",
        ),
        (
            "POST",
            format!("{sbp}/exec/stream"),
            Some(r#"{"argv": ["true"], "tty": true}"#),
            400,
            "tty",
        ),
        // eval
        (
            "POST",
            format!("{sbp}/eval"),
            Some(r#"{"code": 5}"#),
            400,
            "5",
        ),
        (
            "POST",
            format!("{sbp}/eval"),
            Some(r#"{"cod": "1"}"#),
            400,
            "cod",
        ),
        // snapshots
        (
            "POST",
            "/v1/snapshots".into(),
            Some(r#"{"tag": "../x"}"#),
            400,
            "`../x`",
        ),
        (
            "POST",
            "/v1/snapshots".into(),
            Some(r#"{"tag": "bi"}"#),
            409,
            "`bi`",
        ),
        (
            "POST",
            "/v1/snapshots".into(),
            Some(r#"{"tag": "x", "kernel": "/k", "rootfs": "/r"}"#),
            400,
            "kernel",
        ),
        (
            "POST",
            "/v1/snapshots".into(),
            Some(r#"{"tag": "x", "warmpu": "1"}"#),
            400,
            "warmpu",
        ),
        ("GET", "/v1/snapshots/nope".into(), None, 404, "`nope`"),
        ("GET", "/v1/snapshots/-bad".into(), None, 400, "`-bad`"),
        ("DELETE", "/v1/snapshots/nope".into(), None, 404, "`nope`"),
        (
            "DELETE",
            "/v1/snapshots/bi?cascade=maybe".into(),
            None,
            400,
            "cascade `maybe`",
        ),
        (
            "DELETE",
            "/v1/snapshots/bi?force=yes".into(),
            None,
            400,
            "force `yes`",
        ),
        (
            "DELETE",
            "/v1/snapshots/bi?cascade=true&force=true".into(),
            None,
            400,
            "cascade and force",
        ),
        (
            "DELETE",
            "/v1/snapshots/bi?recursive=true".into(),
            None,
            400,
            "`recursive`",
        ),
        // files
        (
            "PUT",
            format!("{sbp}/files?path=/tmp/x&mode=9"),
            None,
            400,
            "mode `9`",
        ),
        (
            "GET",
            format!("{sbp}/files/list?path=tmp"),
            None,
            400,
            "`tmp`",
        ),
        (
            "GET",
            format!("{sbp}/files/stat?path=/x&bogus=1"),
            None,
            400,
            "`bogus`",
        ),
        (
            "DELETE",
            format!("{sbp}/files?path=/tmp/x&recursive=maybe"),
            None,
            400,
            "recursive `maybe`",
        ),
    ];
    for (m, p, body, want, needle) in cases {
        let (st, b) = c
            .raw(m, &p, json, body.unwrap_or("").as_bytes().to_vec())
            .await
            .unwrap();
        let err = error_of(&b);
        assert_eq!(st, want, "{m} {p} {body:?}: {err}");
        assert!(
            err.contains(needle),
            "{m} {p} {body:?}: `{needle}` not in: {err}"
        );
    }
    // none of that deleted or changed `bi`
    let (st, _) = c
        .raw("GET", "/v1/snapshots/bi", None, vec![])
        .await
        .unwrap();
    assert_eq!(st, 200);

    // after all that, the daemon and the sandbox still serve
    assert!(c.health().await.unwrap().ok);
    assert_eq!(d.sh(id, "echo still-here").await.stdout, "still-here\n");
    assert_eq!(
        c.eval(id, "6 * 7").await.unwrap().result.as_deref(),
        Some("42")
    );
    let spec: serde_json::Value = {
        let (st, b) = c.raw("GET", "/openapi.json", None, vec![]).await.unwrap();
        assert_eq!(st, 200);
        serde_json::from_slice(&b).unwrap()
    };
    assert!(spec["paths"]["/v1/sandboxes/{id}/exec"].is_object());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_a_stream_does_not_wedge_the_sandbox() {
    use tokio::io::AsyncWriteExt;
    if !require_e2e() {
        return;
    }
    let d = Daemon::start_with(&["--prestart", "0"]).await;
    let sb = d.create().await;
    let c = &d.client;
    let p = c
        .start_process(
            &sb.id,
            &zygote_proto::api::ProcessStart {
                cmd: Some("yes 'a line the reader never reads'".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Follow its output and never read a byte.
    let mut raw = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    let req = format!(
        "GET /v1/sandboxes/{}/processes/{}/output HTTP/1.1\r\nHost: x\r\n\r\n",
        sb.id, p.pid
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // The sandbox answers everyone else meanwhile.
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), c.ping(&sb.id))
            .await
            .expect("a stalled reader wedged the sandbox");
        r.unwrap();
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(d.sh(&sb.id, "echo ok").await.stdout, "ok\n");
    }
    // The process still runs (only the follower was let go), and a new
    // follower that reads sees its output.
    let ps = c.processes(&sb.id).await.unwrap();
    assert!(
        ps.iter().any(|x| x.pid == p.pid && x.exit.is_none()),
        "{ps:?}"
    );
    assert!(d.log().contains("fell behind"), "{}", tail(&d.log(), 30));
    c.kill_process(&sb.id, p.pid).await.unwrap();
    drop(raw);
    // Following a pid that does not exist is a plain 404, before any stream.
    let e = c
        .process_output(&sb.id, 999_999, false, |_| {})
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(
        e.to_string().contains("no background process 999999"),
        "{e}"
    );
}
