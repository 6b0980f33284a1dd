//! Wire types shared by every zygote process.
//!
//! * [`agent`]: the frames the daemon and the guest agent exchange over the
//!   virtio-serial port named `agent`, and their codec.
//! * [`api`]: the REST models of the daemon's v1 API.
//! * [`compat`]: forkd's request and answer shapes on the routes it shares.
//! * [`procs`]: payloads of the agent's process, terminal and file-tree messages.
//! * [`volumes`]: the REST models of volumes.
//!
//! This crate owns no I/O: it encodes and decodes bytes and nothing else, so the
//! guest agent can link it without pulling in the host's runtime.

pub mod agent;
pub mod api;
pub mod compat;
pub mod guest_net;
pub mod net;
pub mod procs;
pub mod volumes;

/// The agent protocol version. The host refuses an agent whose major differs.
pub const AGENT_PROTOCOL_VERSION: u32 = 1;
