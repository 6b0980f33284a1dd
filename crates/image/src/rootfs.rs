//! Image root filesystem: the cached base tree plus overlays, packed as raw ext4.
//!
//! Owns the staging tree (a hard-linked copy of the base tree: every overlay
//! unlinks before writing so the cache is never modified) and the one
//! `mkfs.ext4 -d` call. No loop mounts, ever.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::ImageError;
use crate::host;
use crate::recipe::Recipe;

/// Where the agent lives in the guest; `/init` execs it after `switch_root`.
pub const AGENT_PATH: &str = "/usr/sbin/zygote-agent";

/// The filesystem label of the root disk.
pub const ROOT_LABEL: &str = "zygote-root";

/// Free space added to the content size when the recipe gives no `disk_mib`.
const HEADROOM_MIB: u64 = 512;

/// Mount points the init and the agent expect to exist.
const MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "tmp", "run"];

/// Builds the staging tree at `tree` from `base` plus the image's overlays.
pub(crate) fn assemble(
    base: &Path,
    tree: &Path,
    recipe: &Recipe,
    agent_bin: &Path,
    guest_meta: &[u8],
) -> Result<(), ImageError> {
    host::remove_all(tree)?;
    copy_tree(base, tree)?;

    put_file(
        tree,
        AGENT_PATH,
        &CopyFrom::Path(agent_bin.to_path_buf()),
        0o755,
    )?;
    // The agent writes the hostname to tmpfs at boot and on every restore (an
    // ext4 write there cost a restored child ~70 ms under TCG).
    put_symlink(tree, "/etc/hostname", HOSTNAME_TARGET)?;
    put_file(
        tree,
        "/etc/hosts",
        &CopyFrom::Bytes(
            b"127.0.0.1\tlocalhost\n127.0.1.1\tzygote\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                .to_vec(),
        ),
        0o644,
    )?;
    // The agent fills it in when the sandbox gets a network.
    put_file(
        tree,
        "/etc/resolv.conf",
        &CopyFrom::Bytes(b"# written by the zygote agent when networking is enabled\n".to_vec()),
        0o644,
    )?;
    put_file(
        tree,
        "/etc/zygote/image.json",
        &CopyFrom::Bytes(guest_meta.to_vec()),
        0o644,
    )?;
    for m in MOUNT_POINTS {
        let p = tree.join(m);
        if !p.is_dir() {
            host::remove_all(&p)?;
            host::mkdir_p(&p)?;
        }
    }
    set_mode(&tree.join("tmp"), 0o1777)?;
    for f in &recipe.files {
        let mode = match f.mode {
            Some(m) => m,
            None => {
                let exec = fs::metadata(&f.src)
                    .map(|m| m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false);
                if exec {
                    0o755
                } else {
                    0o644
                }
            }
        };
        put_file(tree, &f.dst, &CopyFrom::Path(f.src.clone()), mode)?;
    }
    Ok(())
}

enum CopyFrom {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// Writes a fresh file at guest path `dst` (unlinking whatever was there, which
/// may be a hard link into the cache or a symlink pointing anywhere).
fn put_file(tree: &Path, dst: &str, from: &CopyFrom, mode: u32) -> Result<(), ImageError> {
    let rel = Path::new(dst.trim_start_matches('/'));
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(ImageError::io("write", tree.join(rel))(
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ));
    };
    let path = ensure_real_dirs(tree, parent)?.join(name);
    host::remove_all(&path)?;
    match from {
        CopyFrom::Path(src) => {
            fs::copy(src, &path).map_err(ImageError::io("copy into the image", src))?;
        }
        CopyFrom::Bytes(b) => fs::write(&path, b).map_err(ImageError::io("write", &path))?,
    }
    set_mode(&path, mode)
}

/// Where the image's `/etc/hostname` points (the agent writes it).
const HOSTNAME_TARGET: &str = "/run/zygote/hostname";

/// A symlink at guest path `dst` to `target` (a guest path, not resolved here).
fn put_symlink(tree: &Path, dst: &str, target: &str) -> Result<(), ImageError> {
    let rel = Path::new(dst.trim_start_matches('/'));
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(ImageError::io("link", tree.join(rel))(
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ));
    };
    let path = ensure_real_dirs(tree, parent)?.join(name);
    host::remove_all(&path)?;
    std::os::unix::fs::symlink(target, &path).map_err(ImageError::io("link", &path))
}

/// Creates guest directory `rel` under `tree`, resolving symlinks inside the
/// tree (never through the host's root); returns the real host path.
fn ensure_real_dirs(tree: &Path, rel: &Path) -> Result<PathBuf, ImageError> {
    let mut cur = tree.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                // e.g. /bin -> usr/bin on merged-usr: resolve inside the tree.
                let target = fs::read_link(&cur).map_err(ImageError::io("read link", &cur))?;
                let resolved = if target.is_absolute() {
                    tree.join(target.strip_prefix("/").unwrap_or(&target))
                } else {
                    cur.parent().unwrap_or(tree).join(target)
                };
                if !resolved.is_dir() {
                    host::remove_all(&cur)?;
                    host::mkdir_p(&cur)?;
                } else {
                    cur = resolved;
                }
            }
            Ok(_) => {
                host::remove_all(&cur)?;
                host::mkdir_p(&cur)?;
            }
            Err(_) => host::mkdir_p(&cur)?,
        }
    }
    Ok(cur)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ImageError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(ImageError::io("chmod", path))
}

