//! The byte stream to the host: the virtio-serial port named `agent`, or (for
//! host tests) a Unix socket or stdin/stdout.
//!
//! This module owns opening the transport, reading, writing and waiting for the
//! host to connect. It knows nothing about frames.
//!
//! ## Waiting for the host (virtio-serial)
//!
//! The guest driver (`drivers/char/virtio_console.c`) reports a missing host
//! side as end-of-file: `port_fops_read` returns 0 and `port_fops_poll` sets
//! `POLLHUP` while `!port->host_connected`; a blocking `write` sleeps until the
//! host connects. On a `VIRTIO_CONSOLE_PORT_OPEN` control message (host connect
//! or disconnect) `handle_control_message` calls `send_sigio_to_port`, which
//! `kill_fasync`es the fd owner when the file has `O_ASYNC`. So the port is
//! opened `O_NONBLOCK`, given `O_ASYNC` and `F_SETOWN(getpid())`, and SIGIO is
//! blocked in every thread: waiting is `sigtimedwait(SIGIO)` plus a zero-timeout
//! poll to see whether `POLLHUP` cleared, with a long timeout only as a safety
//! net. Writes use poll(`POLLOUT`) and give up on `POLLHUP`, so output produced
//! while the host is away is dropped instead of blocking the writer forever.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys;
use crate::util::log;

/// Safety-net timeout while waiting for SIGIO.
const HOST_WAIT_FALLBACK: Duration = Duration::from_secs(5);
/// How long to wait for the virtio port device to appear at boot.
const PORT_APPEAR_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the agent's byte stream comes from.
#[derive(Debug, Clone)]
pub(crate) enum PortSpec {
    /// Find the virtio-serial port with this name under `/sys/class/virtio-ports`.
    VirtioNamed(String),
    /// A char device (virtio port) or a Unix socket to connect to.
    Path(PathBuf),
    /// Frames on stdin, replies on stdout.
    Stdio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Virtio,
    Socket,
    Stdio,
}

/// The read half; owned by the connection loop.
pub(crate) struct PortReader {
    kind: Kind,
    file: File,
}

/// The write half; owned by the writer thread.
pub(crate) struct PortWriter {
    kind: Kind,
    file: File,
}

/// Why a write did not complete.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The host is not connected; the bytes were dropped.
    Disconnected,
    /// Any other I/O error.
    Io(io::Error),
}

/// Open the transport described by `spec`.
pub(crate) fn open(spec: &PortSpec) -> io::Result<(PortReader, PortWriter)> {
    match spec {
        PortSpec::Stdio => {
            let r = sys_dup_file(0)?;
            let w = sys_dup_file(1)?;
            // Keep our fd 1 away from anything else that might print to it.
            if let Ok(null) = File::options().write(true).open("/dev/null") {
                let _ = sys::dup2(null.as_raw_fd(), 1);
            }
            Ok((
                PortReader {
                    kind: Kind::Stdio,
                    file: r,
                },
                PortWriter {
                    kind: Kind::Stdio,
                    file: w,
                },
            ))
        }
        PortSpec::VirtioNamed(name) => {
            let dev = find_named_port(name)?;
            open_virtio(&dev)
        }
        PortSpec::Path(p) => {
            let meta = fs::metadata(p)?;
            if meta.file_type().is_socket() {
                let s = UnixStream::connect(p)?;
                let r = File::from(std::os::fd::OwnedFd::from(s.try_clone()?));
                let w = File::from(std::os::fd::OwnedFd::from(s));
                Ok((
                    PortReader {
                        kind: Kind::Socket,
                        file: r,
                    },
                    PortWriter {
                        kind: Kind::Socket,
                        file: w,
                    },
                ))
            } else {
                open_virtio(p)
            }
        }
    }
}

