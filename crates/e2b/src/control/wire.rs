//! The control plane's JSON, exactly as E2B's SDKs send and parse it
//! (camelCase; `templateID`, `sandboxID`, `clientID` and `envdVersion` are
//! required in every sandbox answer), and its mapping to engine types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zygote_engine::{Cidr, Expiry, Lifetime, NetworkRequest, Policy, SandboxState, SandboxView};

use crate::error::ApiError;
use crate::keys::ApiKeys;
use crate::time::rfc3339;
use crate::ENVD_VERSION;

/// The `clientID` of every answer (E2B names the machine; one daemon is one).
pub(crate) const CLIENT_ID: &str = "zygote";
/// A sandbox's lifetime when a request names none (E2B's default).
pub(crate) const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// Longest lifetime a request may ask for (E2B's own cap: 24 hours).
pub(crate) const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// Most children of one fork (E2B's cap).
pub(crate) const MAX_FORK: u32 = 20;

/// `POST /sandboxes` and `POST /v2/sandboxes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct NewSandbox {
    #[serde(rename = "templateID")]
    pub(crate) template_id: String,
    pub(crate) timeout: Option<u64>,
    pub(crate) auto_pause: Option<bool>,
    /// Whether an automatic pause keeps memory (zygote's pause always does).
    pub(crate) auto_pause_memory: Option<bool>,
    pub(crate) auto_resume: Option<serde_json::Value>,
    /// Older SDKs ask for an access token with this; zygote always issues one.
    pub(crate) secure: Option<bool>,
    #[serde(rename = "allow_internet_access")]
    pub(crate) allow_internet_access: Option<bool>,
    pub(crate) network: Option<NetworkConfig>,
    pub(crate) metadata: Option<BTreeMap<String, String>>,
    pub(crate) env_vars: Option<BTreeMap<String, String>>,
    pub(crate) mcp: Option<serde_json::Value>,
    pub(crate) iam: Option<serde_json::Value>,
    pub(crate) volume_mounts: Option<Vec<serde_json::Value>>,
}

/// `network` of a create and the body of `PUT /sandboxes/{id}/network`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct NetworkConfig {
    pub(crate) allow_out: Option<Vec<String>>,
    pub(crate) deny_out: Option<Vec<String>>,
    pub(crate) allow_public_traffic: Option<bool>,
    pub(crate) mask_request_host: Option<String>,
    pub(crate) dns_servers: Option<Vec<String>>,
    pub(crate) egress_proxy: Option<serde_json::Value>,
    pub(crate) https_ports: Option<Vec<u16>>,
    pub(crate) rules: Option<serde_json::Value>,
    #[serde(rename = "allow_internet_access")]
    pub(crate) allow_internet_access: Option<bool>,
}

/// `POST /sandboxes/{id}/connect` (v1 and v2) and `/resume`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ConnectBody {
    pub(crate) timeout: Option<u64>,
    pub(crate) auto_pause: Option<bool>,
    pub(crate) memory: Option<serde_json::Value>,
}

/// `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimeoutBody {
    pub(crate) timeout: u64,
}

/// `POST /sandboxes/{id}/refreshes`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshBody {
    pub(crate) duration: Option<u64>,
}

/// `POST /sandboxes/{id}/pause`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PauseBody {
    pub(crate) memory: Option<serde_json::Value>,
    pub(crate) require_healthy_guest: Option<bool>,
}

/// `POST /sandboxes/{id}/fork`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForkBody {
    pub(crate) timeout: Option<u64>,
    pub(crate) count: Option<u32>,
}

/// `POST /sandboxes/{id}/snapshots`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotBody {
    pub(crate) name: Option<String>,
    pub(crate) memory: Option<serde_json::Value>,
}

/// A started sandbox (create, connect, resume, fork).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Sandbox {
    #[serde(rename = "templateID")]
    pub(crate) template_id: String,
    #[serde(rename = "sandboxID")]
    pub(crate) sandbox_id: String,
    pub(crate) alias: String,
    #[serde(rename = "clientID")]
    pub(crate) client_id: &'static str,
    pub(crate) envd_version: &'static str,
    pub(crate) envd_access_token: String,
    pub(crate) domain: Option<String>,
}

