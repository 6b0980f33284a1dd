//! OCI images in, end to end: images made by the test with Debian's `umoci`
//! (from a busybox tree and from the test image's own root, which has Python),
//! pushed with `skopeo` to a `docker-registry` the test starts on loopback,
//! pulled with `zygote image pull`, booted and used through the daemon.
//! Nothing leaves the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use zygote_proto::api::CreateSandbox;
use zygote_tests::registry::{run, Registry};
use zygote_tests::{image_home, require_e2e, zygote_bin, Daemon};

/// What earlier runs left in the shared test home (pulled blobs, `e2e-oci-*`
/// images), removed once per run before the first test uses it, so runs on
/// one machine do not pile up.
fn clean_once() {
    static CLEAN: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CLEAN.get_or_init(|| {
        let home = image_home();
        let _ = std::fs::remove_dir_all(home.join("cache/oci"));
        let _ = std::fs::remove_dir_all(home.join("cache/oci-tree"));
        for e in std::fs::read_dir(home.join("images"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("e2e-oci-") || name == "saved-v2" {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    });
}

/// The tools the tests need; under ZYGOTE_E2E=1 their absence is a failure.
fn tools() -> bool {
    let missing: Vec<&str> = ["docker-registry", "umoci", "skopeo", "debugfs", "htpasswd"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        clean_once();
        return true;
    }
    let why = format!(
        "missing {} (scripts/install-deps.sh installs them)",
        missing.join(", ")
    );
    assert!(
        std::env::var("ZYGOTE_E2E").as_deref() != Ok("1"),
        "ZYGOTE_E2E=1 but {why}"
    );
    eprintln!("SKIP: {why}");
    false
}

/// An OCI layout at `dir` with image `tag`: `root` as the first layer, then a
/// second layer made by `change` on the unpacked bundle; `config` args for
/// `umoci config` (env, working dir).
fn make_image(dir: &Path, tag: &str, root: &Path, config: &[&str], change: impl FnOnce(&Path)) {
    let layout = dir.join("layout");
    let image = format!("{}:{tag}", layout.display());
    if !layout.exists() {
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout));
    }
    run(Command::new("umoci").args(["new", "--image", &image]));
    let bundle = dir.join(format!("bundle-{tag}"));
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", root.display()))
        .arg(bundle.join("rootfs")));
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new("umoci")
        .args(["config", "--image", &image])
        .args(config));
    std::fs::remove_dir_all(&bundle).unwrap();
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    change(&bundle.join("rootfs"));
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    std::fs::remove_dir_all(&bundle).unwrap();
}

/// A busybox tree: no Python.
fn busybox_root(dir: &Path) -> PathBuf {
    let root = dir.join("bbroot");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat", "echo", "test", "pwd", "id", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/doomed"), "deleted by the upper layer\n").unwrap();
    root
}

/// `zygote image pull` into the test home; returns its JSON answer, or the
/// error text when `ok` is false.
fn pull(reference: &str, name: &str, ok: bool) -> Value {
    pull_as(reference, name, None, ok)
}