fn sys_dup_file(fd: RawFd) -> io::Result<File> {
    use std::os::fd::BorrowedFd;
    // SAFETY: fds 0 and 1 are open for the whole life of the process (PID 1
    // setup guarantees it); we only borrow them long enough to duplicate.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(File::from(b.try_clone_to_owned()?))
}

fn open_virtio(dev: &Path) -> io::Result<(PortReader, PortWriter)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dev)?;
    let fd = file.as_raw_fd();
    sys::set_owner(fd, sys::getpid())?;
    let fl = sys::get_fl(fd)?;
    sys::set_fl(fd, fl | libc::O_ASYNC | libc::O_NONBLOCK)?;
    log!("port {}", dev.display());
    let w = file.try_clone()?;
    Ok((
        PortReader {
            kind: Kind::Virtio,
            file,
        },
        PortWriter {
            kind: Kind::Virtio,
            file: w,
        },
    ))
}

/// `/dev/vportNpM` of the virtio-serial port called `name`, waiting (with a
/// growing back-off) for the driver and devtmpfs to publish it.
fn find_named_port(name: &str) -> io::Result<PathBuf> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(5);
    loop {
        if let Ok(dir) = fs::read_dir("/sys/class/virtio-ports") {
            for e in dir.flatten() {
                let n = fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if n.trim() == name {
                    let dev = Path::new("/dev").join(e.file_name());
                    if dev.exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        if start.elapsed() > PORT_APPEAR_TIMEOUT {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no virtio-serial port named `{name}` under /sys/class/virtio-ports \
                     after {PORT_APPEAR_TIMEOUT:?}: is virtio_console loaded and \
                     `-device virtserialport,name={name}` on the QEMU command line?"
                ),
            ));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

impl PortReader {
    /// Read some bytes; `Ok(0)` means the host went away (or is not there yet).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.kind == Kind::Virtio {
                sys::poll_one(self.file.as_raw_fd(), libc::POLLIN, None)?;
            }
            match self.file.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// After end-of-file: block until a host is connected again. Returns false
    /// when the transport cannot reconnect (stdio, Unix socket): the agent exits.
    pub(crate) fn wait_for_host(&self) -> bool {
        if self.kind != Kind::Virtio {
            return false;
        }
        let fd = self.file.as_raw_fd();
        // Drop a stale SIGIO (every data arrival also raises one); one that lands
        // after this point stays pending and ends the wait below at once.
        let _ = sys::sigtimedwait(&[libc::SIGIO], Duration::ZERO);
        let start = Instant::now();
        let mut wakes = 0u32;
        loop {
            match sys::poll_one(fd, libc::POLLIN, Some(Duration::ZERO)) {
                Ok(ev) if ev & libc::POLLHUP == 0 => {
                    log!(
                        "host connected after {} ms ({wakes} wake-ups)",
                        start.elapsed().as_millis()
                    );
                    return true;
                }
                Ok(_) => {}
                Err(e) => {
                    log!("poll on port failed: {e}");
                }
            }
            let _ = sys::sigtimedwait(&[libc::SIGIO], HOST_WAIT_FALLBACK);
            wakes += 1;
        }
    }
}

impl PortWriter {
    /// Write all of `buf`, or drop it if the host is not connected.
    pub(crate) fn write_all(&mut self, mut buf: &[u8]) -> Result<(), WriteError> {
        while !buf.is_empty() {
            match self.file.write(buf) {
                Ok(0) => return Err(WriteError::Disconnected),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ev = sys::poll_one(
                        self.file.as_raw_fd(),
                        libc::POLLOUT,
                        Some(Duration::from_secs(1)),
                    )
                    .map_err(WriteError::Io)?;
                    if ev & libc::POLLHUP != 0 && ev & libc::POLLOUT == 0 {
                        return Err(WriteError::Disconnected);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Err(WriteError::Disconnected)
                }
                Err(e) => return Err(WriteError::Io(e)),
            }
        }
        if self.kind == Kind::Stdio {
            let _ = self.file.flush();
        }
        Ok(())
    }
}
