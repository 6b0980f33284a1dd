//! Prometheus metrics in the text exposition format (version 0.0.4), written by
//! hand: request counters fed by [`crate::observe`], latency histograms fed by
//! the engine's own timings (this type is the engine's [`Observer`]), gauges
//! computed from the engine when `GET /metrics` is scraped. No HTTP here
//! beyond the handler.
//!
//! Families:
//! - `zygote_sandboxes{state}`: sandboxes held, by lifecycle state (every state
//!   always present, 0 when empty; `booting` counts starts in flight).
//! - `zygote_snapshots{status}`: snapshots, by persistence status.
//! - `zygote_prestarted{snapshot}`: paused children kept ready per hot snapshot
//!   (not sandboxes; their QEMUs are not in the `qemu_*` memory figures).
//! - `zygote_memory_bytes{kind}`: `guest_configured` (sum of the RAM sizes of live
//!   sandboxes), `qemu_rss` / `qemu_pss` / `qemu_private` (from
//!   `/proc/<pid>/smaps_rollup` of every sandbox's QEMU; `qemu_private` is what
//!   copy-on-write children do not share), `snapshot_ram` (guest RAM captured in
//!   the snapshots held), `snapshot_persisted` (bytes allocated on disk under
//!   `<home>/snapshots`).
//! - `zygote_http_requests_total{method,route,status}` and
//!   `zygote_http_errors_total{method,route,status}` (status >= 400); `route` is
//!   the route pattern (`/v1/sandboxes/{id}`), `unmatched` for a path no route has.
//! - Histograms (seconds): `zygote_boot_seconds`, `zygote_spawn_seconds{phase}`
//!   (`running`: child resumed, `ready`: its agent answered),
//!   `zygote_branch_seconds{mode}` (the whole branch request),
//!   `zygote_branch_pause_seconds{mode}` (the parent's STOP→RESUME of every
//!   branch, fork and warm snapshot).
//! - `zygote_spawn_failures_total`, `zygote_uptime_seconds`, `zygote_build_info`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use zygote_engine::{Observer, SandboxState, SnapshotStatus, Timing};

use crate::error::ApiError;
use crate::AppState;

/// Buckets for latencies of whole operations (seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets for pauses (seconds).
const PAUSE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// One histogram's state.
#[derive(Debug, Clone)]
struct Histogram {
    /// Non-cumulative counts per bucket, plus the `+Inf` one at the end.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A histogram family with (at most) one label.
#[derive(Debug)]
struct HistogramFamily {
    name: &'static str,
    help: &'static str,
    label: Option<&'static str>,
    buckets: &'static [f64],
    series: Mutex<BTreeMap<String, Histogram>>,
}

impl HistogramFamily {
    const fn new(
        name: &'static str,
        help: &'static str,
        label: Option<&'static str>,
        buckets: &'static [f64],
    ) -> Self {
        HistogramFamily {
            name,
            help,
            label,
            buckets,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    fn observe(&self, label_value: &str, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        let mut m = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let h = m
            .entry(label_value.to_string())
            .or_insert_with(|| Histogram {
                counts: vec![0; self.buckets.len() + 1],
                sum: 0.0,
                count: 0,
            });
        let i = self
            .buckets
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.buckets.len());
        h.counts[i] += 1;
        h.sum += seconds;
        h.count += 1;
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let m = self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (value, h) in &m {
            let base = match self.label {
                Some(l) => format!("{l}=\"{}\",", escape(value)),
                None => String::new(),
            };
            let mut cum = 0;
            for (i, b) in self.buckets.iter().enumerate() {
                cum += h.counts[i];
                let _ = writeln!(out, "{}_bucket{{{base}le=\"{b}\"}} {cum}", self.name);
            }
            cum += h.counts[self.buckets.len()];
            let _ = writeln!(out, "{}_bucket{{{base}le=\"+Inf\"}} {cum}", self.name);
            let plain = base.trim_end_matches(',');
            let braces = if plain.is_empty() {
                String::new()
            } else {
                format!("{{{plain}}}")
            };
            let _ = writeln!(out, "{}_sum{braces} {}", self.name, h.sum);
            let _ = writeln!(out, "{}_count{braces} {}", self.name, h.count);
        }
    }
}

/// Key of a request counter.
type RequestKey = (String, String, u16);

/// Every counter and histogram of the daemon.
#[derive(Debug)]
pub(crate) struct Metrics {
    started: Instant,
    requests: Mutex<BTreeMap<RequestKey, u64>>,
    spawn_failures: Mutex<u64>,
    boot: HistogramFamily,
    spawn: HistogramFamily,
    branch: HistogramFamily,
    pause: HistogramFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            started: Instant::now(),
            requests: Mutex::new(BTreeMap::new()),
            spawn_failures: Mutex::new(0),
            boot: HistogramFamily::new(
                "zygote_boot_seconds",
                "Cold boot of a sandbox until its agent answered.",
                None,
                LATENCY_BUCKETS,
            ),
            spawn: HistogramFamily::new(
                "zygote_spawn_seconds",
                "Start of a child from a snapshot: phase running (resumed) or ready (agent answered).",
                Some("phase"),
                LATENCY_BUCKETS,
            ),
            branch: HistogramFamily::new(
                "zygote_branch_seconds",
                "A whole branch request, by mode.",
                Some("mode"),
                LATENCY_BUCKETS,
            ),
            pause: HistogramFamily::new(
                "zygote_branch_pause_seconds",
                "The parent's STOP to RESUME during a branch, by mode.",
                Some("mode"),
                PAUSE_BUCKETS,
            ),
        }
    }

