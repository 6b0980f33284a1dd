//! The OpenAPI document, generated from the Rust types and handler annotations.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "zygote",
        description = "microVM sandboxes whose core primitive is fork"
    ),
    paths(
        crate::routes::healthz,
        crate::routes::version,
        crate::routes::list_images,
        crate::routes::list_sandboxes,
        crate::routes::create_sandbox,
        crate::routes::get_sandbox,
        crate::routes::delete_sandbox,
        crate::routes::ping,
        crate::routes::branch,
        crate::routes::fork,
        crate::routes::list_snapshots,
        crate::routes::create_snapshot,
        crate::routes::get_snapshot,
        crate::routes::delete_snapshot,
        crate::routes::exec,
        crate::routes::exec_stream,
        crate::routes::eval,
        crate::routes::write_file,
        crate::routes::read_file,
        crate::routes::remove_file,
        crate::routes::stat_file,
        crate::routes::list_files,
    ),
    components(schemas(
        zygote_proto::api::ExecBody,
        zygote_proto::api::SpawnBody,
        zygote_proto::api::SpawnRequest,
        zygote_proto::api::BranchBody,
    ))
)]
struct ApiDoc;

/// The document as JSON.
pub(crate) fn spec_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn spec_names_every_route_and_model() {
        let s = super::spec_json();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let paths = v["paths"].as_object().unwrap();
        for p in [
            "/v1/sandboxes",
            "/v1/sandboxes/{id}/exec",
            "/v1/sandboxes/{id}/files",
            "/healthz",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        let schemas = v["components"]["schemas"].as_object().unwrap();
        for m in [
            "CreateSandbox",
            "SandboxInfo",
            "ExecBody",
            "ExecRequest",
            "ExecResult",
            "ErrorBody",
            "SpawnRequest",
            "BranchRequest",
            "EvalAnswer",
            "SnapshotDeleted",
        ] {
            assert!(schemas.contains_key(m), "{m} missing");
        }
    }
}
