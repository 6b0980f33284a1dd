//! A small REST client for the daemon. One HTTP/1.1 connection per request over
//! the Unix socket (or TCP with a bearer token). Streams file bodies and exec
//! output instead of buffering them.

use std::path::PathBuf;

mod bundles;
mod net;
mod procs;
mod tls;
mod volumes;

pub use tls::Tls;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use zygote_proto::agent::{DirEntry, EvalResult, FileStat};
use zygote_proto::api::{
    BranchBody, CreateSandbox, CreateSnapshot, ErrorBody, ExecBody, ExecEvent, ExecResult,
    ForkBody, ForkResult, Health, ImageSummary, ListResult, Pong, SandboxInfo, SnapshotInfo,
    SpawnBody, SpawnResult, VersionInfo, WriteFileResult,
};

/// Where the daemon is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A Unix socket path.
    Unix(PathBuf),
    /// `host:port` over TCP (TLS when `tls` is set), with an optional bearer
    /// token.
    Tcp {
        /// `host:port`.
        authority: String,
        /// Bearer token.
        token: Option<String>,
        /// TLS settings of an `https://` daemon.
        tls: Option<Tls>,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp {
                authority,
                tls: None,
                ..
            } => write!(f, "http://{authority}"),
            Endpoint::Tcp {
                authority,
                tls: Some(_),
                ..
            } => write!(f, "https://{authority}"),
        }
    }
}

