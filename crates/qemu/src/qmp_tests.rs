//! Tier 1 tests of the QMP client against a scripted fake QEMU on a unix socket.

use super::*;
use tokio::io::AsyncBufReadExt;
use tokio::net::UnixListener;

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, "capabilities": ["oob"]}}"#;

/// A fake QEMU: greets, answers qmp_capabilities, then hands each further
/// request line to `script`, which returns the lines to send back.
async fn fake<F>(dir: &Path, mut script: F) -> PathBuf
where
    F: FnMut(Value) -> Vec<String> + Send + 'static,
{
    let path = dir.join("qmp.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (rd, mut wr) = s.into_split();
        let mut lines = BufReader::new(rd).lines();
        wr.write_all(format!("{GREETING}\r\n").as_bytes())
            .await
            .unwrap();
        while let Ok(Some(l)) = lines.next_line().await {
            let req: Value = serde_json::from_str(&l).unwrap();
            let out = if req["execute"] == "qmp_capabilities" {
                vec![json!({"return": {}, "id": req["id"]}).to_string()]
            } else {
                script(req)
            };
            for o in out {
                if o == "CLOSE" {
                    return;
                }
                wr.write_all(format!("{o}\r\n").as_bytes()).await.unwrap();
            }
        }
    });
    path
}

#[tokio::test]
async fn replies_errors_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = fake(dir.path(), |req| match req["execute"].as_str().unwrap() {
        "query-status" => vec![
            r#"{"event": "STOP", "data": {}, "timestamp": {"seconds": 1700000000, "microseconds": 250}}"#.into(),
            "this is { not json".into(),
            json!({"return": {"status": "paused", "running": false}, "id": req["id"]}).to_string(),
        ],
        _ => vec![json!({"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": req["id"]}).to_string()],
    })
    .await;
    let q = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
    let mut ev = q.events();
    assert_eq!(q.query_status().await.unwrap(), "paused");
    let e = ev.recv().await.unwrap();
    assert_eq!(e.name, "STOP");
    assert_eq!(e.timestamp_us, 1_700_000_000_000_250);
    let err = q.execute("nope", Value::Null).await.unwrap_err();
    assert!(matches!(&err, QemuError::Qmp { class, .. } if class == "CommandNotFound"));
    assert!(err.to_string().contains("\"nope\""), "{err}");
}

#[tokio::test]
async fn concurrent_calls_match_replies_by_id() {
    let dir = tempfile::tempdir().unwrap();
    // Hold every request until 8 have arrived, then answer in reverse order.
    let mut held: Vec<Value> = Vec::new();
    let path = fake(dir.path(), move |req| {
        held.push(req);
        if held.len() < 8 {
            return vec![];
        }
        held.drain(..)
            .rev()
            .map(|r| json!({"return": {"echo": r["arguments"]["n"]}, "id": r["id"]}).to_string())
            .collect()
    })
    .await;
    let q = Arc::new(Qmp::connect(&path, Duration::from_secs(5)).await.unwrap());
    let mut tasks = Vec::new();
    for n in 0..8u64 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let v = q.execute("echo", json!({ "n": n })).await.unwrap();
            assert_eq!(v["echo"], n);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn close_fails_pending_calls_and_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = fake(dir.path(), |_| vec!["CLOSE".into()]).await;
    let q = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
    let err = q.execute("stop", Value::Null).await.unwrap_err();
    assert!(matches!(err, QemuError::QmpClosed { .. }), "{err}");
    assert!(err.to_string().contains("\"stop\""), "{err}");
    let err = q.execute("cont", Value::Null).await.unwrap_err();
    assert!(matches!(err, QemuError::QmpClosed { .. }), "{err}");
    assert!(q.closed_reason().is_some());
    // quit treats a closed connection as done.
    q.quit().await.unwrap();
}

#[tokio::test]
async fn timeout_names_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = fake(dir.path(), |_| vec![]).await;
    let q = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
    let err = q
        .execute_timeout("query-migrate", Value::Null, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, QemuError::QmpTimeout { .. }), "{err}");
    assert!(err.to_string().contains("query-migrate"));
}

#[tokio::test]
async fn connect_times_out_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let err = Qmp::connect(&path, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, QemuError::QmpConnect { .. }), "{err}");
    assert!(err.to_string().contains("absent.sock"));
}

#[tokio::test]
async fn connect_waits_for_a_late_socket() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        fake(&d, |_| vec![]).await
    });
    let q = Qmp::connect(&dir.path().join("qmp.sock"), Duration::from_secs(5)).await;
    late.await.unwrap();
    assert!(q.is_ok());
}
