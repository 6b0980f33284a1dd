//! `zygote bench boot|spawn|branch|agent`, the benchmark suite: a client of the
//! daemon's REST API like the CLI that runs it. Benchmarks, not tests. Every subcommand
//! visits all its cells once per iteration (round-robin, the starting cell
//! rotating), so drift on a shared host spreads over every cell; measures a
//! cold boot in the same run for a ratio; prints a table of p50/p99/max with n;
//! and writes into `--out DIR` (default `bench-out`):
//!
//! - `<bench>-samples.csv`: one row per sample (bench, cell, the bench's
//!   parameter columns, iteration, metric, value, unit);
//! - `<bench>-summary.csv`: one row per cell and metric (n, p50, p99, max, min,
//!   mean, cold-boot ratio, reference p50);
//! - `<bench>-table.txt` (the printed table), `<bench>-run.txt` (command line,
//!   host facts, warnings);
//! - `<bench>-*.png`: charts (see [`chart`]).
//!
//! Sandboxes and snapshots the bench makes are tagged `bench-<pid>-...` and
//! removed at the end, on error and on Ctrl-C.
//!
//! The CLI owns how the daemon is reached (its `--socket`/`--url` options and
//! the daemon it may start): it hands them in as a [`Connect`], flattened first
//! into every bench's options, and calls [`run`].

mod agent;
mod boot;
mod branch;
mod chart;
mod host;
mod report;
mod spawn;
mod stats;

use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use zygote_client::Client;
use zygote_proto::api::{
    BranchBody, CreateSandbox, ExecBody, SnapshotStatus, SpawnBody, SpawnResult,
};

pub use agent::AgentArgs;
pub use boot::BootArgs;
pub use branch::BranchArgs;
pub use spawn::SpawnArgs;

use report::Run;

/// How a bench reaches the daemon: the caller's connection options (a clap
/// [`Args`] group, flattened first into every bench's options) and its way
/// of connecting with them.
pub trait Connect: Args + Clone + Debug {
    /// A client of the daemon these options name. Called once per run, after
    /// the options were checked and before anything boots.
    fn client(&self) -> impl Future<Output = Result<Client>>;
    /// The daemon's Unix socket when one was named: the bench finds the
    /// daemon's pid by it (for the daemon's memory), else any `zygote daemon`.
    fn socket(&self) -> Option<&Path>;
}

/// `zygote bench`'s subcommands; `C` is the caller's connection options.
#[derive(Subcommand, Debug)]
pub enum BenchCmd<C: Connect> {
    /// Cold boot, exec round trip, file throughput, host memory; beside a
    /// copy-on-write child (writes CSV and PNG into --out).
    #[command(alias = "sandbox", long_about = HELP_BOOT)]
    Boot(BootArgs<C>),
    /// Children of a snapshot: copy-on-write or private memory, 4 KiB or
    /// hugepages, n per spawn; time to running and ready, memory per child.
    #[command(long_about = HELP_SPAWN)]
    Spawn(SpawnArgs<C>),
    /// Parent pause of a branch: modes (copy, copy+hugepages, live) x load
    /// in the parent (idle, rewrite:MIB, touch:MIB).
    #[command(long_about = HELP_BRANCH)]
    Branch(BranchArgs<C>),
    /// Pause and resume per guest size (and the memory a pause frees), a
    /// background process's start and attach, a terminal keystroke's round trip.
    #[command(long_about = HELP_AGENT)]
    Agent(AgentArgs<C>),
}

/// Runs one bench; its exit code (1 when a boot or branch failed).
pub async fn run<C: Connect>(cmd: BenchCmd<C>) -> Result<u8> {
    match cmd {
        BenchCmd::Boot(a) => boot::run(a).await,
        BenchCmd::Spawn(a) => spawn::run(a).await,
        BenchCmd::Branch(a) => branch::run(a).await,
        BenchCmd::Agent(a) => agent::run(a).await,
    }
}

/// Long help of `zygote bench`.
pub const HELP: &str = "\
Benchmarks, not tests. Every subcommand visits all its cells once per
iteration (round-robin), measures a cold boot of the same size in the same run
(column cold/this), prints p50/p99/max with n, and writes into --out DIR
(default bench-out): <bench>-samples.csv (one row per sample),
<bench>-summary.csv, <bench>-table.txt, <bench>-run.txt and PNG charts.