/// A listed sandbox, and (with `envdAccessToken`) one sandbox's details.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Listed {
    #[serde(rename = "templateID")]
    pub(crate) template_id: String,
    #[serde(rename = "sandboxID")]
    pub(crate) sandbox_id: String,
    pub(crate) alias: String,
    #[serde(rename = "clientID")]
    pub(crate) client_id: &'static str,
    pub(crate) started_at: String,
    pub(crate) end_at: String,
    pub(crate) cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub(crate) memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub(crate) disk_size_mb: u64,
    pub(crate) state: &'static str,
    pub(crate) envd_version: &'static str,
    pub(crate) metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) envd_access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) allow_internet_access: Option<bool>,
}

/// A snapshot (`snapshotID` is what `Sandbox.create(template=...)` takes).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SnapshotInfo {
    #[serde(rename = "snapshotID")]
    pub(crate) snapshot_id: String,
    pub(crate) names: Vec<String>,
}

/// The template a sandbox was started from: its snapshot, else its image.
pub(crate) fn template_of(v: &SandboxView) -> String {
    v.snapshot_tag.clone().unwrap_or_else(|| v.image.clone())
}

/// E2B's name of a sandbox state (`None`: not listed).
pub(crate) fn state_name(s: SandboxState) -> Option<&'static str> {
    match s {
        SandboxState::Booting | SandboxState::Running => Some("running"),
        SandboxState::Paused => Some("paused"),
        SandboxState::Stopping | SandboxState::Dead => None,
    }
}

/// The answer of a started sandbox.
pub(crate) fn sandbox(v: &SandboxView, keys: &ApiKeys) -> Sandbox {
    Sandbox {
        template_id: template_of(v),
        sandbox_id: v.id.clone(),
        alias: template_of(v),
        client_id: CLIENT_ID,
        envd_version: ENVD_VERSION,
        envd_access_token: keys.access_token(&v.id),
        domain: None,
    }
}

/// A listed sandbox; `disk_mb` is its image's root size.
pub(crate) fn listed(v: &SandboxView, disk_mb: u64, token: Option<String>) -> Listed {
    let started = v.created_at_unix as i64;
    // No expiry: report a year on (E2B always names an end).
    let end = v
        .expires_at_unix
        .map(|e| e as i64)
        .unwrap_or(started + 365 * 86_400);
    Listed {
        template_id: template_of(v),
        sandbox_id: v.id.clone(),
        alias: template_of(v),
        client_id: CLIENT_ID,
        started_at: rfc3339(started),
        end_at: rfc3339(end),
        cpu_count: v.vcpus,
        memory_mb: v.memory_mib,
        disk_size_mb: disk_mb,
        state: state_name(v.state).unwrap_or("killed"),
        envd_version: ENVD_VERSION,
        metadata: v.metadata.clone(),
        envd_access_token: token,
        allow_internet_access: Some(v.network.as_ref().is_some_and(|n| n.policy.internet)),
    }
}

/// A lifetime of `timeout` seconds (E2B's default when absent), checked.
pub(crate) fn lifetime(timeout: Option<u64>, auto_pause: bool) -> Result<Lifetime, ApiError> {
    let secs = timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if secs == 0 || secs > MAX_TIMEOUT_SECS {
        return Err(ApiError::bad_request(format!(
            "timeout {secs} is out of range: pass 1 to {MAX_TIMEOUT_SECS} seconds"
        )));
    }
    Ok(Lifetime {
        secs: Some(secs),
        on_expiry: if auto_pause {
            Expiry::Pause
        } else {
            Expiry::Kill
        },
    })
}

