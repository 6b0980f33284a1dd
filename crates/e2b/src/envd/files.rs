//! envd's `/files`: `GET` streams a guest file down, `POST` writes one or
//! more up (multipart, each part named by its path, or one octet-stream
//! body), streamed both ways. A request may carry, instead of the access
//! token, the v1 signature E2B's SDKs make for shareable file URLs.
//! Relative paths are taken from the default user's home, `/root`.

use axum::body::Body;
use axum::extract::{Extension, FromRequest, Multipart, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::filesystem::base_name;
use crate::error::ApiError;
use crate::route::{Target, ACCESS_TOKEN_HEADER};
use crate::App;

/// Home of the user commands and files default to.
pub(crate) const HOME: &str = "/root";

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Written {
    name: String,
    r#type: &'static str,
    path: String,
}

/// An absolute guest path (relative ones from [`HOME`]).
pub(crate) fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{HOME}/{}", path.trim_start_matches("./"))
    }
}

/// The v1 signature of a file URL: `v1_` and the unpadded base64 SHA-256 of
/// `path:operation:user:token[:expiration]`.
fn signature(path: &str, op: &str, user: &str, token: &str, exp: Option<u64>) -> String {
    let raw = match exp {
        Some(e) => format!("{path}:{op}:{user}:{token}:{e}"),
        None => format!("{path}:{op}:{user}:{token}"),
    };
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// A request without the access token passes only with a good, unexpired signature.
fn check_signature(
    app: &App,
    t: &Target,
    req_has_token: bool,
    q: &FilesQuery,
    op: &str,
) -> Result<(), ApiError> {
    if req_has_token {
        return Ok(());
    }
    let Some(sig) = q.signature.as_deref() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing X-Access-Token or signature",
        ));
    };
    if q.signature_expiration
        .is_some_and(|e| e < crate::time::now_unix())
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the signed URL expired",
        ));
    }
    let path = q.path.as_deref().unwrap_or("");
    let user = q.username.as_deref().unwrap_or("");
    let want = signature(
        path,
        op,
        user,
        &app.keys.access_token(&t.id),
        q.signature_expiration,
    );
    if subtle::ConstantTimeEq::ct_eq(want.as_bytes(), sig.as_bytes()).into() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("the signature does not match {op} of {path:?}"),
        ))
    }
}

fn token_given(app: &App, t: &Target, req: &Request) -> bool {
    req.headers()
        .get(ACCESS_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|g| app.keys.token_ok(&t.id, g))
}

fn need_path(q: &FilesQuery) -> Result<String, ApiError> {
    q.path
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(absolute)
        .ok_or_else(|| ApiError::bad_request("missing ?path=: name the guest file"))
}

pub(crate) async fn download(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Query(q): Query<FilesQuery>,
    req: Request,
) -> Response {
    let has_token = token_given(&app, &t, &req);
    drop(req);
    let r = async {
        check_signature(&app, &t, has_token, &q, "read")?;
        let path = need_path(&q)?;
        let f = app.engine.read_file(&t.id, &path).await?;
        let body = Body::from_stream(f.chunks.map(|c| c.map_err(std::io::Error::other)));
        Ok::<_, ApiError>(
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, f.size.to_string()),
                ],
                body,
            )
                .into_response(),
        )
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

async fn write_stream(
    app: &App,
    id: &str,
    path: &str,
    body: zygote_engine::UploadStream,
) -> Result<Written, ApiError> {
    app.engine.write_file(id, path, None, body).await?;
    Ok(Written {
        name: base_name(path),
        r#type: "file",
        path: path.to_string(),
    })
}

pub(crate) async fn upload(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Query(q): Query<FilesQuery>,
    req: Request,
) -> Response {
    let r = async {
        check_signature(&app, &t, token_given(&app, &t, &req), &q, "write")?;
        if req
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v != "identity")
        {
            return Err(ApiError::bad_request(
                "compressed uploads are not supported: upload without gzip",
            ));
        }
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ct.starts_with("multipart/form-data") {
            let mp = Multipart::from_request(req, &())
                .await
                .map_err(|e| ApiError::bad_request(format!("bad multipart body: {e}")))?;
            return upload_parts(&app, &t.id, q.path.as_deref(), mp).await;
        }
        let path = need_path(&q)?;
        let body = req
            .into_body()
            .into_data_stream()
            .map(|c| c.map_err(std::io::Error::other))
            .boxed();
        Ok(vec![write_stream(&app, &t.id, &path, body).await?])
    };
    match r.await {
        Ok(w) => (StatusCode::OK, Json(w)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Each part to its path (the part's file name, or `?path=` for one part),
/// streamed through a small channel.
async fn upload_parts(
    app: &App,
    id: &str,
    single: Option<&str>,
    mut mp: Multipart,
) -> Result<Vec<Written>, ApiError> {
    let mut out = Vec::new();
    loop {
        let field = mp
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("bad multipart body: {e}")))?;
        let Some(mut field) = field else { break };
        let name = field
            .file_name()
            .map(String::from)
            .filter(|n| !n.is_empty());
        let path = match (single.filter(|p| !p.is_empty()), name) {
            (Some(p), _) => absolute(p),
            (None, Some(n)) => absolute(&n),
            (None, None) => {
                return Err(ApiError::bad_request(
                    "a multipart part names no file: give each part its path as the file name",
                ))
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let pump = async move {
            loop {
                match field.chunk().await {
                    Ok(Some(c)) => {
                        if tx.send(Ok(c)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        break;
                    }
                }
            }
        };
        let body = tokio_stream_of(rx);
        let (w, ()) = tokio::join!(write_stream(app, id, &path, body), pump);
        out.push(w?);
    }
    if out.is_empty() {
        return Err(ApiError::bad_request("the multipart body holds no file"));
    }
    Ok(out)
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> zygote_engine::UploadStream {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_signatures() {
        assert_eq!(absolute("a.txt"), "/root/a.txt");
        assert_eq!(absolute("./d/a"), "/root/d/a");
        assert_eq!(absolute("/tmp/x"), "/tmp/x");
        // What E2B's SDK computes for ("/tmp/a", "read", "", "tok", None).
        let raw = Sha256::digest(b"/tmp/a:read::tok");
        let want = format!(
            "v1_{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw)
        );
        assert_eq!(signature("/tmp/a", "read", "", "tok", None), want);
    }
}