Examples:
    zygote bench boot --iterations 20
    zygote bench spawn --memory-mib 512 --iterations 20 --cow 1,4,16
    zygote bench branch --memory-mib 1024 --iterations 10 --out /tmp/b";

/// Long help of `zygote bench boot`.
const HELP_BOOT: &str = "\
Cold boot to agent ready (and the daemon's QEMU-start-to-agent time), one
copy-on-write child of a warm snapshot beside it, exec round trips of `true`,
upload and download throughput, then host memory of idle sandboxes and of the
daemon. Exits 1 when a boot did not reach the agent.

Examples:
    zygote bench boot --iterations 20 --execs 10 --file-mib 64 --idle 4
    zygote bench boot --iterations 3 --no-charts --json";

/// Long help of `zygote bench spawn`.
const HELP_SPAWN: &str = "\
Children of one warm snapshot: copy-on-write (--cow N,...) and private memory
(--private N,... x --pages 4k,2m). Time to running and to agent ready (first
and all), host memory per child (guest-RAM PSS and unique, whole-QEMU PSS and
unique), children from the daemon's pre-started pool, and the anchor's
published p50 beside the private cells of a 512 MiB snapshot. Hugepage cells
need the 2 MiB pool; the bench says how many pages when it is short.

Examples:
    zygote bench spawn --memory-mib 512 --iterations 20 --private 1,3,5 --pages 4k,2m --cow \"\"
    zygote bench spawn --memory-mib 512 --iterations 10 --private \"\" --cow 1,4,16";

/// Long help of `zygote bench branch`.
const HELP_BRANCH: &str = "\
The parent's pause (QMP STOP to RESUME) when a running sandbox is branched,
per mode (copy, copy+hugepages, live, live+hugepages) and per load in the
parent (idle, rewrite:MIB rewritten continuously, touch:MIB touched once).
Also the branch call's time and the captured guest RAM. Exits 1 when a
branch failed.

Examples:
    zygote bench branch --memory-mib 1024 --iterations 10
    zygote bench branch --modes live --loads rewrite:64 --downtime-limit-ms 10";

/// Long help of `zygote bench agent`.
const HELP_AGENT: &str = "\
What an agent does with a sandbox beyond exec: pause and resume of a sandbox
per guest size, each with a working set touched (time of each call, QEMU's PSS
that the pause frees, MemAvailable's gain), a background process's start (to
its pid) and a re-attach to its output (to the first replayed byte), and a
keystroke's round trip through a terminal running cat. A cold boot of the
smallest size runs in the same iterations.

Examples:
    zygote bench agent --iterations 10
    zygote bench agent --pause-mib 256,1024 --touch-mib 64 --keys 20";

/// Options every bench takes.
#[derive(Args, Debug, Clone)]
struct Common<C: Connect> {
    #[command(flatten)]
    conn: C,
    /// Directory for the CSV files, the table and the PNG charts (created).
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// TrueType font for the chart text.
    #[arg(long, default_value = chart::DEFAULT_FONT)]
    font: PathBuf,
    /// Write no PNG charts (no font needed).
    #[arg(long)]
    no_charts: bool,
    /// Print the summary rows as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Image to boot (default: the daemon's, `python`).
    #[arg(long)]
    image: Option<String>,
}

/// Checks what can be checked before any guest boots (output directory,
/// font) and connects.
async fn prepare<C: Connect>(c: &Common<C>) -> Result<Client> {
    std::fs::create_dir_all(&c.out)
        .with_context(|| format!("cannot create the output directory {}", c.out.display()))?;
    let probe = c.out.join(".zygote-bench-probe");
    std::fs::write(&probe, b"")
        .with_context(|| format!("the output directory {} is not writable", c.out.display()))?;
    let _ = std::fs::remove_file(&probe);
    if !c.no_charts {
        chart::load_font(&c.font)?;
    }
    let cl = c.conn.client().await?;
    cl.health()
        .await
        .context("the daemon does not answer /healthz")?;
    Ok(cl)
}

/// Prints the table (or JSON), writes the CSV files and, unless `--no-charts`,
/// the charts `draw` makes.
fn finish<C: Connect>(
    run: &Run,
    c: &Common<C>,
    draw: impl FnOnce(&Run, &Path) -> Result<Vec<PathBuf>>,
) -> Result<()> {
    if c.json {
        println!("{}", serde_json::to_string_pretty(&run.rows())?);
    } else {
        print!("{}", run.table());
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut files = run.write(&c.out, &command)?;
    if !c.no_charts {
        files.extend(draw(run, &c.out)?);
    }
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}

/// Rejects 0 iterations and similar, naming the flag.
fn at_least_one(flag: &str, v: usize) -> Result<()> {
    if v == 0 {
        bail!("{flag} must be at least 1 (got 0)");
    }
    Ok(())
}

/// Parses a comma-separated list of counts, e.g. `1,4,16` (empty: none).
fn counts(flag: &str, s: &str) -> Result<Vec<u32>> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n: u32 = part
            .parse()
            .map_err(|_| anyhow!("{flag}: {part:?} is not a count; give a list like 1,4,16"))?;
        if n == 0 || n > 64 {
            bail!("{flag}: {n} children is out of range; use 1 to 64");
        }
        if !v.contains(&n) {
            v.push(n);
        }
    }
    Ok(v)
}

