//! Background processes (and terminals): started by `Spawn`, listed by
//! `Procs`, followed by `Attach` (the kept output first, then live output and
//! the exit), fed by `ProcInput`, signalled by `ProcSignal`, resized by
//! `ProcResize`. They belong to the agent, not to a connection: a host that
//! reconnects (a restarted daemon, another client) finds them running.
//!
//! Every process's output goes into a bounded buffer (`PROC_OUTPUT_KEEP`
//! bytes, oldest dropped first) and to whoever follows it; at most `MAX_PROCS`
//! are kept, exited ones forgotten oldest first. Exit statuses come from the
//! reaper, as for `Exec`.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zygote_proto::agent::{AgentError, ErrorKind, ExitStatus, Msg, CHUNK};
use zygote_proto::procs::{
    command_line, ProcInfo, PtySize, SpawnProcess, MAX_PROCS, PROC_OUTPUT_KEEP,
};

use crate::conn::{Ctx, Reply};
use crate::sys;
use crate::util::{bad, err, lock, log};

/// Which stream a chunk came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// What a process has printed (bounded), who follows it, how it ended.
#[derive(Default)]
struct Output {
    kept: VecDeque<(Stream, Vec<u8>)>,
    kept_bytes: usize,
    followers: Vec<Reply>,
    exit: Option<ExitStatus>,
}

impl Output {
    fn push(&mut self, s: Stream, data: &[u8]) {
        self.followers.retain(Reply::is_current);
        for f in &self.followers {
            f.send(msg_of(s), data);
        }
        self.kept.push_back((s, data.to_vec()));
        self.kept_bytes += data.len();
        while self.kept_bytes > PROC_OUTPUT_KEEP {
            match self.kept.pop_front() {
                Some((_, d)) => self.kept_bytes -= d.len(),
                None => break,
            }
        }
    }
}

fn msg_of(s: Stream) -> &'static Msg {
    match s {
        Stream::Out => &Msg::Stdout,
        Stream::Err => &Msg::Stderr,
    }
}

/// One background process.
struct Proc {
    pid: i32,
    cmd: String,
    tag: Option<String>,
    pty: Option<File>,
    /// Its stdin (a pipe, or a copy of the terminal's master); `None` once closed.
    input: Mutex<Option<File>>,
    has_stdin: bool,
    started_unix: u64,
    output: Mutex<Output>,
}

impl Proc {
    fn info(&self) -> ProcInfo {
        ProcInfo {
            pid: self.pid as u32,
            cmd: self.cmd.clone(),
            tag: self.tag.clone(),
            pty: self.pty.is_some(),
            stdin: self.has_stdin,
            started_unix: self.started_unix,
            exit: lock(&self.output).exit.clone(),
        }
    }
}

/// Every background process, by pid.
#[derive(Default)]
pub(crate) struct Procs {
    map: Mutex<BTreeMap<i32, Arc<Proc>>>,
}

