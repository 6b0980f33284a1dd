//! The host side: [`HostNet`] (checks, `ip_forward`, the host's NAT and
//! isolation rules, the address pool, sweeping what a dead daemon left) and
//! [`SandboxNet`] (one sandbox's namespace: tap, veth, routes, its policy
//! ruleset, its exposed ports), removed when dropped.
//!
//! Topology of one sandbox (every guest sees the same addresses):
//!
//! ```text
//! guest eth0 10.0.2.2/30 ── tap0 10.0.2.1/30 [netns zyg-<tag>-<n>] eth0 A+1/30
//!    ── veth ── zyh<slot> A/30 [host] ── NAT ── the host's default route
//! ```
//!
//! Links and addresses go through `ip` (iproute2, netlink), rules through
//! `nft`; both are run directly with arguments or a script on stdin, never a
//! shell.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{debug, info, warn};

use crate::error::{io, NetError, Result};
use crate::ns::{self, netns_path, NETNS_DIR};
use crate::policy::{Cidr, Policy};
use crate::proxy::PortProxy;
use crate::{GATEWAY, GATEWAY_MAC, GUEST_ADDR, TAP};

/// Host links of sandboxes are `zyh<slot>`.
pub const HOST_LINK_PREFIX: &str = "zyh";
/// Namespaces are `zyg-<tag>-<n>`.
pub const NETNS_PREFIX: &str = "zyg-";
/// The uplink inside a namespace.
const UPLINK: &str = "eth0";
/// Most exposed ports per sandbox.
pub const MAX_PORTS: usize = 32;

/// How the daemon networks its sandboxes.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Host-side addresses, a /30 per sandbox.
    pub pool: Cidr,
    /// Marks this daemon's namespaces (several daemons may share a host).
    pub tag: String,
    /// Exposed ports listen on this address.
    pub bind: IpAddr,
    /// Most connections at once through one exposed port.
    pub max_conns_per_port: usize,
    /// Namespaces kept made ahead (open policy), so a sandbox start takes
    /// one instead of waiting for `ip` and `nft`.
    pub spares: usize,
}