    /// Count one answered request.
    pub(crate) fn request(&self, method: &str, route: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((method.to_string(), route.to_string(), status))
            .or_insert(0) += 1;
    }

    pub(crate) fn boot_ms(&self, ms: f64) {
        self.boot.observe("", ms / 1000.0);
    }

    pub(crate) fn spawn_ms(&self, phase: &str, ms: f64) {
        self.spawn.observe(phase, ms / 1000.0);
    }

    pub(crate) fn spawn_failed(&self) {
        *self
            .spawn_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner()) += 1;
    }

    pub(crate) fn branch_seconds(&self, mode: &str, seconds: f64) {
        self.branch.observe(mode, seconds);
    }

    pub(crate) fn pause_ms(&self, mode: &str, ms: f64) {
        self.pause.observe(mode, ms / 1000.0);
    }

    /// The exposition text: counters and histograms, then the gauges in `g`.
    pub(crate) fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(8192);
        header(
            &mut out,
            "zygote_build_info",
            "The daemon's version.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "zygote_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        header(
            &mut out,
            "zygote_uptime_seconds",
            "Seconds since the daemon started.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "zygote_uptime_seconds {}",
            self.started.elapsed().as_secs_f64()
        );

        header(
            &mut out,
            "zygote_sandboxes",
            "Sandboxes held by the daemon, by lifecycle state.",
            "gauge",
        );
        for (state, n) in &g.sandboxes {
            let _ = writeln!(out, "zygote_sandboxes{{state=\"{state}\"}} {n}");
        }
        header(
            &mut out,
            "zygote_snapshots",
            "Snapshots held by the daemon, by persistence status.",
            "gauge",
        );
        for (status, n) in &g.snapshots {
            let _ = writeln!(out, "zygote_snapshots{{status=\"{status}\"}} {n}");
        }
        header(
            &mut out,
            "zygote_prestarted",
            "Pre-started (paused, loaded) children kept ready, by snapshot tag.",
            "gauge",
        );
        for (tag, n) in &g.prestarted {
            let _ = writeln!(out, "zygote_prestarted{{snapshot=\"{}\"}} {n}", escape(tag));
        }
        header(
            &mut out,
            "zygote_memory_bytes",
            "Memory by kind: guest_configured, qemu_rss, qemu_pss, qemu_private, snapshot_ram, snapshot_persisted (on disk).",
            "gauge",
        );
        for (kind, n) in &g.memory {
            let _ = writeln!(out, "zygote_memory_bytes{{kind=\"{kind}\"}} {n}");
        }

        let reqs = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        header(
            &mut out,
            "zygote_http_requests_total",
            "API requests answered, by method, route pattern and status.",
            "counter",
        );
        for ((method, route, status), n) in &reqs {
            let _ = writeln!(
                out,
                "zygote_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(method),
                escape(route)
            );
        }
        header(
            &mut out,
            "zygote_http_errors_total",
            "API requests answered with a status >= 400, by method, route pattern and status.",
            "counter",
        );
        for ((method, route, status), n) in reqs.iter().filter(|((_, _, s), _)| *s >= 400) {
            let _ = writeln!(
                out,
                "zygote_http_errors_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(method),
                escape(route)
            );
        }
        header(
            &mut out,
            "zygote_spawn_failures_total",
            "Children that failed to start.",
            "counter",
        );
        let _ = writeln!(
            out,
            "zygote_spawn_failures_total {}",
            *self
                .spawn_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        );
        for h in [&self.boot, &self.spawn, &self.branch, &self.pause] {
            h.render(&mut out);
        }
        out
    }
}

