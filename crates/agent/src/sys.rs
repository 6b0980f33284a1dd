//! Safe wrappers around the raw syscalls the agent needs, one function each.
//!
//! This module owns every `unsafe` block that talks to libc; callers see plain
//! `io::Result`s. It keeps no state and makes no policy decisions.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Turn a `-1` return into the thread's `errno`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// This process's pid.
pub(crate) fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// `geteuid(2)`.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Send `sig` to `pid` (negative: a process group; -1: every process we may signal).
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers and touches no memory of ours.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Reap one child without blocking: `Ok(Some((pid, raw_status)))`, or `Ok(None)`
/// when no child has exited (or there are no children at all).
pub(crate) fn waitpid_any_nohang() -> io::Result<Option<(i32, i32)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid, writable c_int for the duration of the call.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    match pid {
        0 => Ok(None),
        -1 => {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ECHILD) => Ok(None),
                _ => Err(e),
            }
        }
        pid => Ok(Some((pid, status))),
    }
}

/// Decode a raw wait status into `(exit code, terminating signal)`.
pub(crate) fn decode_wait_status(status: i32) -> (Option<i32>, Option<i32>) {
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}

fn sigset(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain old data; sigemptyset fully initialises it below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in sigs {
        // SAFETY: as above; an invalid signal number only makes sigaddset fail.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// Block `sigs` in the calling thread (threads spawned later inherit the mask).
pub(crate) fn block_signals(sigs: &[i32]) -> io::Result<()> {
    let set = sigset(sigs);
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

extern "C" fn noop_handler(_: libc::c_int) {}

/// Install a do-nothing handler for `sig`, so the kernel never discards it as
/// "ignored" (it would for SIGCHLD's default action, and for any default action
/// in PID 1); the signal stays blocked and is collected with [`sigtimedwait`].
pub(crate) fn install_noop_handler(sig: i32) -> io::Result<()> {
    // SAFETY: sigaction is plain old data; zeroed is a valid empty value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = noop_handler as extern "C" fn(libc::c_int) as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa` is initialised, the handler is async-signal-safe (it does nothing)
    // and a null old-action pointer is allowed.
    check(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) }).map(drop)
}

/// Wait up to `timeout` for one of `sigs` (which must be blocked). `Ok(None)` on
/// timeout or interruption.
pub(crate) fn sigtimedwait(sigs: &[i32], timeout: Duration) -> io::Result<Option<i32>> {
    let set = sigset(sigs);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are initialised and live across the call; a null
    // siginfo pointer is allowed.
    let rc = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if rc == -1 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(rc))
}

/// `poll(2)`, retried on EINTR. Returns the number of ready descriptors.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        Some(d) => d.as_millis().min(i32::MAX as u128) as libc::c_int,
    };
    loop {
        // SAFETY: `fds` is a valid, writable slice of pollfd for its length.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Poll one descriptor; returns its `revents`.
pub(crate) fn poll_one(fd: RawFd, events: i16, timeout: Option<Duration>) -> io::Result<i16> {
    let mut fds = [libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    poll(&mut fds, timeout)?;
    Ok(fds[0].revents)
}

/// `F_GETFL`.
pub(crate) fn get_fl(fd: RawFd) -> io::Result<i32> {
    // SAFETY: F_GETFL takes no pointer argument.
    check(unsafe { libc::fcntl(fd, libc::F_GETFL) })
}

/// `F_SETFL`.
pub(crate) fn set_fl(fd: RawFd, flags: i32) -> io::Result<()> {
    // SAFETY: F_SETFL takes an integer argument.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// `F_SETOWN`: deliver SIGIO for `fd` to process `pid`.
pub(crate) fn set_owner(fd: RawFd, pid: i32) -> io::Result<()> {
    // SAFETY: F_SETOWN takes an integer argument.
    check(unsafe { libc::fcntl(fd, libc::F_SETOWN, pid) }).map(drop)
}

/// Whether `fd` is an open descriptor.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no pointer argument; a closed fd yields EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// `dup2(from, to)`.
pub(crate) fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes plain descriptors; replacing `to` is the intent.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

/// A close-on-exec pipe: `(read end, write end)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `setsid()`; async-signal-safe, for use between fork and exec.
pub(crate) fn setsid() -> io::Result<()> {
    // SAFETY: setsid has no memory arguments.
    check(unsafe { libc::setsid() }).map(drop)
}

/// `mount(2)`.
pub(crate) fn mount(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = cstr(source)?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    // SAFETY: every pointer is either null or a NUL-terminated string that lives
    // until the call returns.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast::<libc::c_void>()),
        )
    })
    .map(drop)
}

