//! End-to-end: bad input gets a clear 4xx naming the value, and the daemon
//! keeps serving (the same sandbox still runs commands afterwards).

mod common;

use common::*;
use zygote_proto::api::{CreateSandbox, ExecBody};

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
