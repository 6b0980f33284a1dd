//! Finding the QEMU binaries and checking their version. Owns the
//! `ZYGOTE_QEMU` / `ZYGOTE_QEMU_IMG` environment variables; runs only
//! `--version`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::QemuError;

/// Environment variable: path of the `qemu-system-x86_64` binary to use.
pub const ENV_QEMU: &str = "ZYGOTE_QEMU";
/// Environment variable: path of the `qemu-img` binary to use.
pub const ENV_QEMU_IMG: &str = "ZYGOTE_QEMU_IMG";
/// The system emulator looked up on `PATH`.
pub const QEMU_SYSTEM: &str = "qemu-system-x86_64";
/// The image tool looked up on `PATH`.
pub const QEMU_IMG: &str = "qemu-img";
/// Oldest QEMU accepted: 9.0 fixed TCG's dirty-page tracking during migration.
pub const MIN_VERSION: (u32, u32, u32) = (9, 0, 0);

const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// A QEMU system emulator and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuBinary {
    /// Absolute path of `qemu-system-x86_64`.
    pub path: PathBuf,
    /// (major, minor, micro).
    pub version: (u32, u32, u32),
}

/// Finds `qemu-system-x86_64` (`$ZYGOTE_QEMU`, else `PATH`), runs `--version` and
/// refuses anything older than 9.0.
pub fn detect_qemu() -> Result<QemuBinary, QemuError> {
    let path = locate(QEMU_SYSTEM, ENV_QEMU)?;
    let output = run_version(&path)?;
    let version = parse_version(&output).ok_or_else(|| QemuError::VersionUnparsable {
        path: path.clone(),
        output: output.lines().next().unwrap_or("").to_string(),
    })?;
    if version < MIN_VERSION {
        return Err(QemuError::TooOld {
            found: version,
            path,
        });
    }
    tracing::debug!(?path, ?version, "found QEMU");
    Ok(QemuBinary { path, version })
}

/// Finds `qemu-img` (`$ZYGOTE_QEMU_IMG`, else `PATH`).
pub fn qemu_img_path() -> Result<PathBuf, QemuError> {
    locate(QEMU_IMG, ENV_QEMU_IMG)
}

/// Finds `qemu-img` and returns its path and version ("qemu-img version 10.0.2 ...").
pub fn detect_qemu_img() -> Result<(PathBuf, (u32, u32, u32)), QemuError> {
    let path = qemu_img_path()?;
    let output = run_version(&path)?;
    let version = parse_version(&output).ok_or_else(|| QemuError::VersionUnparsable {
        path: path.clone(),
        output: output.lines().next().unwrap_or("").to_string(),
    })?;
    Ok((path, version))
}

/// Parses "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2...)" into (10, 0, 2).
/// A missing micro is 0.
pub fn parse_version(output: &str) -> Option<(u32, u32, u32)> {
    let line = output.lines().find(|l| l.contains("version"))?;
    let rest = &line[line.find("version")? + "version".len()..];
    let token = rest.split_whitespace().next()?;
    let mut parts = token.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next()??;
    let micro = parts.next().flatten().unwrap_or(0);
    Some((major, minor, micro))
}

fn locate(binary: &'static str, env: &'static str) -> Result<PathBuf, QemuError> {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        return Err(QemuError::NotFound {
            binary,
            searched: format!("{env}={} is not an executable file", p.display()),
            env,
        });
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(binary);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(QemuError::NotFound {
        binary,
        searched: format!("not on PATH={}", path_var.to_string_lossy()),
        env,
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn run_version(path: &Path) -> Result<String, QemuError> {
    let err = |detail: String| QemuError::VersionCommand {
        path: path.to_path_buf(),
        detail,
    };
    let mut child = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    let start = Instant::now();
    loop {
        match child.try_wait().map_err(|e| err(e.to_string()))? {
            Some(status) => {
                let mut out = String::new();
                if let Some(mut so) = child.stdout.take() {
                    so.read_to_string(&mut out)
                        .map_err(|e| err(e.to_string()))?;
                }
                if !status.success() {
                    return Err(err(format!("exited with {status}")));
                }
                return Ok(out);
            }
            None if start.elapsed() > VERSION_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!("no answer within {VERSION_TIMEOUT:?}")));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_and_plain_versions() {
        assert_eq!(
            parse_version(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n\
                 Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers"
            ),
            Some((10, 0, 2))
        );
        assert_eq!(
            parse_version("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)"),
            Some((7, 2, 19))
        );
        assert_eq!(parse_version("QEMU emulator version 9.0"), Some((9, 0, 0)));
        assert_eq!(
            parse_version("QEMU emulator version 8.2.50 (v8.2.0-1234-gabc)"),
            Some((8, 2, 50))
        );
        assert_eq!(parse_version("not qemu"), None);
        assert_eq!(parse_version("version x.y"), None);
    }

    #[test]
    fn too_old_message_names_version_and_fix() {
        let e = QemuError::TooOld {
            found: (7, 2, 19),
            path: "/usr/bin/qemu-system-x86_64".into(),
        };
        assert_eq!(
            e.to_string(),
            "QEMU 7.2 found; zygote needs >= 9.0 (older QEMU loses guest writes during live \
             migration under TCG): install qemu-system-x86 from bookworm-backports \
             (scripts/install-deps.sh)"
        );
        assert!((7, 2, 19) < MIN_VERSION && (9, 0, 0) >= MIN_VERSION);
    }
}
