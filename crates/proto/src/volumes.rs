//! REST models of volumes: named disks that outlive sandboxes, and host
//! directories exported read-only.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// A volume attached at create or spawn: a named volume (`name`) or a host
/// directory (`host_path`, read-only), mounted at `path` in the guest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VolumeMount {
    /// A named volume (`POST /v1/volumes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A host directory under the daemon's `--volume-host-root`, exported
    /// read-only (a copy taken when it is attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// Absolute mount point in the guest, e.g. `/data`.
    pub path: String,
    /// Mount read-only (required for host directories). A named volume held
    /// read-only may be held by many sandboxes at once; writable, by one.
    #[serde(default)]
    pub read_only: bool,
}

/// `POST /v1/volumes`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateVolume {
    /// Name: 1-64 of a-z 0-9 - _ . (not starting with .).
    pub name: String,
    /// Size in MiB (16 MiB to 1 TiB; the file is sparse).
    pub size_mib: u64,
}

/// A sandbox holding a volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VolumeHolder {
    /// Sandbox id.
    pub sandbox: String,
    /// Held read-only.
    pub read_only: bool,
}

/// A named volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VolumeInfo {
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Bytes the host has allocated for it (the file is sparse).
    pub allocated_bytes: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_unix: u64,
    /// Sandboxes holding it.
    #[serde(default)]
    pub holders: Vec<VolumeHolder>,
}
