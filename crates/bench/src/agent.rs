//! `zygote bench agent`: what an agent does with a sandbox beyond exec. Pause
//! and resume per guest size (with a touched working set, and the host memory
//! a pause frees), a background process's start, re-attaching to its output,
//! and a keystroke's round trip through a terminal; beside a cold boot of the
//! smallest size in the same iterations.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::Args;
use zygote_client::Client;
use zygote_proto::api::{CreateSandbox, ExecEvent, ProcessStart, SandboxInfo};
use zygote_proto::procs::PtySize;

use super::chart::{self, Bars};
use super::report::Run;
use super::{
    at_least_one, cold_boot, finish, guarded, host, ms, prepare, rotation, sh, Common, Connect,
    Held,
};

/// Options of `zygote bench agent`; `C` is the caller's connection options.
#[derive(Args, Debug)]
pub struct AgentArgs<C: Connect> {
    #[command(flatten)]
    common: Common<C>,
    /// Iterations; each visits every cell once (round-robin).
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Guest sizes to pause and resume, MiB (comma-separated).
    #[arg(long, default_value = "256,1024")]
    pause_mib: String,
    /// Guest memory each paused sandbox has touched (held by a Python process), MiB.
    #[arg(long, default_value_t = 64)]
    touch_mib: u64,
    /// Keystrokes per iteration through the terminal.
    #[arg(long, default_value_t = 10)]
    keys: usize,
}

fn sizes(s: &str) -> Result<Vec<u64>> {
    let mut v = Vec::new();
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n: u64 = p
            .parse()
            .with_context(|| format!("--pause-mib: {p:?} is not MiB; give a list like 256,1024"))?;
        if !(64..=16384).contains(&n) {
            bail!("--pause-mib: {n} MiB is out of range; use 64 to 16384");
        }
        v.push(n);
    }
    Ok(v)
}

pub(super) async fn run<C: Connect>(a: AgentArgs<C>) -> Result<u8> {
    at_least_one("--iterations", a.iterations)?;
    at_least_one("--keys", a.keys)?;
    let pause_sizes = sizes(&a.pause_mib)?;
    let c = prepare(&a.common).await?;
    let held = Held::default();
    let mut run = Run::new(
        "agent",
        vec!["op", "memory_mib"],
        format!(
            "zygote bench agent: {} iterations (cells interleaved), p99 is nearest-rank",
            a.iterations
        ),
    );
    let code = guarded(&c, &held, body(&c, &held, &a, &pause_sizes, &mut run)).await?;
    finish(&run, &a.common, charts)?;
    Ok(code)
}

fn create(a: &Common<impl Connect>, mib: u64) -> CreateSandbox {
    CreateSandbox {
        image: a.image.clone(),
        memory_mib: Some(mib),
        ..Default::default()
    }
}

async fn body<C: Connect>(
    c: &Client,
    held: &Held,
    a: &AgentArgs<C>,
    pause_sizes: &[u64],
    run: &mut Run,
) -> Result<u8> {
    let small = pause_sizes.iter().copied().min().unwrap_or(256);
    let cold = run.cell(
        "cold boot",
        &[
            ("op", "cold-boot".into()),
            ("memory_mib", small.to_string()),
        ],
    );
    run.cold = Some((cold, "ready_ms"));
    run.ratio_metrics = vec!["pause_ms", "resume_ms"];
    // One sandbox per pause size, each holding a working set.
    let mut paused = Vec::new();
    for &mib in pause_sizes {
        let sb = held.create(c, &create(&a.common, mib)).await?;
        let touch = a.touch_mib.min(mib / 2);
        sh(
            c,
            &sb.id,
            &format!(
                "rm -f /tmp/t; nohup python3 -c 'import time\nb=bytearray({touch}<<20)\nfor i in range(0,len(b),4096): b[i]=1\n\
                 open(\"/tmp/t\",\"w\").write(\"1\")\ntime.sleep(1e9)' >/dev/null 2>&1 & while [ ! -e /tmp/t ]; do sleep 0.1; done"
            ),
        )
        .await?;
        c.eval(&sb.id, "kept = 41").await?;
        let cell = run.cell(
            &format!("pause+resume {mib} MiB ({touch} MiB touched)"),
            &[("op", "pause".into()), ("memory_mib", mib.to_string())],
        );
        paused.push((sb, cell));
    }
    let io = held.create(c, &create(&a.common, small)).await?;
    let proc_cell = run.cell(
        "background process",
        &[("op", "process".into()), ("memory_mib", small.to_string())],
    );
    let pty_cell = run.cell(
        "terminal keystroke",
        &[("op", "pty".into()), ("memory_mib", small.to_string())],
    );
    let cells = 3 + pause_sizes.len();
    let mut failures = 0usize;
    for i in 0..a.iterations {
        for k in rotation(cells, i) {
            match k {
                0 => {
                    if !cold_boot(c, held, run, cold, i, &create(&a.common, small)).await? {
                        failures += 1;
                    }
                }
                1 => process_cell(c, &io, run, proc_cell, i).await?,
                2 => pty_cell_run(c, &io, run, pty_cell, i, a.keys).await?,
                n => {
                    let (sb, cell) = &paused[n - 3];
                    pause_cell(c, sb, run, *cell, i).await?;
                }
            }
        }
        eprint!("\ragent: iteration {}/{}", i + 1, a.iterations);
    }
    eprintln!();
    for (sb, _) in &paused {
        held.remove(c, &sb.id).await?;
    }
    held.remove(c, &io.id).await?;
    Ok(u8::from(failures > 0))
}

