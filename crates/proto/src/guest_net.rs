//! The guest's side of a sandbox network, the same in every sandbox (each
//! guest is alone in its own namespace on the host, so children of a
//! snapshot keep their address and never collide).

use std::net::Ipv4Addr;

/// The guest's address on `eth0`.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// Its default gateway and DNS server.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
/// Prefix length of the link.
pub const PREFIX: u8 = 30;
/// The guest's MAC.
pub const GUEST_MAC: &str = "52:54:00:7a:79:01";
/// The guest interface.
pub const GUEST_IF: &str = "eth0";
