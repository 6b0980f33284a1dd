//! One bench run's samples and what is made of them: the summary rows, the
//! printed table, `<bench>-samples.csv` (one row per sample),
//! `<bench>-summary.csv`, `<bench>-table.txt` and `<bench>-run.txt` in the
//! output directory (the `bench-out` conventions; see `bench.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::stats::{stats, Stats};

/// A combination of parameters measured once per iteration.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub(crate) label: String,
    /// Values of the bench's parameter columns, in [`Run::params`] order
    /// (empty string: not applicable).
    pub(crate) params: Vec<String>,
}

#[derive(Debug, Clone)]
struct Sample {
    cell: usize,
    iteration: usize,
    metric: &'static str,
    value: f64,
    unit: &'static str,
}

/// One summary row: a cell's metric.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) cell: String,
    pub(crate) params: BTreeMap<String, String>,
    pub(crate) metric: String,
    pub(crate) unit: String,
    #[serde(flatten)]
    pub(crate) stats: Stats,
    /// The same run's cold boot p50 divided by this p50 (time metrics only).
    pub(crate) cold_boot_ratio: Option<f64>,
    /// A reference p50 to compare with (e.g. the anchor's published figure).
    pub(crate) reference_p50: Option<f64>,
}

/// Samples of one bench run.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) bench: &'static str,
    /// Names of the parameter columns of this bench.
    pub(crate) params: Vec<&'static str>,
    pub(crate) cells: Vec<Cell>,
    samples: Vec<Sample>,
    /// Warnings met during the run (hugepage fallbacks, failed children), each once.
    pub(crate) notes: Vec<String>,
    /// Plain results that are no table row (e.g. boots reaching the agent).
    pub(crate) facts: Vec<String>,
    /// One-line description printed above the table.
    pub(crate) title: String,
    /// The cold-boot cell and metric the ratios divide by.
    pub(crate) cold: Option<(usize, &'static str)>,
    /// Metrics that get a cold-boot ratio.
    pub(crate) ratio_metrics: Vec<&'static str>,
    /// Reference p50 per (cell, metric), and the column's title.
    pub(crate) references: BTreeMap<(usize, &'static str), f64>,
    pub(crate) reference_title: &'static str,
}

impl Run {
    pub(crate) fn new(bench: &'static str, params: Vec<&'static str>, title: String) -> Run {
        Run {
            bench,
            params,
            cells: Vec::new(),
            samples: Vec::new(),
            notes: Vec::new(),
            facts: Vec::new(),
            title,
            cold: None,
            ratio_metrics: Vec::new(),
            references: BTreeMap::new(),
            reference_title: "ref p50",
        }
    }

    /// Registers a cell (params by name; missing ones empty) and returns its index.
    pub(crate) fn cell(&mut self, label: &str, params: &[(&str, String)]) -> usize {
        if let Some(i) = self.cells.iter().position(|c| c.label == label) {
            return i;
        }
        let values = self
            .params
            .iter()
            .map(|p| {
                params
                    .iter()
                    .find(|(k, _)| k == p)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect();
        self.cells.push(Cell {
            label: label.to_string(),
            params: values,
        });
        self.cells.len() - 1
    }

    pub(crate) fn add(
        &mut self,
        cell: usize,
        iteration: usize,
        metric: &'static str,
        value: f64,
        unit: &'static str,
    ) {
        self.samples.push(Sample {
            cell,
            iteration,
            metric,
            value,
            unit,
        });
    }

    /// Records a warning once (printed under the table, kept in run.txt).
    pub(crate) fn note(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        if !self.notes.contains(&msg) {
            eprintln!("warning: {msg}");
            self.notes.push(msg);
        }
    }

    /// Records a plain result line printed under the table.
    pub(crate) fn fact(&mut self, msg: impl Into<String>) {
        self.facts.push(msg.into());
    }

    /// Stats of one cell's metric.
    pub(crate) fn stats_of(&self, cell: usize, metric: &str) -> Option<Stats> {
        let v: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.cell == cell && s.metric == metric)
            .map(|s| s.value)
            .collect();
        (!v.is_empty()).then(|| stats(v))
    }

    /// Summary rows in cell order, metrics in first-recorded order.
    pub(crate) fn rows(&self) -> Vec<Row> {
        let cold = self
            .cold
            .and_then(|(c, m)| self.stats_of(c, m))
            .map(|s| s.p50);
        let mut rows = Vec::new();
        for (ci, cell) in self.cells.iter().enumerate() {
            let mut metrics: Vec<(&'static str, &'static str)> = Vec::new();
            for s in self.samples.iter().filter(|s| s.cell == ci) {
                if !metrics.iter().any(|(m, _)| *m == s.metric) {
                    metrics.push((s.metric, s.unit));
                }
            }
            for (metric, unit) in metrics {
                let Some(st) = self.stats_of(ci, metric) else {
                    continue;
                };
                let is_cold = self.cold.map(|(c, _)| c) == Some(ci);
                let ratio = match cold {
                    Some(c) if !is_cold && self.ratio_metrics.contains(&metric) && st.p50 > 0.0 => {
                        Some(c / st.p50)
                    }
                    _ => None,
                };
                rows.push(Row {
                    cell: cell.label.clone(),
                    params: self
                        .params
                        .iter()
                        .zip(&cell.params)
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                    metric: metric.to_string(),
                    unit: unit.to_string(),
                    stats: st,
                    cold_boot_ratio: ratio,
                    reference_p50: self.references.get(&(ci, metric)).copied(),
                });
            }
        }
        rows
    }

    /// The table as printed.
    pub(crate) fn table(&self) -> String {
        let rows = self.rows();
        let has_ref = rows.iter().any(|r| r.reference_p50.is_some());
        let has_ratio = rows.iter().any(|r| r.cold_boot_ratio.is_some());
        let w = rows.iter().map(|r| r.cell.len()).max().unwrap_or(4).max(4);
        let mw = rows
            .iter()
            .map(|r| r.metric.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut t = String::new();
        let _ = writeln!(t, "{}", self.title);
        let _ = write!(
            t,
            "{:<w$}  {:<mw$} {:>4} {:>9} {:>9} {:>9}  {:<5}",
            "cell", "metric", "n", "p50", "p99", "max", "unit"
        );
        if has_ratio {
            let _ = write!(t, " {:>10}", "cold/this");
        }
        if has_ref {
            let _ = write!(t, " {:>10}", self.reference_title);
        }
        let _ = writeln!(t);
        for r in &rows {
            let s = &r.stats;
            let _ = write!(
                t,
                "{:<w$}  {:<mw$} {:>4} {:>9} {:>9} {:>9}  {:<5}",
                r.cell,
                r.metric,
                s.n,
                num(s.p50),
                num(s.p99),
                num(s.max),
                r.unit
            );
            if has_ratio {
                let x = r
                    .cold_boot_ratio
                    .map(|x| format!("{x:.1}x"))
                    .unwrap_or_default();
                let _ = write!(t, " {x:>10}");
            }
            if has_ref {
                let x = r.reference_p50.map(num).unwrap_or_default();
                let _ = write!(t, " {x:>10}");
            }
            let _ = writeln!(t);
        }
        // padding of empty trailing columns
        let mut t: String = t.lines().map(|l| format!("{}\n", l.trim_end())).collect();
        for f in &self.facts {
            let _ = writeln!(t, "{f}");
        }
        for n in &self.notes {
            let _ = writeln!(t, "note: {n}");
        }
        t
    }

    /// Writes the CSV files, the table and the run description into `dir`;
    /// returns the paths written.
    pub(crate) fn write(&self, dir: &Path, command: &str) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        let mut put = |name: String, body: String| -> Result<()> {
            let p = dir.join(name);
            std::fs::write(&p, body).with_context(|| format!("cannot write {}", p.display()))?;
            written.push(p);
            Ok(())
        };
        // one row per sample
        let mut s = String::new();
        let mut head: Vec<&str> = vec!["bench", "cell"];
        head.extend(self.params.iter());
        head.extend(["iteration", "metric", "value", "unit"]);
        line(&mut s, head.iter().map(|h| h.to_string()));
        for x in &self.samples {
            let c = &self.cells[x.cell];
            let mut f = vec![self.bench.to_string(), c.label.clone()];
            f.extend(c.params.iter().cloned());
            f.extend([
                x.iteration.to_string(),
                x.metric.to_string(),
                format!("{}", x.value),
                x.unit.to_string(),
            ]);
            line(&mut s, f);
        }
        put(format!("{}-samples.csv", self.bench), s)?;
        // one row per cell and metric
        let mut s = String::new();
        let mut head: Vec<&str> = vec!["bench", "cell"];
        head.extend(self.params.iter());
        head.extend([
            "metric",
            "unit",
            "n",
            "p50",
            "p99",
            "max",
            "min",
            "mean",
            "cold_boot_ratio",
            "reference_p50",
        ]);
        line(&mut s, head.iter().map(|h| h.to_string()));
        for r in self.rows() {
            let mut f = vec![self.bench.to_string(), r.cell.clone()];
            f.extend(
                self.params
                    .iter()
                    .map(|p| r.params.get(*p).cloned().unwrap_or_default()),
            );
            let st = r.stats;
            f.extend([
                r.metric.clone(),
                r.unit.clone(),
                st.n.to_string(),
                format!("{}", st.p50),
                format!("{}", st.p99),
                format!("{}", st.max),
                format!("{}", st.min),
                format!("{}", st.mean),
                r.cold_boot_ratio
                    .map(|x| format!("{x:.3}"))
                    .unwrap_or_default(),
                r.reference_p50.map(|x| format!("{x}")).unwrap_or_default(),
            ]);
            line(&mut s, f);
        }
        put(format!("{}-summary.csv", self.bench), s)?;
        put(format!("{}-table.txt", self.bench), self.table())?;
        let mut d = String::new();
        let _ = writeln!(d, "command: {command}");
        let _ = writeln!(d, "{}", host_facts());
        for n in &self.notes {
            let _ = writeln!(d, "note: {n}");
        }
        put(format!("{}-run.txt", self.bench), d)?;
        Ok(written)
    }
}

/// A number for the table: one decimal, or blank for NaN.
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "-".into()
    }
}

