//! Pulling an image into the local layout: manifest (following an index to
//! its linux/amd64 entry), config and layers, each blob fetched only when the
//! layout lacks it, resumed with a range request when a previous pull was cut.

use std::io::SeekFrom;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{
    BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    OciDescriptor, OciImageManifest, IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::{is_loopback, Auth, Layout, RegistryError, Remote};

/// Blobs moved at once.
pub(crate) const PARALLEL: usize = 4;

const MANIFEST_TYPES: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The reference as the layout names it (`registry/repo:tag`).
    pub reference: String,
    /// The image manifest's digest.
    pub digest: String,
    pub fetched_blobs: usize,
    pub cached_blobs: usize,
    pub fetched_bytes: u64,
}

/// Pulls `reference` into `layout`, naming it there by its full reference.
pub async fn pull_image(
    reference: &str,
    layout: &Layout,
    remote: &Remote,
) -> Result<Pulled, RegistryError> {
    let s = Session::open(reference, remote)?;
    let (r, registry, client, auth) = (&s.r, &s.registry, &s.client, &s.auth);
    let fail = |e| s.fail(reference, e);
    let (mut bytes, mut digest) = client
        .pull_manifest_raw(r, auth, MANIFEST_TYPES)
        .await
        .map_err(fail)?;
    let mut pinned = r.clone();
    let top: Value = serde_json::from_slice(&bytes).map_err(|e| {
        remote_err(
            registry,
            format!("manifest of `{reference}` is not JSON: {e}"),
        )
    })?;
    if top.get("manifests").is_some() {
        let entry = top["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64")
            .and_then(|m| m["digest"].as_str())
            .ok_or_else(|| {
                remote_err(
                    registry,
                    format!("`{reference}` has no linux/amd64 image: zygote guests are x86-64"),
                )
            })?;
        pinned = r.clone_with_digest(entry.to_string());
        (bytes, digest) = client
            .pull_manifest_raw(&pinned, auth, MANIFEST_TYPES)
            .await
            .map_err(fail)?;
    }
    layout.put_blob(reference, &digest, &bytes)?;
    let manifest: OciImageManifest = serde_json::from_slice(&bytes).map_err(|e| {
        remote_err(
            registry,
            format!("manifest {digest} of `{reference}` is invalid: {e}"),
        )
    })?;
    let media_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| OCI_IMAGE_MEDIA_TYPE.to_string());
    let mut pulled = Pulled {
        reference: r.whole(),
        digest: digest.clone(),
        fetched_blobs: 0,
        cached_blobs: 0,
        fetched_bytes: 0,
    };
    let descs: Vec<&OciDescriptor> = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .collect();
    for got in s.fetch_all(&pinned, &descs, layout, reference).await? {
        match got {
            Some(n) => {
                pulled.fetched_blobs += 1;
                pulled.fetched_bytes += n;
            }
            None => pulled.cached_blobs += 1,
        }
    }
    layout.tag(&pulled.reference, &media_type, &digest, bytes.len() as u64)?;
    tracing::info!(?pulled, "image pulled");
    Ok(pulled)
}

pub(crate) enum Fetch {
    Registry(OciDistributionError),
    Local(RegistryError),
}

/// A parsed reference and a client for its registry.
pub(crate) struct Session {
    pub(crate) r: Reference,
    pub(crate) registry: String,
    pub(crate) client: Client,
    pub(crate) auth: RegistryAuth,
    pub(crate) anonymous: bool,
}

impl Session {
    pub(crate) fn open(reference: &str, remote: &Remote) -> Result<Session, RegistryError> {
        let r: Reference =
            reference
                .parse()
                .map_err(|e: oci_client::ParseError| RegistryError::BadReference {
                    reference: reference.into(),
                    message: e.to_string(),
                })?;
        let registry = r.resolve_registry().to_string();
        let client = client(&registry, remote)?;
        let auth = match &remote.auth {
            Auth::Anonymous => RegistryAuth::Anonymous,
            Auth::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Auth::Bearer(t) => RegistryAuth::Bearer(t.clone()),
        };
        Ok(Session {
            r,
            registry,
            client,
            auth,
            anonymous: remote.auth == Auth::Anonymous,
        })
    }

    /// Maps a client error for `reference`.
    pub(crate) fn fail(&self, reference: &str, e: OciDistributionError) -> RegistryError {
        classify(&self.registry, reference, self.anonymous, e)
    }

    /// Fetches blob `desc` into `layout` unless it is there; returns the
    /// bytes received, `None` when it was there.
    pub(crate) async fn fetch(
        &self,
        r: &Reference,
        desc: &OciDescriptor,
        layout: &Layout,
        reference: &str,
    ) -> Result<Option<u64>, RegistryError> {
        if layout.has_blob(&desc.digest) {
            return Ok(None);
        }
        fetch_blob(&self.client, r, desc, layout, reference)
            .await
            .map(Some)
            .map_err(|e| match e {
                Fetch::Registry(e) => self.fail(reference, e),
                Fetch::Local(e) => e,
            })
    }