/// `ioctl(fd, request, &value)` on `path` opened read-only, for requests
/// that read one `u32` (such as `FS_IOC_SHUTDOWN`).
pub(crate) fn ioctl_u32(path: &str, request: libc::c_ulong, value: u32) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    let v = value;
    // SAFETY: `f` is an open descriptor for the call's duration and the
    // request reads one u32 through the pointer, which points at `v`.
    check(unsafe { libc::ioctl(f.as_raw_fd(), request as _, &v as *const u32) }).map(drop)
}

/// `umount2(2)`.
pub(crate) fn umount(target: &str, flags: i32) -> io::Result<()> {
    let target = cstr(target)?;
    // SAFETY: `target` is NUL-terminated and outlives the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// `sethostname(2)`.
pub(crate) fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// `(nodename, release)` from `uname(2)`.
pub(crate) fn uname() -> (String, String) {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (String::new(), String::new());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.nodename), field(&u.release))
}

/// `pidfd_open(pid, 0)`: an fd that polls readable once `pid` has exited.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A new inotify instance (non-blocking, close-on-exec).
pub(crate) fn inotify_init() -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes flags and returns a new descriptor or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watch `path` on the inotify instance `fd`; returns the watch descriptor.
pub(crate) fn inotify_add_watch(fd: &OwnedFd, path: &std::ffi::CStr, mask: u32) -> io::Result<i32> {
    // SAFETY: a valid inotify descriptor and a NUL-terminated path that lives
    // for the call.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
    if wd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(wd)
}

/// `read(2)` into `buf`.
pub(crate) fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads at most buf.len() bytes into memory we own.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The events in an inotify read buffer: (watch descriptor, mask, name).
pub(crate) fn inotify_events(buf: &[u8]) -> Vec<(i32, u32, String)> {
    const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
    let mut out = Vec::new();
    let mut off = 0;
    while off + HEAD <= buf.len() {
        let h = &buf[off..off + HEAD];
        let wd = i32::from_ne_bytes([h[0], h[1], h[2], h[3]]);
        let mask = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
        let len = u32::from_ne_bytes([h[12], h[13], h[14], h[15]]) as usize;
        let end = (off + HEAD + len).min(buf.len());
        let raw = &buf[off + HEAD..end];
        let name =
            String::from_utf8_lossy(raw.split(|b| *b == 0).next().unwrap_or(&[])).to_string();
        out.push((wd, mask, name));
        off = off + HEAD + len;
    }
    out
}

/// A new pseudo-terminal of `rows` x `cols`: (master, slave), close-on-exec.
pub(crate) fn openpty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty(3) writes two descriptors into the ints we pass and
    // reads the winsize; the name buffer and termios are NULL (unused).
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty just returned these descriptors to us; nothing else owns them.
    let (m, sl) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [m.as_raw_fd(), sl.as_raw_fd()] {
        // SAFETY: fcntl(F_SETFD) on a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((m, sl))
}

/// Set a terminal's size (`TIOCSWINSZ`); the process group on it gets SIGWINCH.
pub(crate) fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer we pass; `fd` is ours.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ as _, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `setpriority(PRIO_PROCESS, pid, nice)` (`pid` 0: the calling process).
/// Async-signal-safe (used between fork and exec).
pub(crate) fn setpriority(pid: i32, nice: i32) -> io::Result<()> {
    // SAFETY: plain integer arguments; no memory is passed.
    check(unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) }).map(drop)
}

/// Time since boot (`CLOCK_BOOTTIME`), for boot-milestone log lines.
pub(crate) fn uptime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `clock_settime(CLOCK_REALTIME)` to `unix_nanos` since the epoch.
pub(crate) fn set_realtime(unix_nanos: u128) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (unix_nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec that outlives the call.
    check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) }).map(drop)
}

