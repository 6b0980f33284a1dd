//! `zygote bench branch`: the parent's pause (QMP STOP to RESUME) when a
//! running sandbox is branched, per capture mode (`copy`, `copy` +
//! hugepages, `live`, ...) and per load in the parent (idle, a region
//! rewritten continuously, a region touched once and held), beside a cold
//! boot of the same size in the same iterations.
//!
//! One parent per load and capture family (`copy` modes share one, `live`
//! modes another: a live branch fills the holes of the parent's memfd, after
//! which a copy branch copies the whole guest), all alive at once so the
//! loads interleave too. A rewriting parent's writer runs only while its own
//! cells are measured (SIGSTOP/SIGCONT in the guest), so it does not load the
//! host during the other cells. Every parent is branched once per mode,
//! unmeasured, before iteration 0. Each branch's `memory.bin` is waited for
//! before the next cell and the snapshot deleted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use zygote_client::Client;
use zygote_proto::api::{BranchBody, BranchMode, CreateSandbox};

use super::chart::{self, Bars};
use super::report::Run;
use super::{
    at_least_one, cold_boot, finish, guarded, host, ms, prepare, rotation, sh, tag, wait_persisted,
    Common, Connect, Held,
};

/// Options of `zygote bench branch`; `C` is the caller's connection options.
#[derive(Args, Debug)]
pub struct BranchArgs<C: Connect> {
    #[command(flatten)]
    common: Common<C>,
    /// Iterations; each visits every cell once (round-robin).
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Guest RAM of each parent and of the cold boot, MiB.
    #[arg(long, default_value_t = 1024)]
    memory_mib: u64,
    /// Capture modes, one cell each: copy, copy+hugepages, live, live+hugepages.
    #[arg(long, default_value = "copy,copy+hugepages,live")]
    modes: String,
    /// What the parent dirties, one row of cells per entry: `idle`,
    /// `rewrite:MIB` (MIB rewritten continuously), `touch:MIB` (MIB touched
    /// once and held).
    #[arg(long, default_value = "idle,rewrite:64,touch:600")]
    loads: String,
    /// `live` mode's downtime limit, ms (default: the daemon's).
    #[arg(long)]
    downtime_limit_ms: Option<u64>,
    /// Seconds a rewriting parent's writer runs before its cells.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Run hugepage cells even when the pool is too small (they report the fallback).
    #[arg(long)]
    allow_hugepage_fallback: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Mode {
    mode: BranchMode,
    hugepages: bool,
}

impl Mode {
    fn label(self) -> String {
        format!(
            "{}{}",
            self.mode.as_str(),
            if self.hugepages { "+hugepages" } else { "" }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Load {
    Idle,
    Rewrite(u64),
    Touch(u64),
}

impl Load {
    fn label(self) -> String {
        match self {
            Load::Idle => "idle".into(),
            Load::Rewrite(m) => format!("rewrite {m} MiB"),
            Load::Touch(m) => format!("touched {m} MiB"),
        }
    }

    fn mib(self) -> u64 {
        match self {
            Load::Idle => 0,
            Load::Rewrite(m) | Load::Touch(m) => m,
        }
    }

    /// Starts the load in the guest. A rewriter is stopped by a second exec
    /// ([`STOP_WRITER`]): stopping it inside this one would race `nohup`
    /// (a stopped member when the shell exits orphans the group, and the
    /// kernel's SIGHUP then kills a writer not yet ignoring it).
    fn start_cmd(self) -> Option<String> {
        match self {
            Load::Idle => None,
            Load::Rewrite(m) => Some(format!(
                "nohup python3 -c 'b=bytearray({m}<<20)\nwhile True:\n for i in range(0,len(b),4096): b[i]=(b[i]+1)&255' \
                 >/dev/null 2>&1 & echo $! > {PIDFILE}"
            )),
            Load::Touch(m) => Some(format!(
                "rm -f /tmp/bench-touched; nohup python3 -c 'import time\nb=bytearray({m}<<20)\nfor i in range(0,len(b),4096): b[i]=1\n\
                 open(\"/tmp/bench-touched\",\"w\").write(\"1\")\ntime.sleep(1e9)' >/dev/null 2>&1 & \
                 while [ ! -e /tmp/bench-touched ]; do sleep 0.2; done"
            )),
        }
    }
}

const PIDFILE: &str = "/tmp/bench-writer.pid";
/// Stops a rewriter, failing clearly when it is gone.
const STOP_WRITER: &str = "p=$(cat /tmp/bench-writer.pid) && kill -0 $p && kill -STOP $p";
/// Lets it run again.
const CONT_WRITER: &str = "p=$(cat /tmp/bench-writer.pid) && kill -0 $p && kill -CONT $p";

fn parse_modes(s: &str) -> Result<Vec<Mode>> {
    let mut v = Vec::new();
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (m, hp) = match p.split_once('+') {
            Some((m, "hugepages" | "hp" | "huge")) => (m, true),
            Some(_) => bail!("--modes: {p:?}: the only suffix is +hugepages (e.g. copy+hugepages)"),
            None => (p, false),
        };
        let mode = match m {
            "copy" => BranchMode::Copy,
            "live" => BranchMode::Live,
            other => bail!("--modes: {other:?} is not a branch mode; use copy, copy+hugepages, live or live+hugepages"),
        };
        let x = Mode {
            mode,
            hugepages: hp,
        };
        if !v.contains(&x) {
            v.push(x);
        }
    }
    if v.is_empty() {
        bail!("--modes is empty; give e.g. copy,copy+hugepages,live");
    }
    Ok(v)
}

fn parse_loads(s: &str, memory_mib: u64) -> Result<Vec<Load>> {
    let mut v = Vec::new();
    // the guest kernel, the agent and Python need about this much besides the load
    let room = memory_mib.saturating_sub(200);
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let load = match p.split_once(':') {
            None if p == "idle" => Load::Idle,
            Some((kind, n)) => {
                let m: u64 = n.trim_end_matches("MiB").parse().map_err(|_| {
                    anyhow::anyhow!("--loads: {p:?}: {n:?} is not a size in MiB (e.g. rewrite:64)")
                })?;
                if m == 0 || m > room {
                    bail!(
                        "--loads: {p:?} does not fit a {memory_mib} MiB guest: use 1 to {room} MiB or raise --memory-mib"
                    );
                }
                match kind {
                    "rewrite" => Load::Rewrite(m),
                    "touch" => Load::Touch(m),
                    other => bail!(
                        "--loads: {other:?} is not a load; use idle, rewrite:MIB or touch:MIB"
                    ),
                }
            }
            None => bail!("--loads: {p:?} is not a load; use idle, rewrite:MIB or touch:MIB"),
        };
        if !v.contains(&load) {
            v.push(load);
        }
    }
    if v.is_empty() {
        bail!("--loads is empty; give e.g. idle,rewrite:64,touch:600");
    }
    Ok(v)
}

pub(super) async fn run<C: Connect>(a: BranchArgs<C>) -> Result<u8> {
    at_least_one("--iterations", a.iterations)?;
    let modes = parse_modes(&a.modes)?;
    let loads = parse_loads(&a.loads, a.memory_mib)?;
    if !(0.0..=60.0).contains(&a.warmup_secs) {
        bail!(
            "--warmup-secs {} is out of range; use 0 to 60",
            a.warmup_secs
        );
    }
    let need = if modes.iter().any(|m| m.hugepages) {
        host::huge_pages_for(a.memory_mib)
    } else {
        0
    };
    let pool_warning = host::check_hugepages(
        need,
        &format!(
            "the hugepage branch cells (one {} MiB snapshot at a time)",
            a.memory_mib
        ),
        "--modes copy,live",
        a.allow_hugepage_fallback,
    )?;
    let c = prepare(&a.common).await?;
    let held = Held::default();
    let mut run = Run::new(
        "branch",
        vec!["mode", "hugepages", "load", "dirtied_mib", "memory_mib"],
        format!(
            "zygote bench branch: {} MiB parents, {} iterations (cells interleaved), p99 is nearest-rank; \
             pause_ms = parent STOP to RESUME; cold/this = a cold boot's p50 / this p50",
            a.memory_mib, a.iterations
        ),
    );
    if let Some(w) = pool_warning {
        run.note(w);
    }
    let failures = guarded(&c, &held, body(&c, &held, &a, &modes, &loads, &mut run)).await?;
    finish(&run, &a.common, |run, dir| charts(run, dir, &modes, &loads))?;
    Ok(if failures == 0 { 0 } else { 1 })
}

fn cell_label(m: Mode, l: Load) -> String {
    format!("{} [{}]", m.label(), l.label())
}

async fn body<C: Connect>(
    c: &Client,
    held: &Held,
    a: &BranchArgs<C>,
    modes: &[Mode],
    loads: &[Load],
    run: &mut Run,
) -> Result<usize> {
    let mem = a.memory_mib.to_string();
    let cold = run.cell(
        "cold boot",
        &[("mode", "cold-boot".into()), ("memory_mib", mem.clone())],
    );
    let mut cells = Vec::new();
    for &l in loads {
        let row: Vec<usize> = modes
            .iter()
            .map(|&m| {
                run.cell(
                    &cell_label(m, l),
                    &[
                        ("mode", m.mode.as_str().into()),
                        ("hugepages", m.hugepages.to_string()),
                        ("load", l.label()),
                        ("dirtied_mib", l.mib().to_string()),
                        ("memory_mib", mem.clone()),
                    ],
                )
            })
            .collect();
        cells.push(row);
    }
    run.cold = Some((cold, "ready_ms"));
    run.ratio_metrics = vec!["pause_ms", "call_ms"];
    let create = CreateSandbox {
        image: a.common.image.clone(),
        memory_mib: Some(a.memory_mib),
        ..Default::default()
    };
    // One parent per load and capture family: a live branch reads every
    // page of the parent's memfd (filling its holes), which would make later
    // copy branches of the same parent copy the whole guest.
    struct Group {
        load: usize,
        parent: String,
        modes: Vec<usize>,
    }
    let mut groups: Vec<Group> = Vec::new();
    for (li, &l) in loads.iter().enumerate() {
        for family in [BranchMode::Copy, BranchMode::Live] {
            let ms: Vec<usize> = (0..modes.len())
                .filter(|&i| modes[i].mode == family)
                .collect();
            if ms.is_empty() {
                continue;
            }
            let p = held.create(c, &create).await.with_context(|| {
                format!("boot the {} parent for load {}", family.as_str(), l.label())
            })?;
            if let Some(cmd) = l.start_cmd() {
                sh(c, &p.id, &cmd)
                    .await
                    .with_context(|| format!("start load {} in the parent", l.label()))?;
            }
            if matches!(l, Load::Rewrite(_)) {
                sh(c, &p.id, STOP_WRITER)
                    .await
                    .context("stop the parent's writer until its cells")?;
            }
            groups.push(Group {
                load: li,
                parent: p.id,
                modes: ms,
            });
        }
    }
    let mut b = Brancher {
        c,
        held,
        a,
        seq: 0,
        failures: 0,
    };
    // one unmeasured branch per parent and mode, so iteration 0 starts from
    // the same state as the others
    for g in &groups {
        b.resume(g.parent.as_str(), loads[g.load]).await?;
        for &mi in &g.modes {
            b.once(run, &g.parent, modes[mi], loads[g.load], None)
                .await?;
        }
        b.suspend(g.parent.as_str(), loads[g.load]).await?;
    }
    b.failures = 0;
    for i in 0..a.iterations {
        // slot 0 is the cold boot, slot 1 + k group k
        for slot in rotation(groups.len() + 1, i) {
            if slot == 0 {
                cold_boot(c, held, run, cold, i, &create).await?;
                continue;
            }
            let g = &groups[slot - 1];
            let load = loads[g.load];
            b.resume(&g.parent, load).await?;
            for k in rotation(g.modes.len(), i) {
                let mi = g.modes[k];
                b.once(
                    run,
                    &g.parent,
                    modes[mi],
                    load,
                    Some((cells[g.load][mi], i)),
                )
                .await?;
            }
            b.suspend(&g.parent, load).await?;
        }
        eprint!(
            "\rbranch: iteration {}/{} ({} failed)",
            i + 1,
            a.iterations,
            b.failures
        );
    }
    eprintln!();
    for g in &groups {
        held.remove(c, &g.parent).await?;
    }
    Ok(b.failures)
}

/// Branches a parent once and records the result.
struct Brancher<'a, C: Connect> {
    c: &'a Client,
    held: &'a Held,
    a: &'a BranchArgs<C>,
    seq: usize,
    failures: usize,
}

impl<C: Connect> Brancher<'_, C> {
    /// Lets a rewriting parent's writer run (and reach a steady dirty rate).
    async fn resume(&self, parent: &str, load: Load) -> Result<()> {
        if matches!(load, Load::Rewrite(_)) {
            sh(self.c, parent, CONT_WRITER)
                .await
                .context("resume the parent's writer (did it die?)")?;
            tokio::time::sleep(Duration::from_secs_f64(self.a.warmup_secs)).await;
        }
        Ok(())
    }