    /// [`Session::fetch`] of every blob, [`PARALLEL`] at a time.
    pub(crate) async fn fetch_all(
        &self,
        r: &Reference,
        descs: &[&OciDescriptor],
        layout: &Layout,
        reference: &str,
    ) -> Result<Vec<Option<u64>>, RegistryError> {
        futures::stream::iter(descs.iter().map(|d| self.fetch(r, d, layout, reference)))
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await
    }
}

/// Fetches one blob into the layout (resuming a partial one); returns the
/// bytes received.
pub(crate) async fn fetch_blob(
    client: &Client,
    r: &Reference,
    desc: &OciDescriptor,
    layout: &Layout,
    reference: &str,
) -> Result<u64, Fetch> {
    let partial = layout.partial_path(&desc.digest);
    let have = tokio::fs::metadata(&partial)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let size = u64::try_from(desc.size).unwrap_or(0);
    if size > 0 && have >= size {
        // Complete but never checked (cut between the last byte and the rename).
        commit(layout, reference, &desc.digest).await?;
        return Ok(0);
    }
    let (mut stream, offset) = if have > 0 {
        match client
            .pull_blob_stream_partial(r, desc, have, None)
            .await
            .map_err(Fetch::Registry)?
        {
            BlobResponse::Partial(s) => (s, have),
            BlobResponse::Full(s) => (s, 0),
        }
    } else {
        (
            client
                .pull_blob_stream(r, desc)
                .await
                .map_err(Fetch::Registry)?,
            0,
        )
    };
    if offset > 0 {
        tracing::info!(digest = %desc.digest, offset, "resuming blob");
    }
    let io = |action| RegistryError::io(action, &partial);
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(offset == 0)
        .open(&partial)
        .await
        .map_err(|e| Fetch::Local(io("open")(e)))?;
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(|e| Fetch::Local(io("seek")(e)))?;
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) if size > 0 && offset + got >= size => {
                // Every byte arrived and the client's check failed: start over next time.
                drop(file);
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(Fetch::Local(RegistryError::Digest {
                    reference: reference.into(),
                    digest: desc.digest.clone(),
                    message: e.to_string(),
                }));
            }
            Err(e) => return Err(Fetch::Registry(OciDistributionError::IoError(e))),
        };
        file.write_all(&chunk)
            .await
            .map_err(|e| Fetch::Local(io("write")(e)))?;
        got += chunk.len() as u64;
    }
    file.flush()
        .await
        .map_err(|e| Fetch::Local(io("write")(e)))?;
    drop(file);
    commit(layout, reference, &desc.digest).await?;
    Ok(got)
}

/// Hashes the partial blob and renames it into place (off the runtime).
async fn commit(layout: &Layout, reference: &str, digest: &str) -> Result<(), Fetch> {
    let (layout, reference, digest) = (layout.clone(), reference.to_string(), digest.to_string());
    let partial = layout.partial_path(&digest);
    tokio::task::spawn_blocking(move || layout.commit_blob(&reference, &digest))
        .await
        .map_err(|e| {
            Fetch::Local(RegistryError::io("hash", partial)(std::io::Error::other(
                e.to_string(),
            )))
        })?
        .map_err(Fetch::Local)
}

/// A client for `registry`: http when insecure, or on loopback without a
/// CA file; https otherwise, with the system roots plus the CA file.
fn client(registry: &str, remote: &Remote) -> Result<Client, RegistryError> {
    // reqwest is built without a compiled-in provider; the workspace uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = ClientConfig {
        // A loopback registry speaks plain http unless a CA file says it
        // has a certificate of its own.
        protocol: if remote.insecure || (is_loopback(registry) && remote.ca_file.is_none()) {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..ClientConfig::default()
    };
    if let Some(path) = &remote.ca_file {
        let data = std::fs::read(path).map_err(|source| RegistryError::CaFile {
            path: path.clone(),
            source,
        })?;
        config.extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    Ok(Client::new(config))
}

pub(crate) fn remote_err(registry: &str, message: String) -> RegistryError {
    RegistryError::Remote {
        registry: registry.into(),
        message,
    }
}

/// Maps the client's errors onto ours: refused credentials, unknown
/// references, bad digests, everything else with its message.
fn classify(
    registry: &str,
    reference: &str,
    anonymous: bool,
    e: OciDistributionError,
) -> RegistryError {
    let unauthorized = || {
        if anonymous {
            RegistryError::AuthRequired {
                registry: registry.into(),
                reference: reference.into(),
            }
        } else {
            RegistryError::Unauthorized {
                registry: registry.into(),
                reference: reference.into(),
            }
        }
    };
    let not_found = || RegistryError::NotFound {
        reference: reference.into(),
    };
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
        OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
        OciDistributionError::RegistryError { ref envelope, .. } => {
            if envelope
                .errors
                .iter()
                .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized()
            } else if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                not_found()
            } else {
                remote_err(registry, e.to_string())
            }
        }
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => unauthorized(),
        OciDistributionError::ServerError { code: 404, .. } => not_found(),
        OciDistributionError::DigestError(d) => RegistryError::Digest {
            reference: reference.into(),
            digest: String::new(),
            message: d.to_string(),
        },
        other => {
            let mut text = other.to_string();
            let mut cause = std::error::Error::source(&other);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            remote_err(registry, text)
        }
    }
}
