//! Snapshots that leave the host: a snapshot and everything it needs as one
//! tar stream (a *bundle*), and a bundle made a snapshot of this home.
//!
//! ```text
//! bundle.json          BundleManifest: format, the exporter's QEMU, the image,
//!                      the snapshot's meta with bundle-relative paths, every
//!                      disk's backing, every file's size (first, ≤ 1 MiB)
//! vmstate              the device state
//! memory.bin           guest RAM
//! disks/<i>.qcow2      the disk chain, base first, each backing onto the one
//!                      before it (the first onto image/rootfs.ext4)
//! image/{image.json,vmlinuz,initrd.img,rootfs.ext4}
//! checksums.json       sha256 of every file above (last)
//! ```
//!
//! Export opens every file before the first byte is written (a delete of the
//! snapshot meanwhile cannot pull them away) and holds the disk chain. Import
//! is bounded by the manifest: an entry not announced there, or longer than
//! announced, is refused; files are written sparse; the bundle is checked
//! against `checksums.json` before anything becomes visible; a snapshot made
//! by a QEMU of another version, or for another accelerator or CPU model, is
//! refused naming the difference. The image is installed only when this home
//! lacks that image id. Failure leaves nothing behind.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::disks::DiskHold;
use crate::error::{EngineError, Result};
use crate::model::SnapshotStatus;
use crate::snapshot::SnapshotMeta;
use crate::Engine;

mod import;

/// Version of the bundle layout.
pub const BUNDLE_FORMAT: u32 = 1;
/// Largest `bundle.json` or `checksums.json` accepted.
pub(crate) const MAX_MANIFEST_BYTES: u64 = 1 << 20;
pub(crate) const MANIFEST: &str = "bundle.json";
pub(crate) const CHECKSUMS: &str = "checksums.json";
const IMAGE_FILES: [&str; 4] = ["image.json", "vmlinuz", "initrd.img", "rootfs.ext4"];

/// `bundle.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    pub format: u32,
    /// `major.minor.micro` of the QEMU that made the snapshot.
    pub qemu_version: String,
    pub image: BundleImage,
    /// The snapshot's meta; its paths are names inside the bundle.
    pub snapshot: SnapshotMeta,
    /// The disk chain, base first.
    pub disks: Vec<BundleDisk>,
    /// Every file after `bundle.json`, in order, with its size.
    pub files: Vec<BundleFile>,
}

/// The image the snapshot's disk chain and kernel come from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundleImage {
    pub name: String,
    pub id: String,
}

/// One qcow2 of the chain and what it backs onto (a bundle name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundleDisk {
    pub name: String,
    pub backing: String,
    pub backing_format: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    pub name: String,
    pub bytes: u64,
}

/// A snapshot ready to be written as a bundle: the manifest and every file,
/// already open.
pub struct SnapshotExport {
    pub manifest: BundleManifest,
    files: Vec<(String, File)>,
    _hold: DiskHold,
}

impl std::fmt::Debug for SnapshotExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotExport")
            .field("tag", &self.manifest.snapshot.tag)
            .field("files", &self.manifest.files.len())
            .finish()
    }
}

impl SnapshotExport {
    /// Bytes of the tar stream's payload (headers not counted).
    pub fn payload_bytes(&self) -> u64 {
        self.manifest.files.iter().map(|f| f.bytes).sum()
    }

    /// The bundle as a stream of chunks, written on a blocking thread; a
    /// reader that goes away stops the writer.
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(4);
        tokio::task::spawn_blocking(move || {
            let mut w = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            if let Err(e) = self.write_to(&mut w) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
            .boxed()
    }

    /// Writes the bundle as a tar stream to `w` (blocking).
    pub fn write_to(self, w: impl Write) -> Result<()> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| EngineError::Io { what, source }
        };
        let mut tar = tar::Builder::new(w);
        let json = serde_json::to_vec_pretty(&self.manifest)
            .map_err(|e| EngineError::BadRequest(e.to_string()))?;
        append(&mut tar, MANIFEST, json.len() as u64, &json[..])
            .map_err(io("write bundle.json"))?;
        let mut sums = serde_json::Map::new();
        for ((name, file), announced) in self.files.into_iter().zip(&self.manifest.files) {
            let mut hashing = Hashing {
                inner: file.take(announced.bytes),
                hash: Sha256::new(),
            };
            append(&mut tar, &name, announced.bytes, &mut hashing)
                .map_err(io(&format!("write {name} into the bundle")))?;
            sums.insert(name, hex::encode(hashing.hash.finalize()).into());
        }
        let sums = serde_json::to_vec_pretty(&serde_json::json!({ "sha256": sums }))
            .map_err(|e| EngineError::BadRequest(e.to_string()))?;
        append(&mut tar, CHECKSUMS, sums.len() as u64, &sums[..]).map_err(io("write checksums"))?;
        tar.into_inner()
            .map_err(io("finish the bundle"))?
            .flush()
            .map_err(io("flush the bundle"))
    }
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    size: u64,
    data: impl Read,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, data)
}