/// `RNDADDENTROPY` (credit all bits) then `RNDRESEEDCRNG` on a `/dev/urandom` fd.
pub(crate) fn add_entropy_and_reseed(fd: RawFd, bytes: &[u8]) -> io::Result<()> {
    // _IOW('R', 0x03, int[2]) and _IO('R', 0x07) from <linux/random.h>.
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    if !bytes.is_empty() {
        // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
        let mut info: Vec<u32> = vec![0; 2 + bytes.len().div_ceil(4)];
        info[0] = (bytes.len() * 8) as u32;
        info[1] = bytes.len() as u32;
        for (i, chunk) in bytes.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            info[2 + i] = u32::from_ne_bytes(w);
        }
        // SAFETY: `info` is a properly aligned rand_pool_info whose buffer holds
        // `buf_size` bytes; the kernel only reads it.
        check(unsafe { libc::ioctl(fd, RNDADDENTROPY as _, info.as_ptr()) })?;
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    check(unsafe { libc::ioctl(fd, RNDRESEEDCRNG as _) }).map(drop)
}

/// An AF_INET datagram socket for interface ioctls.
fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket takes plain integers.
    let sock =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket succeeded, so `sock` is an open descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(sock) })
}

/// An ifreq naming interface `name` (at most 15 bytes).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().take(15).zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req
}

/// A `sockaddr` holding IPv4 `a`.
fn sockaddr(a: std::net::Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain data; the
    // kernel reads a sockaddr of family AF_INET as a sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Bring interface `name` up (`SIOCGIFFLAGS` / `SIOCSIFFLAGS`).
pub(crate) fn link_up(name: &str) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(name);
    // SAFETY: `req` is a valid ifreq naming the link; the kernel fills ifru_flags.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) })?;
    // SAFETY: SIOCGIFFLAGS initialised the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: `req` is a valid ifreq; the kernel only reads it.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) }).map(drop)
}

/// Bring the loopback interface up.
pub(crate) fn loopback_up() -> io::Result<()> {
    link_up("lo")
}

/// Give interface `name` address `addr/prefix`, bring it up and route
/// everything through `gateway` (`SIOCSIFADDR`, `SIOCSIFNETMASK`, `SIOCADDRT`).
pub(crate) fn configure_link(
    name: &str,
    addr: std::net::Ipv4Addr,
    prefix: u8,
    gateway: std::net::Ipv4Addr,
) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(name);
    req.ifr_ifru.ifru_addr = sockaddr(addr);
    // SAFETY: `req` names the link and holds an AF_INET address; read only.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR as _, &req) })?;
    let mask = std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0));
    req.ifr_ifru.ifru_netmask = sockaddr(mask);
    // SAFETY: as above, with the netmask.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFNETMASK as _, &req) })?;
    link_up(name)?;
    // SAFETY: rtentry is plain old data; zeroed is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(std::net::Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(std::net::Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr(gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: `rt` is a valid rtentry (no device pointer); the kernel only reads it.
    match check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT as _, &rt) }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r.map(drop),
    }
}

/// `sync(2)`.
pub(crate) fn sync() {
    // SAFETY: sync has no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// `reboot(2)` with `cmd` (`RB_POWER_OFF`, `RB_AUTOBOOT`); returns only on failure.
pub(crate) fn reboot(cmd: libc::c_int) -> io::Error {
    // SAFETY: reboot takes an integer command; on success it does not return.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decodes_exit_and_signal() {
        assert_eq!(decode_wait_status(3 << 8), (Some(3), None));
        assert_eq!(decode_wait_status(9), (None, Some(9)));
    }

    #[test]
    fn pipe_and_poll_report_hangup() {
        let (r, w) = pipe().unwrap();
        assert_eq!(
            poll_one(r.as_raw_fd(), libc::POLLIN, Some(Duration::ZERO)).unwrap(),
            0
        );
        drop(w);
        let ev = poll_one(r.as_raw_fd(), libc::POLLIN, Some(Duration::ZERO)).unwrap();
        assert_ne!(ev & libc::POLLHUP, 0);
    }

    #[test]
    fn uname_has_a_release() {
        assert!(!uname().1.is_empty());
    }

    #[test]
    fn sigtimedwait_times_out() {
        block_signals(&[libc::SIGUSR2]).unwrap();
        let got = sigtimedwait(&[libc::SIGUSR2], Duration::from_millis(10)).unwrap();
        assert_eq!(got, None);
    }
}
