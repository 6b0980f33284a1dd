//! `zygote ps`, `kill`, `attach` and `shell`: background processes and
//! terminals of a sandbox (started with `zygote exec -d`).

use std::io::Write;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::Args;
use zygote_client::Client;
use zygote_proto::api::{ExecEvent, ProcessStart};
use zygote_proto::procs::PtySize;

use crate::connect::client;
use crate::output::{print_json, Align, Table};
use crate::Conn;

#[derive(Args, Debug)]
pub(crate) struct PsArgs {
    #[command(flatten)]
    conn: Conn,
    /// Sandbox id.
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct KillArgs {
    #[command(flatten)]
    conn: Conn,
    /// Sandbox id.
    id: String,
    /// Process id (as `zygote ps` shows it).
    pid: u32,
    /// Signal number to send instead of SIGKILL (15: SIGTERM, 2: SIGINT).
    #[arg(long, short = 's')]
    signal: Option<i32>,
}

#[derive(Args, Debug)]
pub(crate) struct AttachArgs {
    #[command(flatten)]
    conn: Conn,
    /// Sandbox id.
    id: String,
    /// Process id.
    pid: u32,
    /// Only new output (not what it printed before).
    #[arg(long)]
    no_replay: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ShellArgs {
    #[command(flatten)]
    conn: Conn,
    /// Sandbox id.
    id: String,
    /// Run as this guest user.
    #[arg(long)]
    user: Option<String>,
    /// The shell to run.
    #[arg(long, default_value = "/bin/bash")]
    shell: String,
}

pub(crate) async fn ps(a: PsArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let procs = c.processes(&a.id).await?;
    if a.json {
        print_json(&procs)?;
        return Ok(0);
    }
    let mut t = Table::new(&[
        ("PID", Align::Right),
        ("STATE", Align::Left),
        ("TAG", Align::Left),
        ("TTY", Align::Left),
        ("CMD", Align::Left),
    ]);
    for p in procs {
        let state = match &p.exit {
            None => "running".to_string(),
            Some(x) => match (x.code, x.signal) {
                (Some(c), _) => format!("exited {c}"),
                (None, Some(s)) => format!("killed {s}"),
                _ => "exited".into(),
            },
        };
        t.row(vec![
            p.pid.to_string(),
            state,
            p.tag.unwrap_or_default(),
            if p.pty { "yes".into() } else { "-".into() },
            p.cmd,
        ]);
    }
    print!("{}", t.render());
    Ok(0)
}

pub(crate) async fn kill(a: KillArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    match a.signal {
        Some(s) => c.signal_process(&a.id, a.pid, s).await?,
        None => c.kill_process(&a.id, a.pid).await?,
    }
    Ok(0)
}

/// Print an event's bytes; the exit code once it ends.
fn print_event(ev: &ExecEvent) -> Option<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match ev {
        ExecEvent::Stdout { data_b64 } => {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(&b64.decode(data_b64).unwrap_or_default());
            let _ = o.flush();
            None
        }
        ExecEvent::Stderr { data_b64 } => {
            let _ = std::io::stderr().write_all(&b64.decode(data_b64).unwrap_or_default());
            None
        }
        ExecEvent::Exit {
            exit_code, signal, ..
        } => Some(match (exit_code, signal) {
            (Some(c), _) => u8::try_from(*c).unwrap_or(1),
            (None, Some(s)) => u8::try_from(128 + s).unwrap_or(1),
            _ => 1,
        }),
        ExecEvent::Started { .. } | ExecEvent::Error { .. } => None,
    }
}

/// Follow `pid`'s output while `input` forwards this terminal's stdin.
async fn follow(c: &Client, id: &str, pid: u32, replay: bool) -> Result<u8> {
    let end = c
        .process_output(id, pid, replay, |ev| {
            print_event(ev);
        })
        .await?;
    match end {
        ExecEvent::Error { error, .. } => bail!("{error}"),
        ev => Ok(print_event(&ev).unwrap_or(0)),
    }
}

/// Forward stdin to `pid` until EOF (then close its stdin when `eof`).
fn forward_stdin(c: Client, id: String, pid: u32, eof: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    if eof {
                        let _ = c.process_stdin(&id, pid, Vec::new(), true).await;
                    }
                    return;
                }
                Ok(n) => {
                    if c.process_stdin(&id, pid, buf[..n].to_vec(), false)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
}

pub(crate) async fn attach(a: AttachArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let p = c
        .processes(&a.id)
        .await?
        .into_iter()
        .find(|p| p.pid == a.pid)
        .with_context(|| {
            format!(
                "no background process {} in sandbox {}: see `zygote ps {}`",
                a.pid, a.id, a.id
            )
        })?;
    let fwd = (p.stdin && p.exit.is_none())
        .then(|| forward_stdin(c.clone(), a.id.clone(), a.pid, !p.pty));
    let code = follow(&c, &a.id, a.pid, !a.no_replay).await;
    if let Some(f) = fwd {
        f.abort();
    }
    code
}

/// This terminal's size, if stdout is one.
fn term_size() -> Option<PtySize> {
    // SAFETY: TIOCGWINSZ writes one winsize into the zeroed struct we pass.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fd 1 is ours to query.
    let rc = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some(PtySize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Puts stdin in raw mode; restores it when dropped.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> RawMode {
        // SAFETY: tcgetattr fills the zeroed termios we pass for fd 0.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return RawMode(None);
        }
        let saved = t;
        // SAFETY: cfmakeraw edits the termios we own.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: tcsetattr reads the termios we pass, for fd 0.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the termios saved from fd 0.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

pub(crate) async fn shell(a: ShellArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let size = term_size().unwrap_or(PtySize { rows: 24, cols: 80 });
    let p = c
        .start_process(
            &a.id,
            &ProcessStart {
                argv: vec![a.shell.clone(), "-l".into()],
                user: a.user.clone(),
                pty: Some(size),
                tag: Some("shell".into()),
                ..Default::default()
            },
        )
        .await?;
    let raw = RawMode::enter();
    let fwd = forward_stdin(c.clone(), a.id.clone(), p.pid, false);
    let (cc, id, pid) = (c.clone(), a.id.clone(), p.pid);
    let resize = tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut winch) = signal(SignalKind::window_change()) else {
            return;
        };
        while winch.recv().await.is_some() {
            if let Some(s) = term_size() {
                let _ = cc.resize_process(&id, pid, s.rows, s.cols).await;
            }
        }
    });
    let code = follow(&c, &a.id, p.pid, true).await;
    fwd.abort();
    resize.abort();
    drop(raw);
    code
}