const CHUNK: usize = 256 * 1024;

/// A writer whose bytes go out as chunks on a channel.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn open(path: &Path) -> Result<(File, u64)> {
    let f = File::open(path).map_err(|source| EngineError::Io {
        what: format!("cannot open {}", path.display()),
        source,
    })?;
    let len = f
        .metadata()
        .map_err(|source| EngineError::Io {
            what: format!("cannot stat {}", path.display()),
            source,
        })?
        .len();
    Ok((f, len))
}

impl Engine {
    /// Everything snapshot `tag` needs, opened, as a bundle to write. Only a
    /// `ready` snapshot of this daemon's own (not a paused sandbox's) goes.
    pub async fn export_snapshot(self: &Arc<Self>, tag: &str) -> Result<SnapshotExport> {
        let snap = self.public_snapshot(tag)?;
        match snap.status() {
            SnapshotStatus::Ready => {}
            other => {
                return Err(EngineError::Conflict(format!(
                    "snapshot `{tag}` is {other:?}: only a ready snapshot can be exported; wait for it (`zygote snapshot create --wait`)"
                )))
            }
        }
        let meta = &snap.meta;
        let image_dir = meta
            .machine
            .kernel
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let image_id = image_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rootfs = std::fs::canonicalize(image_dir.join("rootfs.ext4")).map_err(|source| {
            EngineError::Io {
                what: format!(
                    "snapshot `{tag}` needs image {} {image_id}, whose rootfs.ext4 is gone",
                    meta.image
                ),
                source,
            }
        })?;
        let chain: Vec<PathBuf> = meta
            .disk_chain
            .iter()
            .chain([&meta.disk])
            .cloned()
            .collect();
        let hold = self.snapshots.hold(chain.clone());
        let mut files = Vec::new();
        let mut listed = Vec::new();
        let mut add = |name: String, path: &Path| -> Result<()> {
            let (f, bytes) = open(path)?;
            listed.push(BundleFile {
                name: name.clone(),
                bytes,
            });
            files.push((name, f));
            Ok(())
        };
        add("vmstate".into(), &snap.vmstate())?;
        add("memory.bin".into(), &snap.memory_bin())?;
        let mut disks = Vec::new();
        let names: Vec<(PathBuf, String)> = chain
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
                    format!("disks/{i}.qcow2"),
                )
            })
            .collect();
        for (path, name) in &names {
            let (backing, backing_format) =
                zygote_qemu::backing_file(path).await?.ok_or_else(|| {
                    EngineError::BadRequest(format!(
                        "disk {} of snapshot `{tag}` has no backing file",
                        path.display()
                    ))
                })?;
            let backing = std::fs::canonicalize(&backing).unwrap_or(backing);
            let backing = if backing == rootfs {
                "image/rootfs.ext4".to_string()
            } else {
                names
                    .iter()
                    .find(|(p, _)| *p == backing)
                    .map(|(_, n)| n.clone())
                    .ok_or_else(|| {
                        EngineError::BadRequest(format!(
                            "disk {} of snapshot `{tag}` backs onto {}, outside its chain and image",
                            path.display(),
                            backing.display()
                        ))
                    })?
            };
            add(name.clone(), path)?;
            disks.push(BundleDisk {
                name: name.clone(),
                backing,
                backing_format,
            });
        }
        for f in IMAGE_FILES {
            add(format!("image/{f}"), &image_dir.join(f))?;
        }
        let mut snapshot = meta.clone();
        snapshot.machine.kernel = "image/vmlinuz".into();
        snapshot.machine.initrd = "image/initrd.img".into();
        snapshot.disk = names.last().map(|(_, n)| n.into()).unwrap_or_default();
        snapshot.disk_chain = names[..names.len() - 1]
            .iter()
            .map(|(_, n)| n.into())
            .collect();
        let (a, b, c) = self.qemu.version;
        Ok(SnapshotExport {
            manifest: BundleManifest {
                format: BUNDLE_FORMAT,
                qemu_version: format!("{a}.{b}.{c}"),
                image: BundleImage {
                    name: meta.image.clone(),
                    id: image_id,
                },
                snapshot,
                disks,
                files: listed,
            },
            files,
            _hold: hold,
        })
    }
}
