//! Pre-started children: for each hot snapshot a few children are kept warm:
//! started with `-incoming defer -S` over the snapshot's memory, their
//! RAM-less vmstate loaded, resumed once with an identity of their own (id,
//! hostname, fresh entropy, the clock) and the agent's answer, then stopped
//! again (QMP `stop`). A copy-on-write spawn takes one and only has to `cont`
//! it and set its clock, so the first children of a request skip the QEMU
//! start, the overlay, the vmstate load and the guest's first pass.
//!
//! A snapshot is hot once it has been spawned from, or when it was made by
//! `POST /v1/snapshots` (a warm-up snapshot exists to be forked). The pool is
//! refilled in the background after each spawn, one QEMU at a time, up to
//! `prestart` per snapshot and `prestart_max` overall (the least recently used
//! snapshot's entries make room). Entries have no database row and are not
//! sandboxes: deleting the snapshot or stopping the daemon kills them, and a
//! daemon restarting after a crash kills what its runtime directories hold.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn, Instrument};

use crate::lifecycle::new_id;
use crate::model::ChildMemory;
use crate::snapshot::Snapshot;
use crate::vm::Running;
use crate::Engine;

/// A warm child, stopped, waiting to be claimed. Dropping it kills QEMU and
/// removes its runtime directory (its [`Running`] owns both).
pub(crate) struct Prestarted {
    snap: Arc<Snapshot>,
    running: Running,
}

impl Prestarted {
    /// The stopped child; the caller wakes and registers it.
    pub(crate) fn into_running(self) -> Running {
        self.running
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Vec<Prestarted>>,
    last_used: HashMap<String, Instant>,
    filling: HashSet<String>,
}

/// The pools of every hot snapshot.
pub(crate) struct Pool {
    per_snapshot: usize,
    max: usize,
    inner: Mutex<Inner>,
}

impl Pool {
    pub(crate) fn new(per_snapshot: usize, max: usize) -> Pool {
        Pool {
            per_snapshot,
            max,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `n` entries of exactly this snapshot (a tag deleted and taken again
    /// is another snapshot), marking it used.
    pub(crate) fn take(&self, snap: &Arc<Snapshot>, n: usize) -> Vec<Prestarted> {
        let tag = &snap.meta.tag;
        let mut g = self.lock();
        g.last_used.insert(tag.clone(), Instant::now());
        let Some(v) = g.entries.get_mut(tag) else {
            return Vec::new();
        };
        v.retain(|p| Arc::ptr_eq(&p.snap, snap));
        let k = n.min(v.len());
        v.drain(..k).collect()
    }

    /// Every entry of `tag`, to be dropped by the caller (outside the lock).
    pub(crate) fn drain(&self, tag: &str) -> Vec<Prestarted> {
        let mut g = self.lock();
        g.last_used.remove(tag);
        g.entries.remove(tag).unwrap_or_default()
    }

    /// Every entry of every snapshot.
    pub(crate) fn drain_all(&self) -> Vec<Prestarted> {
        let mut g = self.lock();
        g.last_used.clear();
        g.entries.drain().flat_map(|(_, v)| v).collect()
    }

    /// How many entries `tag` holds.
    pub(crate) fn size(&self, tag: &str) -> usize {
        self.lock().entries.get(tag).map_or(0, Vec::len)
    }

    /// Whether a filler task runs for some snapshot.
    pub(crate) fn filling(&self) -> bool {
        !self.lock().filling.is_empty()
    }

    /// What the filler of `tag` should do next.
    fn next_step(&self, tag: &str) -> Step {
        let mut g = self.lock();
        let have = g.entries.get(tag).map_or(0, Vec::len);
        if have >= self.per_snapshot {
            return Step::Done;
        }
        let total: usize = g.entries.values().map(Vec::len).sum();
        if total < self.max {
            return Step::Fill;
        }
        // Make room: one entry of the least recently used other snapshot.
        let victim = g
            .entries
            .iter()
            .filter(|(k, v)| k.as_str() != tag && !v.is_empty())
            .map(|(k, _)| k.clone())
            .min_by_key(|k| g.last_used.get(k).copied());
        match victim {
            Some(k) => {
                let evicted = g.entries.get_mut(&k).and_then(Vec::pop).map(Box::new);
                Step::Evict(evicted)
            }
            None => Step::Done,
        }
    }
}

enum Step {
    Fill,
    Evict(Option<Box<Prestarted>>),
    Done,
}

/// Ends a filler's claim on its tag, however the task ends.
struct Filling<'a> {
    pool: &'a Pool,
    tag: String,
}

impl Drop for Filling<'_> {
    fn drop(&mut self) {
        self.pool.lock().filling.remove(&self.tag);
    }
}

impl Engine {
    /// Top up the pool of `tag` in the background (one filler per snapshot).
    pub(crate) fn refill_pool(self: &Arc<Self>, tag: &str) {
        if self.pool.per_snapshot == 0 || self.check_open().is_err() {
            return;
        }
        if !self.pool.lock().filling.insert(tag.to_string()) {
            return;
        }
        let engine = self.clone();
        let tag = tag.to_string();
        let span = tracing::info_span!("pool", snapshot = %tag);
        tokio::spawn(
            async move {
                let _claim = Filling {
                    pool: &engine.pool,
                    tag: tag.clone(),
                };
                engine.fill(&tag).await;
                // A child warmed for a snapshot deleted meanwhile held its
                // disk chain past the deletion's clean-up: clean up again.
                if engine.snapshots.get(&tag).is_err() {
                    engine.snapshots.gc_disks();
                }
            }
            .instrument(span),
        );
    }

