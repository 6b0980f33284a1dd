//! Sandbox networking in the engine: the host's networking for this daemon
//! (its namespaces tagged by its home, so several daemons share a host), a
//! running sandbox's policy and exposed ports. The namespaces themselves are
//! made by `vm.rs` with the VM that runs inside.

use std::collections::HashSet;
use std::sync::Arc;

use tracing::info;
use zygote_net::{HostConfig, HostNet, Policy};

use crate::error::{EngineError, Result};
use crate::model::{NetworkMode, PortView, SandboxView};
use crate::{Engine, EngineConfig};

/// A short tag naming this home's namespaces (`zyg-<tag>-…`).
pub(crate) fn home_tag(home: &std::path::Path) -> String {
    let canon = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
    // FNV-1a: stable across runs and builds.
    let mut h: u32 = 0x811c_9dc5;
    for b in canon.as_os_str().as_encoded_bytes() {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    format!("{:06x}", h & 0xff_ffff)
}

/// Host networking for `cfg`, or `None` under `--network none`.
pub(crate) fn host(cfg: &EngineConfig) -> Result<Option<Arc<HostNet>>> {
    match &cfg.network {
        NetworkMode::None => Ok(None),
        NetworkMode::Nat { pool } => {
            let mut h = HostConfig::new(home_tag(&cfg.home));
            h.pool = *pool;
            Ok(Some(HostNet::init(h)?))
        }
    }
}

impl Engine {
    /// Remove namespaces of this home that no sandbox owns (a killed
    /// daemon's).
    pub(crate) fn sweep_networks(&self) {
        let Some(h) = &self.net else { return };
        let keep: HashSet<String> = self
            .map()
            .values()
            .filter_map(|sb| sb.net().map(|n| n.name().to_string()))
            .collect();
        h.sweep(&keep);
        // From here on, namespaces are made ahead of the starts that take them.
        h.refill();
    }

    fn running_net(&self, id: &str) -> Result<(Arc<crate::Sandbox>, Arc<zygote_net::SandboxNet>)> {
        let sb = self.get(id)?;
        sb.guest()?;
        let net = sb.net().ok_or_else(|| {
            EngineError::Conflict(format!(
                "sandbox `{id}` has no network card: create it with a network (the daemon's --network nat)"
            ))
        })?;
        Ok((sb, net))
    }

    /// Replace a running sandbox's egress policy; new connections follow it
    /// at once.
    pub async fn set_network(self: &Arc<Self>, id: &str, policy: Policy) -> Result<SandboxView> {
        self.check_open()?;
        let (sb, net) = self.running_net(id)?;
        let n = net.clone();
        tokio::task::spawn_blocking(move || n.set_policy(policy))
            .await
            .map_err(|e| EngineError::Conflict(format!("setting the policy failed: {e}")))??;
        sb.record_runtime();
        info!(parent: &sb.span, policy = ?net.policy(), "network policy changed");
        Ok(sb.view())
    }

    /// Expose guest TCP `port` on the host.
    pub async fn expose_port(self: &Arc<Self>, id: &str, port: u16) -> Result<PortView> {
        self.check_open()?;
        let (sb, net) = self.running_net(id)?;
        let host = net.expose(port).await?;
        info!(parent: &sb.span, port, %host, "port exposed");
        Ok(PortView { port, host })
    }

    /// Stop exposing guest `port`.
    pub async fn unexpose_port(self: &Arc<Self>, id: &str, port: u16) -> Result<()> {
        let (_, net) = self.running_net(id)?;
        if !net.unexpose(port) {
            return Err(EngineError::BadRequest(format!(
                "port {port} of sandbox `{id}` is not exposed"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_get_distinct_stable_tags() {
        let a = home_tag(std::path::Path::new("/var/lib/zygote"));
        assert_eq!(a, home_tag(std::path::Path::new("/var/lib/zygote")));
        assert_ne!(a, home_tag(std::path::Path::new("/var/lib/zygote-test")));
        assert_eq!(a.len(), 6);
    }
}