/// `zygote exec -d`: start in the background, print the pid.
pub(crate) async fn detached(c: &Client, id: &str, body: ProcessStart, json: bool) -> Result<u8> {
    let p = c.start_process(id, &body).await?;
    if json {
        print_json(&p)?;
    } else {
        println!("{}", p.pid);
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub(crate) struct IdArgs {
    #[command(flatten)]
    conn: Conn,
    /// Sandbox id.
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct TimeoutArgs {
    #[command(flatten)]
    conn: Conn,
    /// Sandbox id.
    id: String,
    /// Seconds from now.
    secs: u64,
    /// What happens then: kill (remove it) or pause.
    #[arg(long, value_parser = crate::sandbox_cmd::parse_on_expiry)]
    on_expiry: Option<zygote_proto::api::OnExpiry>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn print_state(s: &zygote_proto::api::SandboxInfo, json: bool) -> Result<u8> {
    if json {
        print_json(s)?;
    } else {
        println!("{} {}", s.id, s.state.as_str());
    }
    Ok(0)
}

pub(crate) async fn pause(a: IdArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let spin = crate::output::Spinner::start(format!("pausing {}", a.id));
    let s = c.pause(&a.id).await?;
    drop(spin);
    print_state(&s, a.json)
}

pub(crate) async fn resume(a: IdArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let spin = crate::output::Spinner::start(format!("resuming {}", a.id));
    let s = c.resume(&a.id).await?;
    drop(spin);
    print_state(&s, a.json)
}

pub(crate) async fn timeout(a: TimeoutArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let s = c.set_timeout(&a.id, a.secs, a.on_expiry).await?;
    if a.json {
        print_json(&s)?;
    } else {
        println!(
            "{} ends at {} ({})",
            s.id,
            s.expires_at_unix.unwrap_or_default(),
            if s.on_expiry == zygote_proto::api::OnExpiry::Pause {
                "pause"
            } else {
                "kill"
            }
        );
    }
    Ok(0)
}
