//! The guest kernel: Debian's cloud kernel, resolved, downloaded and unpacked.
//!
//! Owns `<home>/cache/kernel/`: the resolution of the `linux-image-cloud-amd64`
//! metapackage to a concrete package (memoised against the apt lists so a cached
//! rebuild runs no `apt-cache`), and one unpacked kernel per package version
//! (`vmlinuz` plus its `lib/modules/<release>/` tree). It does not choose modules
//! (see `modules`) and never writes outside its cache directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ImageError;
use crate::host;

/// The metapackage that always depends on the current cloud kernel.
const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// Bump when the layout of an unpacked kernel directory changes.
const KERNEL_CACHE_VERSION: u32 = 1;

/// A resolved kernel package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KernelPackage {
    /// e.g. `linux-image-6.1.0-57-cloud-amd64`.
    pub(crate) package: String,
    /// Debian version, e.g. `6.1.192-3`.
    pub(crate) version: String,
    /// `uname -r`, e.g. `6.1.0-57-cloud-amd64`.
    pub(crate) release: String,
}

impl KernelPackage {
    /// A stable identifier covering package and version (also the cache dir name).
    pub(crate) fn id(&self) -> String {
        format!("{}_{}", self.release, self.version)
    }
}

/// An unpacked kernel in the cache.
#[derive(Debug, Clone)]
pub(crate) struct UnpackedKernel {
    pub(crate) vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the package.
    pub(crate) modules_dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Memo {
    fingerprint: String,
    kernel: KernelPackage,
}

/// Resolves the cloud metapackage to a concrete kernel package. Reuses the last
/// answer while the apt lists and preferences are unchanged; otherwise asks
/// `apt-cache` (after `apt-get update` if the package is unknown).
pub(crate) fn resolve(home: &Path) -> Result<KernelPackage, ImageError> {
    let dir = home.join("cache/kernel");
    let memo_path = dir.join("resolved.json");
    let fingerprint = apt_fingerprint();
    if let Ok(text) = fs::read_to_string(&memo_path) {
        if let Ok(memo) = serde_json::from_str::<Memo>(&text) {
            if memo.fingerprint == fingerprint {
                return Ok(memo.kernel);
            }
        }
    }
    let kernel = match query_apt() {
        Ok(k) => k,
        Err(first) => {
            tracing::info!(error = %first, "kernel lookup failed; running apt-get update");
            host::require_tool("apt-get", "apt")?;
            host::run(Command::new("apt-get").args(["update", "-q"]))?;
            query_apt()?
        }
    };
    tracing::info!(package = %kernel.package, version = %kernel.version, "resolved guest kernel");
    host::mkdir_p(&dir)?;
    let memo = Memo {
        fingerprint: apt_fingerprint(),
        kernel: kernel.clone(),
    };
    let json = serde_json::to_vec_pretty(&memo).map_err(|e| ImageError::Kernel {
        message: format!("cannot encode kernel memo: {e}"),
    })?;
    host::write_atomic(&memo_path, &json)?;
    Ok(kernel)
}

fn query_apt() -> Result<KernelPackage, ImageError> {
    host::require_tool("apt-cache", "apt")?;
    let out =
        host::run(Command::new("apt-cache").args(["show", "--no-all-versions", META_PACKAGE]))?;
    let text = String::from_utf8_lossy(&out);
    let (package, version) = parse_meta_depends(&text).ok_or_else(|| ImageError::Kernel {
        message: format!(
            "`apt-cache show {META_PACKAGE}` has no `Depends: linux-image-...` line: \
             is a Debian main source configured? run `apt-get update`"
        ),
    })?;
    let version = match version {
        Some(v) => v,
        None => {
            let out =
                host::run(Command::new("apt-cache").args(["show", "--no-all-versions", &package]))?;
            field(&String::from_utf8_lossy(&out), "Version").ok_or_else(|| ImageError::Kernel {
                message: format!("`apt-cache show {package}` has no Version: run `apt-get update`"),
            })?
        }
    };
    let release = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_string();
    Ok(KernelPackage {
        package,
        version,
        release,
    })
}

/// From `apt-cache show` of the metapackage: the `linux-image-*` dependency and
/// its pinned version if the dependency has `(= V)`.
pub(crate) fn parse_meta_depends(text: &str) -> Option<(String, Option<String>)> {
    let deps = field(text, "Depends")?;
    for alt in deps.split([',', '|']) {
        let alt = alt.trim();
        let name = alt.split_whitespace().next()?;
        if name.starts_with("linux-image-") && name != META_PACKAGE {
            let version = alt
                .split_once("(=")
                .and_then(|(_, v)| v.split_once(')'))
                .map(|(v, _)| v.trim().to_string());
            return Some((name.to_string(), version));
        }
    }
    None
}

fn field(text: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
}

/// A cheap fingerprint of everything that decides apt's answer: the lists'
/// names, sizes and mtimes, and the sources and preferences files.
fn apt_fingerprint() -> String {
    let mut h = Sha256::new();
    for dir in [
        "/var/lib/apt/lists",
        "/etc/apt/sources.list.d",
        "/etc/apt/preferences.d",
    ] {
        let mut entries: Vec<(String, u64, i64)> = Vec::new();
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if let Ok(m) = e.metadata() {
                    use std::os::unix::fs::MetadataExt;
                    entries.push((
                        e.file_name().to_string_lossy().into_owned(),
                        m.len(),
                        m.mtime(),
                    ));
                }
            }
        }
        entries.sort();
        h.update(format!("{dir}:{entries:?}\n"));
    }
    for f in ["/etc/apt/sources.list", "/etc/apt/preferences"] {
        h.update(fs::read(f).unwrap_or_default());
    }
    hex::encode(h.finalize())
}

