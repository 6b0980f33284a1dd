//! Finding and stopping QEMU processes a previous daemon left behind.

use std::path::Path;

/// Whether `pid` is a live QEMU whose command line names `dir` (so a pid
/// reused by an unrelated process is never mistaken for it).
pub(crate) fn is_our_qemu(pid: u32, dir: &str) -> bool {
    let cmdline = match std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline")) {
        Ok(c) => c,
        Err(_) => return false,
    };
    let text = String::from_utf8_lossy(&cmdline);
    text.contains("qemu-system") && text.contains(dir)
}

/// The descriptor number of the memfd called `name` in process `pid`
/// (`/proc/<pid>/fd/N -> /memfd:<name> (deleted)`).
pub(crate) fn memfd_of(pid: u32, name: &str) -> Option<i32> {
    let want = format!("/memfd:{name} (deleted)");
    let rd = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")).ok()?;
    rd.flatten().find_map(|e| {
        let target = std::fs::read_link(e.path()).ok()?;
        (target.to_string_lossy() == want)
            .then(|| e.file_name().to_str()?.parse().ok())
            .flatten()
    })
}

/// SIGKILL `pid` if it is still a QEMU whose command line names `dir` (so a pid
/// reused by an unrelated process is never touched). Returns whether it did.
pub(crate) fn kill_stale(pid: u32, dir: &str) -> bool {
    if !is_our_qemu(pid, dir) {
        return false;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with a pid we just matched against its command line and a
    // valid signal number; it touches no memory of ours.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}

/// SIGKILL every QEMU whose command line names a file in `dir` (pre-started
/// children a previous daemon left: they have no row, so no recorded pid).
/// Returns how many were signalled.
pub(crate) fn kill_qemus_in(dir: &Path) -> usize {
    let needle = format!("{}/", dir.display());
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if kill_stale(pid, &needle) {
            n += 1;
        }
    }
    n
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

    #[test]
    fn finds_a_memfd_by_name() {
        let r = zygote_mem::Region::create("stale-test-memfd", 1 << 20, false).unwrap();
        let fd = super::memfd_of(std::process::id(), "stale-test-memfd").unwrap();
        let expect = format!("/proc/{}/fd/{fd}", std::process::id());
        assert_eq!(r.backend_path(), std::path::PathBuf::from(expect));
        assert!(super::memfd_of(std::process::id(), "no-such-memfd").is_none());
    }
}
