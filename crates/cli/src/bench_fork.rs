//! `zygote bench fork`: branch pauses and spawn times, side by side in one run
//! (a benchmark, not a test). Cells are interleaved: every iteration visits every
//! cell once, so drift on a shared machine spreads over all of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use zygote_client::Client;
use zygote_proto::api::{BranchBody, BranchMode, CreateSandbox, ExecBody, SpawnBody};

use crate::bench::{stats, Stats};
use crate::connect::client;
use crate::Conn;

#[derive(Args, Debug)]
pub(crate) struct ForkBenchArgs {
    #[command(flatten)]
    conn: Conn,
    /// Iterations per cell.
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Guest RAM of the branched parent, MiB.
    #[arg(long, default_value_t = 1024)]
    memory: u64,
    /// Guest RAM of the spawn snapshot, MiB (the anchor's table used 512).
    #[arg(long, default_value_t = 512)]
    spawn_memory: u64,
    /// Skip the branch cells.
    #[arg(long)]
    no_branch: bool,
    /// Skip the spawn cells.
    #[arg(long)]
    no_spawn: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Background load in the parent.
const LOADS: [(&str, &str); 3] = [
    ("idle", ""),
    (
        "rewrite-64MiB",
        "nohup python3 -c 'b=bytearray(64<<20)\nwhile True:\n for i in range(0,len(b),4096): b[i]=(b[i]+1)&255' >/dev/null 2>&1 &",
    ),
    (
        "touched-600MB",
        "nohup python3 -c 'import time\nb=bytearray(600<<20)\nfor i in range(0,len(b),4096): b[i]=1\nopen(\"/tmp/touched\",\"w\").write(\"1\")\ntime.sleep(1e9)' >/dev/null 2>&1 & while [ ! -e /tmp/touched ]; do sleep 0.2; done",
    ),
];

async fn sh(c: &Client, id: &str, cmd: &str) -> Result<()> {
    let r = c
        .exec(
            id,
            &ExecBody {
                cmd: Some(cmd.into()),
                timeout_secs: Some(300.0),
                ..Default::default()
            },
        )
        .await?;
    anyhow::ensure!(r.exit_code == Some(0), "`{cmd}` failed: {}", r.stderr);
    Ok(())
}

pub(crate) async fn run(a: ForkBenchArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let mut out: BTreeMap<String, Stats> = BTreeMap::new();
    if !a.no_branch {
        // One parent per load, branched in every mode each iteration.
        let modes: [(&str, BranchMode, bool); 3] = [
            ("copy", BranchMode::Copy, false),
            ("copy+hugepages", BranchMode::Copy, true),
            ("live", BranchMode::Live, false),
        ];
        let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (load, cmd) in LOADS {
            let p = c
                .create(&CreateSandbox {
                    memory_mib: Some(a.memory),
                    ..Default::default()
                })
                .await
                .context("create the branch parent")?;
            if !cmd.is_empty() {
                sh(&c, &p.id, cmd).await?;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            for i in 0..a.iterations {
                for (name, mode, hp) in modes {
                    let tag = format!("bench-{load}-{}-{i}", name.replace('+', "-"));
                    let s = c
                        .branch(
                            &p.id,
                            &BranchBody {
                                tag: Some(tag.clone()),
                                mode: Some(mode),
                                hugepages: hp,
                                ..Default::default()
                            },
                        )
                        .await?;
                    if let Some(ms) = s.pause_ms {
                        samples
                            .entry(format!("branch pause {name} [{load}]"))
                            .or_default()
                            .push(ms);
                    }
                    let _ = c.delete_snapshot(&tag).await;
                }
                eprint!("\rbranch {load}: {}/{}", i + 1, a.iterations);
            }
            eprintln!();
            c.remove(&p.id).await?;
        }
        for (k, v) in samples {
            out.insert(k, stats(v));
        }
    }
    if !a.no_spawn {
        let p = c
            .create(&CreateSandbox {
                memory_mib: Some(a.spawn_memory),
                ..Default::default()
            })
            .await?;
        c.eval(&p.id, "import json, math, random").await?;
        c.branch(
            &p.id,
            &BranchBody {
                tag: Some("bench-spawn".into()),
                wait: true,
                ..Default::default()
            },
        )
        .await?;
        c.remove(&p.id).await?;
        let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for i in 0..a.iterations {
            // the anchor's table: private-memory children, 4 KiB vs hugepages
            for n in [1u32, 3, 5] {
                for hp in [false, true] {
                    let t0 = Instant::now();
                    let kids = c
                        .spawn(&SpawnBody {
                            snapshot_tag: "bench-spawn".into(),
                            n: Some(n),
                            private_memory: true,
                            hugepages: hp,
                            ..Default::default()
                        })
                        .await?;
                    let ms = t0.elapsed().as_secs_f64() * 1e3;
                    let label = if hp { "hugepages" } else { "baseline" };
                    samples
                        .entry(format!("spawn private n={n} {label} (all ready)"))
                        .or_default()
                        .push(ms);
                    for k in kids.into_iter().filter_map(|k| k.sandbox) {
                        c.remove(&k.id).await?;
                    }
                }
            }
            // copy-on-write children
            for n in [1u32, 4, 16] {
                let kids = c
                    .spawn(&SpawnBody {
                        snapshot_tag: "bench-spawn".into(),
                        n: Some(n),
                        ..Default::default()
                    })
                    .await?;
                let first = kids
                    .iter()
                    .filter_map(|k| k.ready_ms)
                    .fold(f64::INFINITY, f64::min);
                let all = kids.iter().filter_map(|k| k.ready_ms).fold(0.0, f64::max);
                let run = kids.iter().filter_map(|k| k.running_ms).fold(0.0, f64::max);
                samples
                    .entry(format!("spawn cow n={n} first ready"))
                    .or_default()
                    .push(first);
                samples
                    .entry(format!("spawn cow n={n} all ready"))
                    .or_default()
                    .push(all);
                samples
                    .entry(format!("spawn cow n={n} all running"))
                    .or_default()
                    .push(run);
                if n == 4 {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let mut pss = 0.0;
                    for k in kids.iter().filter_map(|k| k.sandbox.as_ref()) {
                        pss += k.pid.and_then(|p| rollup(p, "Pss_Shmem:")).unwrap_or(0.0);
                    }
                    samples
                        .entry("cow child guest-RAM PSS MiB (n=4, idle)".into())
                        .or_default()
                        .push(pss / 4.0);
                }
                for k in kids.into_iter().filter_map(|k| k.sandbox) {
                    c.remove(&k.id).await?;
                }
            }
            eprint!("\rspawn: {}/{}", i + 1, a.iterations);
        }
        eprintln!();
        let _ = c.delete_snapshot("bench-spawn").await;
        for (k, v) in samples {
            out.insert(k, stats(v));
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{:<52} {:>9} {:>9} {:>9}", "", "p50", "p99", "max");
        for (k, s) in &out {
            println!(
                "{k:<52} {:>9.1} {:>9.1} {:>9.1}  (n={})",
                s.p50, s.p99, s.max, s.n
            );
        }
    }
    Ok(0)
}

/// A field of `/proc/<pid>/smaps_rollup`, in MiB.
fn rollup(pid: u32, key: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
}
