//! The audit log: one JSON line per API call, appended to a file the daemon
//! reopens on SIGHUP (so `logrotate` can rename it and signal). Never holds a
//! token: only whether one was presented.
//!
//! A line: `{"time":"2026-12-01T21:40:00.123Z","caller":{"transport":"unix",
//! "uid":0,"pid":1234,"token":false},"method":"POST","path":"/v1/sandboxes",
//! "status":201,"latency_ms":4210.5,"sandbox":"3f2a..."}`; `query`, `sandbox`,
//! `children` and `snapshot` appear when they apply. `latency_ms` runs until the
//! response head is sent (a streamed body may continue after).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::{info, warn};

/// An audit log that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {path}: pass --audit-log with a writable path")]
pub struct AuditError {
    /// The path.
    pub path: String,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// Who made a call.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Caller {
    /// `unix`, `tcp` or `tls`.
    pub(crate) transport: &'static str,
    /// Peer uid (Unix socket, from SO_PEERCRED).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) uid: Option<u32>,
    /// Peer pid (Unix socket, from SO_PEERCRED).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<i32>,
    /// Peer `ip:port` (TCP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) addr: Option<String>,
    /// Whether an `Authorization` header was presented (its value is never logged).
    pub(crate) token: bool,
}

/// One audit line.
#[derive(Debug, Serialize)]
pub(crate) struct Record<'a> {
    pub(crate) time: String,
    pub(crate) caller: &'a Caller,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) query: Option<&'a str>,
    pub(crate) status: u16,
    pub(crate) latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sandbox: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub(crate) children: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot: Option<&'a str>,
}

/// The open audit log.
#[derive(Debug)]
pub(crate) struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    /// A write failed and was reported; report again only after a success.
    failing: AtomicBool,
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    let err = |source| AuditError {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(err)
}

impl AuditLog {
    /// Open (create or append to) the log at `path`.
    pub(crate) fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let file = open_append(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            failing: AtomicBool::new(false),
        })
    }

    /// The path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reopen the path (after a rotation renamed the file). On failure the old
    /// file stays in use.
    pub(crate) fn reopen(&self) {
        match open_append(&self.path) {
            Ok(f) => {
                *self.file.lock().unwrap_or_else(|p| p.into_inner()) = f;
                info!(path = %self.path.display(), "audit log reopened");
            }
            Err(e) => {
                warn!(error = %crate::error::chain(&e), "audit log not reopened; still writing to the previous file")
            }
        }
    }

    /// Append one line (a single `write` on an `O_APPEND` file, so lines of
    /// concurrent calls never interleave).
    pub(crate) fn write(&self, rec: &Record<'_>) {
        let mut line = match serde_json::to_vec(rec) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "cannot encode an audit line");
                return;
            }
        };
        line.push(b'\n');
        let r = self
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&line);
        match r {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    warn!(path = %self.path.display(), error = %e, "cannot write the audit log");
                }
            }
        }
    }
}

/// Now as RFC 3339 UTC with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_millis())
}

fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), by eras of
/// 400 years (146,097 days) starting on March 1st.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_798_761_599, 999), "2026-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn lines_and_reopen() {
        let d = tempdir();
        let p = d.join("sub/audit.log");
        let log = AuditLog::open(&p).unwrap();
        let caller = Caller {
            transport: "tcp",
            uid: None,
            pid: None,
            addr: Some("127.0.0.1:5000".into()),
            token: true,
        };
        let rec = Record {
            time: now_rfc3339(),
            caller: &caller,
            method: "GET",
            path: "/v1/sandboxes/abc",
            query: None,
            status: 404,
            latency_ms: 0.5,
            sandbox: Some("abc"),
            children: &[],
            snapshot: None,
        };
        log.write(&rec);
        std::fs::rename(&p, d.join("audit.log.1")).unwrap();
        log.write(&rec);
        log.reopen();
        log.write(&rec);
        let old = std::fs::read_to_string(d.join("audit.log.1")).unwrap();
        let new = std::fs::read_to_string(&p).unwrap();
        assert_eq!(old.lines().count(), 2);
        assert_eq!(new.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(new.trim()).unwrap();
        assert_eq!(v["caller"]["addr"], "127.0.0.1:5000");
        assert_eq!(v["caller"]["token"], true);
        assert_eq!(v["sandbox"], "abc");
        assert_eq!(v["status"], 404);
        assert!(v.get("children").is_none() && v.get("query").is_none());
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "zygote-audit-{}-{}",
            std::process::id(),
            now_rfc3339()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
