//! A sandbox's egress policy (E2B's names: `internet`, `allow_out`,
//! `deny_out`) and the nftables ruleset that enforces it inside the sandbox's
//! namespace.
//!
//! Deny wins over allow; `internet: false` with an allow list lets only those
//! destinations through. A refused connection is refused (a TCP reset or an
//! ICMP "administratively prohibited"), never left to time out.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};
use crate::{GATEWAY, TAP};

/// Most CIDRs in one list.
pub const MAX_CIDRS: usize = 256;

/// An IPv4 network (`198.18.0.0/15`; a bare address is a `/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    /// Parse `a.b.c.d/n` or `a.b.c.d`, naming the value and the fix on error.
    /// Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
    pub fn parse(s: &str) -> Result<Cidr> {
        let bad = |why: &str| {
            NetError::BadInput(format!(
                "`{s}` is not an IPv4 CIDR ({why}): write it as a.b.c.d/n with n from 0 to 32, for example 198.18.0.0/15"
            ))
        };
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        if a.contains(':') {
            return Err(bad("IPv6 is not routed to sandboxes"));
        }
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("bad address"))?;
        let prefix = match p {
            None => 32,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= 32 && !p.starts_with('+') => n,
                _ => return Err(bad("bad prefix length")),
            },
        };
        Ok(Cidr::new(addr, prefix))
    }

    /// `addr/prefix` with host bits cleared (`prefix` is capped at 32).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Cidr {
        let prefix = prefix.min(32);
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Number of addresses.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `i`-th address of the network.
    pub fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(i))
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        Cidr::new(ip, self.prefix).addr == self.addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Cidr> {
        Cidr::parse(s)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where a sandbox's guest may connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Everything not denied is reachable.
    pub internet: bool,
    /// Reachable even with `internet: false` (unless denied).
    #[serde(default)]
    pub allow_out: Vec<Cidr>,
    /// Never reachable (wins over `allow_out`).
    #[serde(default)]
    pub deny_out: Vec<Cidr>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::open()
    }
}

impl Policy {
    /// Internet on, no lists.
    pub fn open() -> Policy {
        Policy {
            internet: true,
            allow_out: Vec::new(),
            deny_out: Vec::new(),
        }
    }

    /// Refuse lists longer than [`MAX_CIDRS`].
    pub fn check(&self) -> Result<()> {
        for (name, list) in [("allow_out", &self.allow_out), ("deny_out", &self.deny_out)] {
            if list.len() > MAX_CIDRS {
                return Err(NetError::BadInput(format!(
                    "{name} has {} entries; at most {MAX_CIDRS} are accepted: merge them into wider CIDRs",
                    list.len()
                )));
            }
        }
        Ok(())
    }

    /// The namespace's whole nftables script: filter (this policy) and NAT
    /// (masquerade out of `uplink`, the guest's DNS to `dns`). Replaces any
    /// previous one in one transaction.
    pub(crate) fn ruleset(&self, uplink: &str, dns: Option<Ipv4Addr>) -> String {
        let set = |l: &[Cidr]| {
            l.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut fwd = vec![
            format!("iifname \"{TAP}\" meta nfproto ipv6 drop"),
            format!("oifname \"{TAP}\" ct state established,related accept"),
            format!("oifname \"{TAP}\" drop"),
        ];
        if !self.deny_out.is_empty() {
            fwd.push(format!(
                "iifname \"{TAP}\" ip daddr {{ {} }} jump refuse",
                set(&self.deny_out)
            ));
        }
        if !self.allow_out.is_empty() {
            fwd.push(format!(
                "iifname \"{TAP}\" ip daddr {{ {} }} accept",
                set(&self.allow_out)
            ));
        }
        if !self.internet {
            fwd.push(format!("iifname \"{TAP}\" jump refuse"));
        }
        let dnat = match dns {
            Some(d) => format!(
                "iifname \"{TAP}\" ip daddr {GATEWAY} meta l4proto {{ tcp, udp }} th dport 53 dnat to {d}"
            ),
            None => String::new(),
        };
        format!(
            "table inet zygote {{}}\n\
             delete table inet zygote\n\
             table inet zygote {{\n\
             \x20 chain refuse {{\n\
             \x20   meta l4proto tcp reject with tcp reset\n\
             \x20   reject with icmpx type admin-prohibited\n\
             \x20 }}\n\
             \x20 chain forward {{\n\
             \x20   type filter hook forward priority 0; policy accept;\n\
             \x20   {}\n\
             \x20 }}\n\
             \x20 chain input {{\n\
             \x20   type filter hook input priority 0; policy accept;\n\
             \x20   iifname \"{uplink}\" ct state established,related accept\n\
             \x20   iifname \"{uplink}\" drop\n\
             \x20 }}\n\
             \x20 chain prerouting {{\n\
             \x20   type nat hook prerouting priority -100; policy accept;\n\
             \x20   {dnat}\n\
             \x20 }}\n\
             \x20 chain postrouting {{\n\
             \x20   type nat hook postrouting priority 100; policy accept;\n\
             \x20   oifname \"{uplink}\" masquerade\n\
             \x20 }}\n\
             }}\n",
            fwd.join("\n    ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_name_the_bad_value() {
        assert_eq!(
            Cidr::parse("198.18.0.0/15").unwrap().to_string(),
            "198.18.0.0/15"
        );
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("1.2.3.4").unwrap().to_string(), "1.2.3.4/32");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().size(), 1 << 32);
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "1.2.3.4/-1",
            "1.2.3.4/+8",
            "x/8",
            "::1/128",
            "1.2.3.4/",
        ] {
            let e = Cidr::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{bad}`")) && e.contains("a.b.c.d/n"),
                "{e}"
            );
        }
        let c = Cidr::parse("198.18.0.0/15").unwrap();
        assert!(c.contains("198.19.255.255".parse().unwrap()));
        assert!(!c.contains("198.20.0.0".parse().unwrap()));
        assert_eq!(c.nth(2).to_string(), "198.18.0.2");
    }

    #[test]
    fn policy_json_and_ruleset() {
        let p: Policy = serde_json::from_str(
            r#"{"internet": false, "allow_out": ["198.18.0.2/32"], "deny_out": ["10.0.0.0/8"]}"#,
        )
        .unwrap();
        let r = p.ruleset("eth0", Some("10.255.255.53".parse().unwrap()));
        let deny = r.find("10.0.0.0/8 } jump refuse").unwrap();
        let allow = r.find("198.18.0.2/32 } accept").unwrap();
        let rest = r.rfind("iifname \"tap0\" jump refuse").unwrap();
        assert!(
            deny < allow && allow < rest,
            "deny, then allow, then the rest:\n{r}"
        );
        assert!(r.contains("dnat to 10.255.255.53"));
        let open = Policy::open().ruleset("eth0", None);
        assert!(
            !open.contains("jump refuse\n") && !open.contains("dnat"),
            "{open}"
        );
        assert!(serde_json::from_str::<Policy>(r#"{"internet": true, "x": 1}"#).is_err());
        let e = serde_json::from_str::<Policy>(r#"{"internet": true, "deny_out": ["nope"]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`nope`"), "{e}");
    }
}
