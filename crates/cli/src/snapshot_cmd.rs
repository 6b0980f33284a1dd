//! Fork commands: `snapshot create|ls|inspect|rm`, `branch`, `fork`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use zygote_proto::api::{
    BranchBody, BranchMode, CreateSnapshot, ForkBody, SnapshotInfo, SpawnBody, SpawnResult,
};

use crate::connect::client;
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
        /// Guest RAM in MiB.
        #[arg(long = "memory")]
        memory: Option<u64>,
        /// Back the snapshot memory with 2 MiB hugepages.
        #[arg(long)]
        hugepages: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List snapshots.
    Ls {
        #[command(flatten)]
        conn: Conn,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one snapshot (JSON).
    Inspect {
        #[command(flatten)]
        conn: Conn,
        /// Tag.
        tag: String,
    },
    /// Delete snapshots (running children are not disturbed).
    Rm {
        #[command(flatten)]
        conn: Conn,
        /// Tags.
        #[arg(required = true)]
        tags: Vec<String>,
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
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ForkArgs {
    #[command(flatten)]
    conn: Conn,
    /// A snapshot tag, or a sandbox id (branched first).
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
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_mode(s: &str) -> Result<BranchMode, String> {
    match s {
        "copy" => Ok(BranchMode::Copy),
        "live" => Ok(BranchMode::Live),
        other => Err(format!("mode `{other}` is not copy or live")),
    }
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
        println!("{}", serde_json::to_string_pretty(children)?);
    } else {
        for c in children {
            match (&c.sandbox, &c.error) {
                (Some(sb), _) => println!(
                    "{}  running {:.0} ms  ready {:.0} ms",
                    sb.id,
                    c.running_ms.unwrap_or(0.0),
                    c.ready_ms.unwrap_or(0.0)
                ),
                (None, Some(e)) => eprintln!("error: {e}"),
                (None, None) => eprintln!("error: a child failed without a reason"),
            }
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
            memory,
            hugepages,
            json,
        } => {
            let c = client(&conn).await?;
            let s = c
                .create_snapshot(&CreateSnapshot {
                    image,
                    tag,
                    warmup,
                    memory_mib: memory,
                    vcpus: None,
                    hugepages,
                })
                .await?;
            print_snapshot(&s, json)?;
        }
        SnapshotCmd::Ls { conn, json } => {
            let c = client(&conn).await?;
            let list = c.snapshots().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<24} {:<5} {:<8} {:>8} {:>9} {:>8}",
                    "TAG", "MODE", "STATUS", "MEM_MIB", "PAUSE_MS", "MEM_MB"
                );
                for s in list {
                    println!(
                        "{:<24} {:<5} {:<8} {:>8} {:>9} {:>8}",
                        s.tag,
                        s.mode.as_str(),
                        serde_json::to_value(s.status)?.as_str().unwrap_or(""),
                        s.memory_mib,
                        s.pause_ms
                            .map(|p| format!("{p:.1}"))
                            .unwrap_or_else(|| "-".into()),
                        s.memory_bytes / 1_000_000
                    );
                }
            }
        }
        SnapshotCmd::Inspect { conn, tag } => {
            let c = client(&conn).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&c.snapshot(&tag).await?)?
            );
        }
        SnapshotCmd::Rm { conn, tags } => {
            let c = client(&conn).await?;
            let mut failed = false;
            for t in tags {
                match c.delete_snapshot(&t).await {
                    Ok(()) => println!("{t}"),
                    Err(e) => {
                        eprintln!("error: {t}: {e}");
                        failed = true;
                    }
                }
            }
            return Ok(u8::from(failed));
        }
    }
    Ok(0)
}

pub(crate) async fn branch(a: BranchArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
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
    print_snapshot(&s, a.json)?;
    Ok(0)
}

pub(crate) async fn fork(a: ForkArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    if a.n == 0 {
        bail!("-n 0 starts nothing: pass at least 1");
    }
    // A snapshot tag, or else a sandbox id to branch first.
    match c.snapshot(&a.source).await {
        Ok(_) => {
            let children = c
                .spawn(&SpawnBody {
                    snapshot_tag: a.source.clone(),
                    n: Some(a.n),
                    private_memory: a.private_memory,
                    hugepages: a.hugepages,
                    ..Default::default()
                })
                .await?;
            print_children(&children, a.json)
        }
        Err(e) if e.status() == Some(404) || e.status() == Some(400) => {
            let r = c
                .fork(
                    &a.source,
                    &ForkBody {
                        n: Some(a.n),
                        mode: None,
                        tag: None,
                        private_memory: a.private_memory,
                        hugepages: a.hugepages,
                    },
                )
                .await?;
            if !a.json {
                print_snapshot(&r.snapshot, false)?;
            }
            print_children(&r.children, a.json)
        }
        Err(e) => Err(e.into()),
    }
}
