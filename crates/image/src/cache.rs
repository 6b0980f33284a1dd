//! The content-addressed image store under `<home>/images/`.
//!
//! Owns the layout `<home>/images/<name>/<id>/{vmlinuz,initrd.img,rootfs.ext4,image.json}`,
//! the `current` pointer (written atomically by rename), the image id (a hash
//! of everything that goes into an image), listing, resolving and removing old
//! generations. It never builds anything.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ImageError;
use crate::host;
use crate::recipe::{validate_name, Recipe};
use crate::ImageInfo;

/// Version of the builder's output. Bump when image contents or layout change
/// in a way the inputs do not capture; it is part of every image id.
pub const FORMAT_VERSION: u32 = 1;

pub(crate) const KERNEL_FILE: &str = "vmlinuz";
pub(crate) const INITRD_FILE: &str = "initrd.img";
pub(crate) const ROOTFS_FILE: &str = "rootfs.ext4";
pub(crate) const META_FILE: &str = "image.json";
const CURRENT_FILE: &str = "current";

/// `image.json`: the format version next to the image's info.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format: u32,
    #[serde(flatten)]
    pub(crate) info: ImageInfo,
}

/// Inputs to an image id beyond the recipe.
pub(crate) struct IdInputs<'a> {
    pub(crate) agent: &'a [u8],
    pub(crate) busybox: &'a [u8],
    pub(crate) kernel_id: &'a str,
    pub(crate) init_template: &'a str,
    pub(crate) modules: &'a [&'a str],
    pub(crate) rootfs_key: &'a str,
}

/// The image id: sha256 (first 16 bytes, hex) over the builder format, the
/// recipe's meaningful content (not comments or key order), the bytes of every
/// `[[files]]` source, the agent and busybox binaries, the kernel package, the
/// init template and the module list.
pub(crate) fn image_id(recipe: &Recipe, inputs: &IdInputs<'_>) -> Result<String, ImageError> {
    let mut h = Sha256::new();
    let mut field = |k: &str, v: &[u8]| {
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v);
    };
    field("format", &FORMAT_VERSION.to_le_bytes());
    field("name", recipe.name.as_bytes());
    field("release", recipe.release.as_bytes());
    field("rootfs", inputs.rootfs_key.as_bytes());
    field("packages", recipe.packages.join(",").as_bytes());
    field(
        "warmup",
        recipe.warmup.as_deref().unwrap_or("\0none").as_bytes(),
    );
    field("disk_mib", &recipe.disk_mib.unwrap_or(0).to_le_bytes());
    for f in &recipe.files {
        let bytes = fs::read(&f.src).map_err(ImageError::io("read [[files]] source", &f.src))?;
        field("file.dst", f.dst.as_bytes());
        field("file.mode", &f.mode.unwrap_or(u32::MAX).to_le_bytes());
        field("file.content", &Sha256::digest(&bytes));
    }
    field("agent", &Sha256::digest(inputs.agent));
    field("busybox", &Sha256::digest(inputs.busybox));
    field("kernel", inputs.kernel_id.as_bytes());
    field("init", inputs.init_template.as_bytes());
    field("modules", inputs.modules.join(",").as_bytes());
    Ok(hex::encode(&h.finalize()[..16]))
}

pub(crate) fn name_dir(home: &Path, name: &str) -> PathBuf {
    home.join("images").join(name)
}

/// Reads the `current` pointer of an image name, if any.
pub(crate) fn current_id(home: &Path, name: &str) -> Option<String> {
    let id = fs::read_to_string(name_dir(home, name).join(CURRENT_FILE)).ok()?;
    let id = id.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
}

/// Points `current` at `id` (atomic rename).
pub(crate) fn set_current(home: &Path, name: &str, id: &str) -> Result<(), ImageError> {
    host::write_atomic(
        &name_dir(home, name).join(CURRENT_FILE),
        format!("{id}\n").as_bytes(),
    )
}

