//! Guest operations over an [`AgentLink`]: exec (streamed), files (streamed in
//! chunks, any size), stat/list/remove, eval, ping/info, shutdown.
//!
//! These speak the agent protocol and nothing else; the sandbox decides whether
//! an operation may run at all. Big files take the transfer disk ([`xfer`]).

#[path = "xfer.rs"]
pub(crate) mod xfer;

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use futures::StreamExt;
use zygote_proto::agent::{AgentInfo, DirEntry, EvalResult, ExecRequest, FileStat, Msg, CHUNK};

use crate::agent_link::{AgentLink, LinkError, Request};
use crate::model::ExecItem;

/// Time allowed for small requests (ping, stat, list, remove).
pub const SMALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A running exec: pull items until `Exit`.
pub struct ExecStream {
    req: Request,
    done: bool,
    deadline: Option<tokio::time::Instant>,
}

impl ExecStream {
    /// The next item; `Ok(None)` after `Exit`.
    pub async fn next(&mut self) -> Result<Option<ExecItem>, LinkError> {
        if self.done {
            return Ok(None);
        }
        let frame = match self.deadline {
            Some(d) => match tokio::time::timeout_at(d, self.req.next()).await {
                Ok(r) => r?,
                Err(_) => {
                    let _ = self.req.send(&Msg::Cancel, &[]).await;
                    return Err(LinkError::Timeout(Duration::from_secs(0)));
                }
            },
            None => self.req.next().await?,
        };
        let item = match frame.msg {
            Msg::Started { pid } => ExecItem::Started(pid),
            Msg::Stdout => ExecItem::Stdout(Bytes::from(frame.payload)),
            Msg::Stderr => ExecItem::Stderr(Bytes::from(frame.payload)),
            Msg::Exit(st) => {
                self.done = true;
                self.req.ended();
                ExecItem::Exit(st)
            }
            other => return Err(LinkError::Unexpected(format!("{other:?} during exec"))),
        };
        Ok(Some(item))
    }

    /// The items as a stream that ends after `Exit` or the first error.
    pub(crate) fn into_items(self) -> crate::model::ExecItems {
        futures::stream::unfold(Some(self), |st| async move {
            let mut st = st?;
            match st.next().await {
                Ok(Some(item)) => Some((Ok(item), Some(st))),
                Ok(None) => None,
                Err(e) => Some((Err(e.into()), None)),
            }
        })
        .boxed()
    }
}

/// Start a process. `stdin` bytes, when given, are sent and stdin is closed.
pub async fn exec(
    link: &AgentLink,
    mut req: ExecRequest,
    stdin: Option<Vec<u8>>,
) -> Result<ExecStream, LinkError> {
    req.stdin = stdin.is_some();
    // The agent enforces the timeout; the host keeps a looser watchdog in case the
    // guest itself stops answering.
    let deadline = req.timeout_ms.map(|ms| {
        tokio::time::Instant::now() + Duration::from_millis(ms) + Duration::from_secs(15)
    });
    // A caller that stops reading (a client gone) stops the process.
    let r = link.start(&Msg::Exec(req), &[]).await?.cancel_on_drop();
    if let Some(data) = stdin {
        let mut chunks = data.chunks(CHUNK).peekable();
        if chunks.peek().is_none() {
            r.send(&Msg::Stdin { eof: true }, &[]).await?;
        }
        while let Some(c) = chunks.next() {
            let eof = chunks.peek().is_none();
            r.send(&Msg::Stdin { eof }, c).await?;
        }
    }
    Ok(ExecStream {
        req: r,
        done: false,
        deadline,
    })
}

/// Write a file from a stream of byte chunks; returns the bytes written.
pub async fn write_file<S, E>(
    link: &AgentLink,
    path: &str,
    mode: Option<u32>,
    mut body: S,
) -> Result<Result<u64, E>, LinkError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut r = link
        .start(
            &Msg::WriteFile {
                path: path.to_string(),
                mode,
                parents: true,
            },
            &[],
        )
        .await?;
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = r.send(&Msg::Cancel, &[]).await;
                return Ok(Err(e));
            }
        };
        for c in chunk.chunks(CHUNK) {
            r.send(&Msg::Data, c).await?;
            total += c.len() as u64;
        }
    }
    r.send(&Msg::DataEnd, &[]).await?;
    match r.next().await?.msg {
        Msg::Ok => Ok(Ok(total)),
        other => Err(LinkError::Unexpected(format!(
            "{other:?} after a file write"
        ))),
    }
}

/// A file being read: its size and mode, then chunks.
pub struct ReadStream {
    /// File size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    inner: ReadInner,
    done: bool,
}

/// Where a download's bytes come from.
enum ReadInner {
    /// `Data` frames of a `ReadFile` request.
    Frames(Request),
    /// Windows on the transfer disk.
    Disk(Box<xfer::DiskRead>),
    /// The whole (small) file, already here.
    Inline(Option<Bytes>),
}

