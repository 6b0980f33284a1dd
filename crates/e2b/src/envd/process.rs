//! envd's `process.Process` service mapped onto the engine's background
//! processes: `Start` starts one and follows it (its start event with the
//! pid first, then its output, then its end), `Connect` follows a running
//! one, and input, signals, stdin's end and terminal sizes go to it by pid
//! or tag.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::response::Response;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use zygote_engine::{ExecItem, ExecSpec, ProcessSpec, Program};
use zygote_proto::agent::ExitStatus;

use crate::connect::{
    holding, keepalive_of, messages, stream_error, stream_response, stream_single, stream_slot,
    to_json, unary, EnvelopeReader, RpcError, StreamRequest, Unary,
};
use crate::route::Target;
use crate::App;

/// `bytes` fields are base64 in proto3 JSON.
pub(crate) mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s.trim()))
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessConfig {
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Size {
    #[serde(default)]
    cols: u32,
    #[serde(default)]
    rows: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pty {
    size: Option<Size>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRequest {
    process: ProcessConfig,
    pty: Option<Pty>,
    tag: Option<String>,
    stdin: Option<bool>,
}

/// A process by pid or by tag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Selector {
    pid: Option<u32>,
    tag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ByProcess {
    #[serde(default)]
    process: Selector,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default, with = "b64")]
    stdin: Vec<u8>,
    #[serde(default, with = "b64")]
    pty: Vec<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendInputRequest {
    #[serde(default)]
    process: Selector,
    #[serde(default)]
    input: Input,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendSignalRequest {
    #[serde(default)]
    process: Selector,
    #[serde(default)]
    signal: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateRequest {
    #[serde(default)]
    process: Selector,
    pty: Option<Pty>,
}

/// One message of a `StreamInput` client stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
enum StreamInputEvent {
    #[serde(rename = "start")]
    Start(ByProcess),
    #[serde(rename = "data")]
    Data(DataInput),
    #[serde(rename = "keepalive")]
    Keepalive {},
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataInput {
    #[serde(default)]
    input: Input,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamInputRequest {
    event: StreamInputEvent,
}

/// `ProcessEvent` inside `StartResponse` / `ConnectResponse`.
#[derive(Debug, Serialize)]
struct EventMsg {
    event: Event,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum Event {
    Start { pid: u32 },
    Data(Data),
    End(End),
    Keepalive {},
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum Data {
    Stdout(#[serde(with = "b64")] Vec<u8>),
    Stderr(#[serde(with = "b64")] Vec<u8>),
    Pty(#[serde(with = "b64")] Vec<u8>),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct End {
    exit_code: i32,
    exited: bool,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Empty {}

/// How Go names a process's end (what envd reports as `status`).
fn end_of(e: &ExitStatus) -> End {
    let status = match (e.code, e.signal) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(9)) => "signal: killed".into(),
        (None, Some(15)) => "signal: terminated".into(),
        (None, Some(s)) => format!("signal: {s}"),
        (None, None) => "exited".into(),
    };
    End {
        exit_code: e.code.unwrap_or(-1),
        exited: e.code.is_some(),
        error: e
            .timed_out
            .then(|| "the process ran past its timeout".to_string()),
        status,
    }
}

fn keepalive_msg() -> bytes::Bytes {
    to_json(&EventMsg {
        event: Event::Keepalive {},
    })
    .unwrap_or_default()
}

/// The pid a selector names.
pub(crate) async fn pid_of(app: &App, id: &str, s: &Selector) -> Result<u32, RpcError> {
    match (s.pid, s.tag.as_deref()) {
        (Some(pid), _) => Ok(pid),
        (None, Some(tag)) => app
            .engine
            .processes(id)
            .await?
            .into_iter()
            .find(|p| p.tag.as_deref() == Some(tag) && p.exit.is_none())
            .map(|p| p.pid)
            .ok_or_else(|| {
                RpcError::new(
                    crate::connect::Code::NotFound,
                    format!("no running process tagged {tag:?}"),
                )
            }),
        (None, None) => Err(RpcError::invalid(
            "the process selector names no pid and no tag",
        )),
    }
}

/// A process's events after its start event (output as `pty` for a terminal).
fn follow(pid: u32, items: zygote_engine::ExecItems, pty: bool) -> crate::connect::Messages {
    let start = futures::stream::once(async move {
        Ok(EventMsg {
            event: Event::Start { pid },
        })
    });
    let rest = items.filter_map(move |it| async move {
        let ev = match it {
            Err(e) => return Some(Err(RpcError::from(e))),
            Ok(ExecItem::Started(_)) => return None,
            Ok(ExecItem::Stdout(b)) if pty => Event::Data(Data::Pty(b.to_vec())),
            Ok(ExecItem::Stdout(b)) => Event::Data(Data::Stdout(b.to_vec())),
            Ok(ExecItem::Stderr(b)) => Event::Data(Data::Stderr(b.to_vec())),
            Ok(ExecItem::Exit(e)) => Event::End(end_of(&e)),
        };
        Some(Ok(EventMsg { event: ev }))
    });
    messages(start.chain(rest))
}

pub(crate) async fn start(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    req: StreamRequest<StartRequest>,
) -> Response {
    let StartRequest {
        process,
        pty,
        tag,
        stdin,
    } = req.msg;
    let mut argv = vec![process.cmd];
    argv.extend(process.args);
    let size = pty.map(|p| {
        let s = p.size.unwrap_or_default();
        (
            u16::try_from(s.rows.max(1)).unwrap_or(u16::MAX),
            u16::try_from(s.cols.max(1)).unwrap_or(u16::MAX),
        )
    });
    let spec = ProcessSpec {
        exec: ExecSpec {
            program: Program::Argv(argv),
            env: process.envs,
            cwd: process.cwd.filter(|c| !c.is_empty()),
            stdin: None,
            timeout: None,
            user: None,
        },
        stdin: stdin.unwrap_or(false) || size.is_some(),
        pty: size,
        tag,
    };
    let started = async {
        let slot = stream_slot(&app.streams)?;
        let pid = app.engine.start_process(&t.id, spec).await?;
        let items = app.engine.attach(&t.id, pid, true).await?;
        Ok::<_, RpcError>((pid, items, slot))
    };
    match started.await {
        Ok((pid, items, slot)) => stream_response(
            holding(follow(pid, items, size.is_some()), slot),
            req.keepalive.map(|k| (k, keepalive_msg())),
        ),
        Err(e) => stream_error(e),
    }
}

pub(crate) async fn connect(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    req: StreamRequest<ByProcess>,
) -> Response {
    let followed = async {
        let slot = stream_slot(&app.streams)?;
        let pid = pid_of(&app, &t.id, &req.msg.process).await?;
        let info = app.engine.processes(&t.id).await?;
        let pty = info.iter().any(|p| p.pid == pid && p.pty);
        let items = app.engine.attach(&t.id, pid, false).await?;
        Ok::<_, RpcError>((pid, items, pty, slot))
    };
    match followed.await {
        Ok((pid, items, pty, slot)) => stream_response(
            holding(follow(pid, items, pty), slot),
            req.keepalive.map(|k| (k, keepalive_msg())),
        ),
        Err(e) => stream_error(e),
    }
}

#[derive(Debug, Serialize)]
struct ProcessInfo {
    config: ConfigOut,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
}

#[derive(Debug, Serialize)]
struct ConfigOut {
    cmd: String,
    args: Vec<String>,
    envs: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct ListResponse {
    processes: Vec<ProcessInfo>,
}

pub(crate) async fn list(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(_): Unary<serde_json::Value>,
) -> Response {
    let r = async {
        let procs = app.engine.processes(&t.id).await?;
        let processes = procs
            .into_iter()
            .filter(|p| p.exit.is_none())
            .map(|p| ProcessInfo {
                config: ConfigOut {
                    cmd: p.cmd,
                    args: Vec::new(),
                    envs: BTreeMap::new(),
                },
                pid: p.pid,
                tag: p.tag,
            })
            .collect();
        Ok(ListResponse { processes })
    };
    unary(r.await)
}

pub(crate) async fn send_input(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(req): Unary<SendInputRequest>,
) -> Response {
    let r = async {
        let pid = pid_of(&app, &t.id, &req.process).await?;
        let mut data = req.input.stdin;
        data.extend(req.input.pty);
        app.engine.process_input(&t.id, pid, data, false).await?;
        Ok(Empty {})
    };
    unary(r.await)
}

pub(crate) async fn close_stdin(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(req): Unary<ByProcess>,
) -> Response {
    let r = async {
        let pid = pid_of(&app, &t.id, &req.process).await?;
        app.engine
            .process_input(&t.id, pid, Vec::new(), true)
            .await?;
        Ok(Empty {})
    };
    unary(r.await)
}

/// A signal as proto3 JSON gives it: its enum name or its number.
fn signal_of(v: &serde_json::Value) -> Result<i32, RpcError> {
    match v {
        serde_json::Value::String(s) if s == "SIGNAL_SIGKILL" => Ok(9),
        serde_json::Value::String(s) if s == "SIGNAL_SIGTERM" => Ok(15),
        serde_json::Value::Number(n) if matches!(n.as_i64(), Some(9) | Some(15)) => {
            Ok(n.as_i64().unwrap_or(9) as i32)
        }
        other => Err(RpcError::invalid(format!(
            "signal {other} is not supported: send SIGNAL_SIGKILL or SIGNAL_SIGTERM"
        ))),
    }
}

pub(crate) async fn send_signal(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(req): Unary<SendSignalRequest>,
) -> Response {
    let r = async {
        let sig = signal_of(&req.signal)?;
        let pid = pid_of(&app, &t.id, &req.process).await?;
        app.engine.signal_process(&t.id, pid, sig).await?;
        Ok(Empty {})
    };
    unary(r.await)
}

pub(crate) async fn update(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    Unary(req): Unary<UpdateRequest>,
) -> Response {
    let r = async {
        let pid = pid_of(&app, &t.id, &req.process).await?;
        if let Some(size) = req.pty.and_then(|p| p.size) {
            let clamp = |v: u32| u16::try_from(v.max(1)).unwrap_or(u16::MAX);
            app.engine
                .resize_process(&t.id, pid, clamp(size.rows), clamp(size.cols))
                .await?;
        }
        Ok(Empty {})
    };
    unary(r.await)
}

/// `StreamInput`: a client stream (the start naming the process, then input
/// in order), answered once it ends.
pub(crate) async fn stream_input(
    State(app): State<App>,
    Extension(t): Extension<Target>,
    req: Request,
) -> Response {
    if let Err(e) = EnvelopeReader::check(req.headers()) {
        return stream_error(e);
    }
    let _ = keepalive_of(req.headers());
    let mut reader = EnvelopeReader::new(Body::new(req.into_body()));
    let r = async {
        let mut pid = None;
        while let Some(msg) = reader.next_msg::<StreamInputRequest>().await? {
            match msg.event {
                StreamInputEvent::Start(s) => pid = Some(pid_of(&app, &t.id, &s.process).await?),
                StreamInputEvent::Data(d) => {
                    let Some(pid) = pid else {
                        return Err(RpcError::invalid(
                            "input came before the start message naming the process",
                        ));
                    };
                    let mut data = d.input.stdin;
                    data.extend(d.input.pty);
                    app.engine.process_input(&t.id, pid, data, false).await?;
                }
                StreamInputEvent::Keepalive {} => {}
            }
        }
        to_json(&Empty {})
    };
    stream_single(r.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_proto3_json() {
        let j = |e: Event| serde_json::to_value(EventMsg { event: e }).unwrap();
        assert_eq!(
            j(Event::Start { pid: 7 }),
            serde_json::json!({"event": {"start": {"pid": 7}}})
        );
        assert_eq!(
            j(Event::Data(Data::Stdout(b"hi".to_vec()))),
            serde_json::json!({"event": {"data": {"stdout": "aGk="}}})
        );
        let end = end_of(&ExitStatus {
            code: Some(3),
            signal: None,
            timed_out: false,
        });
        assert_eq!(
            j(Event::End(end)),
            serde_json::json!({"event": {"end": {"exitCode": 3, "exited": true, "status": "exit status 3"}}})
        );
        assert_eq!(
            j(Event::Keepalive {}),
            serde_json::json!({"event": {"keepalive": {}}})
        );
        let m: StreamInputRequest =
            serde_json::from_str(r#"{"event":{"data":{"input":{"stdin":"aGk="}}}}"#).unwrap();
        assert!(matches!(m.event, StreamInputEvent::Data(d) if d.input.stdin == b"hi"));
        assert_eq!(signal_of(&serde_json::json!("SIGNAL_SIGKILL")).unwrap(), 9);
        assert!(signal_of(&serde_json::json!("SIGNAL_SIGHUP")).is_err());
    }
}