fn line(out: &mut String, fields: impl IntoIterator<Item = String>) {
    let v: Vec<String> = fields.into_iter().map(|f| csv_field(&f)).collect();
    out.push_str(&v.join(","));
    out.push('\n');
}

/// RFC 4180 quoting when needed.
pub(crate) fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

/// Date, kernel, CPU count and memory of the host, for `<bench>-run.txt`.
fn host_facts() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = super::host::meminfo_kib("MemTotal:").unwrap_or(0) / 1024;
    format!(
        "finished_unix: {secs}\nkernel: {}\ncpus: {cpus}\nmem_total_mib: {mem}",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_ratio_reference_and_csv() {
        let mut r = Run::new("spawn", vec!["mode", "n"], "t".into());
        let cold = r.cell("cold boot", &[("mode", "cold-boot".into())]);
        let cow = r.cell("cow n=4", &[("mode", "cow".into()), ("n", "4".into())]);
        assert_eq!(r.cell("cow n=4", &[]), cow);
        r.cold = Some((cold, "ready_ms"));
        r.ratio_metrics = vec!["ready_ms"];
        r.references.insert((cow, "ready_ms"), 481.0);
        for i in 0..3 {
            r.add(cold, i, "ready_ms", 4000.0, "ms");
            r.add(cow, i, "ready_ms", 400.0 + i as f64, "ms");
            r.add(cow, i, "pss_mib", 5.0, "MiB");
        }
        let rows = r.rows();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].cold_boot_ratio, None);
        assert_eq!(rows[1].metric, "ready_ms");
        assert_eq!(rows[1].stats.p50, 401.0);
        assert!((rows[1].cold_boot_ratio.unwrap() - 4000.0 / 401.0).abs() < 1e-9);
        assert_eq!(rows[1].reference_p50, Some(481.0));
        assert_eq!(rows[2].cold_boot_ratio, None);
        let t = r.table();
        assert!(
            t.contains("cold/this") && t.contains("10.0x") && t.contains("481.0"),
            "{t}"
        );

        let dir = tempfile::tempdir().unwrap();
        let files = r.write(dir.path(), "zygote bench spawn").unwrap();
        assert_eq!(files.len(), 4);
        let samples = std::fs::read_to_string(dir.path().join("spawn-samples.csv")).unwrap();
        let mut lines = samples.lines();
        assert_eq!(
            lines.next(),
            Some("bench,cell,mode,n,iteration,metric,value,unit")
        );
        assert_eq!(
            lines.next(),
            Some("spawn,cold boot,cold-boot,,0,ready_ms,4000,ms")
        );
        assert_eq!(samples.lines().count(), 1 + 9);
        let summary = std::fs::read_to_string(dir.path().join("spawn-summary.csv")).unwrap();
        assert!(
            summary.contains("spawn,cow n=4,cow,4,ready_ms,ms,3,401,402,402,400,401,9.975,481"),
            "{summary}"
        );
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
