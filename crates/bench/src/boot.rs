//! `zygote bench boot` (formerly `bench sandbox`): cold boot to agent ready,
//! boot reliability, exec round trip, file throughput, host memory of idle
//! sandboxes and of the daemon; beside them the fork path (one copy-on-write
//! child of a warm snapshot) measured in the same iterations.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use rand::RngCore;
use zygote_proto::api::{CreateSandbox, ExecBody, SpawnBody};

use super::chart::{self, Bars};
use super::report::Run;
use super::{
    at_least_one, cold_boot, finish, guarded, host, ms, prepare, rotation, tag, Common, Connect,
    Held,
};

/// Options of `zygote bench boot`; `C` is the caller's connection options.
#[derive(Args, Debug)]
pub struct BootArgs<C: Connect> {
    #[command(flatten)]
    common: Common<C>,
    /// Iterations; each visits every cell once: a cold boot, a copy-on-write
    /// child, `--execs` exec round trips, one upload and one download.
    #[arg(long, alias = "boots", default_value_t = 10)]
    iterations: usize,
    /// Guest RAM of every sandbox, MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: u64,
    /// Exec round trips of `true` per iteration.
    #[arg(long, default_value_t = 10)]
    execs: usize,
    /// Size of the file moved each way, MiB.
    #[arg(long, default_value_t = 64)]
    file_mib: usize,
    /// Idle sandboxes held at once, after the iterations, for the memory
    /// figures (0: skip them).
    #[arg(long, default_value_t = 4)]
    idle: usize,
}

const CELLS: [&str; 4] = ["cold boot", "cow child", "exec", "files"];

pub(super) async fn run<C: Connect>(a: BootArgs<C>) -> Result<u8> {
    at_least_one("--iterations", a.iterations)?;
    at_least_one("--execs", a.execs)?;
    at_least_one("--file-mib", a.file_mib)?;
    let c = prepare(&a.common).await?;
    let held = Held::default();
    let mut run = Run::new(
        "boot",
        vec!["op", "memory_mib"],
        format!(
            "zygote bench boot: {} MiB guests, {} iterations (cells interleaved), p99 is nearest-rank",
            a.memory_mib, a.iterations
        ),
    );
    let code = guarded(&c, &held, body(&c, &held, &a, &mut run)).await?;
    finish(&run, &a.common, charts)?;
    Ok(code)
}

