//! `Eval`: one persistent, warm Python interpreter running the embedded REPL
//! server (`eval.py`), spoken to in JSON lines over its stdin/stdout.
//!
//! The interpreter starts with the agent (so it is warm in snapshots). Evals
//! are serialised by a mutex: one runs at a time, the rest queue. If the
//! interpreter died it is restarted on the next eval, whose `stderr` then
//! starts with a note that the previous state was lost. `Cancel` interrupts a
//! running eval with SIGINT (a `KeyboardInterrupt` in the user's code).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use zygote_proto::agent::{AgentError, ErrorKind, EvalResult};

use crate::reaper::Reaper;
use crate::sys;
use crate::util::{err, lock, log, BASE_ENV};

/// The REPL server, run with `python3 -u -c`.
const SERVER: &str = include_str!("eval.py");

/// Niceness of the interpreter while it warms up at agent start: on one TCG
/// vCPU its start-up (about a second of CPU) otherwise competes with the
/// agent's `Hello` and the first execs. An eval that arrives meanwhile waits
/// for it as before, and it runs at niceness 0 once its server is ready.
const WARM_NICE: i32 = 10;

/// The warm interpreter and its queue.
pub(crate) struct Interp {
    python: String,
    reaper: Arc<Reaper>,
    state: Mutex<Option<Proc>>,
    ever_started: AtomicBool,
    /// Token of the eval currently inside the interpreter (0: none).
    current: AtomicU64,
    /// Pid of the running interpreter (0: none).
    pid: AtomicI32,
    /// A `Resumed` asked for `random` to be reseeded before the next eval.
    reseed_pending: AtomicBool,
}

struct Proc {
    pid: i32,
    tx: ChildStdin,
    rx: BufReader<ChildStdout>,
    alive: Arc<AtomicBool>,
}

impl Proc {
    fn call(&mut self, req: &Value) -> Option<Value> {
        let mut line = req.to_string();
        line.push('\n');
        self.tx.write_all(line.as_bytes()).ok()?;
        self.tx.flush().ok()?;
        let mut resp = String::new();
        match self.rx.read_line(&mut resp) {
            Ok(0) | Err(_) => None,
            Ok(_) => serde_json::from_str(&resp).ok(),
        }
    }
}

impl Interp {
    /// An interpreter that will run `python` (not started yet).
    pub(crate) fn new(python: String, reaper: Arc<Reaper>) -> Self {
        Self {
            python,
            reaper,
            state: Mutex::new(None),
            ever_started: AtomicBool::new(false),
            current: AtomicU64::new(0),
            pid: AtomicI32::new(0),
            reseed_pending: AtomicBool::new(false),
        }
    }

    /// Start the interpreter now if it is not running (at agent start).
    pub(crate) fn warm(&self) {
        let mut st = lock(&self.state);
        // Only the first interpreter is warmed here: if an eval got the lock
        // first and its interpreter has since died, the next eval restarts it
        // and tells the caller the state was lost (a warm start here would
        // silently hide that).
        if self.ever_started.load(Ordering::Acquire)
            || st.as_ref().is_some_and(|p| p.alive.load(Ordering::Acquire))
        {
            return;
        }
        // Only root can undo the niceness afterwards (dev mode runs as a user).
        let nice = if sys::geteuid() == 0 { WARM_NICE } else { 0 };
        match self.start(nice) {
            Ok(p) => *st = Some(p),
            Err(e) => log!("python not started: {}", e.message),
        }
    }

    /// Start the interpreter at niceness `nice` until its server is ready
    /// (then it runs at 0, like every other process).
    fn start(&self, nice: i32) -> Result<Proc, AgentError> {
        let mut cmd = Command::new(&self.python);
        cmd.arg("-u").arg("-c").arg(SERVER);
        cmd.env_clear();
        for (k, v) in BASE_ENV {
            cmd.env(k, v);
        }
        // The image's own environment (an OCI image's PATH finds its python3).
        for (k, v) in &crate::defaults::get().env {
            cmd.env(k, v);
        }
        cmd.env("PYTHONDONTWRITEBYTECODE", "1");
        cmd.current_dir("/");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: the closure runs between fork and exec and only calls setsid
        // and setpriority, which are async-signal-safe; setsid keeps exec
        // signals away from Python.
        unsafe {
            cmd.pre_exec(move || {
                sys::setsid()?;
                if nice != 0 {
                    let _ = sys::setpriority(0, nice);
                }
                Ok(())
            });
        }
        let alive = Arc::new(AtomicBool::new(true));
        let a = alive.clone();
        let on_exit = Box::new(move |_st: i32| a.store(false, Ordering::Release));
        let mut child = self.reaper.spawn(&mut cmd, on_exit).map_err(|e| {
            err(
                ErrorKind::Internal,
                format!(
                    "cannot start `{}` for eval: {e}; the image needs python3 in PATH",
                    self.python
                ),
            )
        })?;
        let pid = child.id() as i32;
        let (Some(tx), Some(out)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(err(ErrorKind::Internal, "python started without pipes"));
        };
        let mut p = Proc {
            pid,
            tx,
            rx: BufReader::new(out),
            alive,
        };
        let mut ready = String::new();
        match p.rx.read_line(&mut ready) {
            Ok(n) if n > 0 => {}
            _ => {
                let _ = sys::kill(pid, libc::SIGKILL);
                return Err(err(
                    ErrorKind::Internal,
                    format!("`{}` exited before the eval server was ready", self.python),
                ));
            }
        }
        if nice != 0 {
            if let Err(e) = sys::setpriority(pid, 0) {
                log!("python: cannot reset its niceness to 0: {e}");
            }
        }
        self.ever_started.store(true, Ordering::Release);
        self.pid.store(pid, Ordering::Release);
        Ok(p)
    }

