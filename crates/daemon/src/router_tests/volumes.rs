//! Volume routes, and volumes on create and spawn bodies.

use axum::http::StatusCode;
use serde_json::json;
use zygote_engine::EngineError;

use super::harness;

#[tokio::test]
async fn volume_routes() {
    let h = harness();
    let a = h
        .post("/v1/volumes", json!({"name": "data", "size_mib": 64}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.json()["size_bytes"], 64 << 20);
    assert_eq!(
        a.json()["holders"],
        json!([{"sandbox": "sb1", "read_only": false}])
    );
    let a = h.get("/v1/volumes").await;
    assert_eq!(a.json()[0]["name"], "data");
    assert_eq!(h.get("/v1/volumes/data").await.status, StatusCode::OK);
    let a = h.get("/v1/volumes/nope").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(
        a.error().contains("zygote volume create nope"),
        "{}",
        a.error()
    );
    assert_eq!(
        h.delete("/v1/volumes/data").await.status,
        StatusCode::NO_CONTENT
    );
    h.fail_next(EngineError::Conflict(
        "volume `data` is attached to sb1".into(),
    ));
    assert_eq!(
        h.delete("/v1/volumes/data").await.status,
        StatusCode::CONFLICT
    );
    // A misspelt field is named.
    let a = h
        .post("/v1/volumes", json!({"name": "d", "size": 64}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("size"), "{}", a.error());
    assert_eq!(
        h.fake.calls()[..4],
        [
            "create_volume data 64",
            "volumes",
            "volume data",
            "volume nope"
        ]
    );
}

#[tokio::test]
async fn volumes_on_sandboxes() {
    let h = harness();
    let a = h
        .post(
            "/v1/sandboxes",
            json!({"volumes": [{"name": "data", "path": "/data"},
                               {"host_path": "/srv/ref", "path": "/ref", "read_only": true}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(
        a.json()["volumes"],
        json!([{"name": "data", "path": "/data", "read_only": false}])
    );
    let call = h.fake.calls().pop().unwrap();
    assert!(
        call.contains("Named(\"data\")") && call.contains("HostDir(\"/srv/ref\")"),
        "{call}"
    );
    for (body, needle) in [
        (
            json!({"volumes": [{"path": "/d"}]}),
            "neither `name` nor `host_path`",
        ),
        (
            json!({"volumes": [{"name": "a", "host_path": "/x", "path": "/d"}]}),
            "both `name` and `host_path`",
        ),
        (json!({"volumes": [{"name": "a", "mount": "/d"}]}), "mount"),
    ] {
        let a = h.post("/v1/sandboxes", body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(a.error().contains(needle), "{body}: {}", a.error());
    }
    let a = h
        .post(
            "/v1/snapshots/warm/spawn",
            json!({"n": 1, "volumes": [{"name": "data", "path": "/data"}]}),
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.json()[0]["sandbox"]["volumes"][0]["name"], "data");
}
