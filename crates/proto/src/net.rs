//! REST models of sandbox networking: the egress policy (E2B's names) given
//! on create, spawn and `PATCH /v1/sandboxes/{id}/network`, exposed ports,
//! and the network a sandbox's info shows.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// A sandbox's network. Every field is optional: an absent `internet` is
/// `true`; `deny_out` wins over `allow_out`; `internet: false` with an
/// `allow_out` list lets only those through.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NetworkBody {
    /// `false`: no network card at all (on create only; the daemon's
    /// default is its `--network`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Everything not denied is reachable (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet: Option<bool>,
    /// IPv4 CIDRs reachable even with `internet: false`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_out: Vec<String>,
    /// IPv4 CIDRs never reachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_out: Vec<String>,
}

/// `POST /v1/sandboxes/{id}/ports`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PortBody {
    /// The guest's TCP port (1-65535).
    pub port: u32,
}

/// An exposed port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PortInfo {
    /// The guest's TCP port.
    pub port: u16,
    /// `host:port` on the daemon's host that reaches it.
    pub host: String,
}

/// A sandbox's network as its info shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NetworkInfo {
    /// The guest's address (the same in every sandbox, each in its own
    /// namespace).
    pub address: String,
    /// Everything not denied is reachable.
    pub internet: bool,
    /// Reachable even with `internet: false`.
    #[serde(default)]
    pub allow_out: Vec<String>,
    /// Never reachable.
    #[serde(default)]
    pub deny_out: Vec<String>,
    /// Exposed ports.
    #[serde(default)]
    pub ports: Vec<PortInfo>,
}
