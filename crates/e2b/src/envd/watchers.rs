//! Directory watchers of the create / poll / remove trio (what E2B's
//! `files.watch_dir` uses): each drains its engine watch on a task into a
//! bounded queue that `GetWatcherEvents` empties. Bounded in count and in
//! events held; a watcher whose watch ended and that nobody polls for a
//! minute is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use zygote_engine::EngineError;
use zygote_proto::procs::FsEvent;

use super::filesystem::{event_out, EventOut};
use crate::connect::{Code, RpcError};

/// Most watchers open at once (all sandboxes).
pub(crate) const MAX_WATCHERS: usize = 256;
/// Most events a watcher holds between polls (older ones are dropped).
pub(crate) const MAX_EVENTS: usize = 4096;
/// How long an ended watcher nobody polls is kept.
const ENDED_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Queue {
    events: VecDeque<EventOut>,
    dropped: u64,
    ended: Option<Result<(), RpcError>>,
}

struct Watcher {
    sandbox: String,
    queue: Arc<Mutex<Queue>>,
    task: tokio::task::JoinHandle<()>,
    polled: Instant,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The open watchers.
#[derive(Default)]
pub(crate) struct Watchers {
    open: Mutex<HashMap<String, Watcher>>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.open.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Watchers").field("open", &n).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn not_found(id: &str) -> RpcError {
    RpcError::new(
        Code::NotFound,
        format!("no watcher {id:?}: create one first"),
    )
}

impl Watchers {
    /// Start draining `events` (of `root` in `sandbox`); the watcher's id.
    pub(crate) fn open(
        &self,
        sandbox: &str,
        root: &str,
        mut events: BoxStream<'static, Result<FsEvent, EngineError>>,
    ) -> Result<String, RpcError> {
        let mut open = lock(&self.open);
        open.retain(|_, w| !(w.task.is_finished() && w.polled.elapsed() > ENDED_TTL));
        if open.len() >= MAX_WATCHERS {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!(
                    "{MAX_WATCHERS} watchers are open: remove some (the watch handle's stop())"
                ),
            ));
        }
        let queue = Arc::new(Mutex::new(Queue::default()));
        let q = queue.clone();
        let root = root.to_string();
        let task = tokio::spawn(async move {
            let end = loop {
                match events.next().await {
                    None => break Ok(()),
                    Some(Err(e)) => break Err(RpcError::from(e)),
                    Some(Ok(ev)) => {
                        let mut q = lock(&q);
                        if q.events.len() == MAX_EVENTS {
                            q.events.pop_front();
                            q.dropped += 1;
                        }
                        q.events.push_back(event_out(&root, &ev));
                    }
                }
            };
            lock(&q).ended = Some(end);
        });
        let id = hex::encode(rand::random::<[u8; 8]>());
        open.insert(
            id.clone(),
            Watcher {
                sandbox: sandbox.to_string(),
                queue,
                task,
                polled: Instant::now(),
            },
        );
        Ok(id)
    }

    /// The events since the last poll; the watch's error once it failed.
    pub(crate) fn take(&self, sandbox: &str, id: &str) -> Result<Vec<EventOut>, RpcError> {
        let mut open = lock(&self.open);
        let w = open
            .get_mut(id)
            .filter(|w| w.sandbox == sandbox)
            .ok_or_else(|| not_found(id))?;
        w.polled = Instant::now();
        let mut q = lock(&w.queue);
        if q.dropped > 0 {
            tracing::debug!(
                watcher = id,
                dropped = q.dropped,
                "watch events dropped (nobody polled)"
            );
            q.dropped = 0;
        }
        let events: Vec<EventOut> = q.events.drain(..).collect();
        match (&q.ended, events.is_empty()) {
            (Some(Err(e)), true) => Err(e.clone()),
            _ => Ok(events),
        }
    }

    /// Stop a watcher.
    pub(crate) fn close(&self, sandbox: &str, id: &str) -> Result<(), RpcError> {
        let mut open = lock(&self.open);
        match open.get(id) {
            Some(w) if w.sandbox == sandbox => {
                open.remove(id);
                Ok(())
            }
            _ => Err(not_found(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zygote_proto::procs::FsEventKind;

    #[tokio::test]
    async fn bounded_and_owned() {
        let w = Watchers::default();
        let evs: Vec<Result<FsEvent, EngineError>> = (0..MAX_EVENTS + 10)
            .map(|i| {
                Ok(FsEvent {
                    kind: FsEventKind::Create,
                    path: format!("/d/{i}"),
                })
            })
            .collect();
        let id = w
            .open("sb", "/d", futures::stream::iter(evs).boxed())
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(w.take("other", &id).is_err());
        let got = w.take("sb", &id).unwrap();
        assert_eq!(got.len(), MAX_EVENTS);
        assert_eq!(got[0].name, "10");
        assert!(w.take("sb", &id).unwrap().is_empty());
        w.close("sb", &id).unwrap();
        assert!(w.take("sb", &id).is_err());
    }
}
