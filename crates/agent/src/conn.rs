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
    encode_vec, AgentError, DecodeError, Decoder, ErrorKind, Msg, CONNECTION_ID, MAX_HEADER,
};

use crate::eval::Interp;
use crate::exec::{ExecCtl, StdinMsg};
use crate::files::UploadMsg;
use crate::port::{PortReader, PortWriter, WriteError};
use crate::reaper::Reaper;
use crate::util::{bad, err, lock, log};

/// Frames queued for the writer before producers block (backpressure).
const OUT_QUEUE: usize = 64;
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
    /// Following a background process's output (`Cancel` stops following).
    Attach(u32),
    /// A directory watch (`Cancel` ends it).
    Watch(Arc<AtomicBool>),
}

pub(crate) struct Table {
    gen: u64,
    pub(crate) map: HashMap<u64, Entry>,
}

/// Everything request handlers share.
pub(crate) struct Ctx {
    out: Out,
    pub(crate) table: Mutex<Table>,
    /// The child reaper.
    pub(crate) reaper: Arc<Reaper>,
    /// The warm Python interpreter.
    pub(crate) interp: Arc<Interp>,
    /// Whether we are the guest's init (PID 1 duties, system changes allowed).
    pub(crate) pid1: bool,
    pub(crate) eval_tokens: AtomicU64,
    /// Pids of running execs' process groups, for shutdown.
    pub(crate) exec_groups: Mutex<HashMap<u64, i32>>,
    exec_seq: AtomicI32,
    /// Background processes (they outlive connections).
    pub(crate) procs: crate::procs::Procs,
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
            procs: crate::procs::Procs::default(),
        })
    }

    /// The writer queue.
    pub(crate) fn out(&self) -> &Out {
        &self.out
    }

    pub(crate) fn reply(&self, id: u64) -> Reply {
        Reply {
            out: self.out.clone(),
            gen: self.out.gen.load(Ordering::Acquire),
            id,
        }
    }

    /// Start a new connection generation: detach every in-flight request.
    pub(crate) fn new_generation(&self) {
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
    pub(crate) fn insert(&self, reply: &Reply, entry: Entry) -> bool {
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
                Ok(Some(f)) => crate::dispatch::dispatch(ctx, f),
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
