//! Network routes, and the network of create and spawn bodies.

use axum::http::StatusCode;
use serde_json::json;
use zygote_engine::EngineError;

use super::harness;

#[tokio::test]
async fn policy_ports_and_bodies() {
    let h = harness();
    let a = h
        .patch(
            "/v1/sandboxes/sb1/network",
            json!({"internet": false, "allow_out": ["198.18.0.2"], "deny_out": ["10.1.2.3/8"]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["network"]["internet"], false);
    assert_eq!(a.json()["network"]["deny_out"], json!(["10.0.0.0/8"]));
    assert_eq!(a.json()["network"]["address"], "10.0.2.2");
    let a = h
        .post("/v1/sandboxes/sb1/ports", json!({"port": 8000}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), json!({"port": 8000, "host": "127.0.0.1:40000"}));
    assert_eq!(
        h.delete("/v1/sandboxes/sb1/ports/8000").await.status,
        StatusCode::NO_CONTENT
    );
    let a = h
        .post(
            "/v1/sandboxes",
            json!({"network": {"internet": true, "deny_out": ["198.18.0.0/15"]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let a = h
        .post("/v1/sandboxes", json!({"network": {"enabled": false}}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let a = h
        .post(
            "/v1/snapshots/warm/spawn",
            json!({"network": {"internet": false}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(
        h.fake.calls(),
        [
            "network sb1 internet=false allow=[\"198.18.0.2/32\"] deny=[\"10.0.0.0/8\"]",
            "expose sb1 8000",
            "unexpose sb1 8000",
            "create - mem=None env={}",
            "  network internet=true allow= deny=198.18.0.0/15",
            "create - mem=None env={}",
            "  network off",
            "spawn warm n=None memory=CopyOnWrite",
            "  network internet=false allow= deny=",
        ]
    );
}

#[tokio::test]
async fn bad_network_input_is_named() {
    let h = harness();
    for (body, needle) in [
        (json!({"deny_out": ["198.18.0.0/33"]}), "`198.18.0.0/33`"),
        (json!({"allow_out": ["example.com"]}), "`example.com`"),
        (json!({"allow_out": ["::1/128"]}), "IPv6"),
        (json!({"internet": "yes"}), "internet"),
        (json!({"intenet": false}), "intenet"),
        (json!({"enabled": false}), "create only"),
    ] {
        let a = h.patch("/v1/sandboxes/sb1/network", body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(a.error().contains(needle), "{body}: {}", a.error());
    }
    let a = h
        .post(
            "/v1/sandboxes",
            json!({"network": {"enabled": false, "internet": true}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("enabled"), "{}", a.error());
    let a = h
        .post(
            "/v1/snapshots/warm/spawn",
            json!({"network": {"enabled": false}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    for port in ["0", "65536", "99999999999"] {
        let a = h.delete(&format!("/v1/sandboxes/sb1/ports/{port}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{port}");
    }
    for port in [0, 65536] {
        let a = h
            .post("/v1/sandboxes/sb1/ports", json!({ "port": port }))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{port}");
        assert!(a.error().contains(&port.to_string()), "{}", a.error());
    }
    let a = h
        .post("/v1/sandboxes/nope/ports", json!({"port": 8000}))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    h.fail_next(EngineError::Conflict(
        "sandbox `sb1` has no network card".into(),
    ));
    let a = h
        .post("/v1/sandboxes/sb1/ports", json!({"port": 8000}))
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(h.fake.calls().iter().all(|c| !c.starts_with("network")));
}
