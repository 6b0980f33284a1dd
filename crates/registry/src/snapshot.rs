//! Snapshots pushed to and pulled from a registry as an OCI artifact:
//! artifact type [`ARTIFACT_TYPE`], config a [`ChunkIndex`]
//! ([`INDEX_MEDIA_TYPE`]), one layer per distinct chunk ([`CHUNK_MEDIA_TYPE`]).
//! A push sends only the blobs the registry lacks; a pull fetches only the
//! chunks the local layout lacks, each verified, a cut one resumed.

use std::collections::BTreeMap;

use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest, OCI_IMAGE_MEDIA_TYPE};

use crate::chunks::{ChunkIndex, MAX_INDEX_BYTES};
use futures::{StreamExt, TryStreamExt};

use crate::pull::{remote_err, Session, PARALLEL};
use crate::{Layout, RegistryError, Remote};

pub const ARTIFACT_TYPE: &str = "application/vnd.zygote.snapshot.v1";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.zygote.snapshot.index.v1+json";
pub const CHUNK_MEDIA_TYPE: &str = "application/vnd.zygote.snapshot.chunk.v1+zstd";

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub reference: String,
    pub digest: String,
    /// Blobs sent (the index counts).
    pub pushed_blobs: usize,
    pub pushed_bytes: u64,
    /// Blobs the registry already had.
    pub present_blobs: usize,
}

/// Pushes the snapshot whose chunks `index` lists (all in `layout`) as
/// `reference`.
pub async fn push_snapshot(
    index: &ChunkIndex,
    layout: &Layout,
    reference: &str,
    remote: &Remote,
) -> Result<Pushed, RegistryError> {
    let s = Session::open(reference, remote)?;
    let fail = |e| s.fail(reference, e);
    s.client
        .store_auth_if_needed(s.r.resolve_registry(), &s.auth)
        .await;
    let config = serde_json::to_vec(index).map_err(|e| RegistryError::Bundle(e.to_string()))?;
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let mut pushed = Pushed {
        reference: s.r.whole(),
        digest: String::new(),
        pushed_blobs: 0,
        pushed_bytes: 0,
        present_blobs: 0,
    };
    // Each chunk: its descriptor, and whether it was sent (in index order).
    let one = |digest: String| {
        let (s, fail) = (&s, &fail);
        async move {
            let path = layout.blob_path(&digest);
            let size = tokio::fs::metadata(&path)
                .await
                .map_err(RegistryError::io("stat chunk", &path))?
                .len();
            let desc = OciDescriptor {
                media_type: CHUNK_MEDIA_TYPE.into(),
                digest: digest.clone(),
                size: size as i64,
                ..Default::default()
            };
            if s.client.blob_exists(&s.r, &digest).await.map_err(fail)? {
                return Ok::<_, RegistryError>((desc, None));
            }
            let data = tokio::fs::read(&path)
                .await
                .map_err(RegistryError::io("read chunk", &path))?;
            s.client
                .push_blob(&s.r, data, &digest)
                .await
                .map_err(fail)?;
            Ok((desc, Some(size)))
        }
    };
    let done: Vec<(OciDescriptor, Option<u64>)> =
        futures::stream::iter(index.blobs().into_iter().map(one))
            .buffered(PARALLEL)
            .try_collect()
            .await?;
    let mut layers = Vec::new();
    for (desc, sent) in done {
        match sent {
            Some(n) => {
                pushed.pushed_blobs += 1;
                pushed.pushed_bytes += n;
            }
            None => pushed.present_blobs += 1,
        }
        layers.push(desc);
    }
    if s.client
        .blob_exists(&s.r, &config_digest)
        .await
        .map_err(fail)?
    {
        pushed.present_blobs += 1;
    } else {
        s.client
            .push_blob(&s.r, config.clone(), &config_digest)
            .await
            .map_err(fail)?;
        pushed.pushed_blobs += 1;
        pushed.pushed_bytes += config.len() as u64;
    }
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: OciDescriptor {
            media_type: INDEX_MEDIA_TYPE.into(),
            digest: config_digest,
            size: config.len() as i64,
            ..Default::default()
        },
        layers,
        subject: None,
        annotations: Some(BTreeMap::from([(
            "org.opencontainers.image.created".to_string(),
            "1970-01-01T00:00:00Z".to_string(),
        )])),
    };
    let url = s
        .client
        .push_manifest(&s.r, &OciManifest::Image(manifest))
        .await
        .map_err(fail)?;
    pushed.digest = url.rsplit('/').next().unwrap_or_default().to_string();
    tracing::info!(?pushed, "snapshot pushed");
    Ok(pushed)
}