/// Values read from the engine at scrape time.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    sandboxes: Vec<(&'static str, u64)>,
    snapshots: Vec<(&'static str, u64)>,
    prestarted: Vec<(String, usize)>,
    memory: Vec<(&'static str, u64)>,
}

impl Gauges {
    /// Read the gauges (blocking: `/proc` and the snapshot directory).
    fn collect(state: &AppState) -> Gauges {
        let sandboxes = state.engine.sandboxes();
        let mut by_state: Vec<(SandboxState, u64)> =
            SandboxState::ALL.iter().map(|s| (*s, 0)).collect();
        let (mut configured, mut rss, mut pss, mut private) = (0u64, 0u64, 0u64, 0u64);
        for s in &sandboxes {
            for (st, n) in by_state.iter_mut() {
                if *st == s.state {
                    *n += 1;
                }
            }
            let live = match s.state {
                SandboxState::Booting | SandboxState::Running => true,
                SandboxState::Paused | SandboxState::Stopping | SandboxState::Dead => false,
            };
            if live {
                configured += s.memory_mib << 20;
            }
            if let Some(m) = s.pid.and_then(smaps_rollup) {
                rss += m.rss;
                pss += m.pss;
                private += m.private;
            }
        }
        // Sandboxes are listed once started: the ones booting are in flight.
        for (st, n) in by_state.iter_mut() {
            if *st == SandboxState::Booting {
                *n += state.engine.starting() as u64;
            }
        }
        let snaps = state.engine.snapshots();
        let mut by_status: Vec<(SnapshotStatus, u64)> =
            SnapshotStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for s in &snaps {
            for (st, n) in by_status.iter_mut() {
                if *st == s.status {
                    *n += 1;
                }
            }
        }
        let snapshot_ram = snaps.iter().map(|s| s.memory_bytes).sum();
        let persisted = state.engine.persisted_snapshot_bytes();
        let mut prestarted: Vec<(String, usize)> = snaps
            .iter()
            .filter(|s| s.prestarted > 0)
            .map(|s| (s.tag.clone(), s.prestarted as usize))
            .collect();
        prestarted.sort();
        Gauges {
            sandboxes: by_state.iter().map(|(st, n)| (st.as_str(), *n)).collect(),
            snapshots: by_status.iter().map(|(st, n)| (st.as_str(), *n)).collect(),
            prestarted,
            memory: vec![
                ("guest_configured", configured),
                ("qemu_rss", rss),
                ("qemu_pss", pss),
                ("qemu_private", private),
                ("snapshot_ram", snapshot_ram),
                ("snapshot_persisted", persisted),
            ],
        }
    }
}

impl Observer for Metrics {
    fn timing(&self, t: Timing) {
        match t {
            Timing::Booted { ms } => self.boot_ms(ms),
            Timing::Spawned {
                running_ms,
                ready_ms,
                prestarted: _,
            } => {
                self.spawn_ms("running", running_ms);
                self.spawn_ms("ready", ready_ms);
            }
            Timing::SpawnFailed => self.spawn_failed(),
            Timing::Branched {
                mode,
                pause_ms,
                call_ms,
            } => {
                self.branch_seconds(mode.as_str(), call_ms / 1e3);
                if let Some(p) = pause_ms {
                    self.pause_ms(mode.as_str(), p);
                }
            }
        }
    }
}

/// `GET /metrics`.
pub(crate) async fn handler(State(s): State<AppState>) -> Result<Response, ApiError> {
    let st = s.clone();
    let gauges = tokio::task::spawn_blocking(move || Gauges::collect(&st))
        .await
        .map_err(|e| ApiError {
            status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("collecting the metrics failed: {e}"),
        })?;
    let text = s.metrics.render(&gauges);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escape a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Memory figures of one process, in bytes.
#[derive(Debug, Default, PartialEq)]
struct ProcMemory {
    rss: u64,
    pss: u64,
    private: u64,
}

fn smaps_rollup(pid: u32) -> Option<ProcMemory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(parse_smaps_rollup(&text))
}

fn parse_smaps_rollup(text: &str) -> ProcMemory {
    let mut m = ProcMemory::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(kb)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(kb) = kb.parse::<u64>() else {
            continue;
        };
        let bytes = kb * 1024;
        match key {
            "Rss:" => m.rss += bytes,
            "Pss:" => m.pss += bytes,
            "Private_Clean:" | "Private_Dirty:" => m.private += bytes,
            _ => {}
        }
    }
    m
}

