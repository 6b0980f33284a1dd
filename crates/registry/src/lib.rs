//! zygote-registry: OCI registries, through the `oci-client` crate.
//!
//! An image pull lands in a local OCI layout (`<home>/cache/oci`): every blob
//! under `blobs/sha256/<hex>` (shared by all images, so a layer is fetched
//! once per host), verified against its digest before it is renamed into
//! place; an interrupted download is resumed from where it stopped with a
//! range request; `index.json` names each pulled manifest by its full
//! reference. The image crate reads that layout like any other.
//!
//! Transport: https with the system roots (plus a CA file if given); plain
//! http only when the caller says `insecure`, or for a registry on loopback
//! given no CA file.
//! Auth: anonymous, basic (user and password; registries that answer with a
//! bearer challenge get their token exchange from `oci-client`) or a bearer
//! token.
//!
//! Snapshots travel as an OCI artifact of zygote's own media types: the
//! config is a [`ChunkIndex`] of the daemon's bundle, the layers its
//! zstd-compressed, content-addressed chunks (see [`chunks`]), so snapshots
//! of one lineage share most of their blobs and a pull fetches only what the
//! host lacks.
//!
//! Module map: `layout` (the local OCI layout), `pull` (images), `chunks`
//! (bundles cut and reassembled), `snapshot` (push and pull of snapshots).

use std::path::PathBuf;

pub mod chunks;
mod layout;
mod pull;
mod snapshot;

pub use chunks::{ChunkIndex, CutStats};
pub use layout::Layout;
pub use pull::{pull_image, Pulled};
pub use snapshot::{
    pull_snapshot, push_snapshot, Pushed, SnapshotPulled, ARTIFACT_TYPE, CHUNK_MEDIA_TYPE,
    INDEX_MEDIA_TYPE,
};

/// How to authenticate to a registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Anonymous => f.write_str("Anonymous"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    pub auth: Auth,
    /// Plain http for any registry (loopback registries use it unless a CA
    /// file is given).
    pub insecure: bool,
    /// Extra trusted roots (PEM).
    pub ca_file: Option<PathBuf>,
}

/// Everything that can go wrong talking to a registry or writing the layout.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("reference `{reference}` is invalid ({message}): use REGISTRY/REPOSITORY:TAG, e.g. 127.0.0.1:5000/team/python:3.12")]
    BadReference { reference: String, message: String },

    #[error("registry {registry}: {message}")]
    Remote { registry: String, message: String },

    #[error("registry {registry} refused the credentials for `{reference}`: check --username and the password (or the token)")]
    Unauthorized { registry: String, reference: String },

    #[error("registry {registry} needs credentials for `{reference}`: pass --username with --password-stdin, or --token-stdin")]
    AuthRequired { registry: String, reference: String },

    #[error("`{reference}` is not in the registry: check the repository and tag")]
    NotFound { reference: String },

    #[error("blob {digest} of `{reference}` failed verification: {message}; nothing was registered, pull again")]
    Digest {
        reference: String,
        digest: String,
        message: String,
    },

    #[error("snapshot bundle: {0}")]
    Bundle(String),

    #[error("`{reference}` is not a zygote snapshot (its config is {media_type}): pull images with `zygote image pull`")]
    NotASnapshot {
        reference: String,
        media_type: String,
    },

    #[error("cannot read CA file `{}`: {source}", path.display())]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RegistryError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| RegistryError::Io {
            action,
            path,
            source,
        }
    }
}

/// Whether `registry` (`host[:port]`) is on loopback.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
        assert!(!is_loopback("198.18.0.1"));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let a = Auth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