impl ReadStream {
    pub(crate) fn inline(size: u64, mode: u32, data: Bytes) -> ReadStream {
        ReadStream {
            size,
            mode,
            inner: ReadInner::Inline(Some(data).filter(|d| !d.is_empty())),
            done: false,
        }
    }

    pub(crate) fn disk(size: u64, mode: u32, d: Box<xfer::DiskRead>) -> ReadStream {
        ReadStream {
            size,
            mode,
            inner: ReadInner::Disk(d),
            done: false,
        }
    }

    /// The next chunk; `Ok(None)` at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, LinkError> {
        if self.done {
            return Ok(None);
        }
        let req = match &mut self.inner {
            ReadInner::Frames(req) => req,
            ReadInner::Disk(d) => {
                let r = d.next().await;
                if !matches!(r, Ok(Some(_))) {
                    self.done = true;
                }
                return r;
            }
            ReadInner::Inline(data) => {
                self.done = true;
                return Ok(data.take());
            }
        };
        let f = req.next().await?;
        match f.msg {
            Msg::Data => Ok(Some(Bytes::from(f.payload))),
            Msg::DataEnd => {
                self.done = true;
                Ok(None)
            }
            other => Err(LinkError::Unexpected(format!(
                "{other:?} during a file read"
            ))),
        }
    }

    /// Turn into a `Stream` of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, LinkError>> + Send {
        futures::stream::unfold(self, |mut s| async move {
            match s.next().await {
                Ok(Some(b)) => Some((Ok(b), s)),
                Ok(None) => None,
                Err(e) => {
                    s.done = true;
                    Some((Err(e), s))
                }
            }
        })
    }
}

/// Start reading a file.
pub async fn read_file(link: &AgentLink, path: &str) -> Result<ReadStream, LinkError> {
    let mut r = link
        .start(
            &Msg::ReadFile {
                path: path.to_string(),
            },
            &[],
        )
        .await?;
    match tokio::time::timeout(SMALL_TIMEOUT, r.next()).await {
        Ok(f) => match f?.msg {
            Msg::ReadStart { size, mode } => Ok(ReadStream {
                size,
                mode,
                inner: ReadInner::Frames(r),
                done: false,
            }),
            other => Err(LinkError::Unexpected(format!("{other:?} opening a file"))),
        },
        Err(_) => Err(LinkError::Timeout(SMALL_TIMEOUT)),
    }
}

/// Stat a path.
pub async fn stat(link: &AgentLink, path: &str) -> Result<FileStat, LinkError> {
    let f = link
        .call(&Msg::Stat { path: path.into() }, SMALL_TIMEOUT)
        .await?;
    match f.msg {
        Msg::StatOk(s) => Ok(s),
        other => Err(LinkError::Unexpected(format!("{other:?}"))),
    }
}

/// List a directory.
pub async fn list(link: &AgentLink, path: &str) -> Result<Vec<DirEntry>, LinkError> {
    let f = link
        .call(&Msg::List { path: path.into() }, SMALL_TIMEOUT)
        .await?;
    match f.msg {
        Msg::ListOk { entries } => Ok(entries),
        other => Err(LinkError::Unexpected(format!("{other:?}"))),
    }
}

/// Remove a path.
pub async fn remove(link: &AgentLink, path: &str, recursive: bool) -> Result<(), LinkError> {
    let f = link
        .call(
            &Msg::Remove {
                path: path.into(),
                recursive,
            },
            SMALL_TIMEOUT,
        )
        .await?;
    match f.msg {
        Msg::Ok => Ok(()),
        other => Err(LinkError::Unexpected(format!("{other:?}"))),
    }
}

/// Evaluate Python code in the warm interpreter.
pub async fn eval(
    link: &AgentLink,
    code: &str,
    timeout: Duration,
) -> Result<EvalResult, LinkError> {
    let f = link.call(&Msg::Eval { code: code.into() }, timeout).await?;
    match f.msg {
        Msg::EvalOk(r) => Ok(r),
        other => Err(LinkError::Unexpected(format!("{other:?}"))),
    }
}

/// Liveness probe; returns the round trip.
pub async fn ping(link: &AgentLink) -> Result<Duration, LinkError> {
    let t = std::time::Instant::now();
    match link.call(&Msg::Ping, SMALL_TIMEOUT).await?.msg {
        Msg::Pong => Ok(t.elapsed()),
        other => Err(LinkError::Unexpected(format!("{other:?}"))),
    }
}

/// Agent and guest facts.
pub async fn info(link: &AgentLink) -> Result<AgentInfo, LinkError> {
    match link.call(&Msg::Info, SMALL_TIMEOUT).await?.msg {
        Msg::InfoOk(i) => Ok(i),
        other => Err(LinkError::Unexpected(format!("{other:?}"))),
    }
}

/// Ask the guest to power off.
pub async fn shutdown(link: &AgentLink, timeout: Duration) -> Result<(), LinkError> {
    match link.call(&Msg::Shutdown, timeout).await?.msg {
        Msg::Ok => Ok(()),
        other => Err(LinkError::Unexpected(format!("{other:?}"))),
    }
}
