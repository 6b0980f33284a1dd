//! Sandbox networking on the host: a network namespace per sandbox holding
//! the tap QEMU's virtio-net uses, joined to the host by a veth pair with NAT
//! out of the host's default route, an egress [`Policy`] enforced by
//! nftables inside the namespace, and exposed ports relayed from the host.
//!
//! Every guest has the same address, gateway and MAC, each inside its own
//! namespace, so children of a snapshot need no re-addressing and never
//! collide. This crate knows nothing of QEMU or sandboxes: it makes, changes
//! and removes namespaces, links, rules and relays.

mod error;
mod host;
pub mod ns;
mod policy;
mod proxy;

pub use error::{NetError, Result};
pub use host::{
    host_dns, HostConfig, HostNet, SandboxNet, HOST_LINK_PREFIX, MAX_PORTS, NETNS_PREFIX,
};
pub use policy::{Cidr, Policy, MAX_CIDRS};
pub use proxy::connect_in;
pub use zygote_proto::guest_net::{GATEWAY, GUEST_ADDR, GUEST_MAC};

/// The tap's MAC (the guest's gateway), the same in every namespace.
pub const GATEWAY_MAC: &str = "52:54:00:7a:79:02";
/// The tap's name inside a namespace.
pub const TAP: &str = "tap0";
