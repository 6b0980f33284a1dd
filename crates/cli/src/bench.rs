//! `zygote bench sandbox`: the sandbox figures (a benchmark, not a test): cold
//! boot to agent ready, boot reliability, exec round trip, file throughput,
//! daemon and per-sandbox host memory. Prints p50/p99/max; `--json` for scripts.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use rand::RngCore;
use serde::Serialize;
use zygote_proto::api::{CreateSandbox, ExecBody};

use crate::connect::client;
use crate::Conn;

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    conn: Conn,
    /// Cold boots to time (each: create, wait for the agent, remove).
    #[arg(long, default_value_t = 5)]
    boots: usize,
    /// Exec round trips of `true` to time.
    #[arg(long, default_value_t = 50)]
    execs: usize,
    /// Size of the file moved each way, in MiB.
    #[arg(long, default_value_t = 64)]
    file_mib: usize,
    /// Transfers each way.
    #[arg(long, default_value_t = 3)]
    transfers: usize,
    /// Idle sandboxes held at once for the memory figures.
    #[arg(long, default_value_t = 4)]
    idle: usize,
    /// Image to boot.
    #[arg(long)]
    image: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// p50/p99/max of a sample, in milliseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Stats {
    pub(crate) n: usize,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

pub(crate) fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    };
    Stats {
        n: v.len(),
        p50: pick(0.5),
        p99: pick(0.99),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

#[derive(Debug, Serialize)]
struct Report {
    boots_attempted: usize,
    boots_reached_agent: usize,
    boot_failures: Vec<String>,
    /// QEMU start to agent handshake, as the daemon measured it.
    boot_ms: Stats,
    /// The whole `POST /v1/sandboxes` call.
    create_ms: Stats,
    exec_true_ms: Stats,
    upload_mb_s: Stats,
    download_mb_s: Stats,
    daemon_rss_idle_mib: f64,
    daemon_rss_with_sandboxes_mib: f64,
    idle_sandboxes: usize,
    qemu_pss_per_sandbox_mib: f64,
    qemu_rss_per_sandbox_mib: f64,
    mem_available_drop_per_sandbox_mib: f64,
}

fn meminfo_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn proc_kib(pid: u32, file: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The pid of the daemon serving `socket` (scanning /proc; the bench runs on
/// the daemon's host).
fn daemon_pid(socket: Option<&str>) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.len() < 2 || !args[0].ends_with("zygote") || args[1] != "daemon" {
            continue;
        }
        match socket {
            None => return Some(pid),
            Some(s) if args.iter().any(|a| a == s) => return Some(pid),
            Some(_) => {}
        }
    }
    None
}

pub(crate) async fn run(a: BenchArgs) -> Result<u8> {
    let c = client(&a.conn).await?;
    let socket = a.conn.socket.as_ref().map(|p| p.display().to_string());
    let dpid = daemon_pid(socket.as_deref());
    let create = CreateSandbox {
        image: a.image.clone(),
        ..Default::default()
    };
    let daemon_rss_idle = dpid
        .and_then(|p| proc_kib(p, "status", "VmRSS:"))
        .unwrap_or(0) as f64
        / 1024.0;

    // 1. cold boots
    let (mut boot, mut wall, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..a.boots {
        let t0 = Instant::now();
        match c.create(&create).await {
            Ok(info) => {
                wall.push(t0.elapsed().as_secs_f64() * 1000.0);
                boot.push(info.boot_ms.unwrap_or(0) as f64);
                c.remove(&info.id).await?;
            }
            Err(e) => failures.push(format!("boot {i}: {e}")),
        }
        eprint!("\rboots: {}/{} ({} failed)", i + 1, a.boots, failures.len());
    }
    eprintln!();

    // 2. exec round trips and file throughput in one sandbox
    let sb = c.create(&create).await.context("create the exec sandbox")?;
    let body = ExecBody {
        argv: vec!["true".into()],
        ..Default::default()
    };
    for _ in 0..3 {
        c.exec(&sb.id, &body).await?; // warm up
    }
    let mut execs = Vec::new();
    for _ in 0..a.execs {
        let t0 = Instant::now();
        c.exec(&sb.id, &body).await?;
        execs.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let mut data = vec![0u8; a.file_mib << 20];
    rand::thread_rng().fill_bytes(&mut data);
    let mb = data.len() as f64 / 1e6;
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..a.transfers {
        let t0 = Instant::now();
        c.upload(&sb.id, "/tmp/bench.bin", data.clone()).await?;
        up.push(mb / t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        let back = c.download(&sb.id, "/tmp/bench.bin").await?;
        down.push(mb / t0.elapsed().as_secs_f64());
        anyhow::ensure!(
            back.len() == data.len(),
            "download returned {} bytes",
            back.len()
        );
        c.remove_path(&sb.id, "/tmp/bench.bin", false).await?;
    }
    c.remove(&sb.id).await?;

    // 3. memory of idle sandboxes
    tokio::time::sleep(Duration::from_millis(500)).await;
    let avail0 = meminfo_kib("MemAvailable:").unwrap_or(0);
    let mut held = Vec::new();
    for _ in 0..a.idle {
        held.push(c.create(&create).await?);
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // let them settle into idle
    let avail1 = meminfo_kib("MemAvailable:").unwrap_or(0);
    let (mut pss, mut rss) = (0u64, 0u64);
    for s in &held {
        if let Some(pid) = s.pid {
            pss += proc_kib(pid, "smaps_rollup", "Pss:").unwrap_or(0);
            rss += proc_kib(pid, "status", "VmRSS:").unwrap_or(0);
        }
    }
    let daemon_rss_busy = dpid
        .and_then(|p| proc_kib(p, "status", "VmRSS:"))
        .unwrap_or(0) as f64
        / 1024.0;
    for s in &held {
        c.remove(&s.id).await?;
    }
    let n = a.idle.max(1) as f64;
    let report = Report {
        boots_attempted: a.boots,
        boots_reached_agent: a.boots - failures.len(),
        boot_failures: failures,
        boot_ms: stats(boot),
        create_ms: stats(wall),
        exec_true_ms: stats(execs),
        upload_mb_s: stats(up),
        download_mb_s: stats(down),
        daemon_rss_idle_mib: daemon_rss_idle,
        daemon_rss_with_sandboxes_mib: daemon_rss_busy,
        idle_sandboxes: a.idle,
        qemu_pss_per_sandbox_mib: pss as f64 / 1024.0 / n,
        qemu_rss_per_sandbox_mib: rss as f64 / 1024.0 / n,
        mem_available_drop_per_sandbox_mib: avail0.saturating_sub(avail1) as f64 / 1024.0 / n,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report, &a);
    }
    Ok(if report.boot_failures.is_empty() {
        0
    } else {
        1
    })
}

fn print_table(r: &Report, a: &BenchArgs) {
    let row = |name: &str, s: &Stats, unit: &str| {
        println!(
            "{name:<34} {:>9.1} {:>9.1} {:>9.1} {unit:<6} (n={})",
            s.p50, s.p99, s.max, s.n
        )
    };
    println!("{:<34} {:>9} {:>9} {:>9}", "", "p50", "p99", "max");
    row("cold boot to agent (daemon)", &r.boot_ms, "ms");
    row("create call (API)", &r.create_ms, "ms");
    row("exec `true` round trip", &r.exec_true_ms, "ms");
    row(
        &format!("upload {} MiB", a.file_mib),
        &r.upload_mb_s,
        "MB/s",
    );
    row(
        &format!("download {} MiB", a.file_mib),
        &r.download_mb_s,
        "MB/s",
    );
    println!(
        "boots reaching the agent: {} of {}",
        r.boots_reached_agent, r.boots_attempted
    );
    for f in &r.boot_failures {
        println!("  {f}");
    }
    println!(
        "daemon RSS: {:.1} MiB idle, {:.1} MiB with {} sandboxes",
        r.daemon_rss_idle_mib, r.daemon_rss_with_sandboxes_mib, r.idle_sandboxes
    );
    println!(
        "per idle sandbox: QEMU PSS {:.1} MiB, RSS {:.1} MiB; host MemAvailable drop {:.1} MiB",
        r.qemu_pss_per_sandbox_mib,
        r.qemu_rss_per_sandbox_mib,
        r.mem_available_drop_per_sandbox_mib
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s = stats((1..=100).map(|x| x as f64).collect());
        assert_eq!((s.p50, s.p99, s.max, s.n), (50.0, 99.0, 100.0, 100));
        let s = stats(vec![3.0]);
        assert_eq!((s.p50, s.p99), (3.0, 3.0));
    }
}
