//! End-to-end: files in and out of a real guest, byte-exact.

use rand::RngCore;
use sha2::{Digest, Sha256};
use zygote_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn four_mib_random_round_trip_both_ways() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let sb = d.create().await;
    let c = &d.client;

    // host -> guest -> host
    let mut data = vec![0u8; 4 * 1024 * 1024 + 123];
    rand::thread_rng().fill_bytes(&mut data);
    let want = hex::encode(Sha256::digest(&data));
    let w = c
        .upload(&sb.id, "/tmp/deep/new/dir/up.bin", data.clone())
        .await
        .unwrap();
    assert_eq!(w.bytes, data.len() as u64);
    let r = d
        .sh(&sb.id, "sha256sum /tmp/deep/new/dir/up.bin | cut -d' ' -f1")
        .await;
    assert_eq!(r.stdout.trim(), want, "guest sees different bytes");
    let back = c
        .download(&sb.id, "/tmp/deep/new/dir/up.bin")
        .await
        .unwrap();
    assert!(back == data, "download differs from upload");

    // guest -> host
    let r = d
        .sh(
            &sb.id,
            "head -c 4194304 /dev/urandom > /tmp/g.bin && sha256sum /tmp/g.bin | cut -d' ' -f1",
        )
        .await;
    let guest_sum = r.stdout.trim().to_string();
    let got = c.download(&sb.id, "/tmp/g.bin").await.unwrap();
    assert_eq!(got.len(), 4 * 1024 * 1024);
    assert_eq!(hex::encode(Sha256::digest(&got)), guest_sum);

    // every byte value survives, including NUL and 0xff runs
    let all: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    c.upload(&sb.id, "/tmp/all.bin", all.clone()).await.unwrap();
    assert!(c.download(&sb.id, "/tmp/all.bin").await.unwrap() == all);

    // empty files
    c.upload(&sb.id, "/tmp/empty", Vec::new()).await.unwrap();
    assert!(c.download(&sb.id, "/tmp/empty").await.unwrap().is_empty());

    // stat, list, remove
    let st = c.stat(&sb.id, "/tmp/g.bin").await.unwrap();
    assert_eq!((st.size, st.kind.as_str()), (4 * 1024 * 1024, "file"));
    let names: Vec<String> = c
        .list_dir(&sb.id, "/tmp")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    for n in ["all.bin", "deep", "empty", "g.bin"] {
        assert!(names.contains(&n.to_string()), "{n} not in {names:?}");
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "list is sorted");
    c.remove_path(&sb.id, "/tmp/deep", true).await.unwrap();
    let e = c.stat(&sb.id, "/tmp/deep").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    let e = c.download(&sb.id, "/tmp/nope").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert!(e.to_string().contains("/tmp/nope"), "{e}");

    // a file upload keeps its mode through `cp`-style uploads
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), b"#!/bin/sh\necho run-me\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    c.upload_file(&sb.id, tmp.path(), "/usr/local/bin/run-me")
        .await
        .unwrap();
    assert_eq!(d.sh(&sb.id, "run-me").await.stdout, "run-me\n");
}

/// Sectors the guest has read from and written to its transfer disk (the
/// virtio-blk device with serial `xfer`), from `/sys/block/vdX/stat`.
async fn xfer_sectors(d: &Daemon, id: &str) -> (u64, u64) {
    let r = d
        .sh(
            id,
            "for b in /sys/block/vd*; do [ \"$(cat $b/serial 2>/dev/null)\" = xfer ] && cat $b/stat; done",
        )
        .await;
    let f: Vec<u64> = r
        .stdout
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(f.len() >= 7, "no transfer disk in the guest: {r:?}");
    (f[2], f[6])
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Blocks the transfer disk holds on the host (0 when every extent is freed).
fn xfer_blocks(d: &Daemon, id: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let p = d.home.join("sandboxes").join(id).join("xfer.img");
    std::fs::metadata(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .blocks()
}

#[tokio::test(flavor = "multi_thread")]
async fn big_files_move_through_the_transfer_disk() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let sb = d.create().await;
    let c = &d.client;
    let id = sb.id.as_str();

    // 40 MiB each way: more than one 8 MiB window, byte-exact, and really
    // through the disk (the guest read/wrote at least that much of it).
    let data = random(40 << 20);
    let (r0, w0) = xfer_sectors(&d, id).await;
    c.upload(id, "/tmp/big.bin", data.clone()).await.unwrap();
    let (r1, _) = xfer_sectors(&d, id).await;
    assert!(
        (r1 - r0) * 512 >= data.len() as u64,
        "upload did not go through the transfer disk: {} sectors read",
        r1 - r0
    );
    let want = hex::encode(Sha256::digest(&data));
    let r = d.sh(id, "sha256sum /tmp/big.bin | cut -d' ' -f1").await;
    assert_eq!(r.stdout.trim(), want, "guest sees different bytes");
    let back = c.download(id, "/tmp/big.bin").await.unwrap();
    let (_, w1) = xfer_sectors(&d, id).await;
    assert!(
        (w1 - w0) * 512 >= data.len() as u64,
        "download did not go through the transfer disk: {} sectors written",
        w1 - w0
    );
    assert!(back == data, "download differs from upload");
    c.remove_path(id, "/tmp/big.bin", false).await.unwrap();

    // An unaligned size both ways, and a guest-made file.
    let odd = random(3 * 1024 * 1024 + 777);
    c.upload(id, "/tmp/odd.bin", odd.clone()).await.unwrap();
    assert_eq!(
        c.stat(id, "/tmp/odd.bin").await.unwrap().size,
        odd.len() as u64
    );
    assert!(c.download(id, "/tmp/odd.bin").await.unwrap() == odd);
    let r = d
        .sh(
            id,
            "head -c 5243661 /dev/urandom > /tmp/g.bin && sha256sum /tmp/g.bin | cut -d' ' -f1",
        )
        .await;
    let got = c.download(id, "/tmp/g.bin").await.unwrap();
    assert_eq!(got.len(), 5_243_661);
    assert_eq!(hex::encode(Sha256::digest(&got)), r.stdout.trim());

    // Concurrent transfers in one sandbox never share an extent.
    let files: Vec<Vec<u8>> = (0..4).map(|i| random((2 << 20) + i * 4099)).collect();
    let paths: Vec<String> = (0..4).map(|i| format!("/tmp/c{i}.bin")).collect();
    let ups = paths
        .iter()
        .zip(&files)
        .map(|(p, f)| c.upload(id, p, f.clone()));
    for r in futures::future::join_all(ups).await {
        r.unwrap();
    }
    let downs = paths.iter().map(|p| c.download(id, p));
    for (got, want) in futures::future::join_all(downs)
        .await
        .into_iter()
        .zip(&files)
    {
        assert!(got.unwrap() == *want, "a concurrent transfer mixed bytes");
    }

    // Every extent was freed and hole-punched; the disk goes with the sandbox.
    assert_eq!(xfer_blocks(&d, id), 0, "xfer.img keeps disk space");
    c.remove(id).await.unwrap();
    assert!(!d.home.join("sandboxes").join(id).exists());
}