    async fn suspend(&self, parent: &str, load: Load) -> Result<()> {
        if matches!(load, Load::Rewrite(_)) {
            sh(self.c, parent, STOP_WRITER)
                .await
                .context("stop the parent's writer (did it die?)")?;
        }
        Ok(())
    }

    /// One branch; recorded into `(cell, iteration)` when given. Waits for
    /// `memory.bin`, then deletes the snapshot.
    async fn once(
        &mut self,
        run: &mut Run,
        parent: &str,
        m: Mode,
        load: Load,
        at: Option<(usize, usize)>,
    ) -> Result<()> {
        let (c, held) = (self.c, self.held);
        self.seq += 1;
        let t = tag(&format!("branch-{}", self.seq));
        let label = cell_label(m, load);
        let t0 = Instant::now();
        let r = c
            .branch(
                parent,
                &BranchBody {
                    tag: Some(t.clone()),
                    mode: Some(m.mode),
                    hugepages: m.hugepages,
                    wait: false,
                    downtime_limit_ms: self.a.downtime_limit_ms,
                },
            )
            .await;
        let call = ms(t0);
        let s = match r {
            Ok(s) => s,
            Err(e) => {
                self.failures += 1;
                let when = at.map_or("warm-up".to_string(), |(_, i)| format!("iteration {i}"));
                run.note(format!("{label} failed in {when}: {e}"));
                return Ok(());
            }
        };
        held.snapshot(&t);
        if let Some((cell, i)) = at {
            run.add(cell, i, "call_ms", call, "ms");
            if let Some(p) = s.pause_ms {
                run.add(cell, i, "pause_ms", p, "ms");
            }
            if let Some(x) = s.copy_ms {
                run.add(cell, i, "copy_ms", x, "ms");
            }
            let mib = s.memory_bytes as f64 / (1u64 << 20) as f64;
            run.add(cell, i, "captured", mib, "MiB");
        }
        if let Some(w) = &s.warning {
            run.note(format!("{label}: {w}"));
        }
        if m.hugepages && !s.hugepages {
            run.note(format!(
                "{label}: the snapshot is not hugepage-backed (fallback to 4 KiB pages)"
            ));
        }
        if let Some(w) = wait_persisted(c, &t).await? {
            run.note(format!("{label}: memory.bin: {w}"));
        }
        held.delete_snapshot(c, &t).await
    }
}

