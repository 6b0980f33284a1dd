//! Sandbox commands: run, create, exec, eval, cp, ls, rm.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::Args;
use zygote_client::Client;
use zygote_proto::api::{CreateSandbox, ExecBody, ExecEvent, SandboxInfo};

use crate::connect::client;
use crate::Conn;

fn parse_env(kv: &[String]) -> Result<BTreeMap<String, String>> {
    parse_pairs(kv, "--env")
}

/// `KEY=VALUE` arguments of `flag` as a map.
pub(crate) fn parse_pairs(kv: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for s in kv {
        let Some((k, v)) = s.split_once('=') else {
            bail!("{flag} `{s}` is not KEY=VALUE: pass e.g. {flag} FOO=bar");
        };
        if k.is_empty() {
            bail!("{flag} `{s}` has an empty name: pass e.g. {flag} FOO=bar");
        }
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

/// Options shared by `run` and `create`.
#[derive(Args, Debug)]
pub(crate) struct SandboxOpts {
    /// Image name.
    #[arg(long)]
    image: Option<String>,
    /// Guest RAM in MiB.
    #[arg(long = "memory")]
    memory: Option<u64>,
    /// Virtual CPUs.
    #[arg(long)]
    vcpus: Option<u32>,
    /// Attach a volume: NAME:/guest/path[:ro] (see `zygote volume`) or
    /// /host/dir:/guest/path:ro (repeatable, up to 4).
    #[arg(long = "volume", short = 'v')]
    volumes: Vec<String>,
    #[command(flatten)]
    net: crate::net_cmd::NetOpts,
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    opts: SandboxOpts,
    /// Environment for the command (KEY=VALUE, repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Working directory in the guest.
    #[arg(long)]
    workdir: Option<String>,
    /// Kill the command after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Do not stream: print one JSON document {stdout, stderr, exit_code, signal, timed_out, duration_ms} at the end.
    #[arg(long)]
    json: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    opts: SandboxOpts,
    /// Environment for every exec (KEY=VALUE, repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Remove the sandbox after this many seconds (see --on-expiry).
    #[arg(long)]
    timeout: Option<u64>,
    /// What happens when --timeout runs out: kill (remove it) or pause.
    #[arg(long, value_parser = parse_on_expiry, requires = "timeout")]
    on_expiry: Option<zygote_proto::api::OnExpiry>,
    /// A label (KEY=VALUE, repeatable): find it with `zygote ls -l KEY=VALUE`.
    #[arg(long = "label", short = 'l')]
    labels: Vec<String>,
    /// Print a JSON object.
    #[arg(long)]
    json: bool,
}

/// `kill` or `pause`.
pub(crate) fn parse_on_expiry(s: &str) -> Result<zygote_proto::api::OnExpiry, String> {
    match s {
        "kill" => Ok(zygote_proto::api::OnExpiry::Kill),
        "pause" => Ok(zygote_proto::api::OnExpiry::Pause),
        _ => Err(format!("`{s}` is not kill or pause")),
    }
}

#[derive(Args, Debug)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    conn: Conn,
    /// Sandbox id.
    id: String,
    /// Environment (KEY=VALUE, repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Working directory in the guest.
    #[arg(long)]
    workdir: Option<String>,
    /// Kill the command after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Do not stream: print one JSON document {stdout, stderr, exit_code, signal, timed_out, duration_ms} at the end.
    #[arg(long)]
    json: bool,
    /// Run as this guest user (default root).
    #[arg(long)]
    user: Option<String>,
    /// Run in the background: print its pid and return (see `zygote ps`,
    /// `attach`, `kill`).
    #[arg(long, short = 'd')]
    detach: bool,
    /// With --detach: keep its stdin open (`zygote attach` forwards input).
    #[arg(long, short = 'i', requires = "detach")]
    interactive: bool,
    /// With --detach: a label `zygote ps` shows.
    #[arg(long, requires = "detach")]
    tag: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct EvalArgs {
    #[command(flatten)]
    conn: Conn,
    /// Sandbox id.
    id: String,
    /// Python code.
    code: String,
    /// Print the whole result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct CpArgs {
    #[command(flatten)]
    conn: Conn,
    /// Source: a host path or ID:/guest/path.
    src: String,
    /// Destination: a host path or ID:/guest/path.
    dst: String,
    /// Print JSON {from, to, bytes}.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct LsArgs {
    #[command(flatten)]
    conn: Conn,
    /// Only sandboxes with this label (KEY=VALUE, repeatable: all must match).
    #[arg(long = "label", short = 'l')]
    labels: Vec<String>,
    /// Only sandboxes in this state (running, paused, dead).
    #[arg(long)]
    state: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct RmArgs {
    #[command(flatten)]
    conn: Conn,
    /// Sandbox ids.
    ids: Vec<String>,
    /// Remove every sandbox.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// Remove every sandbox with this label (KEY=VALUE, repeatable: all must match).
    #[arg(long = "label", short = 'l', conflicts_with_all = ["ids", "all"])]
    labels: Vec<String>,
    /// Print JSON: [{id, removed, error}].
    #[arg(long)]
    json: bool,
}

fn create_body(
    opts: &SandboxOpts,
    env: BTreeMap<String, String>,
    timeout: Option<u64>,
) -> Result<CreateSandbox> {
    Ok(CreateSandbox {
        image: opts.image.clone(),
        memory_mib: opts.memory,
        vcpus: opts.vcpus,
        env,
        timeout_secs: timeout,
        volumes: crate::volume_cmd::parse_volumes(&opts.volumes)?,
        network: opts.net.body()?,
        ..Default::default()
    })
}

/// The exit code zygote exits with for a finished command: its own code,
/// 128+signal for a signal, 124 for a timeout (like `timeout(1)`).
fn exit_code_of(exit_code: Option<i32>, signal: Option<i32>, timed_out: bool) -> u8 {
    if timed_out {
        return 124;
    }
    if let Some(s) = signal {
        return (128 + s).clamp(0, 255) as u8;
    }
    exit_code.unwrap_or(1).clamp(0, 255) as u8
}

/// Runs an exec without streaming and prints one JSON document (with `extra`
/// fields merged in); returns the command's exit code.
async fn json_exec(c: &Client, id: &str, body: &ExecBody, extra: serde_json::Value) -> Result<u8> {
    let r = c.exec(id, body).await?;
    let code = exit_code_of(r.exit_code, r.signal, r.timed_out);
    let mut v = serde_json::to_value(&r)?;
    if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    crate::output::print_json(&v)?;
    Ok(code)
}

/// Stream an exec to our stdout/stderr; returns the process's exit code
/// (128+signal for a signal, 124 for a timeout, like `timeout(1)`).
async fn stream_exec(c: &Client, id: &str, body: &ExecBody) -> Result<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let last = c
        .exec_stream(id, body, |ev| match ev {
            ExecEvent::Stdout { data_b64 } => {
                if let Ok(b) = b64.decode(data_b64) {
                    let _ = out.write_all(&b);
                    let _ = out.flush();
                }
            }
            ExecEvent::Stderr { data_b64 } => {
                if let Ok(b) = b64.decode(data_b64) {
                    let _ = err.write_all(&b);
                }
            }
            ExecEvent::Started { .. } | ExecEvent::Exit { .. } | ExecEvent::Error { .. } => {}
        })
        .await?;
    match last {
        ExecEvent::Exit {
            exit_code,
            signal,
            timed_out,
            ..
        } => {
            if timed_out {
                eprintln!("zygote: the command timed out and was killed");
            }
            Ok(exit_code_of(exit_code, signal, timed_out))
        }
        ExecEvent::Error { error, .. } => bail!("{error}"),
        ExecEvent::Started { .. } | ExecEvent::Stdout { .. } | ExecEvent::Stderr { .. } => {
            bail!("the exec stream ended early")
        }
    }
}

fn exec_body(
    cmd: Vec<String>,
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    timeout: Option<f64>,
) -> ExecBody {
    ExecBody {
        argv: cmd,
        env,
        cwd: workdir,
        timeout_secs: timeout,
        ..Default::default()
    }
}

pub(crate) async fn run(a: RunArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let env = parse_env(&a.env)?;
    let spin = crate::output::Spinner::start("booting a sandbox");
    let info = c
        .create(&create_body(&a.opts, BTreeMap::new(), None)?)
        .await?;
    drop(spin);
    let body = exec_body(a.cmd, env, a.workdir, a.timeout);
    let res = if a.json {
        json_exec(
            &c,
            &info.id,
            &body,
            serde_json::json!({ "sandbox": info.id }),
        )
        .await
    } else {
        stream_exec(&c, &info.id, &body).await
    };
    let rm = c.remove(&info.id).await;
    let code = res?;
    rm.with_context(|| format!("cannot remove sandbox {}", info.id))?;
    Ok(code)
}

pub(crate) async fn create(a: CreateArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let env = parse_env(&a.env)?;
    let spin = crate::output::Spinner::start("booting a sandbox");
    let mut body = create_body(&a.opts, env, a.timeout)?;
    body.on_expiry = a.on_expiry;
    body.metadata = parse_pairs(&a.labels, "--label")?;
    let info = c.create(&body).await?;
    drop(spin);
    if a.json {
        crate::output::print_json(&info)?;
    } else {
        println!("{}", info.id);
    }
    Ok(0)
}

pub(crate) async fn exec(a: ExecArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    if a.detach {
        let body = zygote_proto::api::ProcessStart {
            argv: a.cmd,
            env: parse_env(&a.env)?,
            cwd: a.workdir,
            user: a.user,
            stdin: a.interactive,
            tag: a.tag,
            timeout_secs: a.timeout,
            ..Default::default()
        };
        return crate::proc_cmd::detached(&c, &a.id, body, a.json).await;
    }
    let mut body = exec_body(a.cmd, parse_env(&a.env)?, a.workdir, a.timeout);
    body.user = a.user;
    if a.json {
        return json_exec(&c, &a.id, &body, serde_json::json!({ "sandbox": a.id })).await;
    }
    stream_exec(&c, &a.id, &body).await
}

pub(crate) async fn eval(a: EvalArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let r = c.eval(&a.id, &a.code).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(if r.error.is_some() { 1 } else { 0 });
    }
    print!("{}", r.stdout);
    eprint!("{}", r.stderr);
    if let Some(err) = &r.error {
        match &r.traceback {
            Some(tb) => eprint!("{tb}"),
            None => eprintln!("{err}"),
        }
        return Ok(1);
    }
    if let Some(v) = &r.result {
        println!("{v}");
    }
    Ok(0)
}

/// `ID:/path` → (id, path); anything else is a host path.
fn split_remote(s: &str) -> Option<(&str, &str)> {
    let (id, path) = s.split_once(':')?;
    if id.is_empty() || id.contains('/') || !path.starts_with('/') {
        return None;
    }
    Some((id, path))
}

pub(crate) async fn cp(a: CpArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    match (split_remote(&a.src), split_remote(&a.dst)) {
        (Some(_), Some(_)) => bail!(
            "both `{}` and `{}` are sandbox paths: exactly one side must be ID:/path",
            a.src,
            a.dst
        ),
        (None, None) => bail!(
            "neither `{}` nor `{}` is a sandbox path: write one side as ID:/absolute/path",
            a.src,
            a.dst
        ),
        (None, Some((id, path))) => {
            let r = c
                .upload_file(id, std::path::Path::new(&a.src), path)
                .await?;
            if a.json {
                crate::output::print_json(&serde_json::json!({
                    "from": a.src, "to": format!("{id}:{}", r.path), "bytes": r.bytes
                }))?;
            } else {
                eprintln!("{} bytes -> {id}:{}", r.bytes, r.path);
            }
        }
        (Some((id, path)), None) => {
            let tmp = format!("{}.zygote-part", a.dst);
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .with_context(|| format!("cannot create {tmp}"))?;
            let res = c.download_to(id, path, &mut f).await;
            drop(f);
            match res {
                Ok(n) => {
                    std::fs::rename(&tmp, &a.dst)
                        .with_context(|| format!("cannot write {}", a.dst))?;
                    if a.json {
                        crate::output::print_json(&serde_json::json!({
                            "from": a.src, "to": a.dst, "bytes": n
                        }))?;
                    } else {
                        eprintln!("{id}:{path} -> {} ({n} bytes)", a.dst);
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
            }
        }
    }
    Ok(0)
}

fn table(list: &[SandboxInfo]) -> String {
    use crate::output::{Align, Table};
    let mut t = Table::new(&[
        ("ID", Align::Left),
        ("IMAGE", Align::Left),
        ("STATE", Align::Left),
        ("MEM_MIB", Align::Right),
        ("VCPUS", Align::Right),
        ("BOOT_MS", Align::Right),
        ("REASON", Align::Left),
    ]);
    for i in list {
        t.row(vec![
            i.id.clone(),
            i.image.clone(),
            i.state.as_str().into(),
            i.memory_mib.to_string(),
            i.vcpus.to_string(),
            i.boot_ms
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            i.reason.clone().unwrap_or_default(),
        ]);
    }
    t.render()
}

pub(crate) async fn ls(a: LsArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let labels: Vec<(String, String)> = parse_pairs(&a.labels, "--label")?.into_iter().collect();
    let list = c.list_where(&labels, a.state.as_deref()).await?;
    if a.json {
        crate::output::print_json(&list)?;
    } else {
        print!("{}", table(&list));
    }
    Ok(0)
}

pub(crate) async fn rm(a: RmArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let ids: Vec<String> = if a.all {
        c.list().await?.into_iter().map(|i| i.id).collect()
    } else if !a.labels.is_empty() {
        let labels: Vec<(String, String)> =
            parse_pairs(&a.labels, "--label")?.into_iter().collect();
        c.list_where(&labels, None)
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect()
    } else if a.ids.is_empty() {
        bail!("name the sandboxes to remove, or pass --all or --label KEY=VALUE");
    } else {
        a.ids
    };
    let mut failed = 0;
    let mut report = Vec::new();
    for id in ids {
        match c.remove(&id).await {
            Ok(()) => {
                if !a.json {
                    println!("{id}");
                }
                report.push(serde_json::json!({ "id": id, "removed": true, "error": null }));
            }
            Err(e) => {
                eprintln!("error: {id}: {e}");
                report.push(
                    serde_json::json!({ "id": id, "removed": false, "error": e.to_string() }),
                );
                failed += 1;
            }
        }
    }
    if a.json {
        crate::output::print_json(&report)?;
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths() {
        assert_eq!(split_remote("abc:/tmp/x"), Some(("abc", "/tmp/x")));
        assert_eq!(split_remote("./a:b"), None);
        assert_eq!(split_remote("/tmp/x"), None);
        assert_eq!(split_remote("abc:rel"), None);
    }

    #[test]
    fn env_pairs() {
        assert_eq!(
            parse_env(&["A=1".into(), "B=x=y".into()])
                .unwrap()
                .get("B")
                .unwrap(),
            "x=y"
        );
        assert!(parse_env(&["A".into()]).is_err());
        assert!(parse_env(&["=1".into()]).is_err());
    }
}
