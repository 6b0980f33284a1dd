//! OCI layers applied onto a directory tree, in order, as an overlay would.
//!
//! Owns the whiteout rules of the OCI image spec: `.wh.NAME` deletes `NAME`
//! from the layers below, `.wh..wh..opq` empties its directory of what the
//! layers below put there (entries of the same layer stay, whatever their
//! order in the tar). Ownership, modes, mtimes, xattrs, hard links and
//! symlinks are kept exactly (the builder runs as root). A layer can never
//! reach outside the tree: `..` components are refused, parents that are
//! symlinks are never followed (a whiteout or a replacement under one is an
//! error naming the entry), and hard-link targets must be inside the tree.
//! Device nodes and FIFOs are skipped (the guest's `/dev` is a devtmpfs).

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use crate::error::ImageError;
use crate::host;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What applying one layer did, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Applied {
    pub(crate) entries: u64,
    pub(crate) whiteouts: u64,
    pub(crate) skipped_devices: u64,
}

/// Applies the layer at `blob` (tar, gzip or zstd, told apart by their magic
/// bytes) onto `tree`. `layer` names it in errors (its digest).
pub(crate) fn apply(tree: &Path, blob: &Path, layer: &str) -> Result<Applied, ImageError> {
    let file = fs::File::open(blob).map_err(ImageError::io("open layer", blob))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let magic = reader
        .fill_buf()
        .map_err(ImageError::io("read layer", blob))?
        .get(..4)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let stream: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(ImageError::io("read zstd layer", blob))?,
        )
    } else {
        Box::new(reader)
    };
    apply_tar(tree, stream, layer)
}

/// Applies one uncompressed layer stream.
pub(crate) fn apply_tar(
    tree: &Path,
    stream: impl Read,
    layer: &str,
) -> Result<Applied, ImageError> {
    let bad = |entry: &str, message: String| ImageError::Layer {
        layer: layer.to_string(),
        entry: entry.to_string(),
        message,
    };
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let mut done = Applied::default();
    // Paths this layer wrote, so an opaque whiteout spares them.
    let mut written: HashSet<PathBuf> = HashSet::new();
    let mut opaque: Vec<PathBuf> = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| bad("(archive)", e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad("(archive)", format!("unreadable tar: {e}")))?;
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = relative(&entry.path().map_err(|e| bad(&shown, e.to_string()))?)
            .ok_or_else(|| bad(&shown, "the path leaves the root (`..`)".into()))?;
        let Some(name) = rel.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue; // the root itself
        };
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == OPAQUE {
            opaque.push(parent);
            done.whiteouts += 1;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            let dir = real_dir(tree, &parent).map_err(|m| bad(&shown, m))?;
            host::remove_all(&dir.join(hidden))?;
            done.whiteouts += 1;
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            done.skipped_devices += 1;
            continue;
        }
        let dir = real_dir(tree, &parent).map_err(|m| bad(&shown, m))?;
        let target = dir.join(&name);
        // Replace what the layers below left, never writing through it (it may
        // be a hard link or a symlink); a directory over a directory merges.
        if let Ok(m) = fs::symlink_metadata(&target) {
            if !(kind.is_dir() && m.is_dir()) {
                host::remove_all(&target)?;
            }
        }
        entry
            .unpack_in(tree)
            .map_err(|e| bad(&shown, with_cause(&e)))?;
        written.insert(rel);
        done.entries += 1;
    }
    for dir_rel in opaque {
        let Ok(dir) = real_dir(tree, &dir_rel) else {
            continue;
        };
        let Ok(children) = fs::read_dir(&dir) else {
            continue;
        };
        for child in children.flatten() {
            if !written.contains(&dir_rel.join(child.file_name())) {
                host::remove_all(&child.path())?;
            }
        }
    }
    Ok(done)
}

/// An unpack error with its cause (the tar crate wraps the io error).
fn with_cause(e: &std::io::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The entry path made relative, or `None` when it has a `..`.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    Some(out)
}

/// `tree/rel` after checking that no component of `rel` is a symlink (so a
/// path built on it stays inside the tree). Missing components are fine: the
/// unpacker creates them.
fn real_dir(tree: &Path, rel: &Path) -> Result<PathBuf, String> {
    let mut at = tree.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "its parent `{}` is a symlink in a lower layer; \
                     a layer may not write through a symlink",
                    rel.display()
                ))
            }
            Ok(m) if !m.is_dir() => {
                return Err(format!("its parent `{}` is not a directory", rel.display()))
            }
            _ => {}
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, body: &[u8], mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, body).unwrap();
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Directory);
        b.append_data(&mut h, path, &[][..]).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(kind);
        b.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn whiteouts_opaque_links_and_owners() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path();
        let l1 = layer(|b| {
            dir(b, "etc");
            file(b, "etc/gone", b"x", 0o644);
            file(b, "etc/kept", b"k", 0o600);
            dir(b, "opt");
            file(b, "opt/old", b"o", 0o644);
            link(b, tar::EntryType::Symlink, "etc/sym", "kept");
            link(b, tar::EntryType::Link, "etc/hard", "etc/kept");
        });
        let l2 = layer(|b| {
            file(b, "etc/.wh.gone", b"", 0o644);
            file(b, "opt/new", b"n", 0o755);
            file(b, "opt/.wh..wh..opq", b"", 0o644);
            file(b, "etc/kept", b"replaced", 0o640);
        });
        assert_eq!(apply_tar(tree, &l1[..], "l1").unwrap().entries, 7);
        let a = apply_tar(tree, &l2[..], "l2").unwrap();
        assert_eq!(a.whiteouts, 2);
        assert!(!tree.join("etc/gone").exists());
        assert!(!tree.join("opt/old").exists());
        assert_eq!(fs::read(tree.join("opt/new")).unwrap(), b"n");
        // The replacement did not write through the hard link of layer 1.
        assert_eq!(fs::read(tree.join("etc/kept")).unwrap(), b"replaced");
        assert_eq!(fs::read(tree.join("etc/hard")).unwrap(), b"k");
        let m = fs::metadata(tree.join("etc/kept")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o640));
        assert_eq!(
            fs::read_link(tree.join("etc/sym")).unwrap(),
            Path::new("kept")
        );
    }

    #[test]
    fn nothing_leaves_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), b"v").unwrap();
        let tree = tmp.path().join("tree");
        fs::create_dir(&tree).unwrap();
        let l1 = layer(|b| link(b, tar::EntryType::Symlink, "etc", outside.to_str().unwrap()));
        apply_tar(&tree, &l1[..], "l1").unwrap();
        for l2 in [
            layer(|b| file(b, "etc/.wh.victim", b"", 0o644)),
            layer(|b| file(b, "etc/victim", b"evil", 0o644)),
            layer(|b| link(b, tar::EntryType::Link, "x", "../outside/victim")),
        ] {
            let err = apply_tar(&tree, &l2[..], "l2").unwrap_err().to_string();
            assert!(err.contains("l2"), "{err}");
        }
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"v");
    }
}