/// A prefix unique to this bench process, for sandbox names and tags.
fn tag(what: &str) -> String {
    format!("bench-{}-{what}", std::process::id())
}

/// Sandboxes and snapshots the bench holds, removed whatever happens.
#[derive(Default)]
struct Held {
    sandboxes: Mutex<Vec<String>>,
    snapshots: Mutex<Vec<String>>,
}

impl Held {
    fn sandbox(&self, id: &str) {
        self.sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.to_string());
    }

    fn snapshot(&self, tag: &str) {
        self.snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tag.to_string());
    }

    async fn create(
        &self,
        c: &Client,
        body: &CreateSandbox,
    ) -> Result<zygote_proto::api::SandboxInfo> {
        let info = c.create(body).await?;
        self.sandbox(&info.id);
        Ok(info)
    }

    async fn remove(&self, c: &Client, id: &str) -> Result<()> {
        c.remove(id)
            .await
            .with_context(|| format!("cannot remove sandbox {id}"))?;
        self.sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|x| x != id);
        Ok(())
    }

    async fn spawn(&self, c: &Client, body: &SpawnBody) -> Result<Vec<SpawnResult>> {
        let kids = c.spawn(body).await?;
        for k in kids.iter().filter_map(|k| k.sandbox.as_ref()) {
            self.sandbox(&k.id);
        }
        Ok(kids)
    }

    async fn remove_children(&self, c: &Client, kids: &[SpawnResult]) -> Result<()> {
        for k in kids.iter().filter_map(|k| k.sandbox.as_ref()) {
            self.remove(c, &k.id).await?;
        }
        Ok(())
    }

    async fn delete_snapshot(&self, c: &Client, tag: &str) -> Result<()> {
        c.delete_snapshot(tag)
            .await
            .with_context(|| format!("cannot delete snapshot {tag}"))?;
        self.snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|x| x != tag);
        Ok(())
    }

    /// Removes what is left (after an error or Ctrl-C).
    async fn clear(&self, c: &Client) {
        let ids = std::mem::take(&mut *self.sandboxes.lock().unwrap_or_else(|p| p.into_inner()));
        let tags = std::mem::take(&mut *self.snapshots.lock().unwrap_or_else(|p| p.into_inner()));
        if !ids.is_empty() || !tags.is_empty() {
            eprintln!(
                "removing {} sandbox(es) and {} snapshot(s) the bench still held",
                ids.len(),
                tags.len()
            );
        }
        for id in ids {
            if let Err(e) = c.remove(&id).await {
                eprintln!("warning: cannot remove sandbox {id}: {e}");
            }
        }
        for t in tags {
            if let Err(e) = c.delete_snapshot(&t).await {
                eprintln!("warning: cannot delete snapshot {t}: {e}");
            }
        }
    }
}