async fn body<C: Connect>(
    c: &zygote_client::Client,
    held: &Held,
    a: &BootArgs<C>,
    run: &mut Run,
) -> Result<u8> {
    let mem = a.memory_mib.to_string();
    let socket = a.common.conn.socket().map(|p| p.display().to_string());
    let dpid = host::daemon_pid(socket.as_deref());
    let daemon_rss_idle = dpid.and_then(host::rss_kib);
    let create = CreateSandbox {
        image: a.common.image.clone(),
        memory_mib: Some(a.memory_mib),
        ..Default::default()
    };
    let cold = run.cell(
        "cold boot",
        &[("op", "cold-boot".into()), ("memory_mib", mem.clone())],
    );
    let cow = run.cell(
        "cow child (fork)",
        &[("op", "spawn-cow".into()), ("memory_mib", mem.clone())],
    );
    let exec = run.cell(
        "exec `true`",
        &[("op", "exec".into()), ("memory_mib", mem.clone())],
    );
    let up = run.cell(
        &format!("upload {} MiB", a.file_mib),
        &[("op", "upload".into()), ("memory_mib", mem.clone())],
    );
    let down = run.cell(
        &format!("download {} MiB", a.file_mib),
        &[("op", "download".into()), ("memory_mib", mem.clone())],
    );
    run.cold = Some((cold, "ready_ms"));
    run.ratio_metrics = vec!["ready_ms", "running_ms"];

    // the fork path's snapshot and the sandbox execs and files go to
    let snap = tag("boot");
    super::make_snapshot(c, held, &snap, &create).await?;
    let sb = held
        .create(c, &create)
        .await
        .context("create the exec sandbox")?;
    let t = ExecBody {
        argv: vec!["true".into()],
        ..Default::default()
    };
    for _ in 0..3 {
        c.exec(&sb.id, &t).await?; // warm up
    }
    let mut data = vec![0u8; a.file_mib << 20];
    rand::thread_rng().fill_bytes(&mut data);
    let mb = data.len() as f64 / 1e6;

    // make the snapshot hot (the daemon then keeps pre-started children for
    // it) and wait for that pool before every cell, so its background QEMU
    // starts stay out of the measurements
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
    let pool = super::learn_pool(c, &snap).await?;
    run.fact(format!(
        "the daemon keeps {pool} pre-started copy-on-write children for the snapshot \
         (the cow child comes from that pool when it is not empty)"
    ));
    let mut failures = 0usize;
    for i in 0..a.iterations {
        for k in rotation(CELLS.len(), i) {
            if !super::settle_pool(c, &snap, pool).await? {
                run.note(format!(
                    "the pool of pre-started children was not back to {pool} within 60 s"
                ));
            }
            match CELLS[k] {
                "cold boot" => {
                    if !cold_boot(c, held, run, cold, i, &create).await? {
                        failures += 1;
                    }
                }
                "cow child" => {
                    let kids = held
                        .spawn(
                            c,
                            &SpawnBody {
                                snapshot_tag: snap.clone(),
                                ..Default::default()
                            },
                        )
                        .await?;
                    let pooled = kids.iter().filter(|k| k.prestarted).count();
                    run.add(cow, i, "from_pool", pooled as f64, "children");
                    for k in &kids {
                        if let Some(e) = &k.error {
                            run.note(format!("a copy-on-write child failed: {e}"));
                        }
                        if let Some(v) = k.running_ms {
                            run.add(cow, i, "running_ms", v, "ms");
                        }
                        if let Some(v) = k.ready_ms {
                            run.add(cow, i, "ready_ms", v, "ms");
                        }
                    }
                    held.remove_children(c, &kids).await?;
                }
                "exec" => {
                    for _ in 0..a.execs {
                        let t0 = Instant::now();
                        c.exec(&sb.id, &t).await?;
                        run.add(exec, i, "round_trip_ms", ms(t0), "ms");
                    }
                }
                _ => {
                    let t0 = Instant::now();
                    c.upload(&sb.id, "/tmp/bench.bin", data.clone()).await?;
                    run.add(up, i, "throughput", mb / t0.elapsed().as_secs_f64(), "MB/s");
                    let t0 = Instant::now();
                    let back = c.download(&sb.id, "/tmp/bench.bin").await?;
                    run.add(
                        down,
                        i,
                        "throughput",
                        mb / t0.elapsed().as_secs_f64(),
                        "MB/s",
                    );
                    anyhow::ensure!(
                        back == data,
                        "the download differs from the upload ({} bytes back)",
                        back.len()
                    );
                    c.remove_path(&sb.id, "/tmp/bench.bin", false).await?;
                }
            }
        }
        eprint!(
            "\rboot: iteration {}/{} ({failures} boot failures)",
            i + 1,
            a.iterations
        );
    }
    eprintln!();
    held.remove(c, &sb.id).await?;
    held.delete_snapshot(c, &snap).await?;
    run.fact(format!(
        "boots reaching the agent: {} of {}",
        a.iterations - failures,
        a.iterations
    ));

    if a.idle > 0 {
        // memory of idle sandboxes held at once
        tokio::time::sleep(Duration::from_millis(500)).await;
        let avail0 = host::meminfo_kib("MemAvailable:").unwrap_or(0);
        let mut ids = Vec::new();
        for _ in 0..a.idle {
            ids.push(held.create(c, &create).await?);
        }
        tokio::time::sleep(Duration::from_secs(3)).await; // let them settle into idle
        let avail1 = host::meminfo_kib("MemAvailable:").unwrap_or(0);
        let idle = run.cell(
            &format!("idle sandbox (of {})", a.idle),
            &[("op", "idle".into()), ("memory_mib", mem.clone())],
        );
        for (i, s) in ids.iter().enumerate() {
            let Some(pid) = s.pid else { continue };
            if let Some(m) = host::qemu_memory(pid) {
                let mib = |kib: u64| kib as f64 / 1024.0;
                run.add(idle, i, "qemu_pss", mib(m.pss_kib), "MiB");
                run.add(idle, i, "qemu_unique", mib(m.unique_kib), "MiB");
                run.add(idle, i, "guest_ram_pss", mib(m.ram_pss_kib), "MiB");
                run.add(idle, i, "guest_ram_unique", mib(m.ram_unique_kib), "MiB");
            }
            if let Some(r) = host::rss_kib(pid) {
                run.add(idle, i, "qemu_rss", r as f64 / 1024.0, "MiB");
            }
        }
        let h = run.cell("host", &[("op", "host".into())]);
        run.add(
            h,
            0,
            "mem_available_drop_per_sandbox",
            avail0.saturating_sub(avail1) as f64 / 1024.0 / a.idle as f64,
            "MiB",
        );
        if let (Some(r0), Some(r1)) = (daemon_rss_idle, dpid.and_then(host::rss_kib)) {
            run.add(h, 0, "daemon_rss_idle", r0 as f64 / 1024.0, "MiB");
            run.add(
                h,
                0,
                "daemon_rss_with_idle_sandboxes",
                r1 as f64 / 1024.0,
                "MiB",
            );
        }
        for s in &ids {
            held.remove(c, &s.id).await?;
        }
    }
    Ok(if failures == 0 { 0 } else { 1 })
}

fn charts(run: &Run, dir: &Path) -> Result<Vec<PathBuf>> {
    let pick = |label: &str, metric: &str| {
        run.cells
            .iter()
            .position(|c| c.label == label)
            .and_then(|i| run.stats_of(i, metric))
    };
    let groups = [
        ("cold boot", "ready_ms", "cold boot: agent ready"),
        ("cold boot", "boot_ms", "cold boot: QEMU start to agent"),
        ("cow child (fork)", "running_ms", "cow child: running"),
        ("cow child (fork)", "ready_ms", "cow child: agent ready"),
        ("exec `true`", "round_trip_ms", "exec `true` round trip"),
    ];
    let n = run
        .cells
        .first()
        .and_then(|_| pick("cold boot", "ready_ms"))
        .map(|s| s.n)
        .unwrap_or(0);
    let p = chart::bars(
        &dir.join("boot-latency.png"),
        &Bars {
            title: format!("zygote bench boot: p50 (bar), p99 (whisker), max (dot); n={n} boots"),
            y_desc: "ms (log scale)",
            groups: groups.iter().map(|g| g.2.to_string()).collect(),
            series: vec!["p50".into()],
            values: groups.iter().map(|g| vec![pick(g.0, g.1)]).collect(),
            log_y: true,
            hline: None,
        },
    )?;
    Ok(vec![p])
}
