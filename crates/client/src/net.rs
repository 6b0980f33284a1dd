//! Sandbox networking: a running sandbox's egress policy and exposed ports.

use hyper::Method;
use zygote_proto::api::SandboxInfo;
use zygote_proto::net::{NetworkBody, PortBody, PortInfo};

use crate::{encode_query, ok, Client, ClientError};

impl Client {
    /// `PATCH /v1/sandboxes/{id}/network`: replace its egress policy.
    pub async fn set_network(
        &self,
        id: &str,
        policy: &NetworkBody,
    ) -> Result<SandboxInfo, ClientError> {
        let path = format!("/v1/sandboxes/{}/network", encode_query(id));
        self.json(Method::PATCH, &path, Some(policy)).await
    }

    /// `POST /v1/sandboxes/{id}/ports`: expose guest TCP `port`; the answer's
    /// `host` reaches it.
    pub async fn expose_port(&self, id: &str, port: u16) -> Result<PortInfo, ClientError> {
        let path = format!("/v1/sandboxes/{}/ports", encode_query(id));
        let body = PortBody {
            port: u32::from(port),
        };
        self.json(Method::POST, &path, Some(&body)).await
    }

    /// `DELETE /v1/sandboxes/{id}/ports/{port}`
    pub async fn unexpose_port(&self, id: &str, port: u16) -> Result<(), ClientError> {
        let path = format!("/v1/sandboxes/{}/ports/{port}", encode_query(id));
        ok(self
            .json_response(Method::DELETE, &path, None::<&()>)
            .await?)
        .await?;
        Ok(())
    }
}
