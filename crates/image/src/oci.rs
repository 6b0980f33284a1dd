//! OCI images as a base tree: an OCI layout directory (what `zygote image pull`
//! writes, `skopeo copy ... oci:DIR:TAG` and `umoci` make) or a `docker save`
//! tarball, read into an [`OciImage`]; its layers applied in order into a
//! scratch tree under `<home>/cache/oci-tree/` that lives only for the build.
//!
//! Every blob is checked against its digest before it is used. Only
//! linux/amd64 images are accepted (the guests are x86-64).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Os};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::ImageError;
use crate::{host, layers, ExecDefaults, Progress};

/// The annotation naming a manifest in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI image ready to be applied: where its layers are, what its config says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciImage {
    /// What the user named (a reference, a layout path and tag, a tarball).
    pub reference: String,
    /// The manifest's digest (`sha256:…`; for a `docker save` tarball without
    /// an OCI index, the config's digest). Part of the image id.
    pub digest: String,
    /// Layer blobs, lowest first, each with its digest.
    pub layers: Vec<(String, PathBuf)>,
    /// `Env`, `WorkingDir` and `User` of the image config.
    pub exec: ExecDefaults,
    /// The suggested image name: the reference's last path component and tag.
    pub suggested_name: String,
}

/// Reads the image tagged `tag` (or the only one) from the OCI layout at `dir`.
pub fn open_layout(dir: &Path, tag: Option<&str>) -> Result<OciImage, ImageError> {
    let bad = |message: String| ImageError::Oci {
        path: dir.to_path_buf(),
        message,
    };
    let index_path = dir.join("index.json");
    if !index_path.is_file() {
        return Err(bad(
            "no index.json: pass an OCI layout directory (as made by `skopeo copy ... oci:DIR:TAG`) \
             or a `docker save` tarball"
                .into(),
        ));
    }
    let index = ImageIndex::from_file(&index_path)
        .map_err(|e| bad(format!("index.json is invalid: {e}")))?;
    let names: Vec<String> = index.manifests().iter().filter_map(ref_name).collect();
    let chosen = match tag {
        Some(t) => index
            .manifests()
            .iter()
            .find(|d| ref_name(d).is_some_and(|n| n == t || n.ends_with(&format!(":{t}"))))
            .ok_or_else(|| {
                bad(format!(
                    "no image tagged `{t}` (tags here: {}): pass one of them",
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ))
            })?,
        None => match index.manifests().as_slice() {
            [one] => one,
            [] => return Err(bad("index.json lists no image".into())),
            _ => {
                return Err(bad(format!(
                    "it holds {} images (tags: {}): pass DIR:TAG",
                    index.manifests().len(),
                    names.join(", ")
                )))
            }
        },
    };
    let manifest_desc = platform_manifest(dir, chosen)?;
    let manifest_path = blob(dir, &manifest_desc)?;
    let manifest = ImageManifest::from_file(&manifest_path).map_err(|e| {
        bad(format!(
            "manifest {} is invalid: {e}",
            manifest_desc.digest()
        ))
    })?;
    let config_path = blob(dir, manifest.config())?;
    let exec = exec_defaults(&config_path)?;
    let layers = manifest
        .layers()
        .iter()
        .map(|l| Ok((l.digest().to_string(), blob(dir, l)?)))
        .collect::<Result<Vec<_>, ImageError>>()?;
    let name = ref_name(chosen).or_else(|| tag.map(str::to_string));
    Ok(OciImage {
        reference: format!("{}:{}", dir.display(), name.as_deref().unwrap_or("")),
        digest: manifest_desc.digest().to_string(),
        layers,
        exec,
        suggested_name: suggest_name(name.as_deref().unwrap_or("image")),
    })
}

/// The tag or reference an `index.json` entry carries.
fn ref_name(d: &Descriptor) -> Option<String> {
    d.annotations().as_ref()?.get(REF_NAME).cloned()
}

