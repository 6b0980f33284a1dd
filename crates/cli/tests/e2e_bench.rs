//! End-to-end: `zygote bench boot|spawn|branch` at their smallest against a
//! real daemon. Each prints its table with the cold-boot ratio, writes one CSV
//! row per sample and a summary CSV (and PNG charts when the font is
//! installed), and leaves no sandbox or snapshot behind; bad options fail
//! before anything boots.

use std::path::Path;
use std::process::{Command, Output};

use zygote_tests::*;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn zygote(d: &Daemon, args: &[&str]) -> Output {
    Command::new(zygote_bin())
        .args(args)
        .env("ZYGOTE_SOCKET", &d.socket)
        .env_remove("ZYGOTE_URL")
        .output()
        .expect("run zygote")
}

fn ok(d: &Daemon, args: &[&str]) -> String {
    let o = zygote(d, args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "zygote {args:?} failed: {}\n{out}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&o.stderr),
        tail(&d.log(), 40)
    );
    out
}

/// Values of `metric` in `cell` from a samples CSV (cell is column 2, metric
/// and value the 3rd- and 2nd-last).
fn samples(csv: &str, cell: &str, metric: &str) -> Vec<f64> {
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[1] == cell && f[f.len() - 3] == metric)
        .map(|f| f[f.len() - 2].parse().unwrap())
        .collect()
}

fn is_png(p: &Path) -> bool {
    std::fs::read(p).is_ok_and(|b| b.len() > 1000 && &b[1..4] == b"PNG")
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_subcommands_smallest() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let out = d.dir.path().join("bench-out");
    let out_s = out.to_str().unwrap();
    let charts = Path::new(FONT).exists();
    if !charts {
        eprintln!("no font at {FONT}: running with --no-charts (install fonts-dejavu-core)");
    }
    let with = |mut v: Vec<&'static str>| -> Vec<String> {
        if !charts {
            v.push("--no-charts");
        }
        v.into_iter().map(String::from).collect()
    };
    let args = |v: &[String], extra: &[&str]| -> Vec<String> {
        v.iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };

    // bad input fails at once, naming the value
    let o = zygote(
        &d,
        &["bench", "branch", "--modes", "copy+fast", "--out", out_s],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("copy+fast") && err.contains("+hugepages"),
        "{err}"
    );
    let o = zygote(
        &d,
        &[
            "bench",
            "spawn",
            "--memory-mib",
            "65536",
            "--private",
            "1",
            "--pages",
            "2m",
            "--cow",
            "",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("need 32768 free 2 MiB hugepages")
            && err.contains("nr_hugepages"),
        "{err}"
    );
    assert!(d.client.list().await.unwrap().is_empty());

    // boot: cold boot, the fork path beside it, exec, files, memory
    let v = with(vec![
        "bench",
        "boot",
        "--iterations",
        "1",
        "--execs",
        "2",
        "--file-mib",
        "2",
        "--idle",
        "1",
    ]);
    let table = ok(
        &d,
        &args(&v, &["--out", out_s])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        table.contains("cold/this") && table.contains("cow child (fork)"),
        "{table}"
    );
    assert!(
        table.contains("boots reaching the agent: 1 of 1"),
        "{table}"
    );
    let csv = std::fs::read_to_string(out.join("boot-samples.csv")).unwrap();
    assert!(
        csv.starts_with("bench,cell,op,memory_mib,iteration,metric,value,unit\n"),
        "{csv}"
    );
    let cold = samples(&csv, "cold boot", "ready_ms");
    assert!(cold.len() == 1 && cold[0] > 100.0, "{csv}");
    assert_eq!(
        samples(&csv, "exec `true`", "round_trip_ms").len(),
        2,
        "{csv}"
    );
    let ram = samples(&csv, "idle sandbox (of 1)", "guest_ram_unique");
    assert!(ram.len() == 1 && ram[0] > 10.0 && ram[0] < 256.0, "{csv}");
    let summary = std::fs::read_to_string(out.join("boot-summary.csv")).unwrap();
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("boot,cow child (fork),spawn-cow,256,ready_ms,ms,1,")),
        "{summary}"
    );
    if charts {
        assert!(is_png(&out.join("boot-latency.png")));
    }

    // spawn: copy-on-write and private children, memory per child
    let v = with(vec![
        "bench",
        "spawn",
        "--iterations",
        "1",
        "--memory-mib",
        "256",
        "--cow",
        "2",
        "--private",
        "1",
        "--pages",
        "4k",
        "--settle-ms",
        "500",
    ]);
    let table = ok(
        &d,
        &args(&v, &["--out", out_s])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        table.contains("cow n=2") && table.contains("private n=1 4 KiB"),
        "{table}"
    );
    let csv = std::fs::read_to_string(out.join("spawn-samples.csv")).unwrap();
    let pss = samples(&csv, "cow n=2", "guest_ram_pss");
    assert_eq!(pss.len(), 2, "one sample per child: {csv}");
    let ready = samples(&csv, "cow n=2", "ready_all_ms");
    let running = samples(&csv, "cow n=2", "running_all_ms");
    assert!(
        ready.len() == 1 && running.len() == 1 && running[0] <= ready[0],
        "{csv}"
    );
    // a private child's own memfd holds what the snapshot touched: far more
    // than a copy-on-write child's written pages
    let own = samples(&csv, "private n=1 4 KiB", "guest_ram_unique");
    let cow = samples(&csv, "cow n=2", "guest_ram_unique");
    assert!(own.len() == 1 && cow.len() == 2 && own[0] > cow[0], "{csv}");
    if charts {
        assert!(is_png(&out.join("spawn-time.png")) && is_png(&out.join("spawn-memory.png")));
    }

    // branch: modes x loads, pause per cell
    let v = with(vec![
        "bench",
        "branch",
        "--iterations",
        "1",
        "--memory-mib",
        "384",
        "--loads",
        "idle,rewrite:16",
        "--modes",
        "copy,live",
        "--warmup-secs",
        "0.5",
    ]);
    let table = ok(
        &d,
        &args(&v, &["--out", out_s])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let csv = std::fs::read_to_string(out.join("branch-samples.csv")).unwrap();
    for cell in [
        "copy [idle]",
        "live [idle]",
        "copy [rewrite 16 MiB]",
        "live [rewrite 16 MiB]",
    ] {
        let p = samples(&csv, cell, "pause_ms");
        assert!(p.len() == 1 && p[0] > 0.0, "{cell}: {table}\n{csv}");
    }
    if charts {
        assert!(is_png(&out.join("branch-pause.png")));
    }

    // nothing left behind
    assert!(d.client.list().await.unwrap().is_empty());
    assert!(d.client.snapshots().await.unwrap().is_empty());
}
