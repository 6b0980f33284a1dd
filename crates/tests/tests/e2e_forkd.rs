//! End-to-end: the forkd-compatible REST surface. A daemon on TCP with a bearer
//! token, driven by a hand-written HTTP/1.1 client sending exactly the JSON a
//! forkd client sends (its SDKs' bodies), and reading the answers by forkd's
//! field names. One boot (the snapshot) and four restores.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zygote_tests::*;

const TOKEN: &str = "forkd-compat-Token-0123456789abcdef";

/// A forkd client's view of the daemon: raw HTTP over TCP.
struct Forkd {
    addr: String,
    token: Option<&'static str>,
}

impl Forkd {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut s = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(t) = self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(120), s.read_to_end(&mut raw))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer in 120 s"))
            .unwrap();
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{method} {path}: not HTTP: {text}"));
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let payload = if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        let v = if payload.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&payload)
                .unwrap_or_else(|e| panic!("{method} {path}: answer is not JSON ({e}): {payload}"))
        };
        (status, v)
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
        let (st, v) = self.call(method, path, body.clone()).await;
        assert_eq!(st, want, "{method} {path} {body:?}: {v}");
        v
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn warning(v: &Value) -> String {
    v["warning"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forkd_client_works_unchanged_against_zygote() {
    if !require_e2e() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(&[
        "--listen",
        &addr,
        "--token-file",
        token_file.to_str().unwrap(),
    ])
    .await;
    let f = Forkd {
        addr: addr.clone(),
        token: Some(TOKEN),
    };

    // status and discovery
    let h = f.ok("GET", "/healthz", None, 200).await;
    assert_eq!(h["ok"], true, "{h}");
    let v = f.ok("GET", "/version", None, 200).await;
    assert_eq!(v["api"], "v1", "{v}");
    assert!(v["version"].is_string(), "{v}");
    let anon = Forkd {
        addr: addr.clone(),
        token: None,
    };
    let (st, e) = anon.call("GET", "/v1/snapshots", None).await;
    assert_eq!(st, 401, "{e}");
    assert!(e["error"].as_str().unwrap().contains("Bearer"), "{e}");

    // a snapshot (our POST /v1/snapshots; forkd's kernel+rootfs build is refused clearly)
    let (st, e) = f
        .call(
            "POST",
            "/v1/snapshots",
            Some(json!({"tag": "fk", "kernel": "/k", "rootfs": "/r"})),
        )
        .await;
    assert_eq!(st, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("kernel"), "{e}");
    f.ok(
        "POST",
        "/v1/snapshots",
        Some(json!({"tag": "fk", "warmup": "warm = 41"})),
        201,
    )
    .await;
    let list = f.ok("GET", "/v1/snapshots", None, 200).await;
    let fk = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tag"] == "fk")
        .unwrap_or_else(|| panic!("fk not listed: {list}"))
        .clone();
    let dir = fk["dir"].as_str().unwrap();
    assert!(
        std::path::Path::new(dir).join("vmstate").exists(),
        "dir {dir}"
    );
    assert!(
        fk["created_at_unix"].as_u64().unwrap() > 1_600_000_000,
        "{fk}"
    );
    assert_eq!(fk["status"], "ready", "{fk}");
    assert_eq!(fk["bootable"], true, "{fk}");
    assert!(fk["branched_from"].is_string(), "{fk}");
    assert!(fk["pause_ms"].as_f64().is_some(), "{fk}");

    // POST /v1/sandboxes as forkd's Python SDK sends it: 201 and a list of sandboxes
    let kids = f
        .ok(
            "POST",
            "/v1/sandboxes",
            Some(json!({"snapshot_tag": "fk", "n": 2, "per_child_netns": true, "live_fork": true})),
            201,
        )
        .await;
    let kids = kids.as_array().unwrap().clone();
    assert_eq!(kids.len(), 2, "{kids:?}");
    for k in &kids {
        assert!(k["id"].is_string(), "{k}");
        assert_eq!(k["snapshot_tag"], "fk", "{k}");
        assert!(k["created_at_unix"].as_u64().is_some(), "{k}");
        assert!(k["pid"].as_u64().unwrap() > 1, "{k}");
        assert!(warning(k).contains("per_child_netns ignored"), "{k}");
        // live_fork -> private memory (branchable in copy mode)
        assert_eq!(k["sandbox"]["memory"], "own", "{k}");
    }
    let a = kids[0]["id"].as_str().unwrap().to_string();
    let b = kids[1]["id"].as_str().unwrap().to_string();
    let cow = f
        .ok(
            "POST",
            "/v1/sandboxes",
            Some(json!({"snapshot_tag": "fk", "n": 1, "per_child_netns": false})),
            201,
        )
        .await;
    let c = cow[0]["id"].as_str().unwrap().to_string();
    assert_eq!(cow[0]["sandbox"]["memory"], "cow", "{cow}");
    assert_eq!(warning(&cow[0]), "", "nothing was ignored: {cow}");

    // GET /v1/sandboxes and /v1/sandboxes/{id} in forkd's field names
    let all = f.ok("GET", "/v1/sandboxes", None, 200).await;
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    for id in [&a, &b, &c] {
        assert!(ids.contains(&id.as_str()), "{id} in {all}");
    }
    let one = f.ok("GET", &format!("/v1/sandboxes/{a}"), None, 200).await;
    assert_eq!(one["id"], a.as_str());
    assert_eq!(one["snapshot_tag"], "fk");
    assert!(one["created_at_unix"].as_u64().is_some() && one["pid"].as_u64().is_some());

    // exec {args, timeout_secs} -> {stdout, stderr, exit_code}
    let r = f
        .ok(
            "POST",
            &format!("/v1/sandboxes/{a}/exec"),
            Some(
                json!({"args": ["sh", "-c", "echo out; echo err >&2; exit 3"], "timeout_secs": 30}),
            ),
            200,
        )
        .await;
    assert_eq!(r["stdout"], "out\n", "{r}");
    assert_eq!(r["stderr"], "err\n", "{r}");
    assert_eq!(r["exit_code"], 3, "{r}");
    // a timeout kills it; forkd's exit_code is never null
    let r = f
        .ok(
            "POST",
            &format!("/v1/sandboxes/{b}/exec"),
            Some(json!({"args": ["sleep", "30"], "timeout_secs": 1})),
            200,
        )
        .await;
    assert_eq!(r["exit_code"], 137, "{r}");
    assert_eq!(r["timed_out"], true, "{r}");

    // eval {code} -> {result, error, exit_code}; the child inherited the warm-up
    let r = f
        .ok(
            "POST",
            &format!("/v1/sandboxes/{c}/eval"),
            Some(json!({"code": "warm + 1"})),
            200,
        )
        .await;
    assert_eq!(r["result"], "42", "{r}");
    assert!(r["error"].is_null(), "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    let r = f
        .ok(
            "POST",
            &format!("/v1/sandboxes/{c}/eval"),
            Some(json!({"code": "1/0"})),
            200,
        )
        .await;
    assert!(
        r["error"].as_str().unwrap().contains("ZeroDivisionError"),
        "{r}"
    );
    assert_eq!(r["exit_code"], 1, "{r}");
    assert!(r["result"].is_null(), "{r}");

    // ping, as the SDK sends it: POST without a body
    let p = f
        .ok("POST", &format!("/v1/sandboxes/{c}/ping"), None, 200)
        .await;
    assert_eq!(p["pong"], true, "{p}");

    // branch {mode: "full"} on a private child: copy, synchronous (forkd's wait default)
    let s = f
        .ok(
            "POST",
            &format!("/v1/sandboxes/{a}/branch"),
            Some(json!({"tag": "fk-a", "mode": "full"})),
            201,
        )
        .await;
    assert_eq!(s["tag"], "fk-a", "{s}");
    assert_eq!(s["mode"], "copy", "{s}");
    assert_eq!(s["status"], "ready", "{s}");
    assert_eq!(s["bootable"], true, "{s}");
    assert_eq!(s["branched_from"], a.as_str(), "{s}");
    assert_eq!(s["parent_snapshot"], "fk", "{s}");
    assert!(s["pause_ms"].as_f64().is_some(), "{s}");
    // {mode: "full"} on a copy-on-write child is taken live, and says so
    let s = f
        .ok(
            "POST",
            &format!("/v1/sandboxes/{c}/branch"),
            Some(json!({"tag": "fk-live", "mode": "full"})),
            201,
        )
        .await;
    assert_eq!(s["mode"], "live", "{s}");
    assert!(warning(&s).contains("taken as `live`"), "{s}");
    // {wait: false} -> 202 while memory.bin is written
    let s = f
        .ok(
            "POST",
            &format!("/v1/sandboxes/{b}/branch"),
            Some(json!({"tag": "fk-b", "mode": "diff", "wait": false})),
            202,
        )
        .await;
    assert_eq!(s["status"], "writing", "{s}");
    assert!(warning(&s).contains("no diff snapshots"), "{s}");
    // ... and turns ready once it is on disk
    let mut polls = 0;
    loop {
        let s = f.ok("GET", "/v1/snapshots/fk-b", None, 200).await;
        if s["status"] == "ready" {
            assert_eq!(s["bootable"], true, "{s}");
            break;
        }
        assert_eq!(s["status"], "writing", "{s}");
        polls += 1;
        assert!(polls < 600, "fk-b still writing after 60 s: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the source keeps working after all three branches
    let r = f
        .ok(
            "POST",
            &format!("/v1/sandboxes/{c}/exec"),
            Some(json!({"args": ["echo", "alive"]})),
            200,
        )
        .await;
    assert_eq!(r["stdout"], "alive\n", "{r}");

    // a grandchild from fk-a, then DELETE ?force=true: the snapshot goes, the child runs on
    let g = f
        .ok(
            "POST",
            "/v1/sandboxes",
            Some(json!({"snapshot_tag": "fk-a", "n": 1, "prewarm": true})),
            201,
        )
        .await;
    assert!(warning(&g[0]).contains("prewarm ignored"), "{g}");
    let g = g[0]["id"].as_str().unwrap().to_string();
    let (st, e) = f
        .call("DELETE", "/v1/snapshots/fk-a?cascade=true&force=true", None)
        .await;
    assert_eq!(st, 400, "{e}");
    let del = f
        .ok("DELETE", "/v1/snapshots/fk-a?force=true", None, 200)
        .await;
    assert_eq!(del["deleted_snapshots"], json!(["fk-a"]), "{del}");
    assert_eq!(del["running_children"], json!([g]), "{del}");
    assert!(del["warning"].is_null(), "{del}");
    f.ok("GET", "/v1/snapshots/fk-a", None, 404).await;
    let r = f
        .ok(
            "POST",
            &format!("/v1/sandboxes/{g}/exec"),
            Some(json!({"args": ["echo", "orphan-ok"]})),
            200,
        )
        .await;
    assert_eq!(r["stdout"], "orphan-ok\n", "{r}");
    // a plain DELETE of a snapshot without children
    let del = f.ok("DELETE", "/v1/snapshots/fk-live", None, 200).await;
    assert_eq!(del["deleted"], true, "{del}");
    assert!(del["warning"].is_null(), "{del}");

    // DELETE /v1/sandboxes/{id}, then it is gone
    let r = f
        .ok("DELETE", &format!("/v1/sandboxes/{g}"), None, 200)
        .await;
    assert_eq!(r["removed"], true, "{r}");
    f.ok("GET", &format!("/v1/sandboxes/{g}"), None, 404).await;
    assert!(qemu_processes(&g).is_empty());

    // ?cascade=true: fk, the snapshot branched from its child (fk-b) and every child go
    let del = f
        .ok("DELETE", "/v1/snapshots/fk?cascade=true", None, 200)
        .await;
    assert_eq!(del["deleted_snapshots"], json!(["fk", "fk-b"]), "{del}");
    let mut removed: Vec<String> = del["removed_sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    removed.sort();
    let mut want = vec![a.clone(), b.clone(), c.clone()];
    want.sort();
    assert_eq!(removed, want, "{del}");
    assert_eq!(f.ok("GET", "/v1/sandboxes", None, 200).await, json!([]));
    assert_eq!(f.ok("GET", "/v1/snapshots", None, 200).await, json!([]));
    for id in [&a, &b, &c] {
        assert!(qemu_processes(id).is_empty(), "{id} still has a QEMU");
    }
    assert!(
        files_below(&d.home.join("snapshots")).is_empty(),
        "{:?}",
        files_below(&d.home.join("snapshots"))
    );
    assert!(
        files_below(&d.home.join("disks")).is_empty(),
        "{:?}",
        files_below(&d.home.join("disks"))
    );
}
