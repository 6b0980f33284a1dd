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
        crate::routes::sandboxes::list,
        crate::routes::sandboxes::create,
        crate::routes::sandboxes::get,
        crate::routes::sandboxes::delete,
        crate::routes::sandboxes::ping,
        crate::routes::sandboxes::pause,
        crate::routes::sandboxes::resume,
        crate::routes::sandboxes::timeout,
        crate::routes::sandboxes::branch,
        crate::routes::sandboxes::fork,
        crate::routes::sandboxes::exec,
        crate::routes::sandboxes::exec_stream,
        crate::routes::sandboxes::eval,
        crate::routes::files::write,
        crate::routes::files::read,
        crate::routes::files::remove,
        crate::routes::files::stat,
        crate::routes::files::list,
        crate::routes::files::walk,
        crate::routes::files::watch,
        crate::routes::files::mkdir,
        crate::routes::files::rename,
        crate::routes::files::batch,
        crate::routes::processes::start,
        crate::routes::processes::list,
        crate::routes::processes::get,
        crate::routes::processes::output,
        crate::routes::processes::stdin,
        crate::routes::processes::signal,
        crate::routes::processes::kill,
        crate::routes::processes::resize,
        crate::routes::snapshots::list,
        crate::routes::snapshots::create,
        crate::routes::snapshots::get,
        crate::routes::snapshots::delete,
        crate::routes::snapshots::spawn,
        crate::routes::snapshots::export,
        crate::routes::snapshots::import,
        crate::routes::volumes::list,
        crate::routes::volumes::create,
        crate::routes::volumes::get,
        crate::routes::volumes::delete,
        crate::routes::network::set_policy,
        crate::routes::network::expose,
        crate::routes::network::unexpose,
    ),
    components(schemas(
        zygote_proto::api::ExecBody,
        zygote_proto::api::SpawnBody,
        zygote_proto::compat::SpawnRequest,
        zygote_proto::api::BranchBody,
        zygote_proto::volumes::VolumeMount,
        zygote_proto::net::NetworkBody,
        zygote_proto::net::NetworkInfo,
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
            "/v1/snapshots/{tag}/spawn",
            "/v1/snapshots/{tag}/bundle",
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
