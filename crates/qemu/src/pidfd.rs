//! [`PidFd`]: a process handle that cannot be confused with a recycled pid
//! (`pidfd_open`), for QEMUs that are not this process's children: a daemon
//! that restarted re-adopts the QEMUs a previous one started. It waits for the
//! process to exit (the descriptor turns readable), signals it
//! (`pidfd_send_signal`) and takes a copy of one of its file descriptors
//! (`pidfd_getfd`: the guest-RAM memfd). Every syscall is wrapped once, here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

/// An open handle on a process.
#[derive(Debug)]
pub struct PidFd {
    pid: u32,
    fd: AsyncFd<OwnedFd>,
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl PidFd {
    /// A handle on the live process `pid` (must be called inside a tokio runtime).
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let fd = pidfd_open(pid)?;
        // SAFETY: `fd` is an open descriptor we own outright; the AsyncFd owns
        // it from here until it is dropped, so it stays open and the same.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(PidFd { pid, fd })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Wait until the process has exited.
    pub async fn exited(&self) -> io::Result<()> {
        let mut g = self.fd.readable().await?;
        g.retain_ready();
        Ok(())
    }

    /// Whether the process has exited, without waiting.
    pub fn has_exited(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid pollfd we own, zero timeout.
        let rc = unsafe { libc::poll(&mut p, 1, 0) };
        rc > 0 && p.revents & libc::POLLIN != 0
    }

    /// Send `signal` to the process (never to a process that reused its pid).
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal(2) with our open pidfd, a signal number, no
        // siginfo (NULL) and no flags; it touches no memory of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.get_ref().as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// A copy of the process's descriptor `target` (needs ptrace access to it:
    /// root, or the same uid without restrictions).
    pub fn take_fd(&self, target: RawFd) -> io::Result<OwnedFd> {
        // SAFETY: pidfd_getfd(2) with our open pidfd, a descriptor number in
        // the target process and no flags; it returns a new descriptor of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_getfd,
                self.fd.get_ref().as_raw_fd(),
                target,
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = RawFd::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_signal_and_take_a_descriptor() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let p = PidFd::open(child.id()).unwrap();
        assert!(!p.has_exited());
        // Its stdin is our /dev/null-ish inherited descriptor 0: take a copy.
        let fd = p.take_fd(0).unwrap();
        assert!(fd.as_raw_fd() > 2);
        p.signal(libc::SIGTERM).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), p.exited())
            .await
            .unwrap()
            .unwrap();
        assert!(p.has_exited());
        let _ = child.wait();
        assert!(PidFd::open(u32::MAX).is_err());
    }
}