/// Bytes allocated on disk below `dir` (sparse files count what they hold).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.pause_ms("copy", 3.0);
        m.pause_ms("copy", 40.0);
        m.pause_ms("copy", 9000.0);
        m.request("GET", "unmatched", 404);
        m.request("GET", "/healthz", 200);
        let t = m.render(&Gauges::default());
        assert!(t.contains("zygote_branch_pause_seconds_bucket{mode=\"copy\",le=\"0.001\"} 0\n"));
        assert!(t.contains("zygote_branch_pause_seconds_bucket{mode=\"copy\",le=\"0.005\"} 1\n"));
        assert!(t.contains("zygote_branch_pause_seconds_bucket{mode=\"copy\",le=\"0.05\"} 2\n"));
        assert!(t.contains("zygote_branch_pause_seconds_bucket{mode=\"copy\",le=\"5\"} 2\n"));
        assert!(t.contains("zygote_branch_pause_seconds_bucket{mode=\"copy\",le=\"+Inf\"} 3\n"));
        assert!(t.contains("zygote_branch_pause_seconds_count{mode=\"copy\"} 3\n"));
        assert!(t.contains(
            "zygote_http_errors_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1\n"
        ));
        assert!(!t.contains("zygote_http_errors_total{method=\"GET\",route=\"/healthz\""));
        assert!(t.contains(
            "zygote_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1\n"
        ));
        // every sample line is `name{labels} value` or `name value`
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = l.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{l}");
        }
    }

    #[test]
    fn unlabelled_histogram_and_escaping() {
        let m = Metrics::new();
        m.boot_ms(4200.0);
        let t = m.render(&Gauges::default());
        assert!(
            t.contains("zygote_boot_seconds_bucket{le=\"5\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("zygote_boot_seconds_sum 4.2\n"), "{t}");
        assert!(t.contains("zygote_boot_seconds_count 1\n"), "{t}");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn smaps_rollup_parses() {
        let t = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:  1000 kB\nPss:   600 kB\nShared_Clean: 10 kB\nPrivate_Clean: 100 kB\nPrivate_Dirty: 300 kB\n";
        assert_eq!(
            parse_smaps_rollup(t),
            ProcMemory {
                rss: 1000 * 1024,
                pss: 600 * 1024,
                private: 400 * 1024
            }
        );
    }
}