    /// Evaluate `code`; `token` identifies this eval for [`Interp::interrupt`].
    pub(crate) fn eval(
        &self,
        code: &str,
        token: u64,
        cancelled: &AtomicBool,
    ) -> Result<EvalResult, AgentError> {
        let mut st = lock(&self.state);
        if cancelled.load(Ordering::Acquire) {
            return Err(err(ErrorKind::Internal, "eval was cancelled before it ran"));
        }
        let mut note = String::new();
        if !st.as_ref().is_some_and(|p| p.alive.load(Ordering::Acquire)) {
            if let Some(old) = st.take() {
                let _ = sys::kill(old.pid, libc::SIGKILL);
            }
            if self.ever_started.load(Ordering::Acquire) {
                note = "zygote-agent: the Python interpreter had exited, so its state \
                        (variables, imports) is lost; started a new one\n"
                    .into();
            }
            *st = Some(self.start(0)?);
            // A fresh interpreter seeds itself from the (already reseeded) kernel.
            self.reseed_pending.store(false, Ordering::Release);
        }
        let Some(p) = st.as_mut() else {
            return Err(err(ErrorKind::Internal, "no Python interpreter"));
        };
        if self.reseed_pending.swap(false, Ordering::AcqRel) {
            let _ = p.call(&json!({"op": "reseed"}));
        }
        self.current.store(token, Ordering::Release);
        let resp = p.call(&json!({"op": "eval", "code": code}));
        self.current.store(0, Ordering::Release);
        let Some(v) = resp else {
            let _ = sys::kill(p.pid, libc::SIGKILL);
            *st = None;
            self.pid.store(0, Ordering::Release);
            return Ok(EvalResult {
                result: None,
                error: Some(
                    "InterpreterExited: the Python interpreter exited during this eval; \
                     its state is lost and the next eval starts a fresh one"
                        .into(),
                ),
                traceback: None,
                stdout: String::new(),
                stderr: note,
            });
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut r = EvalResult {
            result: s("result"),
            error: s("error"),
            traceback: s("traceback"),
            stdout: s("stdout").unwrap_or_default(),
            stderr: note + &s("stderr").unwrap_or_default(),
        };
        fit(&mut r);
        Ok(r)
    }

    /// Interrupt eval `token` if it is the one running.
    pub(crate) fn interrupt(&self, token: u64) {
        if self.current.load(Ordering::Acquire) == token {
            let pid = self.pid.load(Ordering::Acquire);
            if pid > 0 {
                let _ = sys::kill(pid, libc::SIGINT);
            }
        }
    }

    /// Reseed the interpreter's `random` before its next eval. Deferred rather
    /// than done at once so a restored child answers its host sooner (the
    /// interpreter's first run after a restore re-translates cold code under
    /// TCG); nothing but an eval can observe `random`, and every eval reseeds
    /// first when this is pending.
    pub(crate) fn reseed(&self) {
        self.reseed_pending.store(true, Ordering::Release);
    }

    /// Kill the interpreter (shutdown).
    pub(crate) fn kill(&self) {
        let pid = self.pid.load(Ordering::Acquire);
        if pid > 0 {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
    }
}

/// Budget for the text fields of an `EvalOk`, which travel in the frame header.
const EVAL_TEXT_BUDGET: usize = 48 * 1024;

/// Truncate the longest text fields until the result fits the header budget.
fn fit(r: &mut EvalResult) {
    loop {
        let size = serde_json::to_vec(&*r).map(|v| v.len()).unwrap_or(0);
        if size <= EVAL_TEXT_BUDGET {
            return;
        }
        let fields: [&mut String; 2] = [&mut r.stdout, &mut r.stderr];
        let mut longest: Option<&mut String> = None;
        for f in fields {
            if longest.as_ref().is_none_or(|l| f.len() > l.len()) {
                longest = Some(f);
            }
        }
        let over = size - EVAL_TEXT_BUDGET;
        let cands = [r.result.as_mut(), r.traceback.as_mut(), longest];
        let Some(target) = cands.into_iter().flatten().max_by_key(|s| s.len()) else {
            return;
        };
        let keep = target
            .len()
            .saturating_sub(over + 64)
            .min(target.len() / 2 + 1);
        truncate(target, keep);
    }
}

fn truncate(s: &mut String, keep: usize) {
    let mut cut = keep.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = s.len() - cut;
    s.truncate(cut);
    s.push_str(&format!(
        "\n[... {dropped} bytes truncated by zygote-agent]"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_truncates_big_fields() {
        let mut r = EvalResult {
            result: Some("é".repeat(100_000)),
            error: None,
            traceback: None,
            stdout: "\u{1}".repeat(50_000),
            stderr: "x".repeat(10),
        };
        fit(&mut r);
        assert!(serde_json::to_vec(&r).unwrap().len() <= EVAL_TEXT_BUDGET);
        assert!(r.result.unwrap().contains("truncated"));
    }
}
