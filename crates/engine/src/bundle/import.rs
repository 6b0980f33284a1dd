//! A bundle made a snapshot of this home (see the parent module for the
//! layout and the rules).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::{BundleManifest, BUNDLE_FORMAT, CHECKSUMS, IMAGE_FILES, MANIFEST, MAX_MANIFEST_BYTES};
use crate::error::{EngineError, Result};
use crate::model::{SnapshotView, UploadStream};
use crate::snapshot::{validate_tag, Staging};
use crate::Engine;

fn bad(message: String) -> EngineError {
    EngineError::BadRequest(message)
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> EngineError {
    move |source| EngineError::Io { what, source }
}

/// Files an import wrote outside the snapshot's staging directory (its disks,
/// a new image), removed unless the import completes.
#[derive(Default)]
struct Placed {
    disks: Vec<PathBuf>,
    image_staging: Option<PathBuf>,
    done: bool,
}

impl Drop for Placed {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for d in &self.disks {
            let _ = std::fs::remove_file(d);
        }
        if let Some(i) = &self.image_staging {
            let _ = std::fs::remove_dir_all(i);
        }
    }
}

/// What the reading phase produced.
struct Received {
    manifest: BundleManifest,
    tag: String,
    staging: Staging,
    placed: Placed,
    /// Bundle disk name → where it now is.
    disk_paths: HashMap<String, PathBuf>,
    image_dir: PathBuf,
}

impl Engine {
    /// Makes the bundle streamed in `body` a snapshot of this home, under
    /// `tag` or the tag it was exported with.
    pub async fn import_snapshot(
        self: &Arc<Self>,
        body: UploadStream,
        tag: Option<String>,
    ) -> Result<SnapshotView> {
        if let Some(t) = &tag {
            validate_tag(t)?;
        }
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
        let engine = self.clone();
        let received = tokio::task::spawn_blocking(move || engine.receive(reader, tag))
            .await
            .map_err(|e| bad(format!("the import stopped: {e}")))??;
        let Received {
            manifest,
            tag,
            staging,
            mut placed,
            disk_paths,
            image_dir,
        } = received;
        let _reservation = self.snapshots.reserve(&tag)?;
        // The chain points at its new paths (header only, data untouched).
        for d in &manifest.disks {
            let backing = if d.backing == "image/rootfs.ext4" {
                image_dir.join("rootfs.ext4")
            } else {
                disk_paths[&d.backing].clone()
            };
            zygote_qemu::rebase_unchecked(&disk_paths[&d.name], &backing, &d.backing_format)
                .await?;
        }
        if let Some(staged) = placed.image_staging.take() {
            if image_dir.exists() {
                let _ = std::fs::remove_dir_all(&staged);
            } else {
                std::fs::rename(&staged, &image_dir).map_err(io(format!(
                    "cannot move the image into {}",
                    image_dir.display()
                )))?;
            }
        }
        let mut meta = manifest.snapshot.clone();
        meta.tag = tag.clone();
        meta.owner = None;
        meta.machine.kernel = image_dir.join("vmlinuz");
        meta.machine.initrd = image_dir.join("initrd.img");
        meta.disk = disk_paths[&meta.disk.to_string_lossy().into_owned()].clone();
        meta.disk_chain = meta
            .disk_chain
            .iter()
            .map(|d| disk_paths[&d.to_string_lossy().into_owned()].clone())
            .collect();
        let snap = self.snapshots.adopt(staging, meta)?;
        placed.done = true;
        tracing::info!(%tag, image = %manifest.image.name, "snapshot imported");
        Ok(self.view_of(&snap))
    }