impl HostConfig {
    /// Defaults: pool 10.200.0.0/16, ports on 127.0.0.1.
    pub fn new(tag: impl Into<String>) -> HostConfig {
        HostConfig {
            pool: Cidr::new(Ipv4Addr::new(10, 200, 0, 0), 16),
            tag: tag.into(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            max_conns_per_port: 256,
            spares: 4,
        }
    }
}

/// The host's networking for one daemon.
#[derive(Debug)]
pub struct HostNet {
    cfg: HostConfig,
    /// The guest's DNS is forwarded here (the host's first IPv4 resolver).
    dns: Option<Ipv4Addr>,
    /// Namespaces made ahead, ready with the open policy.
    spares: Mutex<Vec<String>>,
    /// A thread is making spares.
    refilling: AtomicBool,
    /// Shut down: no more spares.
    closed: AtomicBool,
}

/// Run a tool, returning its stdout or an error with its stderr.
pub(crate) fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let line = format!("{cmd:?}").replace('"', "");
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(format!("cannot run `{line}` (is iproute2/nftables installed? scripts/install-deps.sh installs them; or run the daemon with --network none)")))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes())
            .map_err(io(format!("cannot write to `{line}`")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io(format!("cannot wait for `{line}`")))?;
    if !out.status.success() {
        return Err(NetError::Tool {
            cmd: line,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `nft -f -` with `script`, inside namespace `netns` (or on the host).
fn nft(netns: Option<&Path>, script: &str) -> Result<()> {
    let mut cmd = Command::new("nft");
    cmd.args(["-f", "-"]);
    let fd = netns.map(ns::open).transpose()?;
    if let Some(fd) = &fd {
        let raw = fd.as_raw_fd();
        // SAFETY: the closure only calls setns (async-signal-safe) on a
        // descriptor that stays open until after the spawn.
        unsafe { cmd.pre_exec(move || ns::enter(raw)) };
    }
    run(&mut cmd, Some(script)).map(drop)
}

/// `ip [-n netns] -batch -` with `lines`.
fn ip_batch(netns: Option<&str>, lines: &[String]) -> Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(n) = netns {
        cmd.args(["-n", n]);
    }
    cmd.args(["-batch", "-"]);
    run(&mut cmd, Some(&(lines.join("\n") + "\n"))).map(drop)
}

/// The host's first IPv4, non-loopback resolver.
pub fn host_dns() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .find(|a| !a.is_loopback())
}

impl HostNet {
    /// Check the tools, turn on `ip_forward` and install the host's rules.
    pub fn init(cfg: HostConfig) -> Result<Arc<HostNet>> {
        if cfg.pool.prefix() > 28 {
            return Err(NetError::BadInput(format!(
                "network pool {} is too small: give at least a /28 (for example 10.200.0.0/16)",
                cfg.pool
            )));
        }
        run(Command::new("ip").arg("-V"), None)?;
        run(Command::new("nft").arg("--version"), None)?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(io(
            "cannot enable IPv4 forwarding (/proc/sys/net/ipv4/ip_forward)",
        ))?;
        nft(None, &host_ruleset(cfg.pool))?;
        let dns = host_dns();
        if dns.is_none() {
            warn!("no IPv4 non-loopback resolver in /etc/resolv.conf: guests get no DNS");
        }
        info!(pool = %cfg.pool, tag = %cfg.tag, ?dns, "host networking ready");
        Ok(Arc::new(HostNet {
            cfg,
            dns,
            spares: Mutex::new(Vec::new()),
            refilling: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &HostConfig {
        &self.cfg
    }

    fn prefix(&self) -> String {
        format!("{NETNS_PREFIX}{}-", self.cfg.tag)
    }

    /// Remove this daemon's namespaces that no sandbox in `keep` (names)
    /// owns: what a killed daemon left. Returns how many went.
    pub fn sweep(&self, keep: &HashSet<String>) -> usize {
        let prefix = self.prefix();
        let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
            return 0;
        };
        let mut n = 0;
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let spare = self
                .spares
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&name);
            if name.starts_with(&prefix) && !keep.contains(&name) && !spare {
                match delete_netns(&name) {
                    Ok(()) => n += 1,
                    Err(e) => warn!(netns = %name, error = %e, "cannot remove a stale namespace"),
                }
            }
        }
        if n > 0 {
            info!(
                removed = n,
                "removed network namespaces a previous daemon left"
            );
        }
        n
    }

    /// A new namespace for a sandbox, ready for QEMU, with `policy`.
    /// Blocking (runs `ip` and `nft`).
    pub fn create(self: &Arc<Self>, policy: Policy) -> Result<SandboxNet> {
        policy.check()?;
        let spare = self.spares.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let net = match spare {
            Some(name) => self.wrap(name, Policy::open()),
            None => self.build()?,
        };
        if policy != Policy::open() {
            net.set_policy(policy)?;
        }
        self.refill();
        Ok(net)
    }

    fn wrap(self: &Arc<Self>, name: String, policy: Policy) -> SandboxNet {
        SandboxNet {
            name,
            host: self.clone(),
            policy: Mutex::new(policy),
            ports: Mutex::new(BTreeMap::new()),
            keep: Default::default(),
        }
    }

    /// Namespaces made ahead right now.
    pub fn spare_count(&self) -> usize {
        self.spares.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Make spares up to [`HostConfig::spares`] on a thread of their own
    /// (one at a time; nothing if one is at it already).
    pub fn refill(self: &Arc<Self>) {
        if self.cfg.spares == 0 || self.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        let started = std::thread::Builder::new()
            .name("zygote-netns-spares".into())
            .spawn(move || {
                while !me.closed.load(Ordering::SeqCst) && me.spare_count() < me.cfg.spares {
                    match me.build() {
                        Ok(net) => {
                            net.detach();
                            let mut spares = me.spares.lock().unwrap_or_else(|p| p.into_inner());
                            if me.closed.load(Ordering::SeqCst) {
                                let _ = delete_netns(&net.name);
                            } else {
                                spares.push(net.name.clone());
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot make a spare network namespace");
                            break;
                        }
                    }
                }
                me.refilling.store(false, Ordering::SeqCst);
            });
        if started.is_err() {
            self.refilling.store(false, Ordering::SeqCst);
        }
    }

    /// A new namespace with the open policy.
    fn build(self: &Arc<Self>) -> Result<SandboxNet> {
        let name = format!("{}{:08x}", self.prefix(), rand_u32());
        run(Command::new("ip").args(["netns", "add", &name]), None)?;
        let policy = Policy::open();
        let net = self.wrap(name, policy.clone());
        let slot = self.attach(&net.name)?;
        let host_ip = self.cfg.pool.nth(slot * 4 + 1);
        let ns_ip = self.cfg.pool.nth(slot * 4 + 2);
        ip_batch(
            Some(&net.name),
            &[
                "link set lo up".into(),
                format!("addr add {ns_ip}/30 dev {UPLINK}"),
                format!("link set {UPLINK} up"),
                format!("route add default via {host_ip}"),
                format!("tuntap add dev {TAP} mode tap"),
                // The same in every namespace: a child of a snapshot finds its
                // gateway at the MAC its parent's ARP cache holds.
                format!("link set {TAP} address {GATEWAY_MAC}"),
                format!("addr add {GATEWAY}/30 dev {TAP}"),
                format!("link set {TAP} up"),
            ],
        )?;
        ns::run_in(&net.path(), || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .map_err(io("cannot enable forwarding in the sandbox namespace"))
        })?;
        net.apply(&policy)?;
        // The host's rules are shared by the daemons of a host, and the last
        // one to stop with no sandbox link left removes them: put them back
        // if that happened while this link did not exist yet.
        if run(
            Command::new("nft").args(["list", "table", "ip", "zygote"]),
            None,
        )
        .is_err()
        {
            nft(None, &host_ruleset(self.cfg.pool))?;
        }
        debug!(netns = %net.name, slot, "sandbox network ready");
        Ok(net)
    }

    /// Join namespace `name` to the host with a veth pair on a free /30 of
    /// the pool. The kernel arbitrates: a `zyh<slot>` name another daemon
    /// holds fails with "File exists" and the next slot is tried.
    fn attach(&self, name: &str) -> Result<u32> {
        let slots = (self.cfg.pool.size() / 4) as u32;
        let start = rand_u32() % slots;
        for k in 0..slots.min(4096) {
            let slot = (start + k) % slots;
            let link = format!("{HOST_LINK_PREFIX}{slot}");
            let r = run(
                Command::new("ip").args([
                    "link", "add", &link, "type", "veth", "peer", "name", UPLINK, "netns", name,
                ]),
                None,
            );
            match r {
                Ok(_) => {
                    let host_ip = self.cfg.pool.nth(slot * 4 + 1);
                    ip_batch(
                        None,
                        &[
                            format!("addr add {host_ip}/30 dev {link}"),
                            format!("link set {link} up"),
                        ],
                    )?;
                    return Ok(slot);
                }
                Err(NetError::Tool { stderr, .. }) if stderr.contains("File exists") => continue,
                Err(e) => return Err(e),
            }
        }
        Err(NetError::PoolExhausted(self.cfg.pool.to_string()))
    }

    /// Take back namespace `name` of a sandbox a previous daemon started
    /// (its QEMU still runs inside), with the `policy` it had.
    pub fn adopt(self: &Arc<Self>, name: &str, policy: Policy) -> Result<SandboxNet> {
        if !name.starts_with(&self.prefix()) || !netns_path(name).exists() {
            return Err(NetError::BadInput(format!(
                "network namespace `{name}` is not one of this daemon's or is gone"
            )));
        }
        Ok(SandboxNet {
            name: name.to_string(),
            host: self.clone(),
            policy: Mutex::new(policy),
            ports: Mutex::new(BTreeMap::new()),
            keep: Default::default(),
        })
    }

    /// Remove the host's rules if no sandbox of any daemon is left (on
    /// shutdown).
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for name in std::mem::take(&mut *self.spares.lock().unwrap_or_else(|p| p.into_inner())) {
            if let Err(e) = delete_netns(&name) {
                warn!(netns = %name, error = %e, "cannot remove a spare namespace");
            }
        }
        let any = || {
            std::fs::read_dir("/sys/class/net")
                .map(|d| {
                    d.flatten().any(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(HOST_LINK_PREFIX)
                    })
                })
                .unwrap_or(false)
        };
        // The kernel frees removed namespaces (and their veth pairs) in the
        // background: give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while any() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !any() {
            if let Err(e) = nft(None, "table ip zygote {}\ndelete table ip zygote\n") {
                warn!(error = %e, "cannot remove the host's zygote rules");
            }
        }
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        return std::process::id()
            ^ (std::time::UNIX_EPOCH
                .elapsed()
                .map(|d| d.subsec_nanos())
                .unwrap_or(0));
    }
    u32::from_ne_bytes(b)
}

fn delete_netns(name: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "delete", name]), None).map(drop)
}