impl Endpoint {
    /// Parse `http://host:port[/]` or `https://host:port[/]` (the base URL of
    /// a daemon on TCP). An `https://` daemon's certificate is checked against
    /// the CA certificates in PEM file `ca`, or the system's roots when `None`.
    pub fn from_url(
        url: &str,
        token: Option<String>,
        ca: Option<&std::path::Path>,
    ) -> Result<Endpoint, ClientError> {
        let (rest, secure) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => {
                return Err(ClientError::BadUrl(format!(
                    "`{url}` is not an http:// or https:// URL: pass e.g. http://127.0.0.1:8889"
                )))
            }
        };
        let authority = rest.trim_end_matches('/').to_string();
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host,
            _ => {
                return Err(ClientError::BadUrl(format!(
                    "`{url}` needs a host and port and no path: pass e.g. http://127.0.0.1:8889"
                )))
            }
        };
        if authority.contains('/') {
            return Err(ClientError::BadUrl(format!(
                "`{url}` needs a host and port and no path: pass e.g. http://127.0.0.1:8889"
            )));
        }
        let tls = match (secure, ca) {
            (true, ca) => Some(Tls::new(host, ca)?),
            (false, Some(ca)) => {
                return Err(ClientError::BadUrl(format!(
                    "a CA file ({}) was named for `{url}`, which is plain http://: use https:// or drop the CA",
                    ca.display()
                )))
            }
            (false, None) => None,
        };
        Ok(Endpoint::Tcp {
            authority,
            token,
            tls,
        })
    }
}

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the endpoint.
    #[error("no zygote daemon answers at {endpoint}: start one with `zygote daemon` (as root)")]
    Connect {
        /// Where we tried.
        endpoint: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (an untrusted or mismatched certificate, or
    /// not a TLS server).
    #[error("TLS handshake with {endpoint} failed: {source} (is the daemon's CA trusted? set ZYGOTE_CA to its PEM file)")]
    Tls {
        /// Where we tried.
        endpoint: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The URL is unusable.
    #[error("{0}")]
    BadUrl(String),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// HTTP failed mid-way.
    #[error("HTTP exchange with the daemon failed: {0}")]
    Http(String),
    /// The answer was not what the API promises.
    #[error("unexpected answer from the daemon: {0}")]
    Decode(String),
    /// A local file operation failed.
    #[error("{what}")]
    Io {
        /// What, with the path.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The HTTP status, when the daemon answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when no daemon answered.
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

pub(crate) type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

pub(crate) fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// Percent-encode a query value.
pub fn encode_query(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                s.push(b as char)
            }
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

/// The client.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
}

impl Client {
    /// A client for an endpoint.
    pub fn new(endpoint: Endpoint) -> Client {
        Client { endpoint }
    }

    /// Where it talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub(crate) async fn send(
        &self,
        req: Request<BoxBody>,
    ) -> Result<Response<Incoming>, ClientError> {
        let connect_err = |source| ClientError::Connect {
            endpoint: self.endpoint.to_string(),
            source,
        };
        let mut sender = match &self.endpoint {
            Endpoint::Unix(p) => {
                let s = UnixStream::connect(p).await.map_err(connect_err)?;
                handshake(s).await?
            }
            Endpoint::Tcp { authority, tls, .. } => {
                let s = TcpStream::connect(authority).await.map_err(connect_err)?;
                let _ = s.set_nodelay(true);
                match tls {
                    Some(tls) => {
                        handshake(tls.connect(s, &self.endpoint.to_string()).await?).await?
                    }
                    None => handshake(s).await?,
                }
            }
        };
        sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
    }

    pub(crate) fn builder(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "localhost".to_string(),
            Endpoint::Tcp { authority, .. } => authority.clone(),
        };
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host);
        if let Endpoint::Tcp { token: Some(t), .. } = &self.endpoint {
            b = b.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b
    }

    /// Send a raw request; the status and body come back whatever they are.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let m =
            Method::from_bytes(method.as_bytes()).map_err(|e| ClientError::Http(e.to_string()))?;
        let mut b = self.builder(m, path);
        if let Some(ct) = content_type {
            b = b.header(hyper::header::CONTENT_TYPE, ct);
        }
        let req = b
            .body(full(body))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = self.send(req).await?;
        let status = resp.status().as_u16();
        let bytes = collect(resp).await?;
        Ok((status, bytes.to_vec()))
    }

    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let resp = self.json_response(method, path, body).await?;
        let bytes = collect(ok(resp).await?).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub(crate) async fn json_response(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Response<Incoming>, ClientError> {
        let mut b = self.builder(method, path);
        let body = match body {
            Some(v) => {
                b = b.header(hyper::header::CONTENT_TYPE, "application/json");
                full(serde_json::to_vec(v).map_err(|e| ClientError::Decode(e.to_string()))?)
            }
            None => full(Bytes::new()),
        };
        let req = b.body(body).map_err(|e| ClientError::Http(e.to_string()))?;
        self.send(req).await
    }

    /// `GET /healthz`
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(Method::GET, "/healthz", None::<&()>).await
    }

    /// `GET /version`
    pub async fn version(&self) -> Result<VersionInfo, ClientError> {
        self.json(Method::GET, "/version", None::<&()>).await
    }

    /// `GET /v1/images`
    pub async fn images(&self) -> Result<Vec<ImageSummary>, ClientError> {
        self.json(Method::GET, "/v1/images", None::<&()>).await
    }

    /// `POST /v1/sandboxes`
    pub async fn create(&self, req: &CreateSandbox) -> Result<SandboxInfo, ClientError> {
        self.json(Method::POST, "/v1/sandboxes", Some(req)).await
    }

    /// `GET /v1/sandboxes`
    pub async fn list(&self) -> Result<Vec<SandboxInfo>, ClientError> {
        self.json(Method::GET, "/v1/sandboxes", None::<&()>).await
    }

    /// `GET /v1/sandboxes/{id}`
    pub async fn get(&self, id: &str) -> Result<SandboxInfo, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{}", encode_query(id)),
            None::<&()>,
        )
        .await
    }

    /// `DELETE /v1/sandboxes/{id}`
    pub async fn remove(&self, id: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .json(
                Method::DELETE,
                &format!("/v1/sandboxes/{}", encode_query(id)),
                None::<&()>,
            )
            .await?;
        Ok(())
    }

    /// `POST /v1/snapshots/{tag}/spawn`: children of the snapshot `body.snapshot_tag`.
    pub async fn spawn(&self, body: &SpawnBody) -> Result<Vec<SpawnResult>, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/snapshots/{}/spawn", encode_query(&body.snapshot_tag)),
            Some(body),
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/branch`
    pub async fn branch(&self, id: &str, body: &BranchBody) -> Result<SnapshotInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{}/branch", encode_query(id)),
            Some(body),
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/fork`
    pub async fn fork(&self, id: &str, body: &ForkBody) -> Result<ForkResult, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{}/fork", encode_query(id)),
            Some(body),
        )
        .await
    }

    /// `POST /v1/snapshots`
    pub async fn create_snapshot(
        &self,
        body: &CreateSnapshot,
    ) -> Result<SnapshotInfo, ClientError> {
        self.json(Method::POST, "/v1/snapshots", Some(body)).await
    }

    /// `GET /v1/snapshots`
    pub async fn snapshots(&self) -> Result<Vec<SnapshotInfo>, ClientError> {
        self.json(Method::GET, "/v1/snapshots", None::<&()>).await
    }

    /// `GET /v1/snapshots/{tag}`
    pub async fn snapshot(&self, tag: &str) -> Result<SnapshotInfo, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/snapshots/{}", encode_query(tag)),
            None::<&()>,
        )
        .await
    }

    /// `DELETE /v1/snapshots/{tag}`
    pub async fn delete_snapshot(&self, tag: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .json(
                Method::DELETE,
                &format!("/v1/snapshots/{}", encode_query(tag)),
                None::<&()>,
            )
            .await?;
        Ok(())
    }

    /// `POST /v1/sandboxes/{id}/ping`
    pub async fn ping(&self, id: &str) -> Result<Pong, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{}/ping", encode_query(id)),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/exec` (buffered).
    pub async fn exec(&self, id: &str, body: &ExecBody) -> Result<ExecResult, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{}/exec", encode_query(id)),
            Some(body),
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/exec/stream`: `on_event` sees every event; the
    /// final `Exit` (or `Error`) event is returned.
    pub async fn exec_stream(
        &self,
        id: &str,
        body: &ExecBody,
        mut on_event: impl FnMut(&ExecEvent),
    ) -> Result<ExecEvent, ClientError> {
        let resp = self
            .json_response(
                Method::POST,
                &format!("/v1/sandboxes/{}/exec/stream", encode_query(id)),
                Some(body),
            )
            .await?;
        exec_events(ok(resp).await?, &mut on_event).await
    }

    /// `POST /v1/sandboxes/{id}/eval`
    pub async fn eval(&self, id: &str, code: &str) -> Result<EvalResult, ClientError> {
        let a: zygote_proto::compat::EvalAnswer = self
            .json(
                Method::POST,
                &format!("/v1/sandboxes/{}/eval", encode_query(id)),
                Some(&serde_json::json!({ "code": code })),
            )
            .await?;
        Ok(a.into())
    }

    /// `PUT /v1/sandboxes/{id}/files?path=` from a stream of chunks.
    pub async fn upload_stream<S>(
        &self,
        id: &str,
        path: &str,
        mode: Option<u32>,
        body: S,
    ) -> Result<WriteFileResult, ClientError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        let mut uri = format!(
            "/v1/sandboxes/{}/files?path={}",
            encode_query(id),
            encode_query(path)
        );
        if let Some(m) = mode {
            uri.push_str(&format!("&mode={m:o}"));
        }
        let body: BoxBody = BodyExt::boxed(StreamBody::new(body.map_ok(Frame::data)));
        let req = self
            .builder(Method::PUT, &uri)
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = ok(self.send(req).await?).await?;
        let bytes = collect(resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Upload bytes.
    pub async fn upload(
        &self,
        id: &str,
        path: &str,
        data: Vec<u8>,
    ) -> Result<WriteFileResult, ClientError> {
        let chunks: Vec<Result<Bytes, std::io::Error>> = Bytes::from(data)
            .chunks(256 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        self.upload_stream(id, path, None, futures::stream::iter(chunks))
            .await
    }

    /// Upload a host file, streamed.
    pub async fn upload_file(
        &self,
        id: &str,
        local: &std::path::Path,
        path: &str,
    ) -> Result<WriteFileResult, ClientError> {
        let f = tokio::fs::File::open(local)
            .await
            .map_err(|source| ClientError::Io {
                what: format!("cannot open {}", local.display()),
                source,
            })?;
        let mode = f.metadata().await.ok().map(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode() & 0o7777
        });
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024);
        self.upload_stream(id, path, mode, stream).await
    }

    /// `GET /v1/sandboxes/{id}/files?path=` into a writer; returns the bytes.
    pub async fn download_to<W: AsyncWrite + Unpin>(
        &self,
        id: &str,
        path: &str,
        out: &mut W,
    ) -> Result<u64, ClientError> {
        let uri = format!(
            "/v1/sandboxes/{}/files?path={}",
            encode_query(id),
            encode_query(path)
        );
        let req = self
            .builder(Method::GET, &uri)
            .body(full(Bytes::new()))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = ok(self.send(req).await?).await?;
        let expected: Option<u64> = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut stream = BodyStream::new(resp.into_body());
        let mut n = 0u64;
        while let Some(frame) = stream.next().await {
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data)
                    .await
                    .map_err(|source| ClientError::Io {
                        what: "cannot write the downloaded data".into(),
                        source,
                    })?;
                n += data.len() as u64;
            }
        }
        out.flush().await.map_err(|source| ClientError::Io {
            what: "cannot write the downloaded data".into(),
            source,
        })?;
        if let Some(e) = expected {
            if e != n {
                return Err(ClientError::Http(format!(
                    "download of {path} ended after {n} of {e} bytes"
                )));
            }
        }
        Ok(n)
    }

    /// Download into memory.
    pub async fn download(&self, id: &str, path: &str) -> Result<Vec<u8>, ClientError> {
        let mut v = Vec::new();
        self.download_to(id, path, &mut v).await?;
        Ok(v)
    }

    /// `GET /v1/sandboxes/{id}/files/stat?path=`
    pub async fn stat(&self, id: &str, path: &str) -> Result<FileStat, ClientError> {
        self.json(
            Method::GET,
            &format!(
                "/v1/sandboxes/{}/files/stat?path={}",
                encode_query(id),
                encode_query(path)
            ),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/sandboxes/{id}/files/list?path=`
    pub async fn list_dir(&self, id: &str, path: &str) -> Result<Vec<DirEntry>, ClientError> {
        let r: ListResult = self
            .json(
                Method::GET,
                &format!(
                    "/v1/sandboxes/{}/files/list?path={}",
                    encode_query(id),
                    encode_query(path)
                ),
                None::<&()>,
            )
            .await?;
        Ok(r.entries)
    }

    /// `DELETE /v1/sandboxes/{id}/files?path=`
    pub async fn remove_path(
        &self,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .json(
                Method::DELETE,
                &format!(
                    "/v1/sandboxes/{}/files?path={}&recursive={recursive}",
                    encode_query(id),
                    encode_query(path)
                ),
                None::<&()>,
            )
            .await?;
        Ok(())
    }
}

