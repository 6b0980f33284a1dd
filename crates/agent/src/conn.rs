//! The connection: decoding frames, routing them to request threads, and the
//! single writer thread that owns the port's write side.
//!
//! Every request runs on its own thread and replies through a [`Reply`], which
//! encodes frames and queues them for the writer. Per-connection state (the
//! table of in-flight requests, keyed by id) belongs to one *generation*: when
//! the host disconnects or says `Hello` again, the generation is bumped, the
//! table is cleared (closing exec stdins, aborting uploads) and frames still
//! queued for the old generation are dropped. Processes keep running.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};

use zygote_proto::agent::{
    encode_vec, AgentError, DecodeError, Decoder, ErrorKind, Frame, Msg, CONNECTION_ID, MAX_HEADER,
};
use zygote_proto::AGENT_PROTOCOL_VERSION;

use crate::eval::Interp;
use crate::exec::{ExecCtl, StdinMsg};
use crate::files::UploadMsg;
use crate::port::{PortReader, PortWriter, WriteError};
use crate::reaper::Reaper;
use crate::util::{bad, err, lock, log};
use crate::{exec, files, pid1, system};

/// Frames queued for the writer before producers block (backpressure).
const OUT_QUEUE: usize = 64;
/// Uploaded chunks queued per file before the reader blocks.
const UPLOAD_QUEUE: usize = 16;
/// The writer coalesces queued frames into writes of at most this many bytes.
const WRITE_BATCH: usize = 512 * 1024;

/// Something for the writer thread.
enum OutItem {
    /// An encoded frame for connection generation `gen`.
    Frame { gen: u64, bytes: Vec<u8> },
    /// Acknowledge once everything queued before has been written.
    Barrier(Sender<()>),
}

/// The queue to the writer thread.
#[derive(Clone)]
pub(crate) struct Out {
    tx: SyncSender<OutItem>,
    gen: Arc<AtomicU64>,
}

