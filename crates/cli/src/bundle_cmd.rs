//! `zygote snapshot pack|unpack`: a snapshot with its disk chain and image as
//! one zstd-compressed tar file, for moves between hosts without a registry.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use zygote_client::Client;
use zygote_proto::api::SnapshotInfo;

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