fn cidrs(field: &str, list: &[String]) -> Result<Vec<Cidr>, ApiError> {
    list.iter()
        .map(|s| {
            let s = s.trim();
            let s = if s.contains('/') { s.to_string() } else { format!("{s}/32") };
            Cidr::parse(&s).map_err(|e| {
                ApiError::bad_request(format!(
                    "{field} entry {s:?} is not an IPv4 address or CIDR ({e}): zygote filters egress by address, not by host name"
                ))
            })
        })
        .collect()
}

/// Refuse a field whose value zygote cannot honour, naming it.
pub(crate) fn unsupported(field: &str, present: bool) -> Result<(), ApiError> {
    if present {
        return Err(ApiError::bad_request(format!(
            "`{field}` is not supported by zygote's E2B layer: leave it out (see docs/e2b.md)"
        )));
    }
    Ok(())
}

/// The egress policy an E2B network config asks for. E2B's idiom "deny
/// everything but these" (`denyOut: ["0.0.0.0/0"]` with `allowOut`) and
/// `allow_internet_access: false` both turn the internet off.
pub(crate) fn policy(internet: Option<bool>, n: &NetworkConfig) -> Result<Policy, ApiError> {
    unsupported("network.maskRequestHost", n.mask_request_host.is_some())?;
    unsupported(
        "network.dnsServers",
        n.dns_servers.as_ref().is_some_and(|d| !d.is_empty()),
    )?;
    unsupported(
        "network.egressProxy",
        n.egress_proxy.as_ref().is_some_and(|v| !v.is_null()),
    )?;
    unsupported(
        "network.rules",
        n.rules
            .as_ref()
            .is_some_and(|v| !v.is_null() && v != &serde_json::json!({})),
    )?;
    unsupported(
        "network.httpsPorts",
        n.https_ports.as_ref().is_some_and(|p| !p.is_empty()),
    )?;
    let allow_out = cidrs("allowOut", n.allow_out.as_deref().unwrap_or_default())?;
    let mut deny_out = cidrs("denyOut", n.deny_out.as_deref().unwrap_or_default())?;
    let everything = Cidr::new(std::net::Ipv4Addr::UNSPECIFIED, 0);
    let deny_all = deny_out.contains(&everything);
    deny_out.retain(|c| *c != everything);
    let internet = internet.or(n.allow_internet_access).unwrap_or(true) && !deny_all;
    let p = Policy {
        internet,
        allow_out,
        deny_out,
    };
    p.check()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(p)
}

/// The network a create asks for.
pub(crate) fn network_request(b: &NewSandbox) -> Result<NetworkRequest, ApiError> {
    if let Some(n) = &b.network {
        unsupported(
            "network.allowPublicTraffic: false",
            n.allow_public_traffic == Some(false),
        )?;
    }
    match (&b.network, b.allow_internet_access) {
        (None, None) => Ok(NetworkRequest::Inherit),
        (n, internet) => Ok(NetworkRequest::Policy(policy(
            internet,
            n.as_ref().unwrap_or(&NetworkConfig::default()),
        )?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        let n = |allow: &[&str], deny: &[&str]| NetworkConfig {
            allow_out: Some(allow.iter().map(|s| s.to_string()).collect()),
            deny_out: Some(deny.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        let p = policy(None, &n(&["198.18.0.2"], &["0.0.0.0/0"])).unwrap();
        assert!(!p.internet);
        assert_eq!(p.allow_out, vec![Cidr::parse("198.18.0.2/32").unwrap()]);
        assert!(p.deny_out.is_empty());
        let p = policy(None, &n(&[], &["10.0.0.0/8"])).unwrap();
        assert!(p.internet);
        assert!(!policy(Some(false), &n(&[], &[])).unwrap().internet);
        let e = policy(None, &n(&["example.com"], &[])).unwrap_err();
        assert!(e.message.contains("example.com"), "{}", e.message);
        assert!(lifetime(Some(0), false).is_err());
        assert!(lifetime(Some(MAX_TIMEOUT_SECS + 1), false).is_err());
        assert_eq!(lifetime(None, true).unwrap().on_expiry, Expiry::Pause);
    }
}
