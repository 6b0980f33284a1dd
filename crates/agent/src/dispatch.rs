//! Routing one decoded frame to what handles it: requests start on threads of
//! their own; frames that follow a request (stdin, signals, upload data,
//! cancel) go to the request's entry in the connection's table.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use zygote_proto::agent::{Frame, Msg, CONNECTION_ID};
use zygote_proto::AGENT_PROTOCOL_VERSION;

use crate::conn::{Ctx, Entry, Reply};
use crate::exec::{ExecCtl, StdinMsg};
use crate::files::UploadMsg;
use crate::util::{bad, lock, log};
use crate::{exec, files, pid1, procs, system, tree, volumes};

/// Uploaded chunks queued per file before the reader blocks.
const UPLOAD_QUEUE: usize = 16;

/// Handle one frame from the host.
pub(crate) fn dispatch(ctx: &Arc<Ctx>, f: Frame) {
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
        Msg::Hello { protocol } => hello(ctx, id, protocol),
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
        Msg::Exec(req) => start_exec(ctx, reply, req),
        Msg::Stdin { eof } => stdin(ctx, &reply, payload, eof),
        Msg::Signal { signal } => signal_exec(ctx, &reply, signal),
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
        m @ (Msg::Data | Msg::DataEnd | Msg::DiskData { .. }) => {
            upload_frame(ctx, &reply, m, payload)
        }
        Msg::ReadFile { path } => read_file(ctx, reply, path),
        Msg::Stat { path } => spawn_named("stat", move || files::stat(&reply, &path)),
        Msg::List { path } => spawn_named("list", move || files::list(&reply, &path)),
        Msg::Remove { path, recursive } => {
            spawn_named("remove", move || files::remove(&reply, &path, recursive))
        }
        Msg::Eval { code } => eval(ctx, reply, code),
        Msg::Spawn(req) => {
            let ctx = ctx.clone();
            spawn_named("spawn", move || procs::spawn(&ctx, &reply, req));
        }
        Msg::Procs => reply.send(
            &Msg::ProcsOk {
                procs: ctx.procs.list(),
            },
            &[],
        ),
        Msg::Attach { pid, replay } => {
            if ctx.insert(&reply, Entry::Attach(pid)) && !procs::attach(ctx, &reply, pid, replay) {
                ctx.finish(&reply);
            }
        }
        Msg::ProcInput { pid, eof } => answer(&reply, procs::input(ctx, pid, &payload, eof)),
        Msg::ProcSignal { pid, signal } => answer(&reply, procs::signal(ctx, pid, signal)),
        Msg::ProcResize { pid, size } => answer(&reply, procs::resize(ctx, pid, size)),
        Msg::MakeDir { path, parents } => answer(&reply, tree::make_dir(&path, parents)),
        Msg::Rename { from, to } => answer(&reply, tree::rename(&from, &to)),
        Msg::Mounts { reset, mounts } => spawn_named("mounts", move || {
            answer(&reply, volumes::mounts(&reset, &mounts))
        }),
        Msg::Walk { path, depth } => spawn_named("walk", move || match tree::walk(&path, depth) {
            Ok(entries) => reply.send(&Msg::WalkOk { entries }, &[]),
            Err(e) => reply.error(e),
        }),
        Msg::Watch { path, recursive } => {
            let cancelled = Arc::new(AtomicBool::new(false));
            if ctx.insert(&reply, Entry::Watch(cancelled.clone())) {
                let ctx = ctx.clone();
                spawn_named("watch", move || {
                    tree::watch(&reply, &path, recursive, &cancelled);
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
        | Msg::ProcsOk { .. }
        | Msg::WalkOk { .. }
        | Msg::FsEvent(_)
        | Msg::Error(_)) => {
            reply.error(bad(format!(
                "`{}` is an agent-to-host message; the agent does not accept it",
                msg_name(&m)
            )));
        }
    }
}

/// `Ok`, or the error.
fn answer(reply: &Reply, r: Result<(), zygote_proto::agent::AgentError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// `Hello`: a new connection generation, and the versions compared.
fn hello(ctx: &Arc<Ctx>, id: u64, protocol: u32) {
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

/// `Exec`: the process runs on its own thread; its entry routes stdin and signals.
fn start_exec(ctx: &Arc<Ctx>, reply: Reply, req: zygote_proto::agent::ExecRequest) {
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

/// `Stdin` for a running exec.
fn stdin(ctx: &Ctx, reply: &Reply, data: Vec<u8>, eof: bool) {
    let id = reply.id;
    let t = lock(&ctx.table);
    match t.map.get(&id) {
        Some(Entry::Exec {
            stdin: Some(tx), ..
        }) => {
            let _ = tx.send(StdinMsg { data, eof });
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
            no_request(reply);
        }
    }
}

/// `Signal` for a running exec's process group.
fn signal_exec(ctx: &Ctx, reply: &Reply, signal: i32) {
    let id = reply.id;
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
            no_request(reply);
        }
    }
}

/// `Data`, `DataEnd` or `DiskData` for a running upload.
fn upload_frame(ctx: &Ctx, reply: &Reply, msg: Msg, payload: Vec<u8>) {
    let id = reply.id;
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
            no_request(reply);
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

/// `ReadFile`: streamed on its own thread, cancellable.
fn read_file(ctx: &Arc<Ctx>, reply: Reply, path: String) {
    let cancelled = Arc::new(AtomicBool::new(false));
    if ctx.insert(&reply, Entry::Read(cancelled.clone())) {
        let ctx = ctx.clone();
        spawn_named("read", move || {
            files::read_file(&reply, &path, &cancelled);
            ctx.finish(&reply);
        });
    }
}

/// `Eval` in the warm interpreter (queued behind a running one), cancellable.
fn eval(ctx: &Arc<Ctx>, reply: Reply, code: String) {
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
        Some(Entry::Read(c)) | Some(Entry::Watch(c)) => c.store(true, Ordering::Release),
        Some(Entry::Attach(pid)) => {
            let pid = *pid;
            t.map.remove(&id);
            drop(t);
            procs::detach(ctx, pid, reply);
            reply.ok();
        }
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
