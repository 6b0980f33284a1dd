//! Finding the daemon: `--socket`, `--url` (+ `ZYGOTE_TOKEN`), or the default
//! socket, where a daemon is started automatically when none answers.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use zygote_client::{Client, Endpoint};

use crate::{env, Conn};

/// A client for the chosen endpoint; on the default socket, start a daemon if
/// none answers (when running as root).
pub(crate) async fn client(conn: &Conn) -> Result<Client> {
    if let Some(url) = &conn.url {
        return Ok(Client::new(url_endpoint(conn, url)?));
    }
    let default = conn.socket.is_none();
    let socket = conn
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(env::DEFAULT_SOCKET));
    let c = Client::new(Endpoint::Unix(socket.clone()));
    if !default {
        return Ok(c);
    }
    match c.health().await {
        Ok(_) => Ok(c),
        Err(e) if e.is_connect() => {
            start_daemon(&socket).await?;
            Ok(c)
        }
        Err(e) => Err(e.into()),
    }
}

/// The endpoint of `--url` (`ZYGOTE_URL`), with `ZYGOTE_TOKEN` and `--ca`
/// (`ZYGOTE_CA`).
pub(crate) fn url_endpoint(conn: &Conn, url: &str) -> Result<Endpoint, zygote_client::ClientError> {
    let token = std::env::var(env::TOKEN).ok().filter(|t| !t.is_empty());
    Endpoint::from_url(url, token, conn.ca.as_deref())
}

/// The benches reach the daemon as every other command does.
impl zygote_bench::Connect for Conn {
    fn client(&self) -> impl Future<Output = Result<Client>> {
        client(self)
    }

    fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }
}

async fn start_daemon(socket: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "no zygote daemon answers at {}: start one with `sudo zygote daemon`",
            socket.display()
        );
    }
    let home = std::env::var(env::HOME).unwrap_or_else(|_| env::DEFAULT_HOME.to_string());
    std::fs::create_dir_all(&home).with_context(|| format!("cannot create {home}"))?;
    let log_path = PathBuf::from(&home).join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the zygote binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("daemon")
        .arg("--socket")
        .arg(socket)
        .arg("--home")
        .arg(&home)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of ours;
        // it detaches the daemon from our session so it outlives this command.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    cmd.spawn().context("cannot start the daemon")?;
    eprintln!(
        "zygote: started a daemon on {} (log: {})",
        socket.display(),
        log_path.display()
    );
    let c = Client::new(Endpoint::Unix(socket.to_path_buf()));
    for _ in 0..200 {
        if c.health().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the daemon started but does not answer on {}: see {}",
        socket.display(),
        log_path.display()
    )
}