impl Procs {
    fn get(&self, pid: u32) -> Result<Arc<Proc>, AgentError> {
        i32::try_from(pid)
            .ok()
            .and_then(|p| lock(&self.map).get(&p).cloned())
            .ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!("no background process with pid {pid}: list them with `procs`"),
                )
            })
    }

    /// Room for one more: forget the oldest exited process, or refuse.
    fn make_room(&self) -> Result<(), AgentError> {
        let mut m = lock(&self.map);
        if m.len() < MAX_PROCS {
            return Ok(());
        }
        let oldest_exited = m
            .iter()
            .filter(|(_, p)| lock(&p.output).exit.is_some())
            .min_by_key(|(_, p)| p.started_unix)
            .map(|(pid, _)| *pid);
        match oldest_exited {
            Some(pid) => {
                m.remove(&pid);
                Ok(())
            }
            None => Err(err(
                ErrorKind::TooLarge,
                format!("{MAX_PROCS} background processes run already: kill some first"),
            )),
        }
    }

    /// The background processes, oldest first.
    pub(crate) fn list(&self) -> Vec<ProcInfo> {
        let mut v: Vec<ProcInfo> = lock(&self.map).values().map(|p| p.info()).collect();
        v.sort_by_key(|p| (p.started_unix, p.pid));
        v
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A new terminal of `size`: (master, slave).
fn open_pty(size: PtySize) -> Result<(File, File), AgentError> {
    if !(1..=1000).contains(&size.rows) || !(1..=1000).contains(&size.cols) {
        return Err(bad(format!(
            "terminal size {}x{} is out of range: pass rows and cols of 1-1000",
            size.rows, size.cols
        )));
    }
    let (master, slave) = sys::openpty(size.rows, size.cols)
        .map_err(|e| err(ErrorKind::Internal, format!("cannot open a terminal: {e}")))?;
    Ok((File::from(master), File::from(slave)))
}

/// `Spawn`: start the process, answer `Started`, keep pumping its output.
pub(crate) fn spawn(ctx: &Arc<Ctx>, reply: &Reply, req: SpawnProcess) {
    if let Err(e) = ctx.procs.make_room() {
        return reply.error(e);
    }
    // A terminal's process gets a session of its own instead of a group.
    let mut cmd = match crate::exec::build(&req.exec, req.pty.is_none()) {
        Ok(c) => c,
        Err(e) => return reply.error(e),
    };
    let pty = match req.pty {
        Some(size) => match open_pty(size) {
            Ok(p) => Some(p),
            Err(e) => return reply.error(e),
        },
        None => None,
    };
    if let Some((_, slave)) = &pty {
        let dup = |f: &File| f.try_clone().map(Stdio::from);
        match (dup(slave), dup(slave), dup(slave)) {
            (Ok(a), Ok(b), Ok(c)) => {
                cmd.stdin(a).stdout(b).stderr(c);
            }
            _ => return reply.error(err(ErrorKind::Internal, "cannot share the terminal")),
        }
        if !req.exec.env.contains_key("TERM") {
            cmd.env("TERM", "xterm-256color");
        }
        // A session of its own with the terminal as its controlling one (a
        // new session is also a new process group).
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork
        // and exec, on the child's own descriptor 0.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let (wake_r, wake_w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => return reply.error(err(ErrorKind::Internal, format!("pipe: {e}"))),
    };
    let status: Arc<Mutex<Option<i32>>> = Arc::default();
    let slot = status.clone();
    let on_exit = Box::new(move |st: i32| {
        *lock(&slot) = Some(st);
        drop(wake_w);
    });
    let mut child = match ctx.reaper.spawn(&mut cmd, on_exit) {
        Ok(c) => c,
        Err(e) => return reply.error(crate::exec::spawn_error(&req.exec, e)),
    };
    drop(cmd);
    let pid = child.id() as i32;
    let (pipes, input, master) = match pty {
        Some((master, slave)) => {
            drop(slave);
            let input = master.try_clone().ok();
            let reader = master.try_clone().ok();
            ([reader, None], input, Some(master))
        }
        None => {
            let input = child.stdin.take().map(|s| File::from(OwnedFd::from(s)));
            let out = child.stdout.take().map(|s| File::from(OwnedFd::from(s)));
            let errs = child.stderr.take().map(|s| File::from(OwnedFd::from(s)));
            ([out, errs], input, None)
        }
    };
    drop(child);
    let has_stdin = input.is_some();
    let p = Arc::new(Proc {
        pid,
        cmd: command_line(&req.exec),
        tag: req.tag,
        pty: master,
        input: Mutex::new(input),
        has_stdin,
        started_unix: now_unix(),
        output: Mutex::default(),
    });
    lock(&ctx.procs.map).insert(pid, p.clone());
    reply.send(&Msg::Started { pid: pid as u32 }, &[]);
    let deadline = req
        .exec
        .timeout_ms
        .filter(|&ms| ms > 0)
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let ctx = ctx.clone();
    let _ = std::thread::Builder::new()
        .name("proc".into())
        .spawn(move || pump(&ctx, &p, pipes, wake_r, status, deadline));
}

/// Read the process's output into its buffer and followers until it exits.
fn pump(
    ctx: &Ctx,
    p: &Proc,
    mut pipes: [Option<File>; 2],
    wake: OwnedFd,
    status: Arc<Mutex<Option<i32>>>,
    deadline: Option<Instant>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut exited = false;
    let mut timed_out = false;
    let mut drain_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if (exited && pipes.iter().all(Option::is_none)) || drain_until.is_some_and(|d| now >= d) {
            break;
        }
        if let Some(d) = deadline {
            if !timed_out && !exited && now >= d {
                timed_out = true;
                let _ = sys::kill(-p.pid, libc::SIGKILL);
            }
        }
        let mut fds = Vec::with_capacity(3);
        let mut which = Vec::with_capacity(3);
        for (i, f) in pipes.iter().enumerate() {
            if let Some(f) = f {
                fds.push(pollfd(f.as_raw_fd()));
                which.push(i);
            }
        }
        if !exited {
            fds.push(pollfd(wake.as_raw_fd()));
            which.push(2);
        }
        let timeout = Some(Duration::from_millis(200));
        if let Err(e) = sys::poll(&mut fds, timeout) {
            log!("process {}: poll failed: {e}", p.pid);
            break;
        }
        for (fd, &w) in fds.iter().zip(&which) {
            if fd.revents == 0 {
                continue;
            }
            if w == 2 {
                exited = true;
                // A terminal's master never reports EOF while a grandchild
                // holds the slave: drain briefly, then stop.
                drain_until = Some(Instant::now() + Duration::from_millis(150));
                continue;
            }
            let Some(f) = pipes[w].as_mut() else { continue };
            match f.read(&mut buf) {
                Ok(0) => pipes[w] = None,
                Ok(n) => {
                    let s = if w == 0 { Stream::Out } else { Stream::Err };
                    lock(&p.output).push(s, &buf[..n]);
                }
                Err(e) if e.kind() == IoKind::Interrupted || e.kind() == IoKind::WouldBlock => {}
                // EIO: the terminal's last user went away.
                Err(_) => pipes[w] = None,
            }
        }
    }
    let raw = lock(&status).take();
    let (code, signal) = raw.map(sys::decode_wait_status).unwrap_or((None, None));
    let exit = ExitStatus {
        code,
        signal,
        timed_out,
    };
    let followers = {
        let mut o = lock(&p.output);
        o.exit = Some(exit.clone());
        std::mem::take(&mut o.followers)
    };
    for f in followers {
        f.send(&Msg::Exit(exit.clone()), &[]);
        ctx.finish(&f);
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// `Attach`: the kept output (when `replay`), then live output and the exit.
/// Returns whether the request stays open (the process still runs).
pub(crate) fn attach(ctx: &Ctx, reply: &Reply, pid: u32, replay: bool) -> bool {
    let p = match ctx.procs.get(pid) {
        Ok(p) => p,
        Err(e) => {
            reply.error(e);
            return false;
        }
    };
    let mut o = lock(&p.output);
    if replay {
        for (s, d) in &o.kept {
            reply.send(msg_of(*s), d);
        }
    }
    match &o.exit {
        Some(x) => {
            reply.send(&Msg::Exit(x.clone()), &[]);
            false
        }
        None => {
            o.followers.push(reply.clone());
            true
        }
    }
}

/// Stop following (a `Cancel` of an `Attach`).
pub(crate) fn detach(ctx: &Ctx, pid: u32, reply: &Reply) {
    if let Ok(p) = ctx.procs.get(pid) {
        lock(&p.output).followers.retain(|f| f.id != reply.id);
    }
}

/// `ProcInput`: bytes for its stdin (or terminal), then maybe close it.
pub(crate) fn input(ctx: &Ctx, pid: u32, data: &[u8], eof: bool) -> Result<(), AgentError> {
    let p = ctx.procs.get(pid)?;
    let mut input = lock(&p.input);
    let Some(f) = input.as_mut() else {
        return Err(bad(format!(
            "process {pid} takes no input: start it with `stdin: true` (or a terminal), and do not send after closing its stdin"
        )));
    };
    if !data.is_empty() {
        if let Err(e) = f.write_all(data) {
            if e.kind() != IoKind::BrokenPipe {
                return Err(err(
                    ErrorKind::Internal,
                    format!("writing to process {pid}: {e}"),
                ));
            }
        }
    }
    if eof && p.pty.is_none() {
        *input = None;
    } else if eof {
        // A terminal's end of input is ^D, not a closed descriptor.
        let _ = f.write_all(&[4]);
    }
    Ok(())
}

/// `ProcSignal`: a signal to its process group.
pub(crate) fn signal(ctx: &Ctx, pid: u32, sig: i32) -> Result<(), AgentError> {
    if !(1..=64).contains(&sig) {
        return Err(bad(format!("signal {sig} is not a signal number (1-64)")));
    }
    let p = ctx.procs.get(pid)?;
    if lock(&p.output).exit.is_some() {
        return Ok(());
    }
    match sys::kill(-p.pid, sig).or_else(|_| sys::kill(p.pid, sig)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(e) => Err(err(
            ErrorKind::Internal,
            format!("cannot signal process {pid}: {e}"),
        )),
    }
}

/// `ProcResize`: a new terminal size.
pub(crate) fn resize(ctx: &Ctx, pid: u32, size: PtySize) -> Result<(), AgentError> {
    let p = ctx.procs.get(pid)?;
    let Some(master) = &p.pty else {
        return Err(bad(format!(
            "process {pid} runs without a terminal: nothing to resize"
        )));
    };
    if !(1..=1000).contains(&size.rows) || !(1..=1000).contains(&size.cols) {
        return Err(bad(format!(
            "terminal size {}x{} is out of range: pass rows and cols of 1-1000",
            size.rows, size.cols
        )));
    }
    sys::set_winsize(master.as_raw_fd(), size.rows, size.cols).map_err(|e| {
        err(
            ErrorKind::Internal,
            format!("cannot resize process {pid}'s terminal: {e}"),
        )
    })
}
