//! Every REST body, fuzzed through the router against the fake engine with a
//! fixed number of cases: arbitrary JSON (and bodies made of the routes' own
//! field names with values of every type) never makes a route answer 5xx or
//! anything but a JSON body, and every refusal is `{"error": "..."}`.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::harness;

/// Field names the routes take, so generated objects hit real paths.
const FIELDS: &[&str] = &[
    "image",
    "memory_mib",
    "vcpus",
    "env",
    "timeout_secs",
    "argv",
    "args",
    "cmd",
    "cwd",
    "stdin",
    "stdin_b64",
    "code",
    "tag",
    "mode",
    "hugepages",
    "wait",
    "downtime_limit_ms",
    "n",
    "private_memory",
    "snapshot_tag",
    "warmup",
    "per_child_netns",
    "memory_limit_mib",
    "prewarm",
    "live_fork",
    "diff",
    "live",
    "measure_diff",
    "parent_tag",
    "kernel",
    "rootfs",
];

/// The routes that take a JSON body.
const ROUTES: &[&str] = &[
    "/v1/sandboxes",
    "/v1/sandboxes/sb1/exec",
    "/v1/sandboxes/sb1/exec/stream",
    "/v1/sandboxes/sb1/eval",
    "/v1/sandboxes/sb1/branch",
    "/v1/sandboxes/sb1/fork",
    "/v1/sandboxes/sb1/ping",
    "/v1/snapshots",
    "/v1/snapshots/warm/spawn",
    "/v1/sandboxes/sb1/processes",
    "/v1/sandboxes/sb1/processes/77/signal",
    "/v1/sandboxes/sb1/processes/77/resize",
    "/v1/sandboxes/sb1/files/rename",
    "/v1/sandboxes/sb1/files/batch",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (0u64..70_000).prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::String),
        prop_oneof![
            Just("copy"),
            Just("live"),
            Just("full"),
            Just("diff"),
            Just("/tmp/x"),
            Just("warm"),
            Just("echo hi")
        ]
        .prop_map(|s| Value::String(s.into())),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object of the routes' own field names with arbitrary values.
fn body() -> impl Strategy<Value = Value> {
    proptest::collection::vec((proptest::sample::select(FIELDS), json()), 0..6).prop_map(|kv| {
        let mut m = Map::new();
        for (k, v) in kv {
            m.insert(k.to_string(), v);
        }
        Value::Object(m)
    })
}

fn check(route: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let h = harness();
    let a = rt.block_on(
        h.send(
            Request::builder()
                .method(Method::POST)
                .uri(route)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap(),
        ),
    );
    prop_assert!(
        a.status.as_u16() < 500,
        "{route}: {} {}",
        a.status,
        String::from_utf8_lossy(&a.body)
    );
    if a.status.is_client_error() {
        let v: Value =
            serde_json::from_slice(&a.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let msg = v["error"].as_str().unwrap_or_default();
        prop_assert!(!msg.is_empty(), "{route}: refusal without a message: {v}");
    } else if a.status != StatusCode::OK || !route.ends_with("/stream") {
        prop_assert!(
            serde_json::from_slice::<Value>(&a.body).is_ok(),
            "{route}: not JSON"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 600,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn route_shaped_bodies_never_break_a_route(route in proptest::sample::select(ROUTES), v in body()) {
        check(route, serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn arbitrary_json_never_breaks_a_route(route in proptest::sample::select(ROUTES), v in json()) {
        check(route, serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn arbitrary_bytes_never_break_a_route(
        route in proptest::sample::select(ROUTES),
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        check(route, bytes)?;
    }
}
