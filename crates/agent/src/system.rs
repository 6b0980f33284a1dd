//! Guest identity and facts: `Info`, the boot id, and `Resumed` (entropy,
//! clock, hostname after a snapshot restore).
//!
//! System-wide changes (entropy, clock, hostname) are made only when the agent
//! is PID 1; in dev mode on a host they are skipped so tests never touch it.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;

use zygote_proto::agent::{AgentError, AgentInfo, ErrorKind};
use zygote_proto::AGENT_PROTOCOL_VERSION;

use crate::conn::Ctx;
use crate::sys;
use crate::util::{bad, err, log};

/// `/proc/sys/kernel/random/boot_id`, or empty.
pub(crate) fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Answer to `Info`.
pub(crate) fn info() -> AgentInfo {
    let uptime_secs = fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let (hostname, kernel) = sys::uname();
    AgentInfo {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        protocol: AGENT_PROTOCOL_VERSION,
        uptime_secs,
        boot_id: boot_id(),
        hostname,
        kernel,
    }
}

/// Check a hostname: 1-64 bytes of letters, digits, `-` and `.`.
pub(crate) fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Apply a `Resumed`: entropy, wall clock, hostname, sandbox id, `random` reseed.
pub(crate) fn resumed(
    ctx: &Ctx,
    sandbox_id: &str,
    hostname: &str,
    unix_nanos: u128,
    entropy_bytes: u32,
    entropy: &[u8],
) -> Result<(), AgentError> {
    if entropy.len() != entropy_bytes as usize {
        return Err(bad(format!(
            "`resumed` announces {entropy_bytes} entropy bytes but its payload has {}",
            entropy.len()
        )));
    }
    if !hostname.is_empty() && !valid_hostname(hostname) {
        return Err(bad(format!(
            "hostname `{hostname}` is invalid: use 1-64 letters, digits, `-` and `.`"
        )));
    }
    let mut failures = Vec::new();
    if ctx.pid1 {
        // A clock-only `Resumed` (the host's correction) carries no entropy.
        if !entropy.is_empty() {
            match fs::OpenOptions::new().write(true).open("/dev/urandom") {
                Ok(f) => {
                    if let Err(e) = sys::add_entropy_and_reseed(f.as_raw_fd(), entropy) {
                        failures.push(format!("adding entropy: {e}"));
                    }
                }
                Err(e) => failures.push(format!("opening /dev/urandom: {e}")),
            }
        }
        if unix_nanos > 0 {
            if let Err(e) = sys::set_realtime(unix_nanos) {
                failures.push(format!("setting the clock: {e}"));
            }
        }
        if !hostname.is_empty() {
            if let Err(e) = set_hostname(hostname) {
                failures.push(format!("setting the hostname: {e}"));
            }
        }
        if !sandbox_id.is_empty() {
            let _ = fs::create_dir_all("/run/zygote");
            if let Err(e) = fs::write("/run/zygote/sandbox_id", format!("{sandbox_id}\n")) {
                failures.push(format!("writing /run/zygote/sandbox_id: {e}"));
            }
        }
    } else {
        log!("resumed ({sandbox_id}): not PID 1, leaving entropy, clock and hostname alone");
    }
    ctx.interp.reseed();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(err(
            ErrorKind::Internal,
            format!("resume was applied only in part: {}", failures.join("; ")),
        ))
    }
}

/// Hostname of a guest whose image names none.
pub(crate) const DEFAULT_HOSTNAME: &str = "zygote";
/// Where the hostname is written; the image links `/etc/hostname` here (tmpfs).
const HOSTNAME_FILE: &str = "/run/zygote/hostname";

/// `sethostname` and the hostname file (`/etc/hostname` points at it).
pub(crate) fn set_hostname(h: &str) -> std::io::Result<()> {
    sys::sethostname(h)?;
    fs::create_dir_all("/run/zygote")?;
    let mut f = fs::File::create(HOSTNAME_FILE)?;
    writeln!(f, "{h}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(valid_hostname("sb-1.local"));
        assert!(!valid_hostname(""));
        assert!(!valid_hostname("a b"));
        assert!(!valid_hostname(&"a".repeat(65)));
    }

    #[test]
    fn info_reads_proc() {
        let i = info();
        assert!(i.uptime_secs > 0.0);
        assert!(!i.kernel.is_empty());
    }
}