/// The same with `user` (name, password; the password on standard input).
fn pull_as(reference: &str, name: &str, user: Option<(&str, &str)>, ok: bool) -> Value {
    let mut cmd = Command::new(zygote_bin());
    cmd.args([
        "image", "pull", reference, "--name", name, "--json", "--home",
    ])
    .arg(image_home())
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some((u, _)) = user {
        cmd.args(["--username", u, "--password-stdin"]);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some((_, p)) = user {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{p}").unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.success(), ok, "pull {reference}: {stderr}");
    if ok {
        serde_json::from_slice(&out.stdout).unwrap()
    } else {
        Value::String(stderr)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn busybox_image_pulled_boots_with_its_config_and_whiteouts() {
    if !require_e2e() || !tools() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_root(tmp.path());
    make_image(
        tmp.path(),
        "1",
        &root,
        &[
            "--config.env",
            "PATH=/bin",
            "--config.env",
            "GREETING=hello",
            "--config.workingdir",
            "/etc",
            "--config.user",
            "app",
        ],
        |r| std::fs::remove_file(r.join("etc/doomed")).unwrap(),
    );
    let reference = reg.push(&tmp.path().join("layout"), "1", "e2e/bb");
    let first = pull(&reference, "e2e-oci-bb", true);
    // The config and the upper layer are new (the base layer may be cached
    // from another test: blobs are shared by digest).
    assert!(
        first["pull"]["fetched_blobs"].as_u64().unwrap() >= 2,
        "{first}"
    );
    assert_eq!(first["exec"]["env"]["GREETING"], "hello", "{first}");
    // Pulled again: every blob is already here.
    let again = pull(&reference, "e2e-oci-bb", true);
    assert_eq!(again["pull"]["fetched_blobs"], 0, "{again}");
    assert_eq!(again["cached"], true, "{again}");

    let d = Daemon::start().await;
    let sb = d
        .create_with(CreateSandbox {
            image: Some("e2e-oci-bb".into()),
            ..Default::default()
        })
        .await;
    let r = d
        .sh(
            &sb.id,
            "echo $GREETING; pwd; test -e /etc/doomed && echo present || echo absent; id -u",
        )
        .await;
    // The image's User runs the command; a request's own user wins.
    assert_eq!(r.stdout, "hello\n/etc\nabsent\n1000\n", "{r:?}");
    let r = d
        .client
        .exec(
            &sb.id,
            &zygote_proto::api::ExecBody {
                cmd: Some("id -u".into()),
                user: Some("root".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, "0\n", "{r:?}");
    let err = d
        .client
        .eval(&sb.id, "1+1")
        .await
        .expect_err("eval without python3");
    assert!(err.to_string().contains("python3"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_image_pulled_evals_and_a_resumed_pull_fetches_the_rest() {
    if !require_e2e() || !tools() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let cur = std::fs::read_to_string(image_home().join("images/python/current")).unwrap();
    let rootfs = image_home()
        .join("images/python")
        .join(cur.trim())
        .join("rootfs.ext4");
    let root = tmp.path().join("pyroot");
    std::fs::create_dir(&root).unwrap();
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", root.display()))
        .arg(&rootfs));
    make_image(
        tmp.path(),
        "py",
        &root,
        &[
            "--config.env",
            "APP_MODE=oci",
            "--config.workingdir",
            "/srv/app",
        ],
        |r| {
            std::fs::create_dir_all(r.join("srv/app")).unwrap();
            std::fs::write(r.join("srv/app/data.txt"), "from the image\n").unwrap();
        },
    );
    let reference = reg.push(&tmp.path().join("layout"), "py", "e2e/py");
    // Half of the big layer is already here, as a cut pull leaves it.
    let index: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("layout/index.json")).unwrap())
            .unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(reg.blob_file(&manifest_digest)).unwrap()).unwrap();
    let big = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let size = manifest["layers"][0]["size"].as_u64().unwrap();
    let blobs = image_home().join("cache/oci/blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let _ = std::fs::remove_file(blobs.join(big.trim_start_matches("sha256:")));
    let body = std::fs::read(reg.blob_file(&big)).unwrap();
    std::fs::write(
        blobs.join(format!(".partial-{}", big.trim_start_matches("sha256:"))),
        &body[..body.len() / 2],
    )
    .unwrap();
    let pulled = pull(&reference, "e2e-oci-py", true);
    let fetched = pulled["pull"]["fetched_bytes"].as_u64().unwrap();
    assert!(
        fetched < size,
        "the cut layer was fetched whole ({fetched} of {size} bytes): {pulled}"
    );

    let d = Daemon::start().await;
    let sb = d
        .create_with(CreateSandbox {
            image: Some("e2e-oci-py".into()),
            ..Default::default()
        })
        .await;
    let r = d.sh(&sb.id, "echo $APP_MODE; pwd; cat data.txt").await;
    assert_eq!(r.stdout, "oci\n/srv/app\nfrom the image\n", "{r:?}");
    let v = d.client.eval(&sb.id, "6*7").await.unwrap();
    assert_eq!(v.result.as_deref(), Some("42"), "{v:?}");
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    if !require_e2e() || !tools() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_root(tmp.path());
    make_image(tmp.path(), "ok", &root, &["--config.env", "X=1"], |r| {
        std::fs::write(r.join("etc/unique"), format!("{:?}", tmp.path())).unwrap();
    });
    make_image(
        tmp.path(),
        "arm",
        &root,
        &["--architecture", "arm64"],
        |_| {},
    );
    let layout = tmp.path().join("layout");

    // An unknown reference.
    let err = pull(&format!("{}/e2e/none:1", reg.addr), "e2e-oci-none", false);
    assert!(
        err.as_str().unwrap().contains("not in the registry"),
        "{err}"
    );
    // An image for another architecture.
    let out = Command::new(zygote_bin())
        .args([
            "image",
            "import",
            "--tag",
            "arm",
            "--name",
            "e2e-oci-arm",
            "--home",
        ])
        .arg(image_home())
        .arg(&layout)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("linux/amd64"),
        "{text}"
    );
    assert!(!image_home().join("images/e2e-oci-arm/current").exists());
    // A corrupted blob in the registry: a digest error, nothing registered.
    let reference = reg.push(&layout, "ok", "e2e/corrupt");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "ok")
        .unwrap();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(reg.blob_file(entry["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let top = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut body = std::fs::read(reg.blob_file(&top)).unwrap();
    let last = body.len() - 1;
    body[last] ^= 0xff;
    std::fs::write(reg.blob_file(&top), &body).unwrap();
    let err = pull(&reference, "e2e-oci-corrupt", false);
    assert!(err.as_str().unwrap().contains("verification"), "{err}");
    assert!(!image_home().join("images/e2e-oci-corrupt/current").exists());
    let partial = image_home()
        .join("cache/oci/blobs/sha256")
        .join(format!(".partial-{}", top.trim_start_matches("sha256:")));
    assert!(!partial.exists(), "a corrupt blob was kept");
}

#[test]
fn credentials_are_required_and_checked_and_docker_archives_import() {
    if !require_e2e() || !tools() {
        return;
    }
    let reg = Registry::start_with_user(Some(("alice", "s3cret")));
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_root(tmp.path());
    make_image(
        tmp.path(),
        "auth",
        &root,
        &["--config.env", "WHO=alice"],
        |_| {},
    );
    let layout = tmp.path().join("layout");
    let reference = reg.push_as(&layout, "auth", "e2e/private", Some("alice:s3cret"));

    let err = pull(&reference, "e2e-oci-auth", false);
    assert!(err.as_str().unwrap().contains("needs credentials"), "{err}");
    let err = pull_as(&reference, "e2e-oci-auth", Some(("alice", "wrong")), false);
    assert!(
        err.as_str().unwrap().contains("refused the credentials"),
        "{err}"
    );
    assert!(!image_home().join("images/e2e-oci-auth/current").exists());
    let ok = pull_as(&reference, "e2e-oci-auth", Some(("alice", "s3cret")), true);
    assert_eq!(ok["exec"]["env"]["WHO"], "alice", "{ok}");

    // The same image as a `docker save` tarball (skopeo writes that format).
    let tarball = tmp.path().join("saved.tar");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci:{}:auth", layout.display()),
        &format!("docker-archive:{}:e2e/saved:v2", tarball.display()),
    ]));
    let out = Command::new(zygote_bin())
        .args(["image", "import", "--json", "--home"])
        .arg(image_home())
        .arg(&tarball)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "saved-v2", "{v}");
    assert_eq!(v["exec"]["env"]["WHO"], "alice", "{v}");
    let _ = std::fs::remove_dir_all(image_home().join("images/saved-v2"));
}

#[test]
fn an_https_registry_with_a_private_ca() {
    if !require_e2e() || !tools() {
        return;
    }
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let tmp = tempfile::tempdir().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "zygote registry test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    let p = |n: &str| tmp.path().join(n);
    std::fs::write(p("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(p("cert.pem"), cert.pem()).unwrap();
    std::fs::write(p("key.pem"), key.serialize_pem()).unwrap();
    let reg = Registry::start_with(None, Some((&p("cert.pem"), &p("key.pem"))));
    let root = busybox_root(tmp.path());
    make_image(
        tmp.path(),
        "tls",
        &root,
        &["--config.env", "VIA=https"],
        |_| {},
    );
    // skopeo pushes without checking the certificate; zygote checks it.
    let reference = reg.push(&tmp.path().join("layout"), "tls", "e2e/tls");
    let pull_with = |extra: &[&str]| {
        Command::new(zygote_bin())
            .args([
                "image",
                "pull",
                &reference,
                "--name",
                "e2e-oci-tls",
                "--json",
                "--home",
            ])
            .arg(image_home())
            .args(extra)
            .output()
            .unwrap()
    };
    // No CA: plain http to an https port fails.
    let out = pull_with(&[]);
    assert!(
        !out.status.success(),
        "pulled over http from an https registry"
    );
    // Another CA: the certificate is refused.
    std::fs::write(p("other.pem"), {
        let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        other
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .pem()
    })
    .unwrap();
    let out = pull_with(&["--ca-file", p("other.pem").to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "a certificate of an unknown CA was accepted"
    );
    let out = pull_with(&["--ca-file", p("ca.pem").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exec"]["env"]["VIA"], "https", "{v}");
}