/// The host's rules (shared by every daemon on the host): masquerade the
/// pool out of anything but a sandbox link; sandboxes reach neither each
/// other nor the host itself; nothing from outside starts a connection to a
/// sandbox.
fn host_ruleset(pool: Cidr) -> String {
    let l = format!("\"{HOST_LINK_PREFIX}*\"");
    format!(
        "table ip zygote {{}}\n\
         delete table ip zygote\n\
         table ip zygote {{\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority 0; policy accept;\n\
         \x20   iifname {l} oifname {l} drop\n\
         \x20   oifname {l} ct state established,related accept\n\
         \x20   oifname {l} drop\n\
         \x20 }}\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority 0; policy accept;\n\
         \x20   iifname {l} ct state established,related accept\n\
         \x20   iifname {l} drop\n\
         \x20 }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority 100; policy accept;\n\
         \x20   ip saddr {pool} oifname != {l} masquerade\n\
         \x20 }}\n\
         }}\n"
    )
}

/// One sandbox's network namespace. Dropping it closes its ports and
/// removes the namespace (its veth pair and rules go with it once QEMU,
/// which runs inside, has exited).
#[derive(Debug)]
pub struct SandboxNet {
    name: String,
    host: Arc<HostNet>,
    policy: Mutex<Policy>,
    ports: Mutex<BTreeMap<u16, PortProxy>>,
    /// Leave the namespace on drop (the daemon lets go of a running QEMU).
    keep: AtomicBool,
}

