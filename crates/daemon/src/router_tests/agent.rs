//! Routes of what an agent needs from a sandbox: background processes and
//! terminals, directory trees, labels and pages, lifetimes, pause and resume.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use zygote_engine::EngineError;

use super::harness;

#[tokio::test]
async fn background_processes() {
    let h = harness();
    let a = h
        .post(
            "/v1/sandboxes/sb1/processes",
            json!({"cmd": "python3 -m http.server", "stdin": true, "tag": "web", "user": "app", "pty": {"rows": 24, "cols": 80}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(
        (a.json()["pid"].as_u64(), a.json()["tag"].as_str()),
        (Some(77), Some("web"))
    );
    let call = h.fake.calls().last().unwrap().clone();
    assert!(
        call.contains("stdin=true")
            && call.contains("Some((24, 80))")
            && call.contains("Some(\"app\")"),
        "{call}"
    );
    for (body, needle) in [
        (json!({"argv": ["a"], "cmd": "b"}), "both `argv` and `cmd`"),
        (json!({"cmd": "x", "pty": {"rows": 24}}), "cols"),
        (json!({"cmd": "x", "tag": "t".repeat(300)}), "tag"),
    ] {
        let a = h.post("/v1/sandboxes/sb1/processes", body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(a.error().contains(needle), "{body}: {}", a.error());
    }
    assert_eq!(
        h.get("/v1/sandboxes/sb1/processes").await.json()[0]["cmd"],
        "python3 -m http.server"
    );
    assert_eq!(
        h.get("/v1/sandboxes/sb1/processes/77").await.json()["pid"],
        77
    );
    assert_eq!(
        h.get("/v1/sandboxes/sb1/processes/78").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get("/v1/sandboxes/nope/processes").await.status,
        StatusCode::NOT_FOUND
    );
    let a = h
        .get("/v1/sandboxes/sb1/processes/77/output?replay=false")
        .await;
    let lines: Vec<Value> = String::from_utf8(a.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        (lines[0]["type"].as_str(), lines[1]["type"].as_str()),
        (Some("stdout"), Some("exit"))
    );
    assert_eq!(lines[1]["signal"], 15);
    assert!(h.fake.calls().last().unwrap().ends_with("replay=false"));
    // An error on a stream keeps its status.
    let a = h.get("/v1/sandboxes/sb1/processes/5/output").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = h
        .send(
            Request::post("/v1/sandboxes/sb1/processes/77/stdin?eof=true")
                .body(Body::from("hi\n"))
                .unwrap(),
        )
        .await;
    assert_eq!(a.json()["bytes"], 3);
    assert!(
        h.fake
            .calls()
            .last()
            .unwrap()
            .contains("\"hi\\n\" eof=true"),
        "{:?}",
        h.fake.calls()
    );
    let a = h
        .send(
            Request::post("/v1/sandboxes/sb1/processes/77/stdin")
                .body(Body::from(vec![0u8; (1 << 20) + 1]))
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    let a = h
        .post(
            "/v1/sandboxes/sb1/processes/77/signal",
            json!({"signal": 2}),
        )
        .await;
    assert_eq!(a.json()["signal"], 2);
    let a = h.delete("/v1/sandboxes/sb1/processes/77").await;
    assert_eq!(a.json()["killed"], true);
    assert!(h.fake.calls().last().unwrap().ends_with("77 9"));
    let a = h
        .post(
            "/v1/sandboxes/sb1/processes/77/resize",
            json!({"rows": 50, "cols": 132}),
        )
        .await;
    assert_eq!(a.json(), json!({"rows": 50, "cols": 132}));
}

#[tokio::test]
async fn directory_trees() {
    let h = harness();
    let a = h
        .call(
            Method::POST,
            "/v1/sandboxes/sb1/files/mkdir?path=/a/b",
            None,
        )
        .await;
    assert_eq!(a.json()["created"], true);
    assert!(h.fake.calls().last().unwrap().ends_with("parents=true"));
    let a = h
        .call(
            Method::POST,
            "/v1/sandboxes/sb1/files/mkdir?path=/a&parents=maybe",
            None,
        )
        .await;
    assert!(a.error().contains("parents `maybe`"));
    let a = h
        .post(
            "/v1/sandboxes/sb1/files/rename",
            json!({"from": "/a", "to": "/b"}),
        )
        .await;
    assert_eq!(a.json()["to"], "/b");
    let a = h.get("/v1/sandboxes/sb1/files/walk?path=/w&depth=3").await;
    assert_eq!(
        (
            a.json()["depth"].as_u64(),
            a.json()["entries"][0]["name"].as_str()
        ),
        (Some(3), Some("a"))
    );
    let a = h
        .get("/v1/sandboxes/sb1/files/walk?path=/w&depth=deep")
        .await;
    assert!(a.error().contains("depth `deep`"));
    let a = h
        .get("/v1/sandboxes/sb1/files/watch?path=/w&recursive=true")
        .await;
    let line: Value =
        serde_json::from_str(String::from_utf8(a.body).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(
        (line["kind"].as_str(), line["path"].as_str()),
        (Some("create"), Some("/w/new"))
    );
    let a = h
        .post(
            "/v1/sandboxes/sb1/files/batch",
            json!({"files": [{"path": "/a.txt", "data": "hello"}, {"path": "/b.bin", "data_b64": "AAEC", "mode": "755"}]}),
        )
        .await;
    assert_eq!(
        a.json(),
        json!([{"path": "/a.txt", "bytes": 5}, {"path": "/b.bin", "bytes": 3}])
    );
    assert!(h.fake.calls().last().unwrap().contains("mode=Some(493)"));
    for (body, needle) in [
        (
            json!({"files": [{"path": "/x", "data": "a", "data_b64": "YQ=="}]}),
            "both data",
        ),
        (
            json!({"files": [{"path": "/x", "data_b64": "%%"}]}),
            "not base64",
        ),
        (json!({"files": [{"path": "/x", "mode": "9"}]}), "mode `9`"),
    ] {
        let a = h.post("/v1/sandboxes/sb1/files/batch", body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(a.error().contains(needle), "{body}: {}", a.error());
    }
}

#[tokio::test]
async fn labels_pages_lifetimes_pause_resume() {
    let h = harness();
    let a = h.get("/v1/sandboxes?metadata.team=a").await;
    let v = a.json();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sb1", "sb3"]);
    assert_eq!(a.json()[0]["metadata"]["team"], "a");
    let a = h.get("/v1/sandboxes?limit=2").await;
    assert_eq!(a.json().as_array().unwrap().len(), 2);
    let token = a.headers["x-next-token"].to_str().unwrap().to_string();
    let a = h
        .get(&format!("/v1/sandboxes?limit=2&next_token={token}"))
        .await;
    assert_eq!(a.json().as_array().unwrap().len(), 1);
    assert!(
        a.headers.get("x-next-token").is_none(),
        "the last page names no next one"
    );
    for (uri, needle) in [
        ("/v1/sandboxes?state=sleeping", "state `sleeping`"),
        ("/v1/sandboxes?limit=0", "limit `0`"),
        ("/v1/sandboxes?next_token=zz", "next_token `zz`"),
        ("/v1/sandboxes?team=a", "unknown query parameter `team`"),
    ] {
        let a = h.get(uri).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(a.error().contains(needle), "{uri}: {}", a.error());
    }
    let a = h
        .post(
            "/v1/sandboxes",
            json!({"metadata": {"team": "x"}, "timeout_secs": 30, "on_expiry": "pause"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let a = h
        .post("/v1/sandboxes", json!({"on_expiry": "explode"}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = h
        .post(
            "/v1/sandboxes/sb1/timeout",
            json!({"timeout_secs": 60, "on_expiry": "pause"}),
        )
        .await;
    assert_eq!(
        (
            a.json()["expires_at_unix"].as_u64(),
            a.json()["on_expiry"].as_str()
        ),
        (Some(1_700_000_060), Some("pause"))
    );
    let a = h
        .post("/v1/sandboxes/sb1/timeout", json!({"timeout_secs": 60}))
        .await;
    assert_eq!(a.json()["on_expiry"], "kill", "unchanged when not given");
    let a = h.post("/v1/sandboxes/sb1/pause", json!({})).await;
    assert_eq!(
        (a.json()["state"].as_str(), a.json()["memory"].clone()),
        (Some("paused"), Value::Null)
    );
    let a = h.post("/v1/sandboxes/sb1/resume", json!({})).await;
    assert_eq!(a.json()["state"], "running");
    assert_eq!(
        h.post("/v1/sandboxes/nope/pause", json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    h.fail_next(EngineError::Conflict(
        "sandbox `sb1` is running: only a paused sandbox can be resumed".into(),
    ));
    assert_eq!(
        h.post("/v1/sandboxes/sb1/resume", json!({})).await.status,
        StatusCode::CONFLICT
    );
}
