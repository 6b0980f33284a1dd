//! Host helpers: running tools, reading the apt sources, small filesystem chores.
//!
//! Owns every `std::process::Command` the builder runs and the lookup of the
//! Debian mirror from the machine's apt configuration (no mirror host name is
//! ever compiled in). It knows nothing about recipes or the image layout.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::ImageError;

/// Bytes of a log file's tail put into error messages.
const LOG_TAIL_BYTES: u64 = 3000;

/// Fails with install advice if `tool` is not on `PATH` (or in /usr/sbin, /sbin).
pub(crate) fn require_tool(
    tool: &'static str,
    package: &'static str,
) -> Result<PathBuf, ImageError> {
    find_tool(tool).ok_or(ImageError::ToolMissing { tool, package })
}

pub(crate) fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Renders a command for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion, returning stdout; on failure the error has the
/// tail of stderr (and stdout).
pub(crate) fn run(cmd: &mut Command) -> Result<Vec<u8>, ImageError> {
    let command = describe(cmd);
    tracing::debug!(%command, "run");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(ImageError::io("run", cmd.get_program()))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    Err(ImageError::CommandFailed {
        command,
        status: out.status.to_string(),
        log_tail: tail_str(&text, LOG_TAIL_BYTES as usize),
    })
}

/// Runs a command with stdout and stderr appended to `log`; returns whether it
/// succeeded (the caller reads the log to explain a failure).
pub(crate) fn run_logged(cmd: &mut Command, log: &Path) -> Result<bool, ImageError> {
    tracing::debug!(command = %describe(cmd), log = %log.display(), "run (logged)");
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(ImageError::io("create log", log))?;
    let f2 = f.try_clone().map_err(ImageError::io("dup log", log))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .status()
        .map_err(ImageError::io("run", cmd.get_program()))?;
    Ok(status.success())
}

/// The last `LOG_TAIL_BYTES` of a log file (empty if unreadable).
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let s = String::from_utf8_lossy(&buf);
    // Drop a partial first line.
    match s.find('\n') {
        Some(i) if len > LOG_TAIL_BYTES => s[i + 1..].to_string(),
        _ => s.into_owned(),
    }
}

fn tail_str(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// The first mirror URI that serves `release` (a `Suites:` entry equal to it, or
/// a one-line `deb URI release ...`), read from /etc/apt/sources.list.d/*.sources
/// and *.list and /etc/apt/sources.list.
pub(crate) fn mirror_uri(release: &str) -> Result<String, ImageError> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        v.sort();
        files.extend(v);
    }
    files.push(PathBuf::from("/etc/apt/sources.list"));
    for f in &files {
        let Ok(text) = fs::read_to_string(f) else {
            continue;
        };
        let found = match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => mirror_from_deb822(&text, release),
            Some("list") => mirror_from_one_line(&text, release),
            _ => None,
        };
        if let Some(uri) = found {
            tracing::debug!(%uri, file = %f.display(), "debian mirror");
            return Ok(uri);
        }
    }
    Err(ImageError::NoMirror {
        release: release.to_string(),
        searched: "/etc/apt/sources.list.d/*.sources, *.list, /etc/apt/sources.list".into(),
    })
}

/// Parses deb822 stanzas; returns the first URI of a `Types: deb` stanza whose
/// `Suites` contains `release`.
pub(crate) fn mirror_from_deb822(text: &str, release: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let mut types = "";
        let mut uris = "";
        let mut suites = "";
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = v.trim(),
                "uris" => uris = v.trim(),
                "suites" => suites = v.trim(),
                "enabled" => enabled = v.trim() != "no",
                _ => {}
            }
        }
        if enabled
            && types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == release)
        {
            if let Some(u) = uris.split_whitespace().next() {
                return Some(u.to_string());
            }
        }
    }
    None
}

/// Parses one-line `deb [opts] URI suite comp...` sources.
pub(crate) fn mirror_from_one_line(text: &str, release: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim_start();
        if rest.starts_with('[') {
            rest = rest
                .split_once(']')
                .map(|(_, r)| r.trim_start())
                .unwrap_or("");
        }
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            if suite == release {
                return Some(uri.to_string());
            }
        }
    }
    None
}

/// Recursively removes `path` if it exists.
pub(crate) fn remove_all(path: &Path) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(ImageError::io("remove", path)),
        Ok(_) => fs::remove_file(path).map_err(ImageError::io("remove", path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io("stat", path)(e)),
    }
}

/// Creates `path` and its parents.
pub(crate) fn mkdir_p(path: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(path).map_err(ImageError::io("create directory", path))
}

/// Total apparent size of a tree in bytes, each file rounded up to 4 KiB, plus
/// a 256-byte-per-inode allowance (what ext4 will need to store it).
pub(crate) fn tree_bytes(root: &Path) -> Result<u64, ImageError> {
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(ImageError::io("read directory", &dir))?;
        for e in rd {
            let e = e.map_err(ImageError::io("read directory", &dir))?;
            let m = e
                .path()
                .symlink_metadata()
                .map_err(ImageError::io("stat", e.path()))?;
            total += 256 + m.len().div_ceil(4096) * 4096;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(total)
}

/// Writes `bytes` to `path` atomically (temp file in the same dir + rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(ImageError::io("write", &tmp))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(ImageError::io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(ImageError::io("rename into place", path))
}

/// Whether the current process is root.
pub(crate) fn is_root() -> bool {
    // /proc/self/status "Uid:" line: real, effective, ...
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_picks_release_stanza() {
        let text = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_from_deb822(text, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(mirror_from_deb822(text, "trixie"), None);
        let disabled = "Enabled: no\nTypes: deb\nURIs: http://x/\nSuites: bookworm\n";
        assert_eq!(mirror_from_deb822(disabled, "bookworm"), None);
    }

    #[test]
    fn one_line_sources() {
        let text = "# c\ndeb-src http://a/ bookworm main\ndeb [arch=amd64 signed-by=/k] http://b/debian bookworm main\n";
        assert_eq!(
            mirror_from_one_line(text, "bookworm").as_deref(),
            Some("http://b/debian")
        );
    }

    #[test]
    fn tail_keeps_end() {
        assert_eq!(tail_str("abcdef", 3), "def");
        assert_eq!(tail_str("ab", 3), "ab");
    }
}
