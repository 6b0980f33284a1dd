//! Finding and stopping QEMU processes a previous daemon left behind.

use std::path::Path;

/// SIGKILL `pid` if it is still a QEMU whose command line names `dir` (so a pid
/// reused by an unrelated process is never touched). Returns whether it did.
pub(crate) fn kill_stale(pid: u32, dir: &str) -> bool {
    let cmdline = match std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline")) {
        Ok(c) => c,
        Err(_) => return false,
    };
    let text = String::from_utf8_lossy(&cmdline);
    if !text.contains("qemu-system") || !text.contains(dir) {
        return false;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with a pid we just matched against its command line and a
    // valid signal number; it touches no memory of ours.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_touches_unrelated_processes() {
        // Our own pid is not a QEMU naming that directory.
        assert!(!super::kill_stale(
            std::process::id(),
            "/nonexistent/zygote"
        ));
        assert!(!super::kill_stale(u32::MAX, "/x"));
    }
}