async fn handshake<IO>(
    io: IO,
) -> Result<hyper::client::conn::http1::SendRequest<BoxBody>, ClientError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Read NDJSON `ExecEvent` lines until `Exit` or `Error`, which is returned.
pub(crate) async fn exec_events(
    resp: Response<Incoming>,
    on_event: &mut impl FnMut(&ExecEvent),
) -> Result<ExecEvent, ClientError> {
    let mut stream = BodyStream::new(resp.into_body());
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let ev: ExecEvent = serde_json::from_slice(&line)
                    .map_err(|e| ClientError::Decode(e.to_string()))?;
                on_event(&ev);
                if matches!(ev, ExecEvent::Exit { .. } | ExecEvent::Error { .. }) {
                    return Ok(ev);
                }
            }
        }
    }
    Err(ClientError::Http(
        "the stream ended without an exit status".into(),
    ))
}

pub(crate) async fn collect(resp: Response<Incoming>) -> Result<Bytes, ClientError> {
    resp.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ClientError::Http(e.to_string()))
}

/// Turn an error status into [`ClientError::Api`] with the daemon's message.
pub(crate) async fn ok(resp: Response<Incoming>) -> Result<Response<Incoming>, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let bytes = collect(resp).await.unwrap_or_default();
    let message = serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
    Err(ClientError::Api {
        status: status.as_u16(),
        message: if message.is_empty() {
            status_text(status)
        } else {
            message
        },
    })
}

fn status_text(s: StatusCode) -> String {
    s.canonical_reason().unwrap_or("error").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn urls() {
        assert!(matches!(
            Endpoint::from_url("http://127.0.0.1:8889/", None, None),
            Ok(Endpoint::Tcp { tls: None, .. })
        ));
        assert!(Endpoint::from_url("ftp://x:1", None, None).is_err());
        assert!(Endpoint::from_url("http://x", None, None).is_err());
        assert!(Endpoint::from_url("http://x:1/api", None, None).is_err());
        assert!(Endpoint::from_url("http://:1", None, None).is_err());
        let e = Endpoint::from_url("http://x:1", None, Some(Path::new("/ca.pem"))).unwrap_err();
        assert!(e.to_string().contains("plain http://"), "{e}");
        let e = Endpoint::from_url("https://x:1", None, Some(Path::new("/nonexistent/ca.pem")))
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query("/tmp/a b&c"), "/tmp/a%20b%26c");
    }
}