/// `cp -al` (hard links, fast, same filesystem) with a `cp -a` fallback.
fn copy_tree(base: &Path, tree: &Path) -> Result<(), ImageError> {
    if let Some(parent) = tree.parent() {
        host::mkdir_p(parent)?;
    }
    let linked = Command::new("cp")
        .arg("-al")
        .arg(base)
        .arg(tree)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if linked {
        return Ok(());
    }
    tracing::debug!("hard-link copy failed; copying the base tree");
    host::remove_all(tree)?;
    host::run(Command::new("cp").arg("-a").arg(base).arg(tree)).map(|_| ())
}

/// The ext4 size in MiB for a tree of `content_bytes`.
pub(crate) fn disk_size_mib(recipe: &Recipe, content_bytes: u64) -> Result<u64, ImageError> {
    let content_mib = content_bytes.div_ceil(1 << 20);
    // ext4 metadata (inode tables, journal) takes roughly 5% + 64 MiB at these sizes.
    let minimum_mib = content_mib + content_mib / 20 + 64;
    match recipe.disk_mib {
        Some(d) if d < minimum_mib => Err(ImageError::DiskTooSmall {
            recipe: recipe.source.clone(),
            disk_mib: d,
            content_mib,
            minimum_mib,
        }),
        Some(d) => Ok(d),
        None => Ok(minimum_mib + HEADROOM_MIB),
    }
}

/// `mkfs.ext4 -q -F -L zygote-root -m 0 -d TREE OUT SIZE`.
pub(crate) fn mkfs(tree: &Path, out: &Path, size_mib: u64) -> Result<(), ImageError> {
    let mkfs = host::require_tool("mkfs.ext4", "e2fsprogs")?;
    host::remove_all(out)?;
    host::run(
        Command::new(mkfs)
            .args(["-q", "-F", "-L", ROOT_LABEL, "-m", "0", "-d"])
            .arg(tree)
            .arg(out)
            .arg(format!("{size_mib}M")),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_never_write_through_hard_links() {
        let d = tempfile::tempdir().expect("tempdir");
        let base = d.path().join("base");
        fs::create_dir_all(base.join("etc")).expect("mkdir");
        fs::create_dir_all(base.join("usr/bin")).expect("mkdir");
        std::os::unix::fs::symlink("usr/bin", base.join("bin")).expect("symlink");
        fs::write(base.join("etc/hostname"), "host\n").expect("write");
        let extra = d.path().join("extra.sh");
        fs::write(&extra, "#!/bin/sh\n").expect("write");
        fs::set_permissions(&extra, fs::Permissions::from_mode(0o755)).expect("chmod");
        let recipe = crate::recipe::parse_recipe(
            &format!(
                "name = \"t\"\nrelease = \"bookworm\"\n[[files]]\nsrc = \"{}\"\ndst = \"/bin/extra\"\n",
                extra.display()
            ),
            Path::new("t.toml"),
            d.path(),
        )
        .expect("recipe");
        let tree = d.path().join("tree");
        assemble(&base, &tree, &recipe, &extra, b"{}").expect("assemble");
        assert_eq!(
            fs::read_to_string(base.join("etc/hostname")).expect("read"),
            "host\n"
        );
        assert_eq!(
            fs::read_link(tree.join("etc/hostname")).expect("readlink"),
            Path::new(HOSTNAME_TARGET)
        );
        assert!(tree.join("usr/sbin/zygote-agent").is_file());
        assert!(
            tree.join("usr/bin/extra").is_file(),
            "followed /bin -> usr/bin"
        );
        assert!(!base.join("usr/bin/extra").exists());
        let mode = fs::metadata(tree.join("usr/bin/extra"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        for m in MOUNT_POINTS {
            assert!(tree.join(m).is_dir(), "{m}");
        }
    }

    #[test]
    fn disk_size() {
        let r = |extra: &str| {
            crate::recipe::parse_recipe(
                &format!("name = \"t\"\nrelease = \"bookworm\"\n{extra}"),
                Path::new("t.toml"),
                Path::new("/"),
            )
            .expect("recipe")
        };
        let auto = disk_size_mib(&r(""), 200 << 20).expect("auto");
        assert!(auto >= 200 + HEADROOM_MIB, "{auto}");
        assert_eq!(
            disk_size_mib(&r("disk_mib = 2048\n"), 200 << 20).expect("given"),
            2048
        );
        let err = disk_size_mib(&r("disk_mib = 100\n"), 200 << 20).unwrap_err();
        assert!(err.to_string().contains("disk_mib = 100"), "{err}");
    }
}
