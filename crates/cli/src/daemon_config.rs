//! `zygote daemon --config FILE`: the daemon's quotas in a TOML file, so a
//! service keeps them in one place. A flag given on the command line wins
//! over the file; an unknown key is an error naming it.
//!
//! ```toml
//! [limits]
//! max_sandboxes = 64
//! max_guest_memory_mib = 65536
//! max_snapshots = 100
//! max_snapshot_gib = 200
//! min_free_disk_gib = 20
//! exec_timeout_secs = 3600   # 0: none
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

/// How long a blocking exec that names no timeout may run, by default.
pub(crate) const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 3600;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    limits: LimitsFile,
}

/// The `[limits]` table; every key optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    pub(crate) max_sandboxes: Option<usize>,
    pub(crate) max_guest_memory_mib: Option<u64>,
    pub(crate) max_snapshots: Option<usize>,
    pub(crate) max_snapshot_gib: Option<f64>,
    pub(crate) min_free_disk_gib: Option<f64>,
    pub(crate) exec_timeout_secs: Option<u64>,
}

/// Reads the `[limits]` of `path`.
pub(crate) fn load(path: &Path) -> Result<LimitsFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    parse(&text).with_context(|| format!("config file {}", path.display()))
}

fn parse(text: &str) -> Result<LimitsFile> {
    let f: ConfigFile = toml::from_str(text).map_err(|e| {
        anyhow::anyhow!("{}: keys are [limits] max_sandboxes, max_guest_memory_mib, max_snapshots, max_snapshot_gib, min_free_disk_gib, exec_timeout_secs", e.message())
    })?;
    for (key, v) in [
        ("max_snapshot_gib", f.limits.max_snapshot_gib),
        ("min_free_disk_gib", f.limits.min_free_disk_gib),
    ] {
        if v.is_some_and(|g| !g.is_finite() || g < 0.0) {
            anyhow::bail!("[limits] {key} must be a size in GiB of 0 or more");
        }
    }
    Ok(f.limits)
}

/// The engine's limits: each flag over the file; the exec timeout defaults
/// to [`DEFAULT_EXEC_TIMEOUT_SECS`], 0 meaning none.
pub(crate) fn limits(flags: &LimitsFile, file: &LimitsFile) -> zygote_engine::Limits {
    let secs = flags
        .exec_timeout_secs
        .or(file.exec_timeout_secs)
        .unwrap_or(DEFAULT_EXEC_TIMEOUT_SECS);
    zygote_engine::Limits {
        max_sandboxes: flags.max_sandboxes.or(file.max_sandboxes),
        max_guest_memory_mib: flags.max_guest_memory_mib.or(file.max_guest_memory_mib),
        max_snapshots: flags.max_snapshots.or(file.max_snapshots),
        max_snapshot_gib: flags.max_snapshot_gib.or(file.max_snapshot_gib),
        min_free_disk_gib: flags.min_free_disk_gib.or(file.min_free_disk_gib),
        exec_timeout: (secs > 0).then(|| Duration::from_secs(secs)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_bad_keys_are_named() {
        let file = parse("[limits]\nmax_sandboxes = 4\nmax_snapshots = 9\nexec_timeout_secs = 0\n")
            .unwrap();
        let flags = LimitsFile {
            max_sandboxes: Some(2),
            ..Default::default()
        };
        let l = limits(&flags, &file);
        assert_eq!(l.max_sandboxes, Some(2));
        assert_eq!(l.max_snapshots, Some(9));
        assert_eq!(l.exec_timeout, None);
        let l = limits(&LimitsFile::default(), &LimitsFile::default());
        assert_eq!(
            l.exec_timeout,
            Some(Duration::from_secs(DEFAULT_EXEC_TIMEOUT_SECS))
        );
        let e = parse("[limits]\nmax_sandbox = 4\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_sandbox"), "{e}");
        let e = parse("[limits]\nmin_free_disk_gib = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_free_disk_gib"), "{e}");
    }
}
