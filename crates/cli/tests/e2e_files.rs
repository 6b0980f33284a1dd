//! End-to-end: files in and out of a real guest, byte-exact.

mod common;

use common::*;
use rand::RngCore;
use sha2::{Digest, Sha256};

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
