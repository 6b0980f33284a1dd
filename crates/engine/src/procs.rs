//! Background processes, terminals and directory trees of a sandbox, over its
//! agent link: start, list, follow (a stream that stops following when it is
//! dropped), input, signals, resize; mkdir, rename, walk, watch.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use zygote_proto::agent::Msg;
use zygote_proto::procs::{FsEvent, ProcInfo, PtySize, SpawnProcess, WalkEntry};

use crate::agent_link::{AgentLink, LinkError};
use crate::error::{EngineError, Result};
use crate::model::{ExecItem, ExecItems, ProcessSpec};
use crate::ops::SMALL_TIMEOUT;
use crate::paths;
use crate::sandbox::Sandbox;

fn unexpected(what: &str, m: Msg) -> EngineError {
    LinkError::Unexpected(format!("{m:?} {what}")).into()
}

fn ok(f: Msg, what: &str) -> Result<()> {
    match f {
        Msg::Ok => Ok(()),
        m => Err(unexpected(what, m)),
    }
}

impl Sandbox {
    fn agent(&self) -> Result<&std::sync::Arc<AgentLink>> {
        Ok(&self.guest()?.link)
    }

    /// Start a background process; its guest pid.
    pub(crate) async fn start_process(&self, spec: ProcessSpec) -> Result<u32> {
        if let Some((rows, cols)) = spec.pty {
            if !(1..=1000).contains(&rows) || !(1..=1000).contains(&cols) {
                return Err(EngineError::BadRequest(format!(
                    "terminal size {rows}x{cols} is out of range: pass rows and cols of 1-1000"
                )));
            }
        }
        let (exec, _) = self.exec_request(spec.exec)?;
        let req = SpawnProcess {
            exec: zygote_proto::agent::ExecRequest {
                stdin: spec.stdin || spec.pty.is_some(),
                ..exec
            },
            pty: spec.pty.map(|(rows, cols)| PtySize { rows, cols }),
            tag: spec.tag,
        };
        let f = self.agent()?.call(&Msg::Spawn(req), SMALL_TIMEOUT).await?;
        match f.msg {
            Msg::Started { pid } => Ok(pid),
            m => Err(unexpected("starting a process", m)),
        }
    }

    /// The background processes.
    pub(crate) async fn processes(&self) -> Result<Vec<ProcInfo>> {
        match self.agent()?.call(&Msg::Procs, SMALL_TIMEOUT).await?.msg {
            Msg::ProcsOk { procs } => Ok(procs),
            m => Err(unexpected("listing processes", m)),
        }
    }

    /// Follow a background process: its kept output (with `replay`), then
    /// live output and its exit. Dropping the stream stops following.
    pub(crate) async fn attach(&self, pid: u32, replay: bool) -> Result<ExecItems> {
        // An unknown pid is refused before any stream starts (the agent would
        // say so only as the stream's first item).
        if !self.processes().await?.iter().any(|p| p.pid == pid) {
            return Err(LinkError::Agent(zygote_proto::agent::AgentError {
                kind: zygote_proto::agent::ErrorKind::NotFound,
                message: format!(
                    "no background process {pid} in sandbox `{}`: list them with `zygote ps {}`",
                    self.id, self.id
                ),
            })
            .into());
        }
        let req = self
            .agent()?
            .start(&Msg::Attach { pid, replay }, &[])
            .await?
            .cancel_on_drop();
        Ok(futures::stream::unfold(Some(req), |req| async move {
            let mut req = req?;
            match req.next().await {
                Ok(f) => match f.msg {
                    Msg::Stdout => Some((Ok(ExecItem::Stdout(f.payload.into())), Some(req))),
                    Msg::Stderr => Some((Ok(ExecItem::Stderr(f.payload.into())), Some(req))),
                    Msg::Exit(x) => {
                        req.ended();
                        Some((Ok(ExecItem::Exit(x)), None))
                    }
                    m => Some((Err(unexpected("following a process", m)), None)),
                },
                Err(e) => Some((Err(e.into()), None)),
            }
        })
        .boxed())
    }

    /// Bytes for a background process's stdin (or terminal); `eof` closes it.
    pub(crate) async fn process_input(&self, pid: u32, data: &[u8], eof: bool) -> Result<()> {
        let mut r = self
            .agent()?
            .start(&Msg::ProcInput { pid, eof }, data)
            .await?;
        let f = tokio::time::timeout(SMALL_TIMEOUT, r.next())
            .await
            .map_err(|_| LinkError::Timeout(SMALL_TIMEOUT))??;
        ok(f.msg, "sending input")
    }

    /// A signal to a background process's group.
    pub(crate) async fn signal_process(&self, pid: u32, signal: i32) -> Result<()> {
        let f = self
            .agent()?
            .call(&Msg::ProcSignal { pid, signal }, SMALL_TIMEOUT)
            .await?;
        ok(f.msg, "signalling a process")
    }

    /// A new terminal size for a background process.
    pub(crate) async fn resize_process(&self, pid: u32, rows: u16, cols: u16) -> Result<()> {
        let size = PtySize { rows, cols };
        let f = self
            .agent()?
            .call(&Msg::ProcResize { pid, size }, SMALL_TIMEOUT)
            .await?;
        ok(f.msg, "resizing a terminal")
    }

    /// Create a directory.
    pub(crate) async fn make_dir(&self, path: &str, parents: bool) -> Result<()> {
        paths::guest_path(path)?;
        let f = self
            .agent()?
            .call(
                &Msg::MakeDir {
                    path: path.into(),
                    parents,
                },
                SMALL_TIMEOUT,
            )
            .await?;
        ok(f.msg, "creating a directory")
    }

    /// Rename a path.
    pub(crate) async fn rename(&self, from: &str, to: &str) -> Result<()> {
        paths::guest_path(from)?;
        paths::guest_path(to)?;
        let msg = Msg::Rename {
            from: from.into(),
            to: to.into(),
        };
        let f = self.agent()?.call(&msg, SMALL_TIMEOUT).await?;
        ok(f.msg, "renaming")
    }

    /// A directory's entries down to `depth`.
    pub(crate) async fn walk(&self, path: &str, depth: u32) -> Result<Vec<WalkEntry>> {
        paths::guest_path(path)?;
        let msg = Msg::Walk {
            path: path.into(),
            depth,
        };
        match self.agent()?.call(&msg, SMALL_TIMEOUT).await?.msg {
            Msg::WalkOk { entries } => Ok(entries),
            m => Err(unexpected("walking a directory", m)),
        }
    }

    /// Events under a directory, once the watch is in place; dropping the
    /// stream ends the watch.
    pub(crate) async fn watch(
        &self,
        path: &str,
        recursive: bool,
    ) -> Result<BoxStream<'static, Result<FsEvent>>> {
        paths::guest_path(path)?;
        let msg = Msg::Watch {
            path: path.into(),
            recursive,
        };
        let mut req = self.agent()?.start(&msg, &[]).await?.cancel_on_drop();
        let first = tokio::time::timeout(Duration::from_secs(30), req.next())
            .await
            .map_err(|_| LinkError::Timeout(Duration::from_secs(30)))??;
        ok(first.msg, "starting a watch")?;
        Ok(futures::stream::unfold(Some(req), |req| async move {
            let mut req = req?;
            match req.next().await {
                Ok(f) => match f.msg {
                    Msg::FsEvent(e) => Some((Ok(e), Some(req))),
                    m => Some((Err(unexpected("watching", m)), None)),
                },
                Err(e) => Some((Err(e.into()), None)),
            }
        })
        .boxed())
    }
}
