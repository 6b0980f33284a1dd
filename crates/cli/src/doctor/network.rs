//! Networking checks (what `--network nat` needs beyond the tun device and
//! network namespaces, which `kernel.rs` checks): iproute2 and nftables,
//! IPv4 forwarding, a resolver the guests' DNS can be forwarded to.

use std::process::Command;

use super::Check;

const HINT: &str = "install iproute2 and nftables (scripts/install-deps.sh), or run the daemon with --network none";

pub(super) fn checks() -> Vec<Check> {
    vec![tools(), forwarding(), dns()]
}

fn tools() -> Check {
    let n = "net_tools";
    let version = |bin: &str, arg: &str| {
        Command::new(bin)
            .arg(arg)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
    };
    match (version("ip", "-V"), version("nft", "--version")) {
        (Some(ip), Some(nft)) => Check::pass(n, format!("{ip}; {nft}")),
        (None, _) => Check::fail(n, "`ip` (iproute2) is missing", HINT),
        (_, None) => Check::fail(n, "`nft` (nftables) is missing", HINT),
    }
}

fn forwarding() -> Check {
    let n = "ip_forward";
    match std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
        Ok(v) if v.trim() == "1" => Check::pass(n, "IPv4 forwarding is on"),
        Ok(_) => Check::warn(
            n,
            "IPv4 forwarding is off",
            "a daemon with --network nat turns it on when it starts (net.ipv4.ip_forward=1)",
        ),
        Err(e) => Check::fail(n, format!("cannot read net.ipv4.ip_forward: {e}"), HINT),
    }
}

fn dns() -> Check {
    let n = "net_dns";
    match zygote_net::host_dns() {
        Some(a) => Check::pass(n, format!("guests' DNS is forwarded to {a}")),
        None => Check::warn(
            n,
            "no IPv4, non-loopback nameserver in /etc/resolv.conf: guests get no DNS",
            "name a reachable resolver in /etc/resolv.conf (a loopback stub such as 127.0.0.53 is not reachable from a sandbox's namespace)",
        ),
    }
}