/// Makes sure `kernel` is unpacked under `<home>/cache/kernel/<id>/`, downloading
/// it with `apt-get download` if needed.
pub(crate) fn ensure(home: &Path, kernel: &KernelPackage) -> Result<UnpackedKernel, ImageError> {
    let root = home.join("cache/kernel");
    let dir = root.join(kernel.id());
    let done = dir.join(format!(".complete-v{KERNEL_CACHE_VERSION}"));
    let unpacked = UnpackedKernel {
        vmlinuz: dir.join("vmlinuz"),
        modules_dir: dir.join("modules").join(&kernel.release),
    };
    if done.is_file() {
        return Ok(unpacked);
    }
    host::require_tool("apt-get", "apt")?;
    host::require_tool("dpkg-deb", "dpkg")?;
    let tmp = root.join(format!(".tmp-{}-{}", kernel.id(), std::process::id()));
    host::remove_all(&tmp)?;
    host::mkdir_p(&tmp)?;
    let spec = format!("{}={}", kernel.package, kernel.version);
    tracing::info!(%spec, "downloading guest kernel");
    // Root downloading into a root-owned dir: the _apt sandbox user cannot write here.
    host::run(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", &spec])
            .current_dir(&tmp),
    )?;
    let deb = fs::read_dir(&tmp)
        .map_err(ImageError::io("read directory", &tmp))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| ImageError::Kernel {
            message: format!(
                "`apt-get download {spec}` produced no .deb in {}",
                tmp.display()
            ),
        })?;
    let x = tmp.join("x");
    host::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    let vmlinuz = x.join("boot").join(format!("vmlinuz-{}", kernel.release));
    if !vmlinuz.is_file() {
        return Err(ImageError::Kernel {
            message: format!("{} has no /boot/vmlinuz-{}", deb.display(), kernel.release),
        });
    }
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|p| x.join(p).join(&kernel.release))
        .find(|p| p.is_dir())
        .ok_or_else(|| ImageError::Kernel {
            message: format!("{} has no lib/modules/{}", deb.display(), kernel.release),
        })?;
    let staged = tmp.join("out");
    host::mkdir_p(&staged.join("modules"))?;
    fs::rename(&vmlinuz, staged.join("vmlinuz")).map_err(ImageError::io("move", &vmlinuz))?;
    fs::rename(&modules, staged.join("modules").join(&kernel.release))
        .map_err(ImageError::io("move", &modules))?;
    fs::write(
        staged.join(done.file_name().unwrap_or_default()),
        spec.as_bytes(),
    )
    .map_err(ImageError::io("write", &staged))?;
    host::remove_all(&dir)?;
    fs::rename(&staged, &dir).map_err(ImageError::io("rename into place", &dir))?;
    host::remove_all(&tmp)?;
    Ok(unpacked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_depends_with_version() {
        let t = "Package: linux-image-cloud-amd64\nVersion: 6.1.192-3\nDepends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)\n";
        assert_eq!(
            parse_meta_depends(t),
            Some((
                "linux-image-6.1.0-57-cloud-amd64".into(),
                Some("6.1.192-3".into())
            ))
        );
    }

    #[test]
    fn meta_depends_without_version() {
        let t = "Depends: linux-image-6.1.0-57-cloud-amd64, foo\n";
        assert_eq!(
            parse_meta_depends(t),
            Some(("linux-image-6.1.0-57-cloud-amd64".into(), None))
        );
        assert_eq!(parse_meta_depends("Depends: foo\n"), None);
    }
}
