//! The router against a fake engine, in-process: every route's status codes,
//! answer shapes, error bodies and the mapping of request bodies onto engine
//! calls; bearer-token auth; the audit line's ids. No QEMU, no sockets.

mod agent;
mod fake;
mod fuzz;
mod network;
mod volumes;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;
use zygote_engine::EngineError;

use self::fake::{env, Fake};
use crate::{metrics, routes, AppState};

const TOKEN: &str = "router-Test-Token-0123456789abcdef";

struct Harness {
    fake: Arc<Fake>,
    app: Router,
}

fn harness_with(token: Option<&str>) -> Harness {
    let fake = Arc::new(Fake::default());
    let state = AppState {
        engine: fake.clone(),
        metrics: Arc::new(metrics::Metrics::new()),
    };
    let app = routes::router(state, token.map(|t| Arc::new(t.to_string())));
    Harness { fake, app }
}

fn harness() -> Harness {
    harness_with(None)
}

/// An answer: status, headers, body bytes.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` of an error answer.
    fn error(&self) -> String {
        let v = self.json();
        assert_eq!(
            v.as_object().map(|o| o.len()),
            Some(1),
            "an error body is exactly {{\"error\"}}: {v}"
        );
        v["error"].as_str().unwrap().to_string()
    }
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Answer {
        let mut b = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(b.body(body).unwrap()).await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, None).await
    }

    async fn post(&self, uri: &str, body: Value) -> Answer {
        self.call(Method::POST, uri, Some(body)).await
    }

    async fn delete(&self, uri: &str) -> Answer {
        self.call(Method::DELETE, uri, None).await
    }

    async fn patch(&self, uri: &str, body: Value) -> Answer {
        self.call(Method::PATCH, uri, Some(body)).await
    }

    fn fail_next(&self, e: EngineError) {
        *self.fake.fail.lock().unwrap() = Some(e);
    }
}