impl SandboxNet {
    /// The namespace's name (`ip netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file, for entering it.
    pub fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        self.policy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn apply(&self, p: &Policy) -> Result<()> {
        nft(Some(&self.path()), &p.ruleset(UPLINK, self.host.dns))
    }

    /// Replace the policy (takes effect for new connections at once).
    /// Blocking (runs `nft`).
    pub fn set_policy(&self, p: Policy) -> Result<()> {
        p.check()?;
        self.apply(&p)?;
        *self.policy.lock().unwrap_or_else(|p| p.into_inner()) = p;
        Ok(())
    }

    /// Expose the guest's TCP `port` on the host; returns the address (the
    /// same one if it is exposed already). Must run inside tokio.
    pub async fn expose(&self, port: u16) -> Result<SocketAddr> {
        if port == 0 {
            return Err(NetError::BadInput(
                "port 0 is not a guest port: give one from 1 to 65535".into(),
            ));
        }
        {
            let ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(p) = ports.get(&port) {
                return Ok(p.addr());
            }
            if ports.len() >= MAX_PORTS {
                return Err(NetError::Limit(format!(
                    "this sandbox already exposes {MAX_PORTS} ports, the most allowed: remove one first"
                )));
            }
        }
        let proxy = PortProxy::open(
            self.host.cfg.bind,
            self.path(),
            SocketAddr::from((GUEST_ADDR, port)),
            self.host.cfg.max_conns_per_port,
        )
        .await?;
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ports.entry(port).or_insert(proxy).addr())
    }

    /// Stop exposing `port`; whether it was.
    pub fn unexpose(&self, port: u16) -> bool {
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port)
            .is_some()
    }

    /// Exposed ports and their host addresses.
    pub fn ports(&self) -> Vec<(u16, SocketAddr)> {
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(p, x)| (*p, x.addr()))
            .collect()
    }

    /// Let go without removing the namespace (QEMU keeps running in it for
    /// the next daemon to adopt).
    pub fn detach(&self) {
        self.keep.store(true, Ordering::SeqCst);
    }
}

impl Drop for SandboxNet {
    fn drop(&mut self) {
        self.ports.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if self.keep.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = delete_netns(&self.name) {
            warn!(netns = %self.name, error = %e, "cannot remove a sandbox's namespace");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules_cover_every_sandbox_link() {
        let r = host_ruleset(Cidr::parse("10.200.0.0/16").unwrap());
        assert!(
            r.contains("ip saddr 10.200.0.0/16 oifname != \"zyh*\" masquerade"),
            "{r}"
        );
        assert!(r.contains("iifname \"zyh*\" oifname \"zyh*\" drop"), "{r}");
        assert!(r.starts_with("table ip zygote {}\ndelete table ip zygote\n"));
    }

    #[test]
    fn a_tiny_pool_is_refused() {
        let mut c = HostConfig::new("t");
        c.pool = Cidr::parse("10.9.9.0/30").unwrap();
        let e = HostNet::init(c).unwrap_err().to_string();
        assert!(e.contains("10.9.9.0/30") && e.contains("/28"), "{e}");
    }
}
