//! `zygote bench spawn`: children of one warm snapshot, copy-on-write or on
//! private memory (4 KiB pages or 2 MiB hugepages), n per spawn from a list:
//! time to running and to agent ready (first and all), host memory per child
//! (guest-RAM mapping and whole QEMU process), beside a cold boot of the same
//! size in the same iterations. Private cells carry the anchor's published
//! p50 for comparison.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use zygote_client::Client;
use zygote_proto::api::{CreateSandbox, SpawnBody};

use super::chart::{self, Bars, Line};
use super::report::Run;
use super::{
    at_least_one, cold_boot, counts, finish, guarded, host, ms, prepare, rotation, tag, Common,
    Connect, Held,
};

/// Options of `zygote bench spawn`; `C` is the caller's connection options.
#[derive(Args, Debug)]
pub struct SpawnArgs<C: Connect> {
    #[command(flatten)]
    common: Common<C>,
    /// Iterations; each visits every cell once (round-robin).
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Guest RAM of the snapshot and the cold boot, MiB (the anchor's table used 512).
    #[arg(long, default_value_t = 512)]
    memory_mib: u64,
    /// Copy-on-write children per spawn, one cell each (empty: none).
    #[arg(long, default_value = "1,4,16")]
    cow: String,
    /// Private-memory children per spawn, one cell per page size each (empty: none).
    #[arg(long, default_value = "1,3,5")]
    private: String,
    /// Page sizes of the private-memory cells: `4k`, `2m` (hugepages) or both.
    #[arg(long, default_value = "4k,2m")]
    pages: String,
    /// Wait after the children are ready before reading their memory, ms.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// Run hugepage cells even when the pool is too small (they report the fallback).
    #[arg(long)]
    allow_hugepage_fallback: bool,
    /// Sandboxes with a network card (`on`, the daemon's default under
    /// `--network nat`), without (`off`), or both side by side (`on,off`):
    /// one snapshot each.
    #[arg(long, default_value = "on")]
    network: String,
}

/// `on`, `off` or both.
fn parse_network(s: &str) -> Result<Vec<bool>> {
    let mut v = Vec::new();
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let on = match p {
            "on" => true,
            "off" => false,
            other => bail!("--network: {other:?} is not on or off; use on, off or on,off"),
        };
        if !v.contains(&on) {
            v.push(on);
        }
    }
    if v.is_empty() {
        bail!("--network is empty: use on, off or on,off");
    }
    Ok(v)
}

/// A cell's label: the kind's, marked when the sandboxes have no network.
fn label(k: Kind, net: bool) -> String {
    if net {
        k.label()
    } else {
        format!("{} no-net", k.label())
    }
}

/// The anchor's published p50 (ms, all children ready) of private-memory
/// spawns from a 512 MiB snapshot: (n, 4 KiB, hugepages).
const ANCHOR: [(u32, f64, f64); 3] = [(1, 481.0, 410.0), (3, 1326.0, 1108.0), (5, 2055.0, 1698.0)];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Cold,
    Cow(u32),
    Private(u32, bool),
}

impl Kind {
    fn label(self) -> String {
        match self {
            Kind::Cold => "cold boot".into(),
            Kind::Cow(n) => format!("cow n={n}"),
            Kind::Private(n, false) => format!("private n={n} 4 KiB"),
            Kind::Private(n, true) => format!("private n={n} hugepages"),
        }
    }

    /// A chart axis label.
    fn short(self) -> String {
        match self {
            Kind::Cold => "cold".into(),
            Kind::Cow(n) => format!("cow {n}"),
            Kind::Private(n, false) => format!("private {n}, 4K"),
            Kind::Private(n, true) => format!("private {n}, 2M"),
        }
    }
}

fn parse_pages(s: &str) -> Result<Vec<bool>> {
    let mut v = Vec::new();
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let hp = match p.to_ascii_lowercase().as_str() {
            "4k" | "4kib" | "baseline" => false,
            "2m" | "2mib" | "hugepages" | "huge" => true,
            other => bail!("--pages: {other:?} is not a page size; use 4k, 2m or 4k,2m"),
        };
        if !v.contains(&hp) {
            v.push(hp);
        }
    }
    Ok(v)
}

