//! The base root filesystem: `debootstrap --variant=minbase`, trimmed, cached.
//!
//! Owns `<home>/cache/rootfs/` (one trimmed tree per release + package set +
//! trim version) and `<home>/cache/debootstrap/` (debootstrap's .deb cache). A
//! cached tree is never modified after it is renamed into place; image assembly
//! (see `rootfs`) copies or hard-links from it and must unlink before writing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::error::ImageError;
use crate::host;
use crate::recipe::Recipe;
use crate::Progress;

/// Bump when the trim list or debootstrap arguments change.
pub(crate) const TRIM_VERSION: u32 = 1;

/// Directories whose contents are removed from the base tree.
const TRIM_CONTENTS: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/log",
];

/// The cache key of the base tree for a recipe.
pub(crate) fn key(recipe: &Recipe) -> String {
    let mut pkgs = recipe.packages.clone();
    pkgs.sort();
    let mut h = Sha256::new();
    h.update(format!(
        "zygote-rootfs\0trim={TRIM_VERSION}\0release={}\0arch={}\0packages={}\0",
        recipe.release,
        std::env::consts::ARCH,
        pkgs.join(",")
    ));
    hex::encode(h.finalize())[..24].to_string()
}

/// Returns the cached trimmed tree for `recipe`, running debootstrap if needed.
pub(crate) fn ensure(
    home: &Path,
    recipe: &Recipe,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, ImageError> {
    let root = home.join("cache/rootfs");
    let key = key(recipe);
    let dir = root.join(&key);
    let tree = dir.join("tree");
    if dir.join(".complete").is_file() {
        tracing::debug!(%key, "base rootfs cached");
        return Ok(tree);
    }
    host::mkdir_p(&root)?;
    // Serialise concurrent builders of the same tree.
    let lock_path = root.join(format!("{key}.lock"));
    let lock = fs::File::create(&lock_path).map_err(ImageError::io("create lock", &lock_path))?;
    lock.lock().map_err(ImageError::io("lock", &lock_path))?;
    if dir.join(".complete").is_file() {
        return Ok(tree);
    }

    let debootstrap = host::require_tool("debootstrap", "debootstrap")?;
    let mirror = host::mirror_uri(&recipe.release)?;
    let cache_dir = home.join("cache/debootstrap");
    host::mkdir_p(&cache_dir)?;
    let tmp = root.join(format!(".tmp-{key}"));
    host::remove_all(&tmp)?;
    let tmp_tree = tmp.join("tree");
    host::mkdir_p(&tmp_tree)?;
    let log = tmp.join("debootstrap.log");

    let detail = if recipe.packages.is_empty() {
        format!("debootstrap {} (minbase)", recipe.release)
    } else {
        format!(
            "debootstrap {} (minbase + {})",
            recipe.release,
            recipe.packages.join(" ")
        )
    };
    progress(Progress::Step {
        name: "rootfs".into(),
        detail: format!("{detail}; log: {}", log.display()),
    });
    let started = Instant::now();
    let mut cmd = Command::new(debootstrap);
    cmd.arg("--variant=minbase")
        .arg(format!("--cache-dir={}", cache_dir.display()));
    if !recipe.packages.is_empty() {
        cmd.arg(format!("--include={}", recipe.packages.join(",")));
    }
    cmd.arg(&recipe.release).arg(&tmp_tree).arg(&mirror);
    let ok = host::run_logged(&mut cmd, &log)?;
    if !ok {
        let tail = host::log_tail(&log);
        // Free the partial tree; keep the log for the user.
        let _ = fs::remove_dir_all(&tmp_tree);
        if let Some(missing) = missing_debs(&tail) {
            return Err(ImageError::UnknownPackage {
                packages: missing,
                release: recipe.release.clone(),
                recipe: recipe.source.clone(),
            });
        }
        return Err(ImageError::Debootstrap {
            release: recipe.release.clone(),
            log,
            log_tail: tail,
        });
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(secs, release = %recipe.release, "debootstrap done");

    trim(&tmp_tree)?;
    fs::write(tmp.join(".complete"), detail.as_bytes()).map_err(ImageError::io("write", &tmp))?;
    host::remove_all(&dir)?;
    fs::rename(&tmp, &dir).map_err(ImageError::io("rename into place", &dir))?;
    progress(Progress::Done {
        step: "rootfs".into(),
        secs,
    });
    Ok(tree)
}

/// The packages named in debootstrap's "Couldn't find these debs: X Y".
pub(crate) fn missing_debs(log: &str) -> Option<Vec<String>> {
    const MARK: &str = "Couldn't find these debs:";
    let line = log.lines().rev().find(|l| l.contains(MARK))?;
    let rest = line.split_once(MARK)?.1;
    let pkgs: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
    (!pkgs.is_empty()).then_some(pkgs)
}

/// Removes documentation, locales, apt lists and caches, and logs.
fn trim(tree: &Path) -> Result<(), ImageError> {
    for rel in TRIM_CONTENTS {
        empty_dir(&tree.join(rel), &[])?;
    }
    // glibc reads locale.alias; the message catalogues are not needed.
    empty_dir(&tree.join("usr/share/locale"), &["locale.alias"])?;
    Ok(())
}

/// Removes everything inside `dir` except the names in `keep`.
fn empty_dir(dir: &Path, keep: &[&str]) -> Result<(), ImageError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io("read directory", dir)(e)),
    };
    for e in rd.flatten() {
        if keep.iter().any(|k| e.file_name() == **k) {
            continue;
        }
        host::remove_all(&e.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::parse_recipe;

    #[test]
    fn parses_missing_debs() {
        let log = "I: Retrieving Packages\nE: Couldn't find these debs: pyhton3 foo\n";
        assert_eq!(
            missing_debs(log),
            Some(vec!["pyhton3".into(), "foo".into()])
        );
        assert_eq!(missing_debs("E: something else"), None);
    }

    #[test]
    fn key_ignores_package_order_but_not_release() {
        let r = |t: &str| parse_recipe(t, Path::new("x.toml"), Path::new("/")).expect("parse");
        let a = r("name = \"a\"\nrelease = \"bookworm\"\npackages = [\"bb\", \"a2\"]\n");
        let b = r("name = \"other\"\nrelease = \"bookworm\"\npackages = [\"a2\", \"bb\"]\nwarmup = \"x\"\n");
        let c = r("name = \"a\"\nrelease = \"trixie\"\npackages = [\"bb\", \"a2\"]\n");
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
    }

    #[test]
    fn trim_keeps_locale_alias() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = d.path();
        for p in [
            "usr/share/doc/x",
            "usr/share/locale/de",
            "var/log/apt",
            "etc",
        ] {
            fs::create_dir_all(t.join(p)).expect("mkdir");
        }
        fs::write(t.join("usr/share/locale/locale.alias"), "a").expect("write");
        fs::write(t.join("var/log/apt/h.log"), "a").expect("write");
        trim(t).expect("trim");
        assert!(t.join("usr/share/doc").is_dir());
        assert!(!t.join("usr/share/doc/x").exists());
        assert!(!t.join("usr/share/locale/de").exists());
        assert!(t.join("usr/share/locale/locale.alias").is_file());
        assert!(!t.join("var/log/apt").exists());
        assert!(t.join("etc").is_dir());
    }
}
