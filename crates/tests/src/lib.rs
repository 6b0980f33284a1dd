//! End-to-end test harness: a real `zygote daemon` on a private socket and home,
//! booting real guests under TCG from the image `scripts/test.sh` builds. The
//! tests of this crate (`tests/`: the daemon and the engine through REST) and
//! the CLI's own tests use it; it is the only code of this crate.
//!
//! Tests call [`require_e2e`] first: without root, QEMU or a built image they
//! print why and return, unless `ZYGOTE_E2E=1` (CI), where that is a failure.
//!
//! The binary under test is found by [`zygote_bin`]: this crate cannot name
//! the CLI's binary, so `cargo test -p zygote-tests` alone does not build it
//! (`cargo test --workspace` and `scripts/test.sh` do).

pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use zygote_client::{Client, Endpoint};
use zygote_proto::api::{CreateSandbox, ExecBody, ExecResult, SandboxInfo};

/// Where `scripts/test.sh` builds the image.
pub fn image_home() -> PathBuf {
    PathBuf::from(
        std::env::var("ZYGOTE_TEST_HOME").unwrap_or_else(|_| "/var/lib/zygote-test".into()),
    )
}

/// Whether end-to-end tests can run here; prints the reason when not.
pub fn require_e2e() -> bool {
    let strict = std::env::var("ZYGOTE_E2E").as_deref() == Ok("1");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let image = image_home().join("images/python/current");
    let why = if !root {
        Some("not root".to_string())
    } else if !image.exists() {
        Some(format!(
            "no image at {} (run scripts/test.sh, which builds it)",
            image.display()
        ))
    } else {
        None
    };
    match why {
        None => true,
        Some(w) if strict => panic!("ZYGOTE_E2E=1 but end-to-end tests cannot run: {w}"),
        Some(w) => {
            eprintln!("SKIP end-to-end test: {w}");
            false
        }
    }
}

/// A daemon on a temp socket and home (the image dir is linked in).
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub home: PathBuf,
    pub client: Client,
}

/// Names the `zygote` binary the tests run: `$ZYGOTE_BIN` if set, else the one
/// cargo built for the test executable's profile (tests run from
/// `target/<profile>/deps/`, the binary is `target/<profile>/zygote`). Panics,
/// naming the command that builds it, when there is none.
pub fn zygote_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let (bin, how) = match std::env::var_os(ENV_BIN) {
            Some(p) => (PathBuf::from(p), format!("{ENV_BIN} names it")),
            None => {
                let exe = std::env::current_exe().expect("the test executable's path");
                let profile = exe
                    .parent()
                    .and_then(Path::parent)
                    .expect("a test executable in target/<profile>/deps/");
                let build = match profile.file_name().and_then(|n| n.to_str()) {
                    Some("debug") => "cargo build -p zygote-cli".to_string(),
                    Some("release") => "cargo build --release -p zygote-cli".to_string(),
                    Some(other) => format!("cargo build --profile {other} -p zygote-cli"),
                    None => "cargo build -p zygote-cli".to_string(),
                };
                (
                    profile.join("zygote"),
                    format!("build it first with `{build}`, or set {ENV_BIN}"),
                )
            }
        };
        if !bin.is_file() {
            panic!("no zygote binary at {} ({how})", bin.display());
        }
        bin.to_str()
            .unwrap_or_else(|| panic!("{} is not UTF-8", bin.display()))
            .to_string()
    })
}

/// Environment variable naming the `zygote` binary to test (as the SDK
/// suites' `scripts/test-python.sh` and `scripts/test-typescript.sh` use it).
pub const ENV_BIN: &str = "ZYGOTE_BIN";

impl Daemon {
    pub async fn start() -> Daemon {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("zyg")
            .tempdir_in("/tmp")
            .unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::symlink(image_home().join("images"), home.join("images")).unwrap();
        let socket = dir.path().join("d.sock");
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = Command::new(zygote_bin())
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .arg("--home")
            .arg(&home)
            .args(extra)
            .env("ZYGOTE_LOG", "info,zygote_engine=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the daemon");
        let client = Client::new(Endpoint::Unix(socket.clone()));
        let d = Daemon {
            child: Some(child),
            dir,
            socket,
            home,
            client,
        };
        let t0 = Instant::now();
        while d.client.health().await.is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "daemon did not come up: {}",
                d.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub async fn create(&self) -> SandboxInfo {
        self.create_with(CreateSandbox::default()).await
    }

    pub async fn create_with(&self, req: CreateSandbox) -> SandboxInfo {
        match self.client.create(&req).await {
            Ok(i) => i,
            Err(e) => panic!(
                "create failed: {e}\n--- daemon log ---\n{}",
                tail(&self.log(), 60)
            ),
        }
    }

    pub async fn sh(&self, id: &str, cmd: &str) -> ExecResult {
        self.client
            .exec(
                id,
                &ExecBody {
                    cmd: Some(cmd.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("exec `{cmd}` failed: {e}"))
    }

    /// Start a new daemon on the same home and socket, once the previous one
    /// has exited (`stop`, or killed by the test).
    pub async fn relaunch(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "the previous daemon still runs");
        let log = std::fs::File::options()
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        self.child = Some(
            Command::new(zygote_bin())
                .arg("daemon")
                .arg("--socket")
                .arg(&self.socket)
                .arg("--home")
                .arg(&self.home)
                .args(extra)
                .env("ZYGOTE_LOG", "info,zygote_engine=debug")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start the daemon again"),
        );
        let t0 = Instant::now();
        while self.client.health().await.is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "daemon did not come back: {}",
                tail(&self.log(), 60)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM the daemon and wait for it to exit (at most 30 s).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        // SAFETY: kill(2) on our own child's pid with a valid signal.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!(
                    "daemon did not stop within 30 s after SIGTERM:\n{}",
                    tail(&self.log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// QEMU processes whose command line mentions `needle`.
pub fn qemu_processes(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("qemu-system") && cmd.contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// memfds a process holds open (their `/proc/<pid>/fd` link targets).
pub fn memfds_of(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in rd.flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                let t = t.to_string_lossy().to_string();
                if t.starts_with("/memfd:") {
                    out.push(t);
                }
            }
        }
    }
    out
}

/// Every file below `dir` (recursively).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Wait until `f` is true or the timeout passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A TCP port on loopback nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
