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

/// `zygote snapshot push|pull` against daemon `d`, its chunk cache in `home`;
/// the JSON answer, or the error text when `ok` is false.
fn registry_cmd(d: &Daemon, args: &[&str], home: &Path, ok: bool) -> serde_json::Value {
    let out = std::process::Command::new(zygote_tests::zygote_bin())
        .args(["snapshot"])
        .args(args)
        .args(["--json", "--home"])
        .arg(home)
        .env("ZYGOTE_SOCKET", &d.socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.success(), ok, "snapshot {args:?}: {stderr}");
    if ok {
        serde_json::from_slice(&out.stdout).unwrap()
    } else {
        serde_json::Value::String(stderr)
    }
}

async fn wait_ready(d: &Daemon, tag: &str) {
    for _ in 0..600 {
        if d.client.snapshot(tag).await.unwrap().status == SnapshotStatus::Ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("snapshot {tag} never became ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_travel_through_a_registry_in_shared_chunks() {
    if !require_e2e() {
        return;
    }
    if !zygote_tests::registry::available() {
        return;
    }
    let reg = zygote_tests::registry::Registry::start();
    let a = Daemon::start().await;
    let a_cache = a.dir.path().join("chunks");
    a.client
        .create_snapshot(&CreateSnapshot {
            tag: "base".into(),
            warmup: Some("x = 41".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_ready(&a, "base").await;
    let first_ref = format!("{}/e2e/snap:base", reg.addr);
    let first = registry_cmd(&a, &["push", "base", &first_ref], &a_cache, true);
    let first_bytes = first["pushed_bytes"].as_u64().unwrap();
    assert!(first["pushed_blobs"].as_u64().unwrap() > 10, "{first}");

    // A branch of a child of the same parent: only what changed travels.
    let kids = a
        .client
        .spawn(&SpawnBody {
            snapshot_tag: "base".into(),
            n: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let child = kids[0].sandbox.as_ref().unwrap().id.clone();
    a.client.eval(&child, "y = 7").await.unwrap();
    a.sh(&child, "echo second > /root/branch-file").await;
    a.client
        .branch(
            &child,
            &zygote_proto::api::BranchBody {
                tag: Some("second".into()),
                wait: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_ready(&a, "second").await;
    let second_ref = format!("{}/e2e/snap:second", reg.addr);
    let second = registry_cmd(&a, &["push", "second", &second_ref], &a_cache, true);
    // (Measured: about a seventh; the child's own pages and disk.)
    let sent = second["pushed_bytes"].as_u64().unwrap();
    assert!(
        sent * 3 < first_bytes,
        "a branch of the same parent sent {sent} bytes, the parent {first_bytes}: {second}"
    );
    assert!(second["present_blobs"].as_u64().unwrap() > 0, "{second}");

    // Another daemon, its own home and chunk cache, no images.
    let b = daemon_without_images().await;
    let b_cache = b.dir.path().join("chunks");
    let got = registry_cmd(&b, &["pull", &second_ref, "--tag", "got"], &b_cache, true);
    assert_eq!(got["snapshot"]["tag"], "got", "{got}");
    let kids = b
        .client
        .spawn(&SpawnBody {
            snapshot_tag: "got".into(),
            n: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = &kids[0]
        .sandbox
        .as_ref()
        .unwrap_or_else(|| panic!("{:?}", kids[0].error))
        .id;
    let v = b.client.eval(id, "x + y").await.unwrap();
    assert_eq!(v.result.as_deref(), Some("48"), "{v:?}");
    assert_eq!(b.sh(id, "cat /root/branch-file").await.stdout, "second\n");
    // Its parent now costs only what differs; a second pull costs nothing.
    let parent = registry_cmd(&b, &["pull", &first_ref], &b_cache, true);
    assert_eq!(parent["snapshot"]["tag"], "base", "{parent}");
    assert!(
        parent["fetched_bytes"].as_u64().unwrap() * 3 < first_bytes,
        "{parent}"
    );
    let again = registry_cmd(&b, &["pull", &first_ref, "--tag", "again"], &b_cache, true);
    assert_eq!(again["fetched_blobs"], 0, "{again}");

    // A corrupted chunk in the registry: a digest error, nothing registered.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(reg.blob_file(second["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let chunk = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut body = std::fs::read(reg.blob_file(&chunk)).unwrap();
    body[0] ^= 0xff;
    std::fs::write(reg.blob_file(&chunk), &body).unwrap();
    let fresh = b.dir.path().join("fresh-chunks");
    let err = registry_cmd(&b, &["pull", &second_ref, "--tag", "broken"], &fresh, false);
    assert!(err.as_str().unwrap().contains("verification"), "{err}");
    assert!(b.client.snapshot("broken").await.is_err());
    // Something that is not a snapshot.
    let err = registry_cmd(
        &b,
        &["pull", &format!("{}/e2e/none:1", reg.addr)],
        &fresh,
        false,
    );
    assert!(
        err.as_str().unwrap().contains("not in the registry"),
        "{err}"
    );
}
