//! A `docker-registry` (Debian's package) on loopback for the OCI tests, and
//! the command runner they share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{eventually, free_port};

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `docker-registry` on 127.0.0.1 with its storage in a temp dir.
pub struct Registry {
    child: Child,
    pub addr: String,
    store: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with_user(None)
    }

    /// With `user` (name, password): basic auth from an htpasswd file.
    pub fn start_with_user(user: Option<(&str, &str)>) -> Registry {
        Self::start_with(user, None)
    }

    /// With basic auth (`user`) and/or https (`tls`: certificate and key PEM
    /// files).
    pub fn start_with(user: Option<(&str, &str)>, tls: Option<(&Path, &Path)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let store = dir.path().join("store");
        let config = dir.path().join("config.yml");
        let auth = match user {
            None => String::new(),
            Some((name, password)) => {
                let htpasswd = dir.path().join("htpasswd");
                let line = run(Command::new("htpasswd").args(["-Bbn", name, password]));
                std::fs::write(&htpasswd, line).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: zygote-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
        };
        let tls = match tls {
            None => String::new(),
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n{auth}http:\n  addr: 127.0.0.1:{port}\n{tls}",
                store.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let addr = format!("127.0.0.1:{port}");
        assert!(
            eventually(Duration::from_secs(20), || std::net::TcpStream::connect(
                &addr
            )
            .is_ok()),
            "docker-registry did not listen on {addr}"
        );
        Registry {
            child,
            addr,
            store,
            _dir: dir,
        }
    }

    /// Pushes `layout:tag` as `repo:tag` with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str) -> String {
        self.push_as(layout, tag, repo, None)
    }

    pub fn push_as(&self, layout: &Path, tag: &str, repo: &str, creds: Option<&str>) -> String {
        let reference = format!("{}/{repo}:{tag}", self.addr);
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        run(cmd.args([
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{reference}"),
        ]));
        reference
    }

    /// The data file of blob `digest` in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.store
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `docker-registry` is installed; under ZYGOTE_E2E=1 its absence is
/// a failure, otherwise the caller skips.
pub fn available() -> bool {
    let ok = Command::new("sh")
        .args(["-c", "command -v docker-registry"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("ZYGOTE_E2E").as_deref() != Ok("1"),
            "ZYGOTE_E2E=1 but docker-registry is missing (scripts/install-deps.sh installs it)"
        );
        eprintln!("SKIP: docker-registry is missing");
    }
    ok
}