pub(super) async fn run<C: Connect>(a: SpawnArgs<C>) -> Result<u8> {
    at_least_one("--iterations", a.iterations)?;
    let cow = counts("--cow", &a.cow)?;
    let private = counts("--private", &a.private)?;
    let pages = parse_pages(&a.pages)?;
    let nets = parse_network(&a.network)?;
    let mut kinds = vec![Kind::Cold];
    kinds.extend(cow.iter().map(|&n| Kind::Cow(n)));
    for &n in &private {
        for &hp in &pages {
            kinds.push(Kind::Private(n, hp));
        }
    }
    if kinds.len() == 1 {
        bail!("no spawn cells: give --cow and/or --private a list such as 1,4,16");
    }
    let need = if pages.contains(&true) {
        private.iter().copied().max().unwrap_or(0) as u64 * host::huge_pages_for(a.memory_mib)
    } else {
        0
    };
    let pool_warning = host::check_hugepages(
        need,
        &format!(
            "the private hugepage cells (up to {} children of {} MiB at once)",
            private.iter().max().unwrap_or(&0),
            a.memory_mib
        ),
        "--pages 4k",
        a.allow_hugepage_fallback,
    )?;
    let c = prepare(&a.common).await?;
    let held = Held::default();
    let mut run = Run::new(
        "spawn",
        vec!["mode", "n", "pages", "memory_mib"],
        format!(
            "zygote bench spawn: {} MiB snapshot, {} iterations (cells interleaved), p99 is nearest-rank; \
             memory per child {} ms after ready; cold/this = one cold boot's p50 / this p50",
            a.memory_mib, a.iterations, a.settle_ms
        ),
    );
    run.reference_title = "anchor p50";
    if let Some(w) = pool_warning {
        run.note(w);
    }
    let cells: Vec<(Kind, bool)> = nets
        .iter()
        .flat_map(|&n| kinds.iter().map(move |&k| (k, n)))
        .collect();
    guarded(&c, &held, body(&c, &held, &a, &cells, &mut run)).await?;
    finish(&run, &a.common, |run, dir| charts(run, dir, &kinds))?;
    Ok(0)
}

