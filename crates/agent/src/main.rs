//! `zygote-agent`: the guest agent, PID 1 inside a zygote microVM.
//!
//! It mounts the early filesystems, reaps zombies, and serves the agent
//! protocol (`zygote_proto::agent`) over the virtio-serial port named `agent`:
//! exec, files, a warm Python eval, info, resume and shutdown. On a host it
//! runs in dev mode (`--stdio` or `--port`), skipping every PID 1 duty, which
//! is how its integration tests drive it.
//!
//! Module map: [`port`] (transport and host-connection waiting), [`conn`]
//! (frames, the request table, the writer thread), [`dispatch`] (each frame to
//! its handler), [`exec`], [`files`], [`eval`],
//! [`procs`] (background processes and terminals), [`tree`] (mkdir, rename,
//! walk, watch), [`users`], [`system`] (info, resume), [`pid1`] (boot and
//! power-off), [`reaper`],
//! [`sys`] (syscall wrappers), [`util`].

mod conn;
mod defaults;
mod dispatch;
mod eval;
mod exec;
mod files;
mod pid1;
mod port;
mod procs;
mod reaper;
mod sys;
mod system;
mod tree;
mod users;
mod util;
mod volumes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::port::PortSpec;
use crate::util::log;

const USAGE: &str = "\
usage: zygote-agent [--stdio | --port PATH | --port-name NAME] [--python PROGRAM]

  (no flag)         serve the virtio-serial port named `agent` (in a guest)
  --port-name NAME  serve the virtio-serial port with this name
  --port PATH       serve a virtio port device, or connect to a Unix socket
  --stdio           read frames on stdin, write frames on stdout (logs: stderr)
  --python PROGRAM  interpreter for `eval` (default: python3)
  --version         print the version
";

struct Args {
    port: PortSpec,
    python: String,
}

fn parse_args() -> Result<Args, String> {
    let mut port = PortSpec::VirtioNamed("agent".into());
    let mut python = "python3".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
        match a.as_str() {
            "--stdio" => port = PortSpec::Stdio,
            "--port" => port = PortSpec::Path(PathBuf::from(value("--port")?)),
            "--port-name" => port = PortSpec::VirtioNamed(value("--port-name")?),
            "--python" => python = value("--python")?,
            "--version" => {
                println!("zygote-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            // The kernel passes unknown `key=value` boot arguments to init.
            other if getpid_is_init() => log!("ignoring argument `{other}`"),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(Args { port, python })
}

fn getpid_is_init() -> bool {
    sys::getpid() == 1
}

fn main() {
    let pid1 = getpid_is_init();
    if pid1 {
        pid1::init();
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            log!("{e}");
            if pid1 {
                Args {
                    port: PortSpec::VirtioNamed("agent".into()),
                    python: "python3".into(),
                }
            } else {
                std::process::exit(2);
            }
        }
    };
    std::panic::set_hook(Box::new(|info| log!("panic: {info}")));

    // Before any thread exists: SIGCHLD (reaper) and SIGIO (host connect) are
    // blocked everywhere and collected with sigtimedwait; children get a clean
    // mask from std's spawn.
    for sig in [libc::SIGCHLD, libc::SIGIO] {
        if let Err(e) = sys::install_noop_handler(sig) {
            log!("sigaction {sig}: {e}");
        }
    }
    if let Err(e) = sys::block_signals(&[libc::SIGCHLD, libc::SIGIO]) {
        log!("blocking signals: {e}");
    }

    let reaper = Arc::new(reaper::Reaper::default());
    let r = reaper.clone();
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || r.run())
        .expect("spawn the reaper thread");

    let interp = Arc::new(eval::Interp::new(args.python, reaper.clone()));
    let i = interp.clone();
    let _ = std::thread::Builder::new()
        .name("python-warm".into())
        .spawn(move || i.warm());

    log!(
        "{} starting{} ({} ms after boot)",
        env!("CARGO_PKG_VERSION"),
        if pid1 { " as init" } else { " (dev mode)" },
        sys::uptime().as_millis()
    );
    loop {
        match port::open(&args.port) {
            Ok((reader, writer)) => {
                let ctx = conn::Ctx::new(writer, reaper.clone(), interp.clone(), pid1);
                conn::serve(&ctx, reader);
                if !pid1 {
                    log!("host closed the connection; exiting");
                    pid1::shutdown(&ctx);
                }
            }
            Err(e) => {
                log!("cannot open the host port: {e}");
                if !pid1 {
                    std::process::exit(1);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
