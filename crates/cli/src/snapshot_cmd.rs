//! Fork commands: `snapshot create|ls|inspect|rm`, `branch`, `fork`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use zygote_proto::api::{
    BranchBody, BranchMode, CreateSnapshot, ForkBody, SnapshotInfo, SpawnBody, SpawnResult,
};

use zygote_client::Client;
use zygote_proto::api::SnapshotStatus;

use crate::connect::client;
use crate::output::{print_json, Align, Spinner, Table};
use crate::Conn;

#[derive(Subcommand, Debug)]
pub(crate) enum SnapshotCmd {
    /// Boot an image, warm it up, snapshot it.
    Create {
        #[command(flatten)]
        conn: Conn,
        /// Image to boot.
        #[arg(long)]
        image: Option<String>,
        /// Tag of the snapshot.
        #[arg(long)]
        tag: String,
        /// Python run in the warm interpreter first (e.g. `import numpy`).
        #[arg(long)]
        warmup: Option<String>,
        /// A shell command started in the background first (a server); it
        /// runs on in every child.
        #[arg(long)]
        warmup_cmd: Option<String>,
        /// Wait until this shell command exits 0 before the snapshot.
        #[arg(long, conflicts_with = "ready_port")]
        ready_cmd: Option<String>,
        /// Wait until this guest TCP port accepts before the snapshot.
        #[arg(long)]
        ready_port: Option<u16>,
        /// How long readiness may take, in seconds (default 60).
        #[arg(long)]
        ready_timeout: Option<u64>,
        /// Guest RAM in MiB.
        #[arg(long = "memory")]
        memory: Option<u64>,
        /// Back the snapshot memory with 2 MiB hugepages.
        #[arg(long)]
        hugepages: bool,
        /// Wait (with progress) until memory.bin is on disk.
        #[arg(long)]
        wait: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a snapshot, its disk chain and its image to one file (zstd tar),
    /// for `zygote snapshot unpack` on another host.
    Pack {
        #[command(flatten)]
        conn: Conn,
        /// The snapshot (ready).
        tag: String,
        /// The file to write.
        file: std::path::PathBuf,
    },
    /// Make a file written by `zygote snapshot pack` a snapshot of this daemon.
    Unpack {
        #[command(flatten)]
        conn: Conn,
        /// The file.
        file: std::path::PathBuf,
        /// Tag of the new snapshot (default: the one it was packed with).
        #[arg(long)]
        tag: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Push a snapshot to an OCI registry as content-addressed chunks (only
    /// the chunks the registry lacks are sent).
    Push {
        #[command(flatten)]
        conn: Conn,
        /// The snapshot (ready).
        tag: String,
        /// REGISTRY/REPOSITORY:TAG to push to.
        reference: String,
        #[command(flatten)]
        with: crate::registry_args::ChunkArgs,
    },
    /// Pull a snapshot pushed with `zygote snapshot push` (only the chunks
    /// this host lacks) and make it a snapshot of this daemon.
    Pull {
        #[command(flatten)]
        conn: Conn,
        /// REGISTRY/REPOSITORY:TAG.
        reference: String,
        /// Tag of the new snapshot (default: the one it was pushed from).
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        with: crate::registry_args::ChunkArgs,
    },
    /// List snapshots.
    Ls {
        #[command(flatten)]
        conn: Conn,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one snapshot.
    Inspect {
        #[command(flatten)]
        conn: Conn,
        /// Tag.
        tag: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete snapshots (running children are not disturbed).
    Rm {
        #[command(flatten)]
        conn: Conn,
        /// Tags.
        #[arg(required = true)]
        tags: Vec<String>,
        /// Print JSON: [{tag, removed, error}].
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub(crate) struct BranchArgs {
    #[command(flatten)]
    conn: Conn,
    /// Sandbox id.
    id: String,
    /// Tag of the new snapshot.
    #[arg(long)]
    tag: Option<String>,
    /// copy or live.
    #[arg(long, value_parser = parse_mode)]
    mode: Option<BranchMode>,
    /// Back the snapshot memory with 2 MiB hugepages.
    #[arg(long)]
    hugepages: bool,
    /// Live mode: QEMU's downtime limit in ms.
    #[arg(long)]
    downtime_ms: Option<u64>,
    /// Wait (with progress) until memory.bin is on disk.
    #[arg(long)]
    wait: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ForkArgs {
    #[command(flatten)]
    conn: Conn,
    /// A snapshot tag (`fork` also takes a sandbox id, branched first).
    source: String,
    /// Children to start.
    #[arg(short = 'n', long, default_value_t = 1)]
    n: u32,
    /// Each child gets its own memory (copy-branchable) instead of copy-on-write.
    #[arg(long)]
    private_memory: bool,
    /// With --private-memory: hugepage-backed child memory.
    #[arg(long, requires = "private_memory")]
    hugepages: bool,
    /// Each child's lifetime in seconds (then it is removed, or paused with
    /// --on-expiry pause).
    #[arg(long)]
    timeout: Option<u64>,
    /// What happens when --timeout runs out: kill or pause.
    #[arg(long, value_parser = crate::sandbox_cmd::parse_on_expiry, requires = "timeout")]
    on_expiry: Option<zygote_proto::api::OnExpiry>,
    /// A label on each child (KEY=VALUE, repeatable), over the snapshot's.
    #[arg(long = "label", short = 'l')]
    labels: Vec<String>,
    /// Attach a volume to each child: NAME:/guest/path[:ro] or
    /// /host/dir:/guest/path:ro (repeatable; writable ones with -n 1 only).
    #[arg(long = "volume", short = 'v')]
    volumes: Vec<String>,
    #[command(flatten)]
    net: crate::net_cmd::NetOpts,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn children_of(n: u32) -> String {
    if n == 1 {
        "1 child".into()
    } else {
        format!("{n} children")
    }
}

fn parse_mode(s: &str) -> Result<BranchMode, String> {
    match s {
        "copy" => Ok(BranchMode::Copy),
        "live" => Ok(BranchMode::Live),
        other => Err(format!("mode `{other}` is not copy or live")),
    }
}

fn status_str(s: &SnapshotInfo) -> String {
    serde_json::to_value(s.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn ms(v: Option<f64>) -> String {
    v.map(|p| format!("{p:.1}")).unwrap_or_else(|| "-".into())
}

/// Polls a snapshot until `memory.bin` is written (status no longer `writing`),
/// showing progress on a terminal.
async fn wait_persisted(c: &Client, mut s: SnapshotInfo) -> Result<SnapshotInfo> {
    let spin = Spinner::start(format!(
        "writing {} memory.bin ({} MB)",
        s.tag,
        s.memory_bytes / 1_000_000
    ));
    while s.status == SnapshotStatus::Writing {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        s = c.snapshot(&s.tag).await?;
    }
    drop(spin);
    Ok(s)
}

fn inspect_text(s: &SnapshotInfo) -> String {
    let mut t = Table::new(&[("FIELD", Align::Left), ("VALUE", Align::Left)]);
    let rows: [(&str, String); 15] = [
        ("tag", s.tag.clone()),
        ("image", s.image.clone()),
        (
            "branched_from",
            s.branched_from.clone().unwrap_or_else(|| "-".into()),
        ),
        ("mode", s.mode.as_str().into()),
        ("status", status_str(s)),
        ("memory_mib", s.memory_mib.to_string()),
        ("vcpus", s.vcpus.to_string()),
        ("cpu", s.cpu.clone()),
        ("accel", s.accel.clone()),
        ("hugepages", s.hugepages.to_string()),
        ("pause_ms", ms(s.pause_ms)),
        ("copy_ms", ms(s.copy_ms)),
        ("memory_bytes", s.memory_bytes.to_string()),
        ("vmstate_bytes", s.vmstate_bytes.to_string()),
        ("warning", s.warning.clone().unwrap_or_else(|| "-".into())),
    ];
    for (k, v) in rows {
        t.row(vec![k.into(), v]);
    }
    t.render()
}

fn print_snapshot(s: &SnapshotInfo, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else {
        println!(
            "{} ({}, {}): pause {} ms, copy {} ms, {} MB memory, {} KB device state{}",
            s.tag,
            s.mode.as_str(),
            serde_json::to_value(s.status)?.as_str().unwrap_or(""),
            s.pause_ms
                .map(|p| format!("{p:.1}"))
                .unwrap_or_else(|| "-".into()),
            s.copy_ms
                .map(|p| format!("{p:.1}"))
                .unwrap_or_else(|| "-".into()),
            s.memory_bytes / 1_000_000,
            s.vmstate_bytes / 1000,
            s.warning
                .as_ref()
                .map(|w| format!("\nwarning: {w}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn print_children(children: &[SpawnResult], json: bool) -> Result<u8> {
    if json {
        print_json(children)?;
    } else {
        let mut t = Table::new(&[
            ("ID", Align::Left),
            ("RUNNING_MS", Align::Right),
            ("READY_MS", Align::Right),
        ]);
        for c in children {
            match (&c.sandbox, &c.error) {
                (Some(sb), _) => t.row(vec![
                    sb.id.clone(),
                    format!("{:.0}", c.running_ms.unwrap_or(0.0)),
                    format!("{:.0}", c.ready_ms.unwrap_or(0.0)),
                ]),
                (None, Some(e)) => eprintln!("error: {e}"),
                (None, None) => eprintln!("error: a child failed without a reason"),
            }
        }
        if children.iter().any(|c| c.sandbox.is_some()) {
            print!("{}", t.render());
        }
    }
    Ok(if children.iter().all(|c| c.sandbox.is_some()) {
        0
    } else {
        1
    })
}

pub(crate) async fn snapshot(cmd: SnapshotCmd) -> Result<u8> {
    match cmd {
        SnapshotCmd::Create {
            conn,
            image,
            tag,
            warmup,
            warmup_cmd,
            ready_cmd,
            ready_port,
            ready_timeout,
            memory,
            hugepages,
            wait,
            json,
        } => {
            let c = client(&conn).await?;
            let spin = Spinner::start(format!("booting, warming up and snapshotting {tag}"));
            let s = c
                .create_snapshot(&CreateSnapshot {
                    image,
                    tag,
                    warmup,
                    warmup_cmd,
                    ready_cmd,
                    ready_port,
                    ready_timeout_secs: ready_timeout,
                    memory_mib: memory,
                    vcpus: None,
                    hugepages,
                })
                .await?;
            drop(spin);
            let s = if wait {
                wait_persisted(&c, s).await?
            } else {
                s
            };
            print_snapshot(&s, json)?;
        }
        SnapshotCmd::Ls { conn, json } => {
            let c = client(&conn).await?;
            let list = c.snapshots().await?;
            if json {
                print_json(&list)?;
            } else {
                let mut t = Table::new(&[
                    ("TAG", Align::Left),
                    ("IMAGE", Align::Left),
                    ("MODE", Align::Left),
                    ("STATUS", Align::Left),
                    ("MEM_MIB", Align::Right),
                    ("PAUSE_MS", Align::Right),
                    ("MEM_MB", Align::Right),
                    ("FROM", Align::Left),
                ]);
                for s in &list {
                    t.row(vec![
                        s.tag.clone(),
                        s.image.clone(),
                        s.mode.as_str().into(),
                        status_str(s),
                        s.memory_mib.to_string(),
                        ms(s.pause_ms),
                        (s.memory_bytes / 1_000_000).to_string(),
                        s.branched_from.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
                print!("{}", t.render());
            }
        }
        SnapshotCmd::Pack { conn, tag, file } => {
            let c = client(&conn).await?;
            let t0 = std::time::Instant::now();
            let n = crate::bundle_cmd::pack(&c, &tag, &file).await?;
            let on_disk = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            println!(
                "{tag}: {} ({:.1} MB bundle, {:.1} MB compressed, {:.1} s)",
                file.display(),
                n as f64 / 1e6,
                on_disk as f64 / 1e6,
                t0.elapsed().as_secs_f64()
            );
        }
        SnapshotCmd::Unpack {
            conn,
            file,
            tag,
            json,
        } => {
            let c = client(&conn).await?;
            let t0 = std::time::Instant::now();
            let s = crate::bundle_cmd::unpack(&c, &file, tag).await?;
            if json {
                print_json(&s)?;
            } else {
                println!(
                    "{} (from {}, {:.1} s)",
                    s.tag,
                    file.display(),
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        SnapshotCmd::Push {
            conn,
            tag,
            reference,
            with,
        } => crate::bundle_cmd::push_cmd(&client(&conn).await?, &tag, &reference, &with).await?,
        SnapshotCmd::Pull {
            conn,
            reference,
            tag,
            with,
        } => crate::bundle_cmd::pull_cmd(&client(&conn).await?, &reference, tag, &with).await?,
        SnapshotCmd::Inspect { conn, tag, json } => {
            let c = client(&conn).await?;
            let s = c.snapshot(&tag).await?;
            if json {
                print_json(&s)?;
            } else {
                print!("{}", inspect_text(&s));
            }
        }
        SnapshotCmd::Rm { conn, tags, json } => {
            let c = client(&conn).await?;
            let mut failed = false;
            let mut report = Vec::new();
            for t in tags {
                match c.delete_snapshot(&t).await {
                    Ok(()) => {
                        if !json {
                            println!("{t}");
                        }
                        report
                            .push(serde_json::json!({ "tag": t, "removed": true, "error": null }));
                    }
                    Err(e) => {
                        eprintln!("error: {t}: {e}");
                        report.push(
                            serde_json::json!({ "tag": t, "removed": false, "error": e.to_string() }),
                        );
                        failed = true;
                    }
                }
            }
            if json {
                print_json(&report)?;
            }
            return Ok(u8::from(failed));
        }
    }
    Ok(0)
}

pub(crate) async fn branch(a: BranchArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let spin = Spinner::start(format!("branching {}", a.id));
    let s = c
        .branch(
            &a.id,
            &BranchBody {
                tag: a.tag,
                mode: a.mode,
                hugepages: a.hugepages,
                wait: false,
                downtime_limit_ms: a.downtime_ms,
            },
        )
        .await?;
    drop(spin);
    let s = if a.wait {
        wait_persisted(&c, s).await?
    } else {
        s
    };
    print_snapshot(&s, a.json)?;
    Ok(0)
}

/// `zygote spawn TAG`: children of a snapshot (never a branch).
pub(crate) async fn spawn(a: ForkArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    if a.n == 0 {
        bail!("-n 0 starts nothing: pass at least 1");
    }
    spawn_children(&c, &a).await
}

async fn spawn_children(c: &zygote_client::Client, a: &ForkArgs) -> Result<u8> {
    let spin = Spinner::start(format!(
        "starting {} from snapshot {}",
        children_of(a.n),
        a.source
    ));
    let children = c
        .spawn(&SpawnBody {
            snapshot_tag: a.source.clone(),
            n: Some(a.n),
            private_memory: a.private_memory,
            hugepages: a.hugepages,
            timeout_secs: a.timeout,
            on_expiry: a.on_expiry,
            metadata: crate::sandbox_cmd::parse_pairs(&a.labels, "--label")?,
            volumes: crate::volume_cmd::parse_volumes(&a.volumes)?,
            network: a.net.body()?,
            ..Default::default()
        })
        .await?;
    drop(spin);
    print_children(&children, a.json)
}

pub(crate) async fn fork(a: ForkArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    if a.n == 0 {
        bail!("-n 0 starts nothing: pass at least 1");
    }
    // A snapshot tag, or else a sandbox id to branch first.
    match c.snapshot(&a.source).await {
        Ok(_) => spawn_children(&c, &a).await,
        Err(e) if e.status() == Some(404) || e.status() == Some(400) => {
            if !a.volumes.is_empty() {
                bail!("--volume attaches volumes to children of a snapshot: `zygote branch {}` first, then `zygote spawn TAG --volume ...`", a.source);
            }
            if a.net.given() {
                bail!("a fork of a running sandbox keeps its policy: `zygote branch {}` first, then `zygote spawn TAG --no-internet ...` (or `zygote network CHILD ...` after)", a.source);
            }
            let spin = Spinner::start(format!(
                "branching {} and starting {}",
                a.source,
                children_of(a.n)
            ));
            let r = c
                .fork(
                    &a.source,
                    &ForkBody {
                        n: Some(a.n),
                        mode: None,
                        tag: None,
                        private_memory: a.private_memory,
                        hugepages: a.hugepages,
                        timeout_secs: a.timeout,
                        on_expiry: a.on_expiry,
                        metadata: crate::sandbox_cmd::parse_pairs(&a.labels, "--label")?,
                    },
                )
                .await?;
            drop(spin);
            if !a.json {
                print_snapshot(&r.snapshot, false)?;
            }
            print_children(&r.children, a.json)
        }
        Err(e) => Err(e.into()),
    }
}
