//! The local OCI layout pulls land in: `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>`. A blob is written as `.partial-<hex>` (kept across an
//! interrupted pull, so the next one resumes it), hashed whole, and renamed
//! into place only when its digest matches; a mismatch deletes it.
//! `index.json` is rewritten atomically under a lock, one entry per reference.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::RegistryError;

/// The annotation that names an entry of `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Opens (creating if needed) the layout at `dir`.
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(RegistryError::io("create directory", &blobs))?;
        let marker = dir.join("oci-layout");
        if !marker.is_file() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = dir.join("index.json");
        if !index.is_file() {
            write_atomic(&index, br#"{"schemaVersion":2,"manifests":[]}"#)?;
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `sha256:<hex>` lives once complete.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex_of(digest))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Where the blob is written while it arrives.
    pub(crate) fn partial_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(format!(".partial-{}", hex_of(digest)))
    }

    /// Checks the partial blob against `digest` and renames it into place; a
    /// mismatch removes it (the next pull starts over).
    pub(crate) fn commit_blob(&self, reference: &str, digest: &str) -> Result<(), RegistryError> {
        let partial = self.partial_path(digest);
        let got = sha256_file(&partial)?;
        if got != hex_of(digest) {
            let _ = fs::remove_file(&partial);
            return Err(RegistryError::Digest {
                reference: reference.into(),
                digest: digest.into(),
                message: format!("the content is sha256:{got}"),
            });
        }
        let dst = self.blob_path(digest);
        fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(RegistryError::io("sync", &partial))?;
        fs::rename(&partial, &dst).map_err(RegistryError::io("rename into place", &dst))
    }

    /// Stores a small blob held in memory (a manifest), checking its digest.
    pub(crate) fn put_blob(
        &self,
        reference: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let got = hex::encode(Sha256::digest(bytes));
        if got != hex_of(digest) {
            return Err(RegistryError::Digest {
                reference: reference.into(),
                digest: digest.into(),
                message: format!("the content is sha256:{got}"),
            });
        }
        write_atomic(&self.blob_path(digest), bytes)
    }

    /// Names the manifest `digest` as `reference` in `index.json`.
    pub(crate) fn tag(
        &self,
        reference: &str,
        media_type: &str,
        digest: &str,
        size: u64,
    ) -> Result<(), RegistryError> {
        let lock_path = self.dir.join(".index.lock");
        let lock =
            fs::File::create(&lock_path).map_err(RegistryError::io("create lock", &lock_path))?;
        lock.lock().map_err(RegistryError::io("lock", &lock_path))?;
        let index_path = self.dir.join("index.json");
        let text = fs::read(&index_path).map_err(RegistryError::io("read", &index_path))?;
        let mut index: Value = serde_json::from_slice(&text).unwrap_or_else(|_| json!({}));
        let mut manifests: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
        manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(reference));
        manifests.push(json!({
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": { REF_NAME: reference },
        }));
        index = json!({ "schemaVersion": 2, "manifests": manifests });
        let bytes = serde_json::to_vec_pretty(&index).unwrap_or_default();
        write_atomic(&index_path, &bytes)
    }
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn sha256_file(path: &Path) -> Result<String, RegistryError> {
    let mut f = fs::File::open(path).map_err(RegistryError::io("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(RegistryError::io("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(RegistryError::io("create", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(RegistryError::io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(RegistryError::io("rename into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_checked_and_tags_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout::open(tmp.path()).unwrap();
        let body = b"hello";
        let d = format!("sha256:{}", hex::encode(Sha256::digest(body)));
        assert!(l.put_blob("r", &d, b"other").is_err());
        l.put_blob("r", &d, body).unwrap();
        assert!(l.has_blob(&d));
        fs::write(l.partial_path(&d), b"bad").unwrap();
        assert!(matches!(
            l.commit_blob("r", &d),
            Err(RegistryError::Digest { .. })
        ));
        assert!(!l.partial_path(&d).exists());
        l.tag("a:1", "m", &d, 5).unwrap();
        l.tag("a:1", "m", &d, 5).unwrap();
        l.tag("a:2", "m", &d, 5).unwrap();
        let index: Value =
            serde_json::from_slice(&fs::read(tmp.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    }
}