/// Pause (time, and the host memory it frees), resume (time), and a check
/// that the interpreter's state came back.
async fn pause_cell(
    c: &Client,
    sb: &SandboxInfo,
    run: &mut Run,
    cell: usize,
    i: usize,
) -> Result<()> {
    let now = c.get(&sb.id).await?;
    let pss = now.pid.and_then(host::qemu_memory).map(|m| m.pss_kib);
    let avail0 = host::meminfo_kib("MemAvailable:");
    let t0 = Instant::now();
    c.pause(&sb.id).await?;
    run.add(cell, i, "pause_ms", ms(t0), "ms");
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(p) = pss {
        run.add(cell, i, "qemu_pss_freed", p as f64 / 1024.0, "MiB");
    }
    if let (Some(a0), Some(a1)) = (avail0, host::meminfo_kib("MemAvailable:")) {
        run.add(
            cell,
            i,
            "mem_available_gain",
            (a1 as f64 - a0 as f64) / 1024.0,
            "MiB",
        );
    }
    let t0 = Instant::now();
    c.resume(&sb.id).await?;
    run.add(cell, i, "resume_ms", ms(t0), "ms");
    let v = c.eval(&sb.id, "kept").await?;
    if v.result.as_deref() != Some("41") {
        bail!(
            "sandbox {} lost its state over a pause: {:?}",
            sb.id,
            v.result
        );
    }
    Ok(())
}

/// Start a background process (time to its pid), then attach to its output
/// (time to the first replayed byte), then stop it.
async fn process_cell(
    c: &Client,
    sb: &SandboxInfo,
    run: &mut Run,
    cell: usize,
    i: usize,
) -> Result<()> {
    let body = ProcessStart {
        cmd: Some("echo ready; exec sleep 1000".into()),
        tag: Some("bench".into()),
        ..Default::default()
    };
    let t0 = Instant::now();
    let p = c.start_process(&sb.id, &body).await?;
    run.add(cell, i, "start_ms", ms(t0), "ms");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let (c2, id) = (c.clone(), sb.id.clone());
    let t0 = Instant::now();
    let follow = tokio::spawn(async move {
        c2.process_output(&id, p.pid, true, |e| {
            if matches!(e, ExecEvent::Stdout { .. }) {
                let _ = tx.send(Instant::now());
            }
        })
        .await
    });
    let first = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .context("no replayed output within 30 s of attaching")?
        .context("the output stream ended before any output")?;
    run.add(cell, i, "attach_ms", (first - t0).as_secs_f64() * 1e3, "ms");
    c.kill_process(&sb.id, p.pid).await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), follow).await;
    Ok(())
}

/// `keys` keystrokes through a terminal running `cat`: each one's time from
/// sending it to seeing its echo.
async fn pty_cell_run(
    c: &Client,
    sb: &SandboxInfo,
    run: &mut Run,
    cell: usize,
    i: usize,
    keys: usize,
) -> Result<()> {
    let body = ProcessStart {
        argv: vec!["cat".into()],
        pty: Some(PtySize { rows: 24, cols: 80 }),
        ..Default::default()
    };
    let p = c.start_process(&sb.id, &body).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let (c2, id) = (c.clone(), sb.id.clone());
    let follow = tokio::spawn(async move {
        c2.process_output(&id, p.pid, false, |e| {
            if let ExecEvent::Stdout { data_b64 } = e {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(data_b64)
                    .unwrap_or_default();
                let _ = tx.send(b);
            }
        })
        .await
    });
    // The first key also waits for the stream to be attached.
    let mut seen = Vec::new();
    for k in 0..=keys {
        let key = [b'a' + (k % 26) as u8];
        let t0 = Instant::now();
        c.process_stdin(&sb.id, p.pid, key.to_vec(), false).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(pos) = seen.iter().position(|b| *b == key[0]) {
                seen.drain(..=pos);
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(b)) => seen.extend(b),
                _ => bail!("keystroke {k} was not echoed within 30 s"),
            }
        }
        if k > 0 {
            run.add(cell, i, "keystroke_ms", ms(t0), "ms");
        }
    }
    c.kill_process(&sb.id, p.pid).await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), follow).await;
    Ok(())
}

fn charts(run: &Run, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut groups = Vec::new();
    let mut values = Vec::new();
    for (idx, cell) in run.cells.iter().enumerate() {
        for metric in [
            "pause_ms",
            "resume_ms",
            "start_ms",
            "attach_ms",
            "keystroke_ms",
        ] {
            if let Some(s) = run.stats_of(idx, metric) {
                groups.push(format!("{}: {metric}", cell.label));
                values.push(vec![Some(s)]);
            }
        }
    }
    let p = chart::bars(
        &dir.join("agent-latency.png"),
        &Bars {
            title: "zygote bench agent: p50 (bar), p99 (whisker), max (dot)".into(),
            y_desc: "ms (log scale)",
            groups,
            series: vec!["p50".into()],
            values,
            log_y: true,
            hline: None,
        },
    )?;
    Ok(vec![p])
}
