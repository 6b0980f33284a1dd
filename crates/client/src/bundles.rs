//! Snapshot bundles: a snapshot with its disk chain and image as one tar
//! stream, downloaded from one daemon and uploaded into another.

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;
use hyper::Method;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use zygote_proto::api::SnapshotInfo;

use crate::{collect, encode_query, full, ok, BoxBody, Client, ClientError};

impl Client {
    /// `GET /v1/snapshots/{tag}/bundle` into `out`; returns the bytes.
    pub async fn export_snapshot<W: AsyncWrite + Unpin>(
        &self,
        tag: &str,
        out: &mut W,
    ) -> Result<u64, ClientError> {
        let uri = format!("/v1/snapshots/{}/bundle", encode_query(tag));
        let req = self
            .builder(Method::GET, &uri)
            .body(full(Bytes::new()))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = ok(self.send(req).await?).await?;
        let mut stream = BodyStream::new(resp.into_body());
        let mut n = 0u64;
        let write_err = |source| ClientError::Io {
            what: "cannot write the bundle".into(),
            source,
        };
        while let Some(frame) = stream.next().await {
            let frame = frame.map_err(|e| {
                ClientError::Http(format!(
                    "the bundle of `{tag}` broke off after {n} bytes: {e}"
                ))
            })?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).await.map_err(write_err)?;
                n += data.len() as u64;
            }
        }
        out.flush().await.map_err(write_err)?;
        Ok(n)
    }

    /// `PUT /v1/snapshots/{tag}/bundle` from a stream of chunks.
    pub async fn import_snapshot<S>(&self, tag: &str, body: S) -> Result<SnapshotInfo, ClientError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        let uri = format!("/v1/snapshots/{}/bundle", encode_query(tag));
        let body: BoxBody = BodyExt::boxed(StreamBody::new(body.map_ok(Frame::data)));
        let req = self
            .builder(Method::PUT, &uri)
            .header(hyper::header::CONTENT_TYPE, "application/x-tar")
            .body(body)
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = ok(self.send(req).await?).await?;
        let bytes = collect(resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }
}