/// Runs `body`, stopping at Ctrl-C, and then removes whatever `held` still holds.
async fn guarded<T>(c: &Client, held: &Held, body: impl Future<Output = Result<T>>) -> Result<T> {
    let r = tokio::select! {
        r = body => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    held.clear(c).await;
    r
}

/// Runs a shell command in a sandbox; fails on a non-zero exit.
async fn sh(c: &Client, id: &str, cmd: &str) -> Result<()> {
    let r = c
        .exec(
            id,
            &ExecBody {
                cmd: Some(cmd.into()),
                timeout_secs: Some(600.0),
                ..Default::default()
            },
        )
        .await?;
    if r.exit_code != Some(0) {
        bail!(
            "`{cmd}` exited with {:?} in {id}: {}",
            r.exit_code,
            r.stderr.trim()
        );
    }
    Ok(())
}

/// One cold boot (create, agent ready, remove) into `cell`: `ready_ms` is the
/// whole create call (request to agent ready, as a spawn's `ready_ms`),
/// `boot_ms` the daemon's QEMU start to agent. A failed boot is a note and
/// returns false.
async fn cold_boot(
    c: &Client,
    held: &Held,
    run: &mut Run,
    cell: usize,
    iteration: usize,
    body: &CreateSandbox,
) -> Result<bool> {
    let t0 = Instant::now();
    match held.create(c, body).await {
        Ok(info) => {
            run.add(cell, iteration, "ready_ms", ms(t0), "ms");
            if let Some(b) = info.boot_ms {
                run.add(cell, iteration, "boot_ms", b as f64, "ms");
            }
            held.remove(c, &info.id).await?;
            Ok(true)
        }
        Err(e) => {
            run.note(format!("cold boot in iteration {iteration} failed: {e}"));
            Ok(false)
        }
    }
}

/// Boots a parent, warms its interpreter and branches it into `tag` (copy,
/// persisted), then removes the parent: the snapshot spawns start from.
async fn make_snapshot(c: &Client, held: &Held, tag: &str, create: &CreateSandbox) -> Result<()> {
    let p = held
        .create(c, create)
        .await
        .context("boot the snapshot's parent")?;
    c.eval(&p.id, "import json, math, random").await?;
    c.branch(
        &p.id,
        &BranchBody {
            tag: Some(tag.into()),
            wait: true,
            ..Default::default()
        },
    )
    .await
    .context("branch the snapshot's parent")?;
    held.snapshot(tag);
    held.remove(c, &p.id).await
}

/// Waits until a snapshot's `memory.bin` is written (so its disk writes stay
/// out of the next cell); returns its persistence warning if it failed.
async fn wait_persisted(c: &Client, tag: &str) -> Result<Option<String>> {
    let t0 = Instant::now();
    loop {
        let s = c.snapshot(tag).await?;
        match s.status {
            SnapshotStatus::Ready => return Ok(None),
            SnapshotStatus::Failed => return Ok(Some(s.warning.unwrap_or_default())),
            SnapshotStatus::Writing => {}
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("snapshot {tag} was still writing memory.bin after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The daemon keeps a pool of pre-started copy-on-write children per hot
/// snapshot and refills it in the background after each spawn. The benches
/// wait for the refill before every cell, so those QEMU starts never overlap
/// a measurement. `learn_pool` finds the pool's size after a first spawn (the
/// count once it stopped growing for 3 s); `settle_pool` waits for it again.
async fn learn_pool(c: &Client, tag: &str) -> Result<u32> {
    let t0 = Instant::now();
    let (mut last, mut since) = (c.snapshot(tag).await?.prestarted, Instant::now());
    while since.elapsed() < Duration::from_secs(3) && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = c.snapshot(tag).await?.prestarted;
        if n != last {
            (last, since) = (n, Instant::now());
        }
    }
    Ok(last)
}

/// Waits (at most 60 s) until `tag` has `target` pre-started children again;
/// false when it did not get there.
async fn settle_pool(c: &Client, tag: &str, target: u32) -> Result<bool> {
    let t0 = Instant::now();
    while c.snapshot(tag).await?.prestarted < target {
        if t0.elapsed() > Duration::from_secs(60) {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(true)
}

fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

/// The order of `n` cells in iteration `i`: round-robin, starting one later
/// each iteration.
fn rotation(n: usize, i: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (k + i) % n.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_visits_every_cell_once() {
        let v: Vec<usize> = rotation(3, 1).collect();
        assert_eq!(v, [1, 2, 0]);
        let v: Vec<usize> = rotation(3, 3).collect();
        assert_eq!(v, [0, 1, 2]);
    }

    #[test]
    fn count_lists() {
        assert_eq!(counts("--cow", "1,4,16").unwrap(), [1, 4, 16]);
        assert_eq!(counts("--cow", "").unwrap(), Vec::<u32>::new());
        let e = counts("--cow", "1,x").unwrap_err().to_string();
        assert!(e.contains("--cow") && e.contains("\"x\""), "{e}");
        assert!(counts("--private", "0")
            .unwrap_err()
            .to_string()
            .contains("1 to 64"));
        assert!(at_least_one("--iterations", 0)
            .unwrap_err()
            .to_string()
            .contains("--iterations"));
    }
}
