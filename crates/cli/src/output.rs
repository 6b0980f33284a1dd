//! Human output: aligned tables with a header row, and a progress spinner on
//! stderr that shows only when stderr is a terminal (scripts and `--json` see
//! nothing but their data on stdout).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A table: a header row and data rows, columns padded to their widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these `(header, alignment)` columns.
    pub(crate) fn new(cols: &[(&'static str, Align)]) -> Table {
        Table {
            headers: cols.iter().map(|c| c.0).collect(),
            align: cols.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra ones dropped).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text, one line per row, the last column unpadded.
    pub(crate) fn render(&self) -> String {
        let n = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for r in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                let pad = width[i].saturating_sub(c.chars().count());
                let last = i + 1 == n;
                match self.align[i] {
                    Align::Right => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(c);
                    }
                    Align::Left if last => line.push_str(c),
                    Align::Left => {
                        line.push_str(c);
                        line.push_str(&" ".repeat(pad));
                    }
                }
                if !last {
                    line.push_str("  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A spinner with a message and the elapsed time on stderr, redrawn ten times
/// a second by its own thread; a no-op when stderr is not a terminal. Dropping
/// it clears the line.
#[derive(Debug)]
pub(crate) struct Spinner {
    inner: Option<SpinnerInner>,
}

#[derive(Debug)]
struct SpinnerInner {
    msg: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const FRAMES: &[char] = &['|', '/', '-', '\\'];

impl Spinner {
    /// Starts a spinner showing `msg` (only if stderr is a terminal).
    pub(crate) fn start(msg: impl Into<String>) -> Spinner {
        if !std::io::stderr().is_terminal() {
            return Spinner { inner: None };
        }
        let msg = Arc::new(Mutex::new(msg.into()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (msg.clone(), stop.clone());
        let t0 = Instant::now();
        let thread = std::thread::spawn(move || {
            let mut i = 0usize;
            while !s.load(Ordering::Relaxed) {
                let text = m.lock().map(|g| g.clone()).unwrap_or_default();
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[2K{} {text} ({:.1} s)",
                    FRAMES[i % FRAMES.len()],
                    t0.elapsed().as_secs_f64()
                );
                let _ = err.flush();
                drop(err);
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        });
        Spinner {
            inner: Some(SpinnerInner {
                msg,
                stop,
                thread: Some(thread),
            }),
        }
    }

    /// Whether the spinner is drawing (stderr is a terminal).
    pub(crate) fn active(&self) -> bool {
        self.inner.is_some()
    }

    /// Replaces the message.
    pub(crate) fn set(&self, msg: impl Into<String>) {
        if let Some(i) = &self.inner {
            if let Ok(mut g) = i.msg.lock() {
                *g = msg.into();
            }
        }
    }

    /// Prints a line above the spinner (or plainly, without one).
    pub(crate) fn println(&self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.inner.is_some() {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{line}");
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(i) = &mut self.inner {
            i.stop.store(true, Ordering::Relaxed);
            if let Some(t) = i.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Prints `v` as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// An error and its causes, `: `-separated.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_to_the_widest_cell() {
        let mut t = Table::new(&[
            ("ID", Align::Left),
            ("MEM", Align::Right),
            ("NOTE", Align::Left),
        ]);
        t.row(vec!["a-very-long-id".into(), "5".into(), "x".into()]);
        t.row(vec!["b".into(), "1024".into(), String::new()]);
        assert_eq!(
            t.render(),
            "ID               MEM  NOTE\n\
             a-very-long-id     5  x\n\
             b               1024\n"
        );
    }
}