async fn body<C: Connect>(
    c: &Client,
    held: &Held,
    a: &SpawnArgs<C>,
    kinds: &[(Kind, bool)],
    run: &mut Run,
) -> Result<()> {
    let mem = a.memory_mib.to_string();
    let cells: Vec<usize> = kinds
        .iter()
        .map(|&(k, net)| {
            let (mode, n, pages) = match k {
                Kind::Cold => ("cold-boot", "1".to_string(), "4k"),
                Kind::Cow(n) => ("cow", n.to_string(), "4k"),
                Kind::Private(n, hp) => ("private", n.to_string(), if hp { "2m" } else { "4k" }),
            };
            run.cell(
                &label(k, net),
                &[
                    ("mode", mode.into()),
                    ("n", n),
                    ("pages", pages.into()),
                    ("network", if net { "on" } else { "off" }.into()),
                    ("memory_mib", mem.clone()),
                ],
            )
        })
        .collect();
    run.cold = Some((cells[0], "ready_ms"));
    run.ratio_metrics = vec!["running_all_ms", "ready_first_ms", "ready_all_ms"];
    if a.memory_mib == 512 {
        for (k, &cell) in kinds.iter().zip(&cells) {
            if let (Kind::Private(n, hp), true) = *k {
                if let Some(&(_, base, huge)) = ANCHOR.iter().find(|x| x.0 == n) {
                    run.references
                        .insert((cell, "ready_all_ms"), if hp { huge } else { base });
                }
            }
        }
    }
    let create_for = |net: bool| create_body(a, net);
    let (snaps, pool) = hot_snapshots(c, held, a, kinds).await?;
    run.fact(format!(
        "the daemon keeps {pool} pre-started copy-on-write children per snapshot; \
         every cell starts with that pool refilled (from_pool: children that came from it)"
    ));
    for i in 0..a.iterations {
        for k in rotation(kinds.len(), i) {
            let cell = cells[k];
            let (kind, net) = kinds[k];
            let snap = &snaps
                .iter()
                .find(|s| s.0 == net)
                .expect("a snapshot per setting")
                .1;
            if !super::settle_pool(c, snap, pool).await? {
                run.note(format!(
                    "the pool of pre-started children was not back to {pool} within 60 s"
                ));
            }
            let (n, private, hp) = match kind {
                Kind::Cold => {
                    cold_boot(c, held, run, cell, i, &create_for(net)).await?;
                    continue;
                }
                Kind::Cow(n) => (n, false, false),
                Kind::Private(n, hp) => (n, true, hp),
            };
            let t0 = Instant::now();
            let kids = held
                .spawn(
                    c,
                    &SpawnBody {
                        snapshot_tag: snap.clone(),
                        n: Some(n),
                        private_memory: private,
                        hugepages: hp,
                        ..Default::default()
                    },
                )
                .await?;
            run.add(cell, i, "call_ms", ms(t0), "ms");
            let pooled = kids.iter().filter(|k| k.prestarted).count();
            run.add(cell, i, "from_pool", pooled as f64, "children");
            let failed: Vec<&str> = kids.iter().filter_map(|k| k.error.as_deref()).collect();
            for e in &failed {
                run.note(format!("{}: a child failed: {e}", label(kind, net)));
            }
            let running: Vec<f64> = kids.iter().filter_map(|k| k.running_ms).collect();
            let ready: Vec<f64> = kids.iter().filter_map(|k| k.ready_ms).collect();
            if failed.is_empty() && ready.len() == kids.len() {
                let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
                run.add(cell, i, "running_all_ms", max(&running), "ms");
                run.add(
                    cell,
                    i,
                    "ready_first_ms",
                    ready.iter().copied().fold(f64::NAN, f64::min),
                    "ms",
                );
                run.add(cell, i, "ready_all_ms", max(&ready), "ms");
            }
            tokio::time::sleep(Duration::from_millis(a.settle_ms)).await;
            let mut fell_back = 0;
            for s in kids.iter().filter_map(|k| k.sandbox.as_ref()) {
                let Some(m) = s.pid.and_then(host::qemu_memory) else {
                    continue;
                };
                let mib = |kib: u64| kib as f64 / 1024.0;
                run.add(cell, i, "guest_ram_pss", mib(m.ram_pss_kib), "MiB");
                run.add(cell, i, "guest_ram_unique", mib(m.ram_unique_kib), "MiB");
                run.add(cell, i, "qemu_pss", mib(m.pss_kib), "MiB");
                run.add(cell, i, "qemu_unique", mib(m.unique_kib), "MiB");
                if hp && m.ram_page_kib != 2048 {
                    fell_back += 1;
                }
            }
            if hp {
                run.add(cell, i, "children_on_4k_pages", fell_back as f64, "count");
            }
            if fell_back > 0 {
                run.note(format!(
                    "{}: children got 4 KiB pages, not hugepages (the daemon falls back when \
                     the pool is short; see children_on_4k_pages and the daemon's log)",
                    label(kind, net)
                ));
            }
            held.remove_children(c, &kids).await?;
        }
        eprint!("\rspawn: iteration {}/{}", i + 1, a.iterations);
    }
    eprintln!();
    for (_, snap) in &snaps {
        held.delete_snapshot(c, snap).await?;
    }
    Ok(())
}