/// What a snapshot pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPulled {
    pub reference: String,
    pub digest: String,
    pub fetched_blobs: usize,
    pub fetched_bytes: u64,
    /// Chunks already on this host.
    pub cached_blobs: usize,
}

/// Pulls the snapshot artifact `reference`: its index, and every chunk the
/// layout lacks.
///
/// `check` sees the bundle's `bundle.json` before any other chunk is
/// fetched: a snapshot the caller cannot use (another QEMU, another
/// accelerator) is refused without downloading it.
pub async fn pull_snapshot(
    reference: &str,
    layout: &Layout,
    remote: &Remote,
    check: &(dyn Fn(&[u8]) -> Result<(), String> + Sync),
) -> Result<(ChunkIndex, SnapshotPulled), RegistryError> {
    let s = Session::open(reference, remote)?;
    let fail = |e| s.fail(reference, e);
    let (bytes, digest) = s
        .client
        .pull_manifest_raw(&s.r, &s.auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(fail)?;
    let manifest: OciImageManifest = serde_json::from_slice(&bytes).map_err(|e| {
        remote_err(
            &s.registry,
            format!("manifest of `{reference}` is invalid: {e}"),
        )
    })?;
    if manifest.config.media_type != INDEX_MEDIA_TYPE {
        return Err(RegistryError::NotASnapshot {
            reference: reference.into(),
            media_type: manifest.config.media_type,
        });
    }
    if manifest.config.size < 0 || manifest.config.size as u64 > MAX_INDEX_BYTES {
        return Err(remote_err(
            &s.registry,
            format!(
                "the index of `{reference}` is {} bytes, over the {MAX_INDEX_BYTES}-byte cap",
                manifest.config.size
            ),
        ));
    }
    let pinned = s.r.clone_with_digest(digest.clone());
    let mut pulled = SnapshotPulled {
        reference: s.r.whole(),
        digest,
        fetched_blobs: 0,
        fetched_bytes: 0,
        cached_blobs: 0,
    };
    let mut count = |got: Option<u64>| match got {
        Some(n) => {
            pulled.fetched_blobs += 1;
            pulled.fetched_bytes += n;
        }
        None => pulled.cached_blobs += 1,
    };
    count(
        s.fetch(&pinned, &manifest.config, layout, reference)
            .await?,
    );
    let path = layout.blob_path(&manifest.config.digest);
    let text = std::fs::read(&path).map_err(RegistryError::io("read", &path))?;
    let index: ChunkIndex = serde_json::from_slice(&text).map_err(|e| {
        RegistryError::Bundle(format!("the index of `{reference}` is invalid: {e}"))
    })?;
    index
        .validate()
        .map_err(|m| RegistryError::Bundle(format!("the index of `{reference}`: {m}")))?;
    let listed: std::collections::HashSet<&str> =
        manifest.layers.iter().map(|l| l.digest.as_str()).collect();
    for d in index.blobs() {
        if !listed.contains(d.as_str()) {
            return Err(RegistryError::Bundle(format!(
                "the index of `{reference}` names chunk {d}, which the manifest does not carry"
            )));
        }
    }
    let first: std::collections::HashSet<&str> = index
        .files
        .iter()
        .filter(|f| f.name == crate::chunks::MANIFEST_FILE)
        .flat_map(|f| f.chunks.iter().flatten().map(String::as_str))
        .collect();
    let head: Vec<&OciDescriptor> = manifest
        .layers
        .iter()
        .filter(|l| first.contains(l.digest.as_str()))
        .collect();
    for got in s.fetch_all(&pinned, &head, layout, reference).await? {
        count(got);
    }
    let json = crate::chunks::read_file(&index, layout, crate::chunks::MANIFEST_FILE, 1 << 20)?;
    check(&json).map_err(|m| RegistryError::Bundle(format!("`{reference}`: {m}")))?;
    let layers: Vec<&OciDescriptor> = manifest
        .layers
        .iter()
        .filter(|l| !first.contains(l.digest.as_str()))
        .collect();
    for got in s.fetch_all(&pinned, &layers, layout, reference).await? {
        count(got);
    }
    tracing::info!(?pulled, "snapshot pulled");
    Ok((index, pulled))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}