/// Loads a generation's metadata, with paths rebased onto where it lives now.
pub(crate) fn load(home: &Path, name: &str, id: &str) -> Result<ImageInfo, ImageError> {
    let dir = name_dir(home, name).join(id);
    let path = dir.join(META_FILE);
    let corrupt = |message: String| ImageError::Corrupt {
        name: name.to_string(),
        path: path.clone(),
        message,
    };
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImageError::NotFound {
                name: name.to_string(),
                home: home.to_path_buf(),
            })
        }
        Err(e) => return Err(ImageError::io("read", &path)(e)),
    };
    let m: Manifest = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if m.format != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format {} but this zygote reads format {FORMAT_VERSION}",
            m.format
        )));
    }
    let mut info = m.info;
    info.dir = dir.clone();
    info.kernel = dir.join(KERNEL_FILE);
    info.initrd = dir.join(INITRD_FILE);
    info.rootfs = dir.join(ROOTFS_FILE);
    for p in [&info.kernel, &info.initrd, &info.rootfs] {
        if !p.is_file() {
            return Err(corrupt(format!("{} is missing", p.display())));
        }
    }
    Ok(info)
}

/// The current generation of image `name`.
pub fn resolve(home: &Path, name: &str) -> Result<ImageInfo, ImageError> {
    validate_name(name)?;
    let id = current_id(home, name).ok_or_else(|| ImageError::NotFound {
        name: name.to_string(),
        home: home.to_path_buf(),
    })?;
    load(home, name, &id)
}

/// The current generation of every image name, sorted by name. Names whose
/// metadata is unusable are skipped with a warning.
pub fn list(home: &Path) -> Result<Vec<ImageInfo>, ImageError> {
    let dir = home.join("images");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ImageError::io("read directory", &dir)(e)),
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| validate_name(n).is_ok())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        match resolve(home, &n) {
            Ok(info) => out.push(info),
            Err(ImageError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(name = %n, error = %e, "skipping unusable image"),
        }
    }
    Ok(out)
}

/// Removes generations of `name` other than `keep` (current and previous) and
/// leftover staging directories of dead builds.
pub(crate) fn prune(home: &Path, name: &str, keep: &[&str]) -> Result<Vec<String>, ImageError> {
    let dir = name_dir(home, name);
    let mut removed = Vec::new();
    let rd = fs::read_dir(&dir).map_err(ImageError::io("read directory", &dir))?;
    for e in rd.flatten() {
        let Some(n) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !e.path().is_dir() || keep.contains(&n.as_str()) {
            continue;
        }
        let is_generation = n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit());
        let is_stale_staging = n.starts_with(".staging-");
        if is_generation || is_stale_staging {
            tracing::info!(name, generation = %n, "removing old image generation");
            host::remove_all(&e.path())?;
            removed.push(n);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::parse_recipe;

    fn recipe(text: &str, dir: &Path) -> Recipe {
        parse_recipe(text, Path::new("t.toml"), dir).expect("recipe")
    }

    fn inputs<'a>(agent: &'a [u8]) -> IdInputs<'a> {
        IdInputs {
            agent,
            busybox: b"bb",
            kernel_id: "6.1.0-57-cloud-amd64_6.1.192-3",
            init_template: "init",
            modules: &["virtio"],
            rootfs_key: "k",
        }
    }

    #[test]
    fn id_is_stable_and_sensitive() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::write(d.path().join("f"), "one").expect("write");
        let base = "name = \"a\"\nrelease = \"bookworm\"\npackages = [\"python3\"]\n[[files]]\nsrc = \"f\"\ndst = \"/etc/f\"\n";
        let r = recipe(base, d.path());
        let id = image_id(&r, &inputs(b"agent")).expect("id");
        assert_eq!(id.len(), 32);
        // Comments and whitespace do not change the id.
        let r2 = recipe(&format!("# comment\n{base}\n"), d.path());
        assert_eq!(image_id(&r2, &inputs(b"agent")).expect("id"), id);
        // The agent bytes do.
        assert_ne!(image_id(&r, &inputs(b"agent2")).expect("id"), id);
        // The warmup does.
        let r3 = recipe(&format!("warmup = \"import os\"\n{base}"), d.path());
        assert_ne!(image_id(&r3, &inputs(b"agent")).expect("id"), id);
        // A file's content does.
        fs::write(d.path().join("f"), "two").expect("write");
        assert_ne!(image_id(&r, &inputs(b"agent")).expect("id"), id);
    }

    #[test]
    fn resolve_missing_says_how_to_build() {
        let d = tempfile::tempdir().expect("tempdir");
        let err = resolve(d.path(), "python").unwrap_err();
        assert!(
            err.to_string().contains("zygote image build python"),
            "{err}"
        );
        assert!(list(d.path()).expect("list").is_empty());
    }
}