/// What a cell's sandboxes are created as.
fn create_body<C: Connect>(a: &SpawnArgs<C>, net: bool) -> CreateSandbox {
    CreateSandbox {
        image: a.common.image.clone(),
        memory_mib: Some(a.memory_mib),
        network: (!net).then(|| zygote_proto::net::NetworkBody {
            enabled: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One snapshot per network setting the cells use, each made hot by one
/// unmeasured copy-on-write spawn, so the daemon's pool of pre-started
/// children is what it is in steady state; and the pool's size.
async fn hot_snapshots<C: Connect>(
    c: &Client,
    held: &Held,
    a: &SpawnArgs<C>,
    kinds: &[(Kind, bool)],
) -> Result<(Vec<(bool, String)>, u32)> {
    let mut snaps: Vec<(bool, String)> = Vec::new();
    let mut pool = 0;
    for net in [true, false] {
        if !kinds.iter().any(|k| k.1 == net) {
            continue;
        }
        let snap = tag(if net { "spawn" } else { "spawn-nonet" });
        super::make_snapshot(c, held, &snap, &create_body(a, net)).await?;
        let kids = held
            .spawn(
                c,
                &SpawnBody {
                    snapshot_tag: snap.clone(),
                    ..Default::default()
                },
            )
            .await?;
        held.remove_children(c, &kids).await?;
        pool = super::learn_pool(c, &snap).await?;
        snaps.push((net, snap));
    }
    Ok((snaps, pool))
}

fn charts(run: &Run, dir: &Path, kinds: &[Kind]) -> Result<Vec<PathBuf>> {
    let idx = |k: Kind| run.cells.iter().position(|c| c.label == k.label());
    let st = |k: Kind, m: &str| idx(k).and_then(|i| run.stats_of(i, m));
    let cold = st(Kind::Cold, "ready_ms").map(|s| s.p50);
    let mut lines = Vec::new();
    let series = |name: &str, f: &dyn Fn(&Kind) -> Option<(u32, Kind)>, metric: &str| Line {
        name: name.into(),
        points: kinds
            .iter()
            .filter_map(f)
            .filter_map(|(n, k)| st(k, metric).map(|s| (n as f64, s)))
            .collect(),
        markers_only: false,
    };
    let cow = |k: &Kind| match *k {
        Kind::Cow(n) => Some((n, *k)),
        _ => None,
    };
    let private = |hp: bool| {
        move |k: &Kind| match *k {
            Kind::Private(n, h) if h == hp => Some((n, *k)),
            _ => None,
        }
    };
    lines.push(series("copy-on-write: all ready", &cow, "ready_all_ms"));
    lines.push(series("copy-on-write: all running", &cow, "running_all_ms"));
    lines.push(series(
        "private 4 KiB: all ready",
        &private(false),
        "ready_all_ms",
    ));
    lines.push(series(
        "private hugepages: all ready",
        &private(true),
        "ready_all_ms",
    ));
    for (hp, name) in [
        (false, "anchor: private 4 KiB"),
        (true, "anchor: private hugepages"),
    ] {
        let points: Vec<(f64, super::stats::Stats)> = kinds
            .iter()
            .filter_map(|k| match *k {
                Kind::Private(n, h) if h == hp => {
                    let cell = idx(*k)?;
                    let v = *run.references.get(&(cell, "ready_all_ms"))?;
                    Some((n as f64, super::stats::stats(vec![v])))
                }
                _ => None,
            })
            .collect();
        lines.push(Line {
            name: name.into(),
            points,
            markers_only: true,
        });
    }
    lines.retain(|l| !l.points.is_empty());
    let mut out = Vec::new();
    let mem = run
        .cells
        .first()
        .and_then(|c| c.params.last().cloned())
        .unwrap_or_default();
    out.push(chart::lines(
        &dir.join("spawn-time.png"),
        &format!("zygote bench spawn: {mem} MiB snapshot, p50 with p99 whiskers"),
        "children per spawn",
        "ms from the request",
        &lines,
        cold.map(|v| ("cold boot of one sandbox (p50)".to_string(), v)),
    )?);
    let spawn_kinds: Vec<Kind> = kinds.iter().copied().filter(|k| *k != Kind::Cold).collect();
    let metrics = [
        ("guest_ram_pss", "guest-RAM PSS"),
        ("guest_ram_unique", "guest-RAM unique"),
        ("qemu_pss", "QEMU PSS"),
        ("qemu_unique", "QEMU unique"),
    ];
    out.push(chart::bars(
        &dir.join("spawn-memory.png"),
        &Bars {
            title: "zygote bench spawn: host memory per child (4K / 2M pages), p50 (bar), p99 (whisker), max (dot)"
                .into(),
            y_desc: "MiB (log scale)",
            groups: spawn_kinds.iter().map(|k| k.short()).collect(),
            series: metrics.iter().map(|m| m.1.to_string()).collect(),
            values: spawn_kinds
                .iter()
                .map(|k| metrics.iter().map(|m| st(*k, m.0)).collect())
                .collect(),
            log_y: true,
            hline: None,
        },
    )?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_list() {
        assert_eq!(parse_pages("4k,2m").unwrap(), [false, true]);
        assert_eq!(parse_pages("hugepages").unwrap(), [true]);
        let e = parse_pages("1g").unwrap_err().to_string();
        assert!(e.contains("--pages") && e.contains("\"1g\""), "{e}");
    }

    #[test]
    fn labels() {
        assert_eq!(Kind::Private(3, true).label(), "private n=3 hugepages");
        assert_eq!(Kind::Cow(16).label(), "cow n=16");
        assert_eq!(Kind::Private(5, true).short(), "private 5, 2M");
    }
}
