//! Networking on the command line: the egress flags of `create`, `run`,
//! `spawn` and `fork`, `zygote network ID` (change a running sandbox's
//! policy) and `zygote port ID PORT` (expose a guest port).

use anyhow::{bail, Result};
use clap::Args;
use zygote_proto::net::NetworkBody;

use crate::connect::client;
use crate::output::print_json;
use crate::Conn;

/// Egress flags (E2B's names).
#[derive(Args, Debug, Default)]
pub(crate) struct NetOpts {
    /// No network card at all (create/run only).
    #[arg(long)]
    no_network: bool,
    /// Cut the sandbox off the internet (only --allow-out CIDRs answer).
    #[arg(long)]
    no_internet: bool,
    /// An IPv4 CIDR the guest may reach even with --no-internet (repeatable).
    #[arg(long = "allow-out", value_name = "CIDR")]
    allow_out: Vec<String>,
    /// An IPv4 CIDR the guest may never reach; wins over --allow-out (repeatable).
    #[arg(long = "deny-out", value_name = "CIDR")]
    deny_out: Vec<String>,
}

impl NetOpts {
    /// The body's `network`, or `None` when no flag was given (the daemon's
    /// default, or the snapshot's).
    pub(crate) fn body(&self) -> Result<Option<NetworkBody>> {
        let policy = self.no_internet || !self.allow_out.is_empty() || !self.deny_out.is_empty();
        if self.no_network && policy {
            bail!("--no-network leaves no card for --no-internet, --allow-out or --deny-out to apply to: drop one");
        }
        if self.no_network {
            return Ok(Some(NetworkBody {
                enabled: Some(false),
                ..Default::default()
            }));
        }
        if !policy {
            return Ok(None);
        }
        Ok(Some(NetworkBody {
            enabled: None,
            internet: Some(!self.no_internet),
            allow_out: self.allow_out.clone(),
            deny_out: self.deny_out.clone(),
        }))
    }

    /// Whether any flag was given.
    pub(crate) fn given(&self) -> bool {
        self.no_network
            || self.no_internet
            || !self.allow_out.is_empty()
            || !self.deny_out.is_empty()
    }
}

#[derive(Args, Debug)]
pub(crate) struct NetworkArgs {
    #[command(flatten)]
    conn: Conn,
    /// Sandbox id.
    id: String,
    #[command(flatten)]
    net: NetOpts,
    /// Print the sandbox as JSON.
    #[arg(long)]
    json: bool,
}

/// `zygote network ID [--no-internet] [--allow-out CIDR] [--deny-out CIDR]`:
/// replace its policy (no flag: internet on, no lists).
pub(crate) async fn network(a: NetworkArgs) -> Result<u8> {
    if a.net.no_network {
        bail!(
            "--no-network applies on create: a running sandbox keeps its card (use --no-internet)"
        );
    }
    let body = a.net.body()?.unwrap_or(NetworkBody {
        internet: Some(true),
        ..Default::default()
    });
    let c = client(&a.conn).await?;
    let sb = c.set_network(&a.id, &body).await?;
    if a.json {
        print_json(&sb)?;
        return Ok(0);
    }
    if let Some(n) = &sb.network {
        println!(
            "{}: internet {}{}{}",
            sb.id,
            if n.internet { "on" } else { "off" },
            if n.allow_out.is_empty() {
                String::new()
            } else {
                format!(", allow {}", n.allow_out.join(" "))
            },
            if n.deny_out.is_empty() {
                String::new()
            } else {
                format!(", deny {}", n.deny_out.join(" "))
            }
        );
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub(crate) struct PortArgs {
    #[command(flatten)]
    conn: Conn,
    /// Sandbox id.
    id: String,
    /// The guest's TCP port.
    port: u32,
    /// Stop exposing it instead.
    #[arg(long)]
    rm: bool,
}

/// `zygote port ID PORT`: print the host address that reaches the guest's port.
pub(crate) async fn port(a: PortArgs) -> Result<u8> {
    let Ok(port) = u16::try_from(a.port) else {
        bail!(
            "port {} is out of range: give a guest TCP port from 1 to 65535",
            a.port
        );
    };
    let c = client(&a.conn).await?;
    if a.rm {
        c.unexpose_port(&a.id, port).await?;
        return Ok(0);
    }
    println!("{}", c.expose_port(&a.id, port).await?.host);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_the_body() {
        assert!(NetOpts::default().body().unwrap().is_none());
        let o = NetOpts {
            no_internet: true,
            allow_out: vec!["198.18.0.2/32".into()],
            ..Default::default()
        };
        let b = o.body().unwrap().unwrap();
        assert_eq!(b.internet, Some(false));
        assert_eq!(b.allow_out, ["198.18.0.2/32"]);
        let off = NetOpts {
            no_network: true,
            ..Default::default()
        };
        assert_eq!(off.body().unwrap().unwrap().enabled, Some(false));
        let both = NetOpts {
            no_network: true,
            deny_out: vec!["1.2.3.4".into()],
            ..Default::default()
        };
        assert!(both
            .body()
            .unwrap_err()
            .to_string()
            .contains("--no-network"));
    }
}
