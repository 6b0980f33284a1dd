//! Test harness: the real `zygote-agent` binary in `--stdio` mode, driven with
//! `zygote_proto` frames over real pipes.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use zygote_proto::agent::{encode_vec, Decoder, ExitStatus, Frame, Msg};
use zygote_proto::AGENT_PROTOCOL_VERSION;

pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Frame>,
    pending: Vec<Frame>,
    next_id: u64,
}

impl Agent {
    /// Spawn the agent and do the handshake.
    pub fn start() -> Self {
        let mut a = Self::spawn();
        a.send(
            0,
            &Msg::Hello {
                protocol: AGENT_PROTOCOL_VERSION,
            },
            &[],
        );
        match a.next_for(0).msg {
            Msg::HelloOk { protocol, .. } => assert_eq!(protocol, AGENT_PROTOCOL_VERSION),
            m => panic!("expected hello_ok, got {m:?}"),
        }
        a
    }

    /// Spawn the agent without a handshake.
    pub fn spawn() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zygote-agent"))
            .arg("--stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn zygote-agent");
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut dec = Decoder::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = match out.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                dec.feed(&buf[..n]);
                while let Some(f) = dec.next_frame().expect("agent sent a bad frame") {
                    if tx.send(f).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            rx,
            pending: Vec::new(),
            next_id: 100,
        }
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn send(&mut self, id: u64, msg: &Msg, payload: &[u8]) {
        self.raw(&encode_vec(id, msg, payload));
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        let s = self.stdin.as_mut().expect("stdin open");
        s.write_all(bytes).expect("write to agent");
        s.flush().unwrap();
    }

    /// The next frame for `id` (frames for other ids are kept for later).
    pub fn next_for(&mut self, id: u64) -> Frame {
        if let Some(i) = self.pending.iter().position(|f| f.id == id) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(f) if f.id == id => return f,
                Ok(f) => self.pending.push(f),
                Err(RecvTimeoutError::Timeout) => panic!("no frame for id {id} within {TIMEOUT:?}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("agent exited while waiting for id {id}")
                }
            }
        }
    }

    /// Send a request and return its first reply.
    pub fn call(&mut self, msg: Msg) -> Msg {
        let id = self.id();
        self.send(id, &msg, &[]);
        self.next_for(id).msg
    }

    /// Start an exec and collect (stdout, stderr, exit).
    pub fn exec(&mut self, req: zygote_proto::agent::ExecRequest) -> ExecOut {
        let id = self.id();
        self.send(id, &Msg::Exec(req), &[]);
        self.collect_exec(id)
    }

    pub fn collect_exec(&mut self, id: u64) -> ExecOut {
        let mut out = ExecOut::default();
        loop {
            let f = self.next_for(id);
            match f.msg {
                Msg::Started { pid } => out.pid = Some(pid),
                Msg::Stdout => out.stdout.extend_from_slice(&f.payload),
                Msg::Stderr => out.stderr.extend_from_slice(&f.payload),
                Msg::Exit(st) => {
                    out.exit = Some(st);
                    return out;
                }
                Msg::Error(e) => {
                    out.error = Some(e);
                    return out;
                }
                m => panic!("unexpected {m:?} for exec {id}"),
            }
        }
    }

    /// Close the agent's stdin and wait for it to exit.
    pub fn close(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default, Debug)]
pub struct ExecOut {
    pub pid: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Option<ExitStatus>,
    pub error: Option<zygote_proto::agent::AgentError>,
}

impl ExecOut {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn code(&self) -> Option<i32> {
        self.exit.as_ref().and_then(|e| e.code)
    }
}

pub fn sh(cmd: &str) -> zygote_proto::agent::ExecRequest {
    zygote_proto::agent::ExecRequest {
        shell: Some(cmd.into()),
        ..Default::default()
    }
}

pub fn argv(args: &[&str]) -> zygote_proto::agent::ExecRequest {
    zygote_proto::agent::ExecRequest {
        argv: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A fresh temporary directory (absolute path).
pub fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "zygote-agent-test-{tag}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
