//! `zygote snapshot pack|unpack`: a snapshot with its disk chain and image as
//! one zstd-compressed tar file, for moves between hosts without a registry;
//! `zygote snapshot push|pull`: the same bundle as content-addressed chunks
//! in an OCI registry (`zygote-registry`).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use zygote_client::Client;
use zygote_proto::api::SnapshotInfo;

use crate::output::print_json;
use crate::registry_args::ChunkArgs;

/// zstd level of `pack` (fast; guest RAM and ext4 images are mostly zeros).
const LEVEL: i32 = 3;

/// Downloads snapshot `tag`'s bundle into `file` (zstd), written as
/// `file.partial` and renamed when complete. Returns the bundle's bytes.
pub(crate) async fn pack(c: &Client, tag: &str, file: &Path) -> Result<u64> {
    let partial = PathBuf::from(format!("{}.partial", file.display()));
    let (mut w, r) = tokio::io::duplex(1 << 20);
    let out = partial.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<()> {
        let f = std::fs::File::create(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let mut enc = zstd::Encoder::new(f, LEVEL)?;
        let mut r = tokio_util::io::SyncIoBridge::new(r);
        std::io::copy(&mut r, &mut enc).context("cannot compress the bundle")?;
        enc.finish()?.sync_all()?;
        Ok(())
    });
    let got = c.export_snapshot(tag, &mut w).await;
    drop(w);
    let written = writer.await?;
    let n = match (got, written) {
        (Ok(n), Ok(())) => n,
        (Err(e), _) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
        (_, Err(e)) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, file)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), file.display()))?;
    Ok(n)
}

/// The bundle in `file` (zstd or plain tar), decompressed.
fn open(file: &Path) -> Result<Box<dyn Read + Send>> {
    let mut f =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic)?;
    let f = std::fs::File::open(file)?;
    Ok(if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::Decoder::new(f)?)
    } else {
        Box::new(f)
    })
}

/// The tag the bundle in `file` was exported with (from its `bundle.json`).
fn bundled_tag(file: &Path) -> Result<String> {
    let mut archive = tar::Archive::new(open(file)?);
    let mut entries = archive.entries()?;
    let Some(entry) = entries.next() else {
        bail!(
            "{} is empty: pass a file made by `zygote snapshot pack`",
            file.display()
        );
    };
    let entry = entry?;
    if entry.path()?.to_string_lossy() != "bundle.json" {
        bail!(
            "{} does not start with bundle.json: pass a file made by `zygote snapshot pack`",
            file.display()
        );
    }
    let mut text = Vec::new();
    entry.take(1 << 20).read_to_end(&mut text)?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("bundle.json of {} is not JSON", file.display()))?;
    v["snapshot"]["tag"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("bundle.json of {} names no tag", file.display()))
}

/// Uploads the bundle in `file` as snapshot `tag` (default: its own).
pub(crate) async fn unpack(c: &Client, file: &Path, tag: Option<String>) -> Result<SnapshotInfo> {
    let tag = match tag {
        Some(t) => t,
        None => {
            let f = file.to_path_buf();
            tokio::task::spawn_blocking(move || bundled_tag(&f)).await??
        }
    };
    let mut reader = open(file)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Ok(c.import_snapshot(&tag, stream).await?)
}

/// `zygote snapshot push`: pushes and reports.
pub(crate) async fn push_cmd(
    c: &Client,
    tag: &str,
    reference: &str,
    with: &ChunkArgs,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    let layout = crate::registry_args::layout(&with.home)?;
    let (cut, pushed) = push(c, tag, reference, layout, &with.registry.remote()?).await?;
    let secs = t0.elapsed().as_secs_f64();
    if with.json {
        print_json(&serde_json::json!({
            "reference": pushed.reference,
            "digest": pushed.digest,
            "bundle_bytes": cut.bundle_bytes,
            "chunks": cut.chunks,
            "zero_chunks": cut.zero_chunks,
            "pushed_blobs": pushed.pushed_blobs,
            "pushed_bytes": pushed.pushed_bytes,
            "present_blobs": pushed.present_blobs,
            "secs": secs,
        }))?;
    } else {
        println!(
            "{tag} -> {} ({}): {} blob(s) sent ({:.1} MB), {} already there; {:.1} MB bundle in {} chunks ({} zero); {secs:.1} s",
            pushed.reference,
            pushed.digest,
            pushed.pushed_blobs,
            pushed.pushed_bytes as f64 / 1e6,
            pushed.present_blobs,
            cut.bundle_bytes as f64 / 1e6,
            cut.chunks,
            cut.zero_chunks
        );
    }
    Ok(())
}

