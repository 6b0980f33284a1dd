//! [`QemuError`]: every failure of this crate, each naming the value involved and,
//! where there is one, the fix.

use std::path::PathBuf;
use std::time::Duration;

use crate::process::QemuExit;

/// Errors from finding, configuring, running and talking to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// No QEMU binary was found.
    #[error(
        "{binary} not found ({searched}): install qemu-system-x86 from bookworm-backports \
         (scripts/install-deps.sh) or set {env} to its path"
    )]
    NotFound {
        /// The binary name looked for.
        binary: &'static str,
        /// Where it was looked for.
        searched: String,
        /// The environment variable that overrides the search.
        env: &'static str,
    },
    /// Running `<qemu> --version` failed or timed out.
    #[error("running {path:?} --version failed: {detail}")]
    VersionCommand {
        /// The binary.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The `--version` output did not contain a version.
    #[error("cannot parse a version from {path:?} --version output {output:?}: is it QEMU?")]
    VersionUnparsable {
        /// The binary.
        path: PathBuf,
        /// The first line of its output.
        output: String,
    },
    /// QEMU is older than zygote supports.
    #[error(
        "QEMU {}.{} found; zygote needs >= 9.0 (older QEMU loses guest writes during live \
         migration under TCG): install qemu-system-x86 from bookworm-backports \
         (scripts/install-deps.sh)",
        found.0, found.1
    )]
    TooOld {
        /// The version found.
        found: (u32, u32, u32),
        /// The binary.
        path: PathBuf,
    },
    /// An accelerator name that is not kvm, tcg or auto.
    #[error("unknown accelerator {value:?}: use \"kvm\", \"tcg\" or \"auto\"")]
    InvalidAccel {
        /// The rejected value.
        value: String,
    },
    /// KVM was forced but the host cannot do it.
    #[error(
        "accelerator kvm requested but unusable on this host: {reason}; use --accel tcg or auto"
    )]
    KvmUnavailable {
        /// Why not.
        reason: String,
    },
    /// The host TSC frequency (needed for `tsc_early_khz=` under TCG) is unknown.
    #[error("cannot determine the host TSC frequency: {detail}")]
    TscFrequency {
        /// What went wrong and what to set.
        detail: String,
    },
    /// A [`crate::VmConfig`] field is invalid.
    #[error("invalid VM config {field} = {value:?}: {fix}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What to do.
        fix: &'static str,
    },
    /// The QEMU process could not be started.
    #[error("starting {path:?} failed")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting on or signalling the QEMU process failed.
    #[error("{op} on QEMU pid {pid} failed")]
    Process {
        /// The operation.
        op: &'static str,
        /// The pid.
        pid: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The QEMU process did not exit in time.
    #[error("QEMU pid {pid} still running after {waited:?} ({op})")]
    ExitTimeout {
        /// The pid.
        pid: u32,
        /// How long we waited.
        waited: Duration,
        /// What we were doing.
        op: &'static str,
    },
    /// The QEMU process exited (when it was expected to be running).
    #[error("QEMU {name:?} (pid {pid}) {exit}")]
    Exited {
        /// The VM name.
        name: String,
        /// The pid.
        pid: u32,
        /// Exit status and stderr tail.
        exit: QemuExit,
    },
    /// `qemu-img create` failed.
    #[error("qemu-img create of overlay {overlay:?} on {base:?} failed: {detail}")]
    Overlay {
        /// The backing file.
        base: PathBuf,
        /// The overlay to create.
        overlay: PathBuf,
        /// stderr of qemu-img, or the error.
        detail: String,
    },
    /// The QMP socket did not accept a connection in time.
    #[error(
        "QMP socket {path:?} not ready after {timeout:?} (last error: {last_error}); \
         did QEMU exit? check its stderr and console log"
    )]
    QmpConnect {
        /// The socket path.
        path: PathBuf,
        /// The connect timeout.
        timeout: Duration,
        /// The last connect/handshake error.
        last_error: String,
    },
    /// Writing to the QMP socket failed.
    #[error("writing QMP command {cmd:?} to {path:?} failed")]
    QmpWrite {
        /// The command.
        cmd: String,
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// QEMU answered a command with an error.
    #[error("QMP command {cmd:?} failed: {class}: {desc}")]
    Qmp {
        /// The command.
        cmd: String,
        /// The QMP error class (e.g. `GenericError`, `CommandNotFound`).
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// No answer within the timeout.
    #[error("QMP command {cmd:?} got no answer within {timeout:?}; is the VM wedged?")]
    QmpTimeout {
        /// The command.
        cmd: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The QMP connection is closed (QEMU exited or closed the socket).
    #[error("QMP command {cmd:?} failed: connection to {path:?} closed ({reason})")]
    QmpClosed {
        /// The command.
        cmd: String,
        /// The socket path.
        path: PathBuf,
        /// Why the connection closed.
        reason: String,
    },
    /// QEMU sent something that is not QMP.
    #[error("QMP protocol error on {path:?}: {detail}")]
    QmpProtocol {
        /// The socket path.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}