impl Out {
    /// Block until every frame queued so far has been written (or dropped).
    pub(crate) fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(OutItem::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// Sends the frames of one request.
#[derive(Clone)]
pub(crate) struct Reply {
    out: Out,
    gen: u64,
    /// The request id every frame carries.
    pub(crate) id: u64,
}

impl Reply {
    /// Queue `msg` with `payload`. Frames of a stale connection are dropped; a
    /// reply whose header would exceed the cap becomes a `TooLarge` error.
    pub(crate) fn send(&self, msg: &Msg, payload: &[u8]) {
        if self.out.gen.load(Ordering::Acquire) != self.gen {
            return;
        }
        let mut bytes = encode_vec(self.id, msg, payload);
        let hlen = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        if hlen > MAX_HEADER {
            let e = err(
                ErrorKind::TooLarge,
                format!(
                    "the reply to request {} has a {hlen}-byte header, over the \
                     {MAX_HEADER}-byte cap; ask for less at a time",
                    self.id
                ),
            );
            bytes = encode_vec(self.id, &Msg::Error(e), &[]);
        }
        let _ = self.out.tx.send(OutItem::Frame {
            gen: self.gen,
            bytes,
        });
    }

    /// Reply with an error.
    pub(crate) fn error(&self, e: AgentError) {
        self.send(&Msg::Error(e), &[]);
    }

    /// Reply with `Ok`.
    pub(crate) fn ok(&self) {
        self.send(&Msg::Ok, &[]);
    }

    /// Whether this request's connection is still the current one.
    pub(crate) fn is_current(&self) -> bool {
        self.out.gen.load(Ordering::Acquire) == self.gen
    }
}

/// Per-request routing state for frames that follow a request.
pub(crate) enum Entry {
    /// A running exec: its control block and its stdin feed (when `stdin: true`).
    Exec {
        ctl: Arc<ExecCtl>,
        stdin: Option<Sender<StdinMsg>>,
    },
    /// An upload waiting for `Data` / `DataEnd`.
    Upload(SyncSender<UploadMsg>),
    /// An eval, queued or running.
    Eval {
        token: u64,
        cancelled: Arc<AtomicBool>,
    },
    /// A file read in progress (cancellable).
    Read(Arc<AtomicBool>),
}

struct Table {
    gen: u64,
    map: HashMap<u64, Entry>,
}

/// Everything request handlers share.
pub(crate) struct Ctx {
    out: Out,
    table: Mutex<Table>,
    /// The child reaper.
    pub(crate) reaper: Arc<Reaper>,
    /// The warm Python interpreter.
    pub(crate) interp: Arc<Interp>,
    /// Whether we are the guest's init (PID 1 duties, system changes allowed).
    pub(crate) pid1: bool,
    eval_tokens: AtomicU64,
    /// Pids of running execs' process groups, for shutdown.
    pub(crate) exec_groups: Mutex<HashMap<u64, i32>>,
    exec_seq: AtomicI32,
}

impl Ctx {
    /// Build the context and start the writer thread on `writer`.
    pub(crate) fn new(
        writer: PortWriter,
        reaper: Arc<Reaper>,
        interp: Arc<Interp>,
        pid1: bool,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::sync_channel(OUT_QUEUE);
        let gen = Arc::new(AtomicU64::new(1));
        let g = gen.clone();
        std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || writer_loop(writer, rx, g))
            .expect("spawn the writer thread");
        Arc::new(Self {
            out: Out { tx, gen },
            table: Mutex::new(Table {
                gen: 1,
                map: HashMap::new(),
            }),
            reaper,
            interp,
            pid1,
            eval_tokens: AtomicU64::new(1),
            exec_groups: Mutex::new(HashMap::new()),
            exec_seq: AtomicI32::new(0),
        })
    }

    /// The writer queue.
    pub(crate) fn out(&self) -> &Out {
        &self.out
    }

    fn reply(&self, id: u64) -> Reply {
        Reply {
            out: self.out.clone(),
            gen: self.out.gen.load(Ordering::Acquire),
            id,
        }
    }

    /// Start a new connection generation: detach every in-flight request.
    fn new_generation(&self) {
        let mut t = lock(&self.table);
        t.gen += 1;
        self.out.gen.store(t.gen, Ordering::Release);
        let n = t.map.len();
        t.map.clear();
        if n > 0 {
            log!("detached {n} in-flight request(s) from the previous connection");
        }
    }

    /// Remove `id`'s routing entry once its request is done.
    pub(crate) fn finish(&self, reply: &Reply) {
        let mut t = lock(&self.table);
        if t.gen == reply.gen {
            t.map.remove(&reply.id);
        }
    }

    /// A fresh sequence number (used to name temporary files).
    pub(crate) fn seq(&self) -> i32 {
        self.exec_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Insert a routing entry; false (and an error reply) when the id is taken.
    fn insert(&self, reply: &Reply, entry: Entry) -> bool {
        let mut t = lock(&self.table);
        if t.gen != reply.gen {
            return false;
        }
        if t.map.contains_key(&reply.id) {
            drop(t);
            reply.error(bad(format!(
                "request id {} is already in use by a running request: use a fresh id",
                reply.id
            )));
            return false;
        }
        t.map.insert(reply.id, entry);
        true
    }
}

fn writer_loop(mut w: PortWriter, rx: Receiver<OutItem>, gen: Arc<AtomicU64>) {
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    let mut barriers: Vec<Sender<()>> = Vec::new();
    let mut warned = false;
    while let Ok(first) = rx.recv() {
        let mut item = Some(first);
        while let Some(it) = item.take() {
            match it {
                OutItem::Frame { gen: g, bytes } => {
                    if g == gen.load(Ordering::Acquire) {
                        batch.extend_from_slice(&bytes);
                    }
                }
                OutItem::Barrier(tx) => barriers.push(tx),
            }
            if batch.len() >= WRITE_BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(next) => item = Some(next),
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => {}
            }
        }
        if !batch.is_empty() {
            match w.write_all(&batch) {
                Ok(()) => warned = false,
                Err(WriteError::Disconnected) => {}
                Err(WriteError::Io(e)) => {
                    if !warned {
                        log!("write to host failed, dropping output: {e}");
                        warned = true;
                    }
                }
            }
            batch.clear();
        }
        for b in barriers.drain(..) {
            let _ = b.send(());
        }
    }
}

/// Serve the host until the transport ends for good (never, for virtio).
pub(crate) fn serve(ctx: &Arc<Ctx>, mut reader: PortReader) {
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut connected = false;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                log!("read from host failed: {e}");
                0
            }
        };
        if n == 0 {
            if connected {
                log!("host disconnected");
            }
            connected = false;
            ctx.new_generation();
            dec.reset();
            if !reader.wait_for_host() {
                return;
            }
            continue;
        }
        connected = true;
        dec.feed(&buf[..n]);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => dispatch(ctx, f),
                Ok(None) => break,
                Err(e) => decode_error(ctx, e),
            }
        }
    }
}

