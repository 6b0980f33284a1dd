//! Entering a network namespace: on a short-lived thread of our own (a socket
//! is created there and keeps the namespace it was made in), or in a child
//! process between `fork` and `exec` (QEMU and `nft` run inside).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::error::{io, NetError, Result};

/// Where `ip netns` keeps its named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The file naming namespace `name`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Open a namespace file for [`enter`].
pub fn open(path: &Path) -> Result<OwnedFd> {
    File::open(path).map(OwnedFd::from).map_err(io(format!(
        "cannot open network namespace {}",
        path.display()
    )))
}

/// Move the calling thread into the network namespace `fd`. Only
/// async-signal-safe work: usable between `fork` and `exec`.
pub fn enter(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: setns only reads the descriptor; CLONE_NEWNET affects nothing
    // but this thread's network namespace.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Run `f` on a new thread inside namespace `path` and return its result;
/// the calling thread's namespace never changes.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let fd = open(path)?;
    let what = path.display().to_string();
    std::thread::Builder::new()
        .name("zygote-netns".into())
        .spawn(move || {
            enter(fd.as_raw_fd()).map_err(io(format!("cannot enter network namespace {what}")))?;
            f()
        })
        .map_err(io("cannot start a thread"))?
        .join()
        .map_err(|_| NetError::Limit("a network namespace thread panicked".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_named() {
        let e = run_in(Path::new("/run/netns/zygote-no-such"), || Ok(())).unwrap_err();
        assert!(e.to_string().contains("/run/netns/zygote-no-such"), "{e}");
    }
}
