//! Every environment variable zygote reads, in one place.

/// Unix socket of the daemon (clients and `zygote daemon`).
pub(crate) const SOCKET: &str = "ZYGOTE_SOCKET";
/// Base URL of a daemon on TCP, e.g. `http://127.0.0.1:8889` (clients).
pub(crate) const URL: &str = "ZYGOTE_URL";
/// Bearer token sent with `ZYGOTE_URL` (clients).
pub(crate) const TOKEN: &str = "ZYGOTE_TOKEN";
/// PEM CA file an `https://` `ZYGOTE_URL` is checked against (clients).
pub(crate) const CA: &str = "ZYGOTE_CA";
/// Home directory: state database, images, sandboxes (daemon, `image`).
pub(crate) const HOME: &str = "ZYGOTE_HOME";
/// Path of the static guest agent binary installed into images (`image build`).
pub(crate) const AGENT_BIN: &str = "ZYGOTE_AGENT_BIN";
/// Registry password for `image pull --username` without `--password-stdin`.
pub(crate) const REGISTRY_PASSWORD: &str = "ZYGOTE_REGISTRY_PASSWORD";
/// Log filter, e.g. `info` or `zygote_engine=debug` (every command).
pub(crate) const LOG: &str = "ZYGOTE_LOG";
#[allow(dead_code)] // documented here; read by zygote-qemu
/// QEMU binary to use instead of `qemu-system-x86_64` on PATH (daemon).
pub(crate) const QEMU: &str = zygote_qemu::binary::ENV_QEMU;
#[allow(dead_code)] // documented here; read by zygote-qemu
/// qemu-img binary to use instead of `qemu-img` on PATH (daemon).
pub(crate) const QEMU_IMG: &str = zygote_qemu::binary::ENV_QEMU_IMG;

/// Default Unix socket.
pub(crate) const DEFAULT_SOCKET: &str = "/run/zygote/zygote.sock";
/// Default home.
pub(crate) const DEFAULT_HOME: &str = "/var/lib/zygote";