fn decode_error(ctx: &Ctx, e: DecodeError) {
    let (id, kind) = match &e {
        DecodeError::FrameTooLarge { .. } => (CONNECTION_ID, ErrorKind::TooLarge),
        DecodeError::HeaderTooLarge { len, .. } if *len > MAX_HEADER => {
            (CONNECTION_ID, ErrorKind::TooLarge)
        }
        DecodeError::HeaderTooLarge { .. } => (CONNECTION_ID, ErrorKind::BadRequest),
        DecodeError::BadHeader { id, .. } => (id.unwrap_or(CONNECTION_ID), ErrorKind::BadRequest),
    };
    ctx.reply(id).error(err(kind, e.to_string()));
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        log!("cannot spawn a {name} thread: {e}");
    }
}

fn no_request(reply: &Reply) {
    reply.error(bad(format!(
        "no request with id {}: it finished, was never started, or belonged to a \
         previous connection",
        reply.id
    )));
}

fn dispatch(ctx: &Arc<Ctx>, f: Frame) {
    let Frame { id, msg, payload } = f;
    let reply = ctx.reply(id);
    let needs_id = !matches!(
        msg,
        Msg::Hello { .. } | Msg::Resumed { .. } | Msg::Ping | Msg::Info | Msg::Shutdown
    );
    if needs_id && id == CONNECTION_ID {
        reply.error(bad(format!(
            "`{}` needs a request id other than 0 (id 0 is reserved for connection-level frames)",
            msg_name(&msg)
        )));
        return;
    }
    match msg {
        Msg::Hello { protocol } => {
            ctx.new_generation();
            let reply = ctx.reply(id);
            if protocol != AGENT_PROTOCOL_VERSION {
                reply.error(bad(format!(
                    "host speaks agent protocol {protocol}, this agent speaks \
                     {AGENT_PROTOCOL_VERSION}: rebuild the image with a matching agent"
                )));
                return;
            }
            reply.send(
                &Msg::HelloOk {
                    protocol: AGENT_PROTOCOL_VERSION,
                    agent_version: env!("CARGO_PKG_VERSION").into(),
                    boot_id: system::boot_id(),
                },
                &[],
            );
        }
        Msg::Ping => reply.send(&Msg::Pong, &[]),
        Msg::Info => reply.send(&Msg::InfoOk(system::info()), &[]),
        Msg::Resumed {
            sandbox_id,
            hostname,
            unix_nanos,
            entropy_bytes,
        } => {
            let ctx = ctx.clone();
            spawn_named("resumed", move || {
                let r = system::resumed(
                    &ctx,
                    &sandbox_id,
                    &hostname,
                    unix_nanos,
                    entropy_bytes,
                    &payload,
                );
                match r {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(e),
                }
            });
        }
        Msg::Shutdown => {
            reply.ok();
            let ctx = ctx.clone();
            spawn_named("shutdown", move || pid1::shutdown(&ctx));
        }
        Msg::Exec(req) => {
            let ctl = Arc::new(ExecCtl::default());
            let (stdin_tx, stdin_rx) = if req.stdin {
                let (tx, rx) = mpsc::channel();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            let entry = Entry::Exec {
                ctl: ctl.clone(),
                stdin: stdin_tx,
            };
            if ctx.insert(&reply, entry) {
                let ctx = ctx.clone();
                spawn_named("exec", move || {
                    exec::run(&ctx, &reply, req, ctl, stdin_rx);
                    ctx.finish(&reply);
                });
            }
        }
        Msg::Stdin { eof } => {
            let t = lock(&ctx.table);
            match t.map.get(&id) {
                Some(Entry::Exec {
                    stdin: Some(tx), ..
                }) => {
                    let _ = tx.send(StdinMsg { data: payload, eof });
                }
                Some(Entry::Exec { stdin: None, .. }) => {
                    drop(t);
                    reply.error(bad(format!(
                        "exec {id} was started without `stdin: true`, so it takes no stdin"
                    )));
                }
                Some(_) => {
                    drop(t);
                    reply.error(bad(format!(
                        "request {id} is not an exec; stdin goes to execs"
                    )));
                }
                None => {
                    drop(t);
                    no_request(&reply);
                }
            }
        }
        Msg::Signal { signal } => {
            if !(1..=64).contains(&signal) {
                reply.error(bad(format!(
                    "signal {signal} is not a signal number (1-64)"
                )));
                return;
            }
            let t = lock(&ctx.table);
            match t.map.get(&id) {
                Some(Entry::Exec { ctl, .. }) => {
                    let ctl = ctl.clone();
                    drop(t);
                    if let Err(e) = ctl.signal(signal) {
                        reply.error(e);
                    }
                }
                Some(_) => {
                    drop(t);
                    reply.error(bad(format!(
                        "request {id} is not an exec; only execs take signals"
                    )));
                }
                None => {
                    drop(t);
                    no_request(&reply);
                }
            }
        }
        Msg::Cancel => cancel(ctx, &reply),
        Msg::WriteFile {
            path,
            mode,
            parents,
        } => {
            let (tx, rx) = mpsc::sync_channel(UPLOAD_QUEUE);
            if ctx.insert(&reply, Entry::Upload(tx)) {
                let ctx = ctx.clone();
                spawn_named("upload", move || {
                    files::upload(&ctx, &reply, &path, mode, parents, rx);
                });
            }
        }
        Msg::Capabilities => reply.send(
            &Msg::CapabilitiesOk {
                features: files::xfer::features(),
            },
            &[],
        ),
        Msg::ReadFileToDisk {
            path,
            file_offset,
            disk_offset,
            len,
            inline_below,
        } => spawn_named("read-disk", move || {
            files::read_to_disk(&reply, &path, file_offset, disk_offset, len, inline_below)
        }),
        Msg::Data | Msg::DataEnd | Msg::DiskData { .. } => {
            let end = matches!(msg, Msg::DataEnd);
            let mut t = lock(&ctx.table);
            let tx = match t.map.get(&id) {
                Some(Entry::Upload(tx)) => tx.clone(),
                Some(_) => {
                    drop(t);
                    reply.error(bad(format!(
                        "request {id} is not a file upload; `data` frames follow `write_file`"
                    )));
                    return;
                }
                None => {
                    drop(t);
                    no_request(&reply);
                    return;
                }
            };
            if end {
                t.map.remove(&id);
            }
            drop(t);
            let m = match msg {
                Msg::DataEnd => UploadMsg::End,
                Msg::DiskData { disk_offset, len } => UploadMsg::Disk { disk_offset, len },
                _ => UploadMsg::Data(payload),
            };
            // Blocks when the file writer is behind: backpressure on the host.
            let _ = tx.send(m);
        }
        Msg::ReadFile { path } => {
            let cancelled = Arc::new(AtomicBool::new(false));
            if ctx.insert(&reply, Entry::Read(cancelled.clone())) {
                let ctx = ctx.clone();
                spawn_named("read", move || {
                    files::read_file(&reply, &path, &cancelled);
                    ctx.finish(&reply);
                });
            }
        }
        Msg::Stat { path } => spawn_named("stat", move || files::stat(&reply, &path)),
        Msg::List { path } => spawn_named("list", move || files::list(&reply, &path)),
        Msg::Remove { path, recursive } => {
            spawn_named("remove", move || files::remove(&reply, &path, recursive))
        }
        Msg::Eval { code } => {
            let token = ctx.eval_tokens.fetch_add(1, Ordering::Relaxed);
            let cancelled = Arc::new(AtomicBool::new(false));
            let entry = Entry::Eval {
                token,
                cancelled: cancelled.clone(),
            };
            if ctx.insert(&reply, entry) {
                let ctx = ctx.clone();
                spawn_named("eval", move || {
                    match ctx.interp.eval(&code, token, &cancelled) {
                        Ok(r) => reply.send(&Msg::EvalOk(r), &[]),
                        Err(e) => reply.error(e),
                    }
                    ctx.finish(&reply);
                });
            }
        }
        m @ (Msg::HelloOk { .. }
        | Msg::Stdout
        | Msg::Stderr
        | Msg::Started { .. }
        | Msg::Exit(_)
        | Msg::Ok
        | Msg::Pong
        | Msg::InfoOk(_)
        | Msg::StatOk(_)
        | Msg::ListOk { .. }
        | Msg::ReadStart { .. }
        | Msg::EvalOk(_)
        | Msg::CapabilitiesOk { .. }
        | Msg::DiskDone { .. }
        | Msg::DiskReadOk { .. }
        | Msg::Error(_)) => {
            reply.error(bad(format!(
                "`{}` is an agent-to-host message; the agent does not accept it",
                msg_name(&m)
            )));
        }
    }
}

fn cancel(ctx: &Ctx, reply: &Reply) {
    let id = reply.id;
    let mut t = lock(&ctx.table);
    match t.map.get(&id) {
        Some(Entry::Exec { ctl, .. }) => {
            let ctl = ctl.clone();
            drop(t);
            ctl.cancel();
        }
        Some(Entry::Eval { token, cancelled }) => {
            cancelled.store(true, Ordering::Release);
            let token = *token;
            drop(t);
            ctx.interp.interrupt(token);
        }
        Some(Entry::Read(c)) => c.store(true, Ordering::Release),
        Some(Entry::Upload(_)) => {
            // Dropping the sender aborts the upload; its thread replies.
            t.map.remove(&id);
        }
        None => {
            drop(t);
            no_request(reply);
        }
    }
}

/// The wire name of a message (its serde tag).
fn msg_name(m: &Msg) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "message".into())
}
