//! Snapshots that travel, end to end: a warm snapshot exported from one daemon
//! as a bundle (`GET /v1/snapshots/{tag}/bundle`), imported into a second
//! daemon with its own home and no images (`PUT`), and children of the import
//! that have the parent's interpreter state and files. A corrupted, a cut and
//! an incompatible bundle are refused and leave nothing behind.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use zygote_proto::api::{CreateSnapshot, SnapshotStatus, SpawnBody};
use zygote_tests::{files_below, require_e2e, Daemon};

/// A file's bytes as an upload stream.
fn stream_of(path: &Path) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Sync {
    let mut f = std::fs::File::open(path).unwrap();
    let mut chunks = Vec::new();
    loop {
        let mut buf = vec![0u8; 4 << 20];
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        buf.truncate(n);
        chunks.push(Ok(Bytes::from(buf)));
    }
    futures::stream::iter(chunks)
}

/// The second daemon's own home, without the shared images (so the import
/// has to install the image it carries).
async fn daemon_without_images() -> Daemon {
    let d = Daemon::start().await;
    std::fs::remove_file(d.home.join("images")).unwrap();
    std::fs::create_dir(d.home.join("images")).unwrap();
    d
}

/// What an import may leave in `home` when it fails: nothing but empty dirs.
fn leftovers(home: &Path) -> Vec<PathBuf> {
    files_below(home)
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            s.contains("/disks/") || s.contains("/snapshots/") || s.contains("/images/")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_moves_to_another_daemon_and_bad_bundles_are_refused() {
    if !require_e2e() {
        return;
    }
    let a = Daemon::start().await;
    a.client
        .create_snapshot(&CreateSnapshot {
            tag: "travel".into(),
            warmup: Some("x = 41\nopen('/root/made-before', 'w').write('kept')".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 0..300 {
        if a.client.snapshot("travel").await.unwrap().status == SnapshotStatus::Ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("travel.tar");
    let mut out = tokio::fs::File::create(&bundle).await.unwrap();
    let n = a.client.export_snapshot("travel", &mut out).await.unwrap();
    drop(out);
    assert_eq!(std::fs::metadata(&bundle).unwrap().len(), n);

    let b = daemon_without_images().await;
    // Damaged copies first: each refused, nothing left behind.
    let corrupt = tmp.path().join("corrupt.tar");
    std::fs::copy(&bundle, &corrupt).unwrap();
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&corrupt)
            .unwrap();
        // Inside memory.bin (after bundle.json and vmstate): flip one byte.
        let at = n / 4;
        f.seek(SeekFrom::Start(at)).unwrap();
        let mut byte = [0u8; 1];
        f.read_exact(&mut byte).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[byte[0] ^ 0x5a]).unwrap();
    }
    let err = b
        .client
        .import_snapshot("bad", stream_of(&corrupt))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    let cut = tmp.path().join("cut.tar");
    std::fs::write(&cut, &std::fs::read(&bundle).unwrap()[..(n / 2) as usize]).unwrap();
    let err = b
        .client
        .import_snapshot("bad", stream_of(&cut))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cut off"), "{err}");
    // A bundle from another QEMU: refused by its manifest alone.
    let mut archive = tar::Archive::new(std::fs::File::open(&bundle).unwrap());
    let mut manifest: serde_json::Value = {
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        serde_json::from_reader(entry).unwrap()
    };
    manifest["qemu_version"] = "8.2.0".into();
    let foreign = tmp.path().join("foreign.tar");
    {
        let json = serde_json::to_vec(&manifest).unwrap();
        let mut t = tar::Builder::new(std::fs::File::create(&foreign).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(json.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        t.append_data(&mut h, "bundle.json", &json[..]).unwrap();
        t.finish().unwrap();
    }
    let err = b
        .client
        .import_snapshot("bad", stream_of(&foreign))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("QEMU 8.2.0"), "{err}");
    assert!(
        b.client.snapshot("bad").await.is_err(),
        "a refused bundle was registered"
    );
    assert_eq!(
        leftovers(&b.home),
        Vec::<PathBuf>::new(),
        "a refused import left files"
    );

    // The real one.
    let info = b
        .client
        .import_snapshot("moved", stream_of(&bundle))
        .await
        .unwrap();
    assert_eq!(info.tag, "moved");
    assert_eq!(info.status, SnapshotStatus::Ready);
    let err = b
        .client
        .import_snapshot("moved", stream_of(&bundle))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("taken"), "{err}");
    let kids = b
        .client
        .spawn(&SpawnBody {
            snapshot_tag: "moved".into(),
            n: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    for k in &kids {
        let id = &k
            .sandbox
            .as_ref()
            .unwrap_or_else(|| panic!("child failed: {:?}", k.error))
            .id;
        let v = b.client.eval(id, "x + 1").await.unwrap();
        assert_eq!(v.result.as_deref(), Some("42"), "{v:?}");
        let r = b.sh(id, "cat /root/made-before").await;
        assert_eq!(r.stdout, "kept", "{r:?}");
    }
    // The source is untouched and still spawns.
    let kids = a
        .client
        .spawn(&SpawnBody {
            snapshot_tag: "travel".into(),
            n: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(kids[0].sandbox.is_some(), "{:?}", kids[0].error);
}