    /// The blocking half: reads and checks the manifest, writes every file
    /// (sparse) where it goes, checks the sums.
    fn receive(self: &Arc<Self>, reader: impl Read, tag: Option<String>) -> Result<Received> {
        let mut archive = tar::Archive::new(reader);
        let mut entries = archive
            .entries()
            .map_err(|e| bad(format!("the bundle is not a tar stream: {e}")))?;
        let mut next = |what: &str| -> Result<tar::Entry<'_, _>> {
            entries
                .next()
                .ok_or_else(|| {
                    bad(format!(
                        "the bundle ends before {what}: it was cut off; export it again"
                    ))
                })?
                .map_err(|e| bad(format!("the bundle is unreadable before {what}: {e}")))
        };
        let manifest = {
            let entry = next(MANIFEST)?;
            let manifest: BundleManifest = read_json(entry, MANIFEST)?;
            manifest
        };
        self.check_compatible(&manifest)?;
        let tag = tag.unwrap_or_else(|| manifest.snapshot.tag.clone());
        validate_tag(&tag)?;
        // Reserved for the duration of the read too (a second import of the
        // tag meanwhile is a 409), then again for the commit.
        let reservation = self.snapshots.reserve(&tag)?;
        self.admit_snapshot(manifest.snapshot.machine.memory_mib)?;
        let staging = self.snapshots.staging(&tag)?;
        let image_dir = self
            .cfg
            .home
            .join("images")
            .join(&manifest.image.name)
            .join(&manifest.image.id);
        let mut placed = Placed::default();
        let image_staging = (!image_dir.exists()).then(|| {
            image_dir.with_file_name(format!(
                ".import-{}-{}",
                manifest.image.id,
                std::process::id()
            ))
        });
        if let Some(s) = &image_staging {
            let _ = std::fs::remove_dir_all(s);
            std::fs::create_dir_all(s).map_err(io(format!("cannot create {}", s.display())))?;
            placed.image_staging = Some(s.clone());
        }
        let mut disk_paths = HashMap::new();
        let mut sums = BTreeMap::new();
        for file in &manifest.files {
            let dest = match file.name.as_str() {
                "vmstate" | "memory.bin" => Some(staging.path().join(&file.name)),
                n if n.starts_with("disks/") => {
                    let p = self.snapshots.new_disk_path(&tag);
                    placed.disks.push(p.clone());
                    disk_paths.insert(file.name.clone(), p.clone());
                    Some(p)
                }
                n => image_staging
                    .as_ref()
                    .map(|s| s.join(n.trim_start_matches("image/"))),
            };
            let mut entry = next(&file.name)?;
            let path = entry
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if path != file.name || entry.size() != file.bytes {
                return Err(bad(format!(
                    "bundle entry `{path}` ({} bytes) is not the announced `{}` ({} bytes): the bundle is damaged",
                    entry.size(),
                    file.name,
                    file.bytes
                )));
            }
            sums.insert(
                file.name.clone(),
                copy_sparse(&mut entry, dest.as_deref(), file.bytes)?,
            );
        }
        let entry = next(CHECKSUMS)?;
        let want: serde_json::Value = read_json(entry, CHECKSUMS)?;
        for (name, got) in &sums {
            if want["sha256"][name].as_str() != Some(got.as_str()) {
                return Err(bad(format!(
                    "bundle file `{name}` does not match its checksum (sha256 {got}): the bundle is corrupt; export it again"
                )));
            }
        }
        drop(reservation);
        Ok(Received {
            manifest,
            tag,
            staging,
            placed,
            disk_paths,
            image_dir,
        })
    }

    /// Refuses a bundle this engine cannot restore, naming the difference.
    fn check_compatible(&self, m: &BundleManifest) -> Result<()> {
        if m.format != BUNDLE_FORMAT {
            return Err(bad(format!(
                "bundle format {} is not {BUNDLE_FORMAT}: export it with this zygote version",
                m.format
            )));
        }
        let (a, b, _) = self.qemu.version;
        let ours = format!("{a}.{b}");
        let theirs: String = m
            .qemu_version
            .split('.')
            .take(2)
            .collect::<Vec<_>>()
            .join(".");
        if theirs != ours {
            return Err(bad(format!(
                "snapshot `{}` was made by QEMU {}, this engine runs QEMU {a}.{b}: a restore needs the same QEMU major.minor version",
                m.snapshot.tag, m.qemu_version
            )));
        }
        m.snapshot
            .machine
            .check_restorable(&m.snapshot.tag, self.accel.accel)?;
        zygote_image::validate_name(&m.image.name)?;
        if m.image.id.is_empty() || !m.image.id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "bundle image id `{}` is not a hex id",
                m.image.id
            )));
        }
        let mut expected: Vec<String> = vec!["vmstate".into(), "memory.bin".into()];
        expected.extend(m.disks.iter().map(|d| d.name.clone()));
        expected.extend(IMAGE_FILES.iter().map(|f| format!("image/{f}")));
        let listed: Vec<String> = m.files.iter().map(|f| f.name.clone()).collect();
        let disk_ok = m.disks.iter().enumerate().all(|(i, d)| {
            d.name == format!("disks/{i}.qcow2")
                && (d.backing == "image/rootfs.ext4"
                    || m.disks[..i].iter().any(|e| e.name == d.backing))
                && matches!(d.backing_format.as_str(), "raw" | "qcow2")
        });
        let chain_ok = !m.disks.is_empty()
            && m.snapshot.disk == Path::new(&m.disks[m.disks.len() - 1].name)
            && m.snapshot.disk_chain.len() + 1 == m.disks.len()
            && m.snapshot
                .disk_chain
                .iter()
                .zip(&m.disks)
                .all(|(c, d)| c == Path::new(&d.name));
        if listed != expected || !disk_ok || !chain_ok {
            return Err(bad(
                "bundle.json lists files or disks that do not fit together: the bundle is damaged or not zygote's".into(),
            ));
        }
        Ok(())
    }
}

/// Parses a small JSON entry (≤ 1 MiB).
fn read_json<T: serde::de::DeserializeOwned>(entry: impl Read, name: &str) -> Result<T> {
    let mut buf = Vec::new();
    entry
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| bad(format!("cannot read {name} from the bundle: {e}")))?;
    if buf.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(bad(format!("{name} is over {MAX_MANIFEST_BYTES} bytes")));
    }
    serde_json::from_slice(&buf).map_err(|e| bad(format!("{name} of the bundle is invalid: {e}")))
}

/// Copies `bytes` of `r` to `dest` (or nowhere), leaving holes for zero
/// blocks; returns the sha256.
fn copy_sparse(r: &mut impl Read, dest: Option<&Path>, bytes: u64) -> Result<String> {
    const BLOCK: usize = 1 << 20;
    let mut out = match dest {
        Some(p) => Some(
            File::options()
                .write(true)
                .create_new(true)
                .open(p)
                .map_err(io(format!("cannot create {}", p.display())))?,
        ),
        None => None,
    };
    let shown = dest.map(|p| p.display().to_string()).unwrap_or_default();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut left = bytes;
    while left > 0 {
        let want = left.min(BLOCK as u64) as usize;
        r.read_exact(&mut buf[..want])
            .map_err(|e| bad(format!("the bundle was cut off: {e}")))?;
        hash.update(&buf[..want]);
        if let Some(f) = out.as_mut() {
            if buf[..want].iter().all(|&b| b == 0) {
                f.seek(SeekFrom::Current(want as i64))
                    .map_err(io(format!("cannot seek in {shown}")))?;
            } else {
                f.write_all(&buf[..want])
                    .map_err(io(format!("cannot write {shown}")))?;
            }
        }
        left -= want as u64;
    }
    if let Some(f) = out {
        f.set_len(bytes)
            .map_err(io(format!("cannot size {shown}")))?;
    }
    Ok(hex::encode(hash.finalize()))
}