/// A manifest descriptor, following one nested index to its linux/amd64 entry.
fn platform_manifest(dir: &Path, d: &Descriptor) -> Result<Descriptor, ImageError> {
    let media = d.media_type().to_string();
    if !(media.contains("image.index") || media.contains("manifest.list")) {
        return Ok(d.clone());
    }
    let path = blob(dir, d)?;
    let nested = ImageIndex::from_file(&path).map_err(|e| ImageError::Oci {
        path: path.clone(),
        message: format!("image index is invalid: {e}"),
    })?;
    nested
        .manifests()
        .iter()
        .find(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
        })
        .cloned()
        .ok_or_else(|| ImageError::Oci {
            path,
            message: "the image has no linux/amd64 variant: zygote guests are x86-64".into(),
        })
}

/// The path of a blob of the layout, after checking its size and digest.
fn blob(dir: &Path, d: &Descriptor) -> Result<PathBuf, ImageError> {
    let digest = d.digest();
    let path = dir
        .join("blobs")
        .join(digest.algorithm().to_string())
        .join(digest.digest());
    verify(&path, digest.as_ref())?;
    Ok(path)
}

/// Checks that the file at `path` hashes to `digest` (`sha256:…`).
pub(crate) fn verify(path: &Path, digest: &str) -> Result<(), ImageError> {
    let Some(want) = digest.strip_prefix("sha256:") else {
        return Err(ImageError::Oci {
            path: path.to_path_buf(),
            message: format!("digest `{digest}` is not sha256: only sha256 blobs are supported"),
        });
    };
    let mut f = fs::File::open(path).map_err(ImageError::io("open blob", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(ImageError::io("read blob", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let got = hex::encode(h.finalize());
    if got != want {
        return Err(ImageError::Oci {
            path: path.to_path_buf(),
            message: format!("digest mismatch: expected sha256:{want}, content is sha256:{got}; the blob is corrupt, pull or save the image again"),
        });
    }
    Ok(())
}

/// `Env`, `WorkingDir` and `User` of an image config; refuses other platforms.
fn exec_defaults(config_path: &Path) -> Result<ExecDefaults, ImageError> {
    let bad = |message: String| ImageError::Oci {
        path: config_path.to_path_buf(),
        message,
    };
    let config = ImageConfiguration::from_file(config_path)
        .map_err(|e| bad(format!("image config is invalid: {e}")))?;
    if *config.architecture() != Arch::Amd64 || *config.os() != Os::Linux {
        return Err(bad(format!(
            "the image is for {}/{}: zygote guests are linux/amd64",
            config.os(),
            config.architecture()
        )));
    }
    let Some(c) = config.config() else {
        return Ok(ExecDefaults::default());
    };
    let mut env = BTreeMap::new();
    for kv in c.env().iter().flatten() {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                env.insert(k.to_string(), v.to_string());
            }
            _ => return Err(bad(format!("Env entry `{kv}` is not NAME=VALUE"))),
        }
    }
    let cwd = c.working_dir().clone().filter(|w| !w.is_empty());
    if let Some(w) = &cwd {
        if !w.starts_with('/') {
            return Err(bad(format!("WorkingDir `{w}` is not absolute")));
        }
    }
    Ok(ExecDefaults {
        env,
        cwd,
        user: c.user().clone().filter(|u| !u.is_empty()),
    })
}

/// `registry/ns/name:tag` → `name-tag` (`name` alone for `latest`), made a
/// valid image name.
pub fn suggest_name(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let last = last.split('@').next().unwrap_or(last);
    let base = match last.split_once(':') {
        Some((n, "latest")) => n.to_string(),
        Some((n, t)) => format!("{n}-{t}"),
        None => last.to_string(),
    };
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 'i');
        name.truncate(64);
    }
    name
}