fn charts(run: &Run, dir: &Path, modes: &[Mode], loads: &[Load]) -> Result<Vec<PathBuf>> {
    let st = |label: &str, metric: &str| {
        run.cells
            .iter()
            .position(|c| c.label == label)
            .and_then(|i| run.stats_of(i, metric))
    };
    let cold = st("cold boot", "ready_ms").map(|s| ("cold boot (p50)".to_string(), s.p50));
    let n = st(&cell_label(modes[0], loads[0]), "pause_ms")
        .map(|s| s.n)
        .unwrap_or(0);
    let mem = run
        .cells
        .first()
        .and_then(|c| c.params.last().cloned())
        .unwrap_or_default();
    let p = chart::bars(
        &dir.join("branch-pause.png"),
        &Bars {
            title: format!(
                "zygote bench branch: parent pause, {mem} MiB guest, n={n}: p50 (bar), p99 (whisker), max (dot)"
            ),
            y_desc: "pause, ms (log scale)",
            groups: loads.iter().map(|l| l.label()).collect(),
            series: modes.iter().map(|m| m.label()).collect(),
            values: loads
                .iter()
                .map(|&l| modes.iter().map(|&m| st(&cell_label(m, l), "pause_ms")).collect())
                .collect(),
            log_y: true,
            hline: cold,
        },
    )?;
    Ok(vec![p])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_list() {
        let v = parse_modes("copy,copy+hugepages,live").unwrap();
        assert_eq!(
            v.iter().map(|m| m.label()).collect::<Vec<_>>(),
            ["copy", "copy+hugepages", "live"]
        );
        let e = parse_modes("copy+fast").unwrap_err().to_string();
        assert!(e.contains("copy+fast") && e.contains("+hugepages"), "{e}");
        assert!(parse_modes("snap")
            .unwrap_err()
            .to_string()
            .contains("\"snap\""));
        assert!(parse_modes("").is_err());
    }

    #[test]
    fn loads_list() {
        let v = parse_loads("idle,rewrite:64,touch:600", 1024).unwrap();
        assert_eq!(v, [Load::Idle, Load::Rewrite(64), Load::Touch(600)]);
        let e = parse_loads("touch:600", 512).unwrap_err().to_string();
        assert!(
            e.contains("512 MiB guest") && e.contains("--memory-mib"),
            "{e}"
        );
        assert!(parse_loads("rewrite:x", 1024)
            .unwrap_err()
            .to_string()
            .contains("\"x\""));
        assert!(parse_loads("burn:5", 1024)
            .unwrap_err()
            .to_string()
            .contains("\"burn\""));
    }

    #[test]
    fn load_commands_start_and_stop() {
        let c = Load::Rewrite(64).start_cmd().unwrap();
        assert!(
            c.contains("bytearray(64<<20)") && c.contains(PIDFILE),
            "{c}"
        );
        assert!(!c.contains("kill"), "stopped by a second exec: {c}");
        assert!(STOP_WRITER.contains(PIDFILE) && CONT_WRITER.contains(PIDFILE));
        assert!(Load::Touch(600)
            .start_cmd()
            .unwrap()
            .contains("bytearray(600<<20)"));
        assert!(Load::Idle.start_cmd().is_none());
    }
}