#[tokio::test]
async fn service_routes() {
    let h = harness();
    let a = h.get("/healthz").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), json!({"ok": true, "sandboxes": 2}));
    let a = h.call(Method::POST, "/healthz", None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    let v = h.get("/version").await.json();
    assert_eq!(
        (v["qemu"].as_str(), v["accel"].as_str()),
        (Some("10.0.2"), Some("tcg"))
    );
    let a = h.get("/openapi.json").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.json()["paths"]["/v1/snapshots/{tag}/spawn"].is_object());
    let a = h.get("/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    let text = String::from_utf8(a.body).unwrap();
    assert!(
        text.contains("zygote_sandboxes{state=\"running\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("zygote_sandboxes{state=\"booting\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("zygote_prestarted{snapshot=\"warm\"} 2\n"),
        "{text}"
    );
    let a = h.get("/v1/images").await;
    assert_eq!(a.json()[0]["name"], "python");
    h.fail_next(EngineError::Conflict("image store busy".into()));
    let a = h.get("/v1/images").await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.error(), "image store busy");
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let h = harness();
    let a = h.get("/v2/nothing").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.error().contains("GET /v2/nothing"));
    let a = h.call(Method::PUT, "/v1/sandboxes", None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(a.error().contains("PUT"));
}

#[tokio::test]
async fn sandboxes_create_list_get_remove() {
    let h = harness();
    let a = h
        .post(
            "/v1/sandboxes",
            json!({"image": "python", "memory_mib": 512, "env": {"A": "1"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.json()["id"], "sb9");
    assert_eq!(a.json()["memory"], "cow");
    assert_eq!(
        h.fake.calls(),
        [format!(
            "create python mem=Some(512) env={:?}",
            env(&[("A", "1")])
        )]
    );
    let a = h.get("/v1/sandboxes").await;
    assert_eq!(a.json().as_array().unwrap().len(), 3);
    assert_eq!(a.json()[0]["state"], "running");
    let a = h.get("/v1/sandboxes/sb1").await;
    assert_eq!(
        (a.status, a.json()["pid"].as_u64()),
        (StatusCode::OK, Some(4242))
    );
    let a = h.get("/v1/sandboxes/nope").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.error().contains("`nope`"));
    let a = h.delete("/v1/sandboxes/sb1").await;
    assert_eq!(a.json(), json!({"id": "sb1", "removed": true}));
    assert_eq!(
        h.delete("/v1/sandboxes/nope").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_bodies_are_400s_naming_the_problem() {
    let h = harness();
    let a = h.post("/v1/sandboxes", json!({"imag": "python"})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("`imag`"), "{}", a.error());
    let a = h
        .send(
            Request::post("/v1/sandboxes")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("malformed JSON"));
    let a = h
        .send(
            Request::post("/v1/sandboxes")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("Content-Type"));
    let a = h.post("/v1/sandboxes", json!({"memory_mib": "big"})).await;
    assert!(a.error().contains("memory_mib"), "{}", a.error());
    assert!(h.fake.calls().is_empty(), "no engine call for a bad body");
}

#[tokio::test]
async fn engine_error_classes_become_statuses() {
    let h = harness();
    let cases = [
        (EngineError::BadRequest("b".into()), StatusCode::BAD_REQUEST),
        (EngineError::Conflict("c".into()), StatusCode::CONFLICT),
        (EngineError::ShuttingDown, StatusCode::SERVICE_UNAVAILABLE),
        (
            EngineError::NotImplemented("n".into()),
            StatusCode::NOT_IMPLEMENTED,
        ),
        (
            EngineError::Boot {
                reason: "slow".into(),
                console_tail: "tail".into(),
                timed_out: true,
            },
            StatusCode::GATEWAY_TIMEOUT,
        ),
        (
            EngineError::Boot {
                reason: "QEMU exited".into(),
                console_tail: "tail".into(),
                timed_out: false,
            },
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ];
    for (e, status) in cases {
        let msg = e.to_string();
        h.fail_next(e);
        let a = h.post("/v1/sandboxes", json!({})).await;
        assert_eq!(a.status, status, "{msg}");
        assert!(
            a.error().starts_with(&msg[..msg.len().min(5)]),
            "{}",
            a.error()
        );
    }
}

#[tokio::test]
async fn ping_exec_and_eval() {
    let h = harness();
    let a = h.post("/v1/sandboxes/sb1/ping", json!({})).await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(
        (v["ok"].as_bool(), v["pong"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(v["agent_rtt_ms"], 1.5);

    let a = h
        .post(
            "/v1/sandboxes/sb1/exec",
            json!({"argv": ["echo", "hi"], "stdin": "x", "timeout_secs": 2}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(
        (v["stdout"].as_str(), v["stderr"].as_str()),
        (Some("out\n"), Some("err\n"))
    );
    assert_eq!(v["exit_code"], 3);
    assert!(h.fake.calls().last().unwrap().contains("timeout=Some(2s)"));
    // forkd's shape: `args`, a default timeout, exit_code 128 + signal
    let a = h
        .post("/v1/sandboxes/sb1/exec", json!({"cmd": "kill"}))
        .await;
    assert_eq!(a.json()["exit_code"], Value::Null);
    let a = h
        .post("/v1/sandboxes/sb1/exec", json!({"args": ["sh", "-c", "x"]}))
        .await;
    assert!(h.fake.calls().last().unwrap().contains("timeout=Some(30s)"));
    assert_eq!(a.json()["exit_code"], 3);
    for (body, needle) in [
        (json!({"argv": ["a"], "cmd": "b"}), "both `argv` and `cmd`"),
        (json!({"args": ["a"], "argv": ["b"]}), "`args`"),
        (json!({"argv": ["a"], "timeout_secs": 0}), "timeout_secs 0"),
        (
            json!({"argv": ["a"], "stdin": "x", "stdin_b64": "eA=="}),
            "`stdin_b64`",
        ),
        (json!({"argv": ["a"], "shell": true}), "`shell`"),
    ] {
        let a = h.post("/v1/sandboxes/sb1/exec", body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(a.error().contains(needle), "{body}: {}", a.error());
    }
    let a = h
        .post("/v1/sandboxes/nope/exec", json!({"argv": ["a"]}))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    let a = h
        .post("/v1/sandboxes/sb1/exec/stream", json!({"argv": ["a"]}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/x-ndjson");
    let lines: Vec<Value> = String::from_utf8(a.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["started", "stdout", "stderr", "exit"]);
    assert_eq!(lines[1]["data_b64"], "b3V0Cg==");

    let a = h
        .post("/v1/sandboxes/sb1/eval", json!({"code": "1+1"}))
        .await;
    assert_eq!(
        (a.json()["result"].as_str(), a.json()["exit_code"].as_i64()),
        (Some("2"), Some(0))
    );
    let a = h
        .post("/v1/sandboxes/sb1/eval", json!({"code": "raise"}))
        .await;
    assert_eq!(a.json()["exit_code"], 1);
    let a = h.post("/v1/sandboxes/sb1/eval", json!({})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn files_routes() {
    let h = harness();
    let a = h
        .send(
            Request::put("/v1/sandboxes/sb1/files?path=/tmp/a&mode=640")
                .body(Body::from("hello"))
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), json!({"path": "/tmp/a", "bytes": 5}));
    assert_eq!(h.fake.calls(), ["write sb1 /tmp/a mode=Some(416) bytes=5"]);
    for (uri, needle) in [
        ("/v1/sandboxes/sb1/files?path=/a&mode=9z", "mode `9z`"),
        ("/v1/sandboxes/sb1/files", "`path` is missing"),
        (
            "/v1/sandboxes/sb1/files?path=/a&x=1",
            "unknown query parameter `x`",
        ),
    ] {
        let a = h
            .send(Request::put(uri).body(Body::from("x")).unwrap())
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(a.error().contains(needle), "{uri}: {}", a.error());
    }
    let a = h.get("/v1/sandboxes/sb1/files?path=/tmp/a").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, b"hello");
    assert_eq!(a.headers["x-zygote-mode"], "640");
    assert_eq!(a.headers[header::CONTENT_LENGTH], "5");
    let a = h.get("/v1/sandboxes/sb1/files/stat?path=/tmp/a").await;
    assert_eq!(a.json()["kind"], "file");
    let a = h.get("/v1/sandboxes/sb1/files/list?path=/tmp").await;
    assert_eq!(a.json()["entries"][0]["name"], "a.txt");
    let a = h
        .delete("/v1/sandboxes/sb1/files?path=/tmp&recursive=true")
        .await;
    assert_eq!(a.json(), json!({"path": "/tmp", "removed": true}));
    let a = h
        .delete("/v1/sandboxes/sb1/files?path=/tmp&recursive=maybe")
        .await;
    assert!(a.error().contains("recursive `maybe`"));
    let a = h.get("/v1/sandboxes/nope/files?path=/a").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn snapshot_bundles_out_and_in() {
    let h = harness();
    let a = h.get("/v1/snapshots/warm/bundle").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/x-tar");
    assert_eq!(a.body, b"bundle");
    let a = h.get("/v1/snapshots/nope/bundle").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.error());
    let a = h
        .send(
            Request::put("/v1/snapshots/moved/bundle")
                .body(Body::from("tar bytes"))
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.json()["tag"], "moved");
    assert_eq!(
        h.fake.calls(),
        [
            "export warm",
            "export nope",
            "import Some(\"moved\") 9 bytes"
        ]
    );
    h.fail_next(EngineError::BadRequest(
        "snapshot `x` was made by QEMU 8.2.0, this engine runs QEMU 10.0".into(),
    ));
    let a = h
        .send(
            Request::put("/v1/snapshots/x/bundle")
                .body(Body::from("t"))
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("QEMU 8.2.0"), "{}", a.error());
}

#[tokio::test]
async fn branch_and_fork() {
    let h = harness();
    let a = h
        .post("/v1/sandboxes/sb1/branch", json!({"tag": "t1"}))
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "writing answers 202");
    assert_eq!(a.json()["status"], "writing");
    let a = h
        .post(
            "/v1/sandboxes/sb1/branch",
            json!({"tag": "t2", "wait": true, "mode": "live"}),
        )
        .await;
    assert_eq!(
        (a.status, a.json()["tag"].as_str()),
        (StatusCode::CREATED, Some("t2"))
    );
    // forkd: `full` on a copy-on-write child is taken as live, wait defaults to true
    let a = h
        .post("/v1/sandboxes/sb1/branch", json!({"mode": "full"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(a.json()["warning"]
        .as_str()
        .unwrap()
        .contains("taken as `live`"));
    assert_eq!(
        h.fake.calls().last().unwrap(),
        "branch sb1 mode=Some(Live) wait=true"
    );
    let a = h
        .post("/v1/sandboxes/sb1/branch", json!({"mode": "fast"}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    h.fail_next(EngineError::Conflict("tag taken".into()));
    let a = h.post("/v1/sandboxes/sb1/branch", json!({})).await;
    assert_eq!(a.status, StatusCode::CONFLICT);

    let a = h.post("/v1/sandboxes/sb1/fork", json!({"n": 2})).await;
    assert_eq!(a.status, StatusCode::CREATED);
    let v = a.json();
    assert_eq!(v["snapshot"]["tag"], "f1");
    assert_eq!(v["children"][0]["sandbox"]["id"], "c1");
    assert_eq!(v["children"][1]["error"], "no room");
    assert!(
        v["children"][0].get("id").is_none(),
        "no forkd fields in our answer"
    );
}

#[tokio::test]
async fn snapshots_and_spawn() {
    let h = harness();
    let a = h.get("/v1/snapshots").await;
    assert_eq!(a.json()[0]["tag"], "warm");
    assert_eq!(h.get("/v1/snapshots/warm").await.json()["prestarted"], 2);
    assert_eq!(
        h.get("/v1/snapshots/cold").await.status,
        StatusCode::NOT_FOUND
    );
    let a = h
        .post(
            "/v1/snapshots",
            json!({"tag": "w2", "warmup": "import json"}),
        )
        .await;
    assert_eq!(
        (a.status, a.json()["status"].as_str()),
        (StatusCode::CREATED, Some("ready"))
    );
    let a = h
        .post("/v1/snapshots", json!({"tag": "w3", "kernel": "/k"}))
        .await;
    assert!(a.error().contains("forkd's snapshot build"));

    let a = h.post("/v1/snapshots/warm/spawn", json!({"n": 1})).await;
    assert_eq!(a.status, StatusCode::CREATED);
    let v = a.json();
    assert_eq!(v[0]["sandbox"]["id"], "c1");
    assert_eq!(v[0]["prestarted"], true);
    assert!(
        v[0].get("pid").is_none(),
        "our spawn answer has no forkd fields"
    );
    assert_eq!(
        h.fake.calls().last().unwrap(),
        "spawn warm n=Some(1) memory=CopyOnWrite"
    );
    let a = h
        .post(
            "/v1/snapshots/warm/spawn",
            json!({"private_memory": true, "hugepages": true}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    for (body, needle) in [
        (json!({"hugepages": true}), "private_memory"),
        (json!({"snapshot_tag": "other"}), "`other`"),
        (json!({"n": "two"}), "n"),
    ] {
        let a = h.post("/v1/snapshots/warm/spawn", body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(a.error().contains(needle), "{body}: {}", a.error());
    }
    assert_eq!(
        h.post("/v1/snapshots/cold/spawn", json!({})).await.status,
        StatusCode::NOT_FOUND
    );

    let a = h.delete("/v1/snapshots/warm").await;
    assert!(a.json()["warning"].as_str().unwrap().contains("c1"));
    let a = h.delete("/v1/snapshots/warm?cascade=true").await;
    assert_eq!(a.json()["removed_sandboxes"], json!(["c1"]));
    assert!(a.json()["warning"].is_null());
    let a = h.delete("/v1/snapshots/warm?force=true").await;
    assert!(a.json()["warning"].is_null());
    let a = h.delete("/v1/snapshots/warm?cascade=1&force=1").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = h.delete("/v1/snapshots/warm?purge=1").await;
    assert!(a.error().contains("`purge`"));
    assert_eq!(
        h.delete("/v1/snapshots/cold").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn forkd_spawn_on_the_sandboxes_route() {
    let h = harness();
    let a = h
        .post(
            "/v1/sandboxes",
            json!({"snapshot_tag": "warm", "per_child_netns": true, "live_fork": true}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let v = a.json();
    assert_eq!(
        (v[0]["id"].as_str(), v[0]["pid"].as_u64()),
        (Some("c1"), Some(4242))
    );
    assert_eq!(v[0]["sandbox"]["id"], "c1");
    assert!(v[0]["warning"]
        .as_str()
        .unwrap()
        .contains("per_child_netns"));
    assert!(h.fake.calls().last().unwrap().contains("Private"));
    // forkd answers a spawn where no child started with an error.
    *h.fake.child_errors.lock().unwrap() = vec![Some("disk full".into())];
    let a = h
        .post(
            "/v1/sandboxes",
            json!({"snapshot_tag": "warm", "prewarm": true}),
        )
        .await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(a.error().contains("disk full"));
    // ours on the same route keeps the list.
    let a = h
        .post("/v1/sandboxes", json!({"snapshot_tag": "warm"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.json()[0]["error"], "disk full");
}

#[tokio::test]
async fn a_token_guards_every_route() {
    let h = harness_with(Some(TOKEN));
    // Probes carry no token: /healthz answers, and says only that.
    let a = h.get("/healthz").await;
    assert_eq!((a.status, a.json()), (StatusCode::OK, json!({"ok": true})));
    for uri in ["/v1/sandboxes", "/metrics", "/nowhere"] {
        let a = h.get(uri).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(!a.error().contains(TOKEN));
        let a = h
            .send(
                Request::get(uri)
                    .header(header::AUTHORIZATION, "Bearer wrong-token-0123456789")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let a = h
        .send(
            Request::get("/v1/sandboxes")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn the_audit_line_names_what_a_call_made() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let h = harness();
    let observer = Arc::new(crate::observe::Observer {
        metrics: Arc::new(metrics::Metrics::new()),
        audit: Arc::new(crate::audit::AuditLog::open(&log).unwrap()),
    });
    let app = h.app.clone().layer(axum::middleware::from_fn_with_state(
        observer,
        crate::observe::observe,
    ));
    let h = Harness { fake: h.fake, app };
    h.post("/v1/sandboxes/sb1/fork", json!({})).await;
    h.post("/v1/sandboxes/sb1/exec", json!({"argv": ["a"]}))
        .await;
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["children"], json!(["c1"]));
    assert_eq!(lines[0]["snapshot"], "f1");
    assert_eq!(lines[0]["sandbox"], "sb1");
    assert_eq!(lines[1]["sandbox"], "sb1");
    assert_eq!(lines[1]["status"], 200);
}