/// One entry of a `docker save` `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Reads a `docker save` tarball, unpacked into `scratch` first. Tarballs that
/// carry an OCI layout (Docker 25 and later) are read as one.
pub fn open_docker_archive(
    tarball: &Path,
    scratch: &Path,
    tag: Option<&str>,
) -> Result<OciImage, ImageError> {
    let bad = |message: String| ImageError::Oci {
        path: tarball.to_path_buf(),
        message,
    };
    host::remove_all(scratch)?;
    host::mkdir_p(scratch)?;
    let f = fs::File::open(tarball).map_err(ImageError::io("open", tarball))?;
    tar::Archive::new(f)
        .unpack(scratch)
        .map_err(|e| bad(format!("not a readable tar: {e}")))?;
    if scratch.join("index.json").is_file() {
        let mut img = open_layout(scratch, tag)?;
        img.reference = tarball.display().to_string();
        return Ok(img);
    }
    let manifest_path = scratch.join("manifest.json");
    let text = fs::read(&manifest_path).map_err(|_| {
        bad("neither index.json nor manifest.json inside: pass a `docker save` tarball or an OCI layout directory".into())
    })?;
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&text).map_err(|e| bad(format!("manifest.json is invalid: {e}")))?;
    let entry = match (tag, entries.as_slice()) {
        (None, [one]) => one,
        (Some(t), all) => all
            .iter()
            .find(|e| {
                e.repo_tags
                    .iter()
                    .flatten()
                    .any(|r| r == t || r.ends_with(&format!(":{t}")))
            })
            .ok_or_else(|| bad(format!("no image tagged `{t}` inside")))?,
        (None, _) => return Err(bad("it holds several images: pass FILE:TAG".into())),
    };
    let inside = |rel: &str| -> Result<PathBuf, ImageError> {
        if rel.split('/').any(|c| c == "..") {
            return Err(bad(format!("path `{rel}` leaves the archive")));
        }
        Ok(scratch.join(rel))
    };
    let config_path = inside(&entry.config)?;
    let config_bytes = fs::read(&config_path).map_err(ImageError::io("read", &config_path))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes)));
    let mut layers = Vec::new();
    for l in &entry.layers {
        let p = inside(l)?;
        layers.push((l.clone(), p));
    }
    let tag_name = entry.repo_tags.iter().flatten().next().cloned();
    Ok(OciImage {
        reference: tarball.display().to_string(),
        digest,
        layers,
        exec: exec_defaults(&config_path)?,
        suggested_name: suggest_name(tag_name.as_deref().unwrap_or("image")),
    })
}

/// The root tree of `img` (its layers applied in order) for the image `name`,
/// at `<home>/cache/oci-tree/<name>`. The caller holds the name's build lock
/// and removes the tree once the image is packed: nothing is kept, since an
/// image of the same digest is found by its id without rebuilding.
pub(crate) fn apply_tree(
    home: &Path,
    name: &str,
    img: &OciImage,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, ImageError> {
    let t = Instant::now();
    progress(Progress::Step {
        name: "layers".into(),
        detail: format!("{} layer(s) of {}", img.layers.len(), img.reference),
    });
    let tree = home.join("cache/oci-tree").join(name);
    host::remove_all(&tree)?;
    host::mkdir_p(&tree)?;
    for (digest, path) in &img.layers {
        match layers::apply(&tree, path, digest) {
            Ok(done) => tracing::info!(layer = %digest, ?done, "layer applied"),
            Err(e) => {
                let _ = host::remove_all(&tree);
                return Err(e);
            }
        }
    }
    progress(Progress::Done {
        step: "layers".into(),
        secs: t.elapsed().as_secs_f64(),
    });
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_references() {
        assert_eq!(suggest_name("127.0.0.1:5000/test/py:3.12"), "py-3.12");
        assert_eq!(suggest_name("docker.io/library/python:latest"), "python");
        assert_eq!(suggest_name("ghcr.io/a/b@sha256:abc"), "b");
        assert_eq!(suggest_name("_x"), "i_x");
    }
}
