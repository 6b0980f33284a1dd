//! Volume images on the host: `mkfs.ext4`, and a host directory exported as
//! an ext4 copy (sized from the tree, refused past a cap).

use std::path::Path;

use super::{io, MAX_EXPORT_BYTES};
use crate::error::{EngineError, Result};

/// `mkfs.ext4` on `img` (labelled `label`), filled from `from` when given.
pub(super) async fn mkfs(img: &Path, label: &str, from: Option<&Path>) -> Result<()> {
    let mut cmd = tokio::process::Command::new("mkfs.ext4");
    cmd.args([
        "-q",
        "-F",
        "-m",
        "0",
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
    ])
    .arg("-L")
    .arg(&label[..label.len().min(16)]);
    if let Some(d) = from {
        cmd.arg("-d").arg(d);
    }
    let out = cmd
        .arg(img)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(io("cannot run mkfs.ext4 (install e2fsprogs)".into()))?;
    if !out.status.success() {
        return Err(EngineError::Io {
            what: format!(
                "mkfs.ext4 of {} failed: {}",
                img.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            source: std::io::Error::other("mkfs.ext4 failed"),
        });
    }
    Ok(())
}

/// Bytes and inodes under `dir` (not following links), refusing past the cap.
fn tree_size(dir: &Path) -> Result<(u64, u64)> {
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(io(format!("cannot read {}", d.display())))?;
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            inodes += 1;
            bytes += m.len().div_ceil(4096) * 4096;
            if m.is_dir() {
                stack.push(e.path());
            }
            if bytes > MAX_EXPORT_BYTES {
                return Err(EngineError::BadRequest(format!(
                    "host directory {} holds more than {} GiB: export a smaller one or use a named volume",
                    dir.display(),
                    MAX_EXPORT_BYTES >> 30
                )));
            }
        }
    }
    Ok((bytes, inodes))
}

/// An ext4 image `img` holding a copy of `dir`.
pub(super) async fn export(dir: &Path, img: &Path) -> Result<()> {
    let d = dir.to_path_buf();
    let (bytes, inodes) = tokio::task::spawn_blocking(move || tree_size(&d))
        .await
        .map_err(|e| EngineError::Conflict(format!("sizing {} failed: {e}", dir.display())))??;
    // Room for ext4's own structures: inode tables, the journal, slack.
    let size = (bytes + inodes * 512) * 5 / 4 + (32 << 20);
    let f = std::fs::File::create(img).map_err(io(format!("cannot create {}", img.display())))?;
    f.set_len(size.div_ceil(4096) * 4096)
        .map_err(io(format!("cannot size {}", img.display())))?;
    drop(f);
    mkfs(img, "export", Some(dir)).await
}
