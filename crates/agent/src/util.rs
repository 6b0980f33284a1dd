//! Small helpers shared by every module: poison-tolerant locking, error
//! constructors and the sane base environment for spawned processes.

use std::sync::{Mutex, MutexGuard};

use zygote_proto::agent::{AgentError, ErrorKind};

/// Lock a mutex, recovering the data if a panicking thread poisoned it: the agent
/// must keep serving even if one request thread died.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An [`AgentError`] of `kind`.
pub(crate) fn err(kind: ErrorKind, message: impl Into<String>) -> AgentError {
    AgentError {
        kind,
        message: message.into(),
    }
}

/// A `BadRequest` error.
pub(crate) fn bad(message: impl Into<String>) -> AgentError {
    err(ErrorKind::BadRequest, message)
}

/// The environment every spawned process starts from, before request overrides.
pub(crate) const BASE_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
];

/// Write one log line to stderr (the console as PID 1), never panicking.
pub(crate) fn log_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "zygote-agent: {args}");
}

/// Log a terse line with the `zygote-agent:` prefix.
macro_rules! log {
    ($($arg:tt)*) => { $crate::util::log_line(format_args!($($arg)*)) };
}
pub(crate) use log;
