//! Named volumes: create, list, get, delete.

use hyper::Method;
use zygote_proto::volumes::{CreateVolume, VolumeInfo};

use crate::{encode_query, ok, Client, ClientError};

impl Client {
    /// `POST /v1/volumes`: a named volume of `size_mib` MiB (an empty ext4).
    pub async fn create_volume(
        &self,
        name: &str,
        size_mib: u64,
    ) -> Result<VolumeInfo, ClientError> {
        let body = CreateVolume {
            name: name.to_string(),
            size_mib,
        };
        self.json(Method::POST, "/v1/volumes", Some(&body)).await
    }

    /// `GET /v1/volumes`
    pub async fn volumes(&self) -> Result<Vec<VolumeInfo>, ClientError> {
        self.json(Method::GET, "/v1/volumes", None::<&()>).await
    }

    /// `GET /v1/volumes/{name}`
    pub async fn volume(&self, name: &str) -> Result<VolumeInfo, ClientError> {
        let path = format!("/v1/volumes/{}", encode_query(name));
        self.json(Method::GET, &path, None::<&()>).await
    }

    /// `DELETE /v1/volumes/{name}`: refused (409) while a sandbox holds it.
    pub async fn delete_volume(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/volumes/{}", encode_query(name));
        ok(self
            .json_response(Method::DELETE, &path, None::<&()>)
            .await?)
        .await?;
        Ok(())
    }
}