/// `zygote snapshot pull`: pulls, imports and reports.
pub(crate) async fn pull_cmd(
    c: &Client,
    reference: &str,
    tag: Option<String>,
    with: &ChunkArgs,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    let layout = crate::registry_args::layout(&with.home)?;
    let (info, pulled) = pull(c, reference, tag, layout, &with.registry.remote()?).await?;
    let secs = t0.elapsed().as_secs_f64();
    if with.json {
        print_json(&serde_json::json!({
            "snapshot": info,
            "reference": pulled.reference,
            "digest": pulled.digest,
            "fetched_blobs": pulled.fetched_blobs,
            "fetched_bytes": pulled.fetched_bytes,
            "cached_blobs": pulled.cached_blobs,
            "secs": secs,
        }))?;
    } else {
        println!(
            "{} <- {}: {} blob(s) fetched ({:.1} MB), {} already here; {secs:.1} s",
            info.tag,
            pulled.reference,
            pulled.fetched_blobs,
            pulled.fetched_bytes as f64 / 1e6,
            pulled.cached_blobs
        );
    }
    Ok(())
}

/// Cuts snapshot `tag`'s bundle into chunks in `layout` (only new ones are
/// written) and pushes what the registry lacks as `reference`.
pub(crate) async fn push(
    c: &Client,
    tag: &str,
    reference: &str,
    layout: zygote_registry::Layout,
    remote: &zygote_registry::Remote,
) -> Result<(zygote_registry::CutStats, zygote_registry::Pushed)> {
    let (mut w, r) = tokio::io::duplex(1 << 20);
    let cut_layout = layout.clone();
    let cutter = tokio::task::spawn_blocking(move || {
        let r = tokio_util::io::SyncIoBridge::new(r);
        zygote_registry::chunks::cut(r, &cut_layout)
    });
    let got = c.export_snapshot(tag, &mut w).await;
    drop(w);
    let cut = cutter.await?;
    got?;
    let (index, stats) = cut?;
    let pushed = zygote_registry::push_snapshot(&index, &layout, reference, remote).await?;
    Ok((stats, pushed))
}

/// Pulls snapshot `reference` (only the chunks this host lacks) and makes it
/// snapshot `tag` (default: the tag it was pushed from) of the daemon.
pub(crate) async fn pull(
    c: &Client,
    reference: &str,
    tag: Option<String>,
    layout: zygote_registry::Layout,
    remote: &zygote_registry::Remote,
) -> Result<(SnapshotInfo, zygote_registry::SnapshotPulled)> {
    // Refuse before the download what the daemon would refuse after it.
    let daemon = c.version().await?;
    let check = move |json: &[u8]| -> Result<(), String> {
        let v: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("bundle.json is not JSON: {e}"))?;
        let minor = |s: &str| s.split('.').take(2).collect::<Vec<_>>().join(".");
        let theirs = v["qemu_version"].as_str().unwrap_or("?");
        if minor(theirs) != minor(&daemon.qemu) {
            return Err(format!(
                "the snapshot was made by QEMU {theirs}, the daemon runs QEMU {}: a restore needs the same QEMU major.minor version",
                daemon.qemu
            ));
        }
        let accel = v["snapshot"]["machine"]["accel"].as_str().unwrap_or("?");
        if accel != daemon.accel {
            return Err(format!(
                "the snapshot was taken under {accel}, the daemon runs {}: children must use the same accelerator",
                daemon.accel
            ));
        }
        Ok(())
    };
    let (index, pulled) =
        zygote_registry::pull_snapshot(reference, &layout, remote, &check).await?;
    let tag = match tag {
        Some(t) => t,
        None => {
            let json = zygote_registry::chunks::read_file(
                &index,
                &layout,
                zygote_registry::chunks::MANIFEST_FILE,
                1 << 20,
            )?;
            let v: serde_json::Value = serde_json::from_slice(&json)
                .with_context(|| format!("bundle.json of {reference} is not JSON"))?;
            v["snapshot"]["tag"]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("bundle.json of {reference} names no tag"))?
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        if let Err(e) = zygote_registry::chunks::assemble(&index, &layout, &mut w)
            .map_err(std::io::Error::other)
            .and_then(|()| std::io::Write::flush(&mut w))
        {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let info = c.import_snapshot(&tag, stream).await?;
    Ok((info, pulled))
}

/// A writer whose bytes go out as 256 KiB chunks on a channel.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}