    async fn fill(self: &Arc<Self>, tag: &str) {
        loop {
            if self.check_open().is_err() {
                return;
            }
            match self.pool.next_step(tag) {
                Step::Done => return,
                Step::Evict(e) => {
                    if let Some(e) = e {
                        debug!(evicted = %e.snap.meta.tag, "pool full: made room");
                    }
                    continue;
                }
                Step::Fill => {}
            }
            let Ok(snap) = self.snapshots.get(tag) else {
                return;
            };
            let s = snap.clone();
            let mem = match tokio::task::spawn_blocking(move || s.memory()).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot pre-start a child: snapshot memory unavailable");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "cannot pre-start a child");
                    return;
                }
            };
            let id = new_id();
            let t = Instant::now();
            let entry = match self.warm_child(&id, &snap, mem).await {
                Ok(running) => Prestarted {
                    snap: snap.clone(),
                    running,
                },
                Err(e) => {
                    warn!(error = %e, "pre-starting a child failed; the pool stops filling");
                    return;
                }
            };
            // Still the same snapshot, and the daemon still open?
            let current = self.snapshots.get(tag).ok();
            if self.check_open().is_err() || !current.is_some_and(|c| Arc::ptr_eq(&c, &snap)) {
                return;
            }
            info!(ms = t.elapsed().as_secs_f64() * 1e3, "pre-started a child");
            self.pool
                .lock()
                .entries
                .entry(tag.to_string())
                .or_default()
                .push(entry);
        }
    }

    /// A child of `snap` as `id`, loaded, resumed once (its identity given,
    /// the agent's answer in), then stopped.
    async fn warm_child(
        &self,
        id: &str,
        snap: &Arc<Snapshot>,
        mem: Arc<zygote_mem::Region>,
    ) -> crate::error::Result<Running> {
        let vm = self
            .load_child(
                id,
                snap,
                mem,
                ChildMemory::CopyOnWrite,
                crate::volumes::VolumeLease::existing(Vec::new()),
                None,
            )
            .await?;
        let (running, _) = self.resume_child(vm, Instant::now()).await?;
        running
            .vm
            .qmp
            .execute("stop", serde_json::Value::Null)
            .await?;
        Ok(running)
    }

    /// Kill the pre-started children of `tag`.
    pub(crate) fn drain_pool(&self, tag: &str) {
        let n = self.pool.drain(tag).len();
        if n > 0 {
            info!(snapshot = %tag, n, "stopped pre-started children");
        }
    }

    /// Kill every pre-started child and wait for running fillers to notice the
    /// shutdown (a filler drops what it was starting).
    pub(crate) async fn drain_pools(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            drop(self.pool.drain_all());
            if !self.pool.filling() || Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
