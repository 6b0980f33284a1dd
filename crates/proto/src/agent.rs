//! Agent protocol: length-prefixed frames with a request id on every frame.
//!
//! ```text
//! frame   := be32 body_len | body                 (body_len <= MAX_FRAME)
//! body    := be32 header_len | header | payload   (header_len <= MAX_HEADER)
//! header  := JSON of `Header { id, msg }`
//! payload := raw bytes (file data, stdout/stderr chunks, stdin)
//! ```
//!
//! Every request the host sends carries a fresh `id`; every frame the agent sends
//! about that request carries the same `id`, so many operations run at once over
//! one byte stream (exec output streams while a file uploads). Id 0 is reserved
//! for connection-level messages (`Hello`, `Resumed`, protocol errors).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest frame body accepted by either side (header + payload).
pub const MAX_FRAME: usize = 1024 * 1024 + MAX_HEADER;
/// Largest JSON header accepted by either side.
pub const MAX_HEADER: usize = 64 * 1024;
/// Preferred size of a data chunk (file data, process output).
pub const CHUNK: usize = 256 * 1024;
/// Id used for connection-level frames.
pub const CONNECTION_ID: u64 = 0;
/// Feature name in [`Msg::CapabilitiesOk`]: the guest sees the transfer disk and
/// the agent understands [`Msg::DiskData`] and [`Msg::ReadFileToDisk`].
pub const FEATURE_XFER_DISK: &str = "xfer_disk";
/// Serial number of the transfer disk (virtio-blk `serial=`), which the guest
/// reads from `/sys/block/vdX/serial` to find it.
pub const XFER_DISK_SERIAL: &str = "xfer";
/// Alignment of every offset on the transfer disk (O_DIRECT block size).
pub const XFER_ALIGN: u64 = 4096;
/// Largest `len` of one [`Msg::DiskData`] or [`Msg::ReadFileToDisk`].
pub const XFER_MAX_LEN: u64 = 256 * 1024 * 1024;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Request id; [`CONNECTION_ID`] for connection-level frames.
    pub id: u64,
    /// The message.
    pub msg: Msg,
    /// Raw payload bytes (may be empty).
    pub payload: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    id: u64,
    msg: Msg,
}

/// Every message either side can send. Requests go host → agent; replies and
/// stream items go agent → host. Unknown messages are a decode error, answered
/// with [`Msg::Error`] and never a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Msg {
    // ---- connection ----
    /// Host → agent, first frame after connecting.
    Hello {
        /// Host protocol version.
        protocol: u32,
    },
    /// Agent → host answer to `Hello`.
    HelloOk {
        /// Agent protocol version.
        protocol: u32,
        /// Agent build version.
        agent_version: String,
        /// `/proc/sys/kernel/random/boot_id` of this boot.
        boot_id: String,
    },
    /// Host → agent after a restore from a snapshot: new identity, entropy, clock.
    Resumed {
        /// The child's sandbox id.
        sandbox_id: String,
        /// The child's hostname.
        hostname: String,
        /// Host wall-clock time, nanoseconds since the Unix epoch.
        ///
        /// Encoded as a JSON integer; decoded through `u64` because serde's
        /// internally tagged enums cannot buffer a `u128` ("u128 is not supported").
        #[serde(deserialize_with = "de_u128_via_u64")]
        unix_nanos: u128,
        /// Fresh entropy (the payload carries the bytes); count in bytes.
        entropy_bytes: u32,
    },

    // ---- requests (host → agent) ----
    /// Liveness probe.
    Ping,
    /// Agent and guest information.
    Info,
    /// Start a process. Output streams back as `Stdout`/`Stderr`, then `Exit`.
    Exec(ExecRequest),
    /// Bytes for a running exec's stdin (payload); `eof` closes it.
    Stdin {
        /// Close stdin after these bytes.
        eof: bool,
    },
    /// Send a signal to a running exec's process group.
    Signal {
        /// Signal number.
        signal: i32,
    },
    /// Begin writing a file; data follows as `Data` frames, then `DataEnd`.
    WriteFile {
        /// Absolute path in the guest.
        path: String,
        /// Permission bits (default 0o644).
        mode: Option<u32>,
        /// Create missing parent directories (default true).
        parents: bool,
    },
    /// Read a file; data streams back as `Data` frames, then `DataEnd`.
    ReadFile {
        /// Absolute path in the guest.
        path: String,
    },
    /// Stat a path.
    Stat {
        /// Absolute path in the guest.
        path: String,
    },
    /// List a directory.
    List {
        /// Absolute path in the guest.
        path: String,
    },
    /// Remove a file or directory.
    Remove {
        /// Absolute path in the guest.
        path: String,
        /// Remove directories recursively.
        recursive: bool,
    },
    /// Evaluate Python code in the warm interpreter.
    Eval {
        /// Code: statements, optionally ending with an expression.
        code: String,
    },
    /// Power the guest off cleanly.
    Shutdown,
    /// Cancel a running request (exec: kill its process group).
    Cancel,
    /// Which optional features this agent has; answered with `CapabilitiesOk`.
    /// An agent that predates this message answers with `Error`: no features.
    Capabilities,
    /// Upload bytes staged on the transfer disk, for a `WriteFile` in progress
    /// (in place of `Data` frames; the two may mix): the agent appends `len`
    /// bytes read from byte `disk_offset` of the disk to the file and answers
    /// `DiskDone`, so the host may reuse that extent.
    DiskData {
        /// Byte offset on the transfer disk, a multiple of [`XFER_ALIGN`].
        disk_offset: u64,
        /// Bytes to append (at most [`XFER_MAX_LEN`]).
        len: u64,
    },
    /// Start a background process: answered with `Started` once it runs; its
    /// output is kept (bounded) for `Attach`. It outlives this connection.
    Spawn(crate::procs::SpawnProcess),
    /// List the background processes; answered with `ProcsOk`.
    Procs,
    /// Follow a background process's output: `Stdout`/`Stderr` (the kept tail
    /// first when `replay`), then `Exit`. `Cancel` stops following.
    Attach {
        /// Its pid.
        pid: u32,
        /// Send the kept output first.
        replay: bool,
    },
    /// Bytes (payload) for a background process's stdin (or terminal).
    ProcInput {
        /// Its pid.
        pid: u32,
        /// Close its stdin after these bytes.
        eof: bool,
    },
    /// Send a signal to a background process's process group.
    ProcSignal {
        /// Its pid.
        pid: u32,
        /// Signal number.
        signal: i32,
    },
    /// Resize a background process's terminal.
    ProcResize {
        /// Its pid.
        pid: u32,
        /// The new size.
        size: crate::procs::PtySize,
    },
    /// Create a directory.
    MakeDir {
        /// Absolute path in the guest.
        path: String,
        /// Create missing parents; an existing directory is not an error.
        parents: bool,
    },
    /// Rename (move) a path.
    Rename {
        /// Absolute source path.
        from: String,
        /// Absolute destination path.
        to: String,
    },
    /// List a directory tree down to `depth` (1: the directory itself);
    /// answered with `WalkOk`.
    Walk {
        /// Absolute path in the guest.
        path: String,
        /// Levels to descend (1 ..= `MAX_WALK_DEPTH`).
        depth: u32,
    },
    /// Watch a directory (inotify): `FsEvent`s stream until `Cancel`.
    Watch {
        /// Absolute path of a directory.
        path: String,
        /// Watch its subdirectories too.
        recursive: bool,
    },
    /// Attach the sandbox's volumes. First each slot in `reset` is cleared:
    /// file systems on its disk shut down (no more I/O to the device) and
    /// lazily unmounted, and the device probed again; then each mount is made
    /// (directories created, the device probed again first when asked).
    Mounts {
        /// Serials of the slots to clear (`vol0`, ...).
        reset: Vec<String>,
        /// What to mount.
        mounts: Vec<MountSpec>,
    },
    /// Read up to `len` bytes of a file from `file_offset` into the transfer disk
    /// at `disk_offset` (the last block zero-padded); answered with `DiskReadOk`.
    /// Each window is its own request, so a host may keep several in flight.
    ReadFileToDisk {
        /// Absolute path in the guest.
        path: String,
        /// Where in the file to start.
        file_offset: u64,
        /// Byte offset on the transfer disk, a multiple of [`XFER_ALIGN`].
        disk_offset: u64,
        /// Most bytes to read (at most [`XFER_MAX_LEN`]).
        len: u64,
        /// When the whole file is smaller than this, send its bytes inline as
        /// the reply's payload instead (small files skip the disk).
        inline_below: u64,
    },

    // ---- stream items and replies (agent → host) ----
    /// Chunk of a process's stdout (payload).
    Stdout,
    /// Chunk of a process's stderr (payload).
    Stderr,
    /// A process started.
    Started {
        /// Guest pid.
        pid: u32,
    },
    /// A process ended.
    Exit(ExitStatus),
    /// A chunk of file data (payload), either direction.
    Data,
    /// End of file data, either direction.
    DataEnd,
    /// Generic success for requests that return nothing else.
    Ok,
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Info`.
    InfoOk(AgentInfo),
    /// Answer to `Stat`.
    StatOk(FileStat),
    /// Answer to `List`.
    ListOk {
        /// Directory entries, sorted by name.
        entries: Vec<DirEntry>,
    },
    /// Answer to `ReadFile` before its data: the file's size.
    ReadStart {
        /// Size in bytes.
        size: u64,
        /// Permission bits.
        mode: u32,
    },
    /// Answer to `Eval`.
    EvalOk(EvalResult),
    /// Answer to `Capabilities`.
    CapabilitiesOk {
        /// Feature names, e.g. [`FEATURE_XFER_DISK`].
        features: Vec<String>,
    },
    /// Answer to one `DiskData`: its bytes are in the file, the extent is free.
    DiskDone {
        /// Bytes appended.
        len: u64,
    },
    /// Answer to `ReadFileToDisk`.
    DiskReadOk {
        /// The file's size when it was opened.
        size: u64,
        /// Permission bits.
        mode: u32,
        /// Bytes read (now on the disk, or in the payload when `inline`); fewer
        /// than asked only at the end of the file.
        len: u64,
        /// The bytes are this frame's payload, not on the disk.
        inline: bool,
        /// False for devices, FIFOs and the like: nothing was read, use `ReadFile`.
        regular: bool,
    },
    /// Answer to `Procs`.
    ProcsOk {
        /// Background processes, oldest first.
        procs: Vec<crate::procs::ProcInfo>,
    },
    /// Answer to `Walk`.
    WalkOk {
        /// Entries, in walk order (a directory before what it holds).
        entries: Vec<crate::procs::WalkEntry>,
    },
    /// An event of a `Watch`.
    FsEvent(crate::procs::FsEvent),
    /// The request failed.
    Error(AgentError),
}

/// One volume to mount (see `Msg::Mounts`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// The serial of the virtio disk holding it (`vol0`, ...).
    pub serial: String,
    /// Absolute mount point in the guest.
    pub path: String,
    /// Mount read-only.
    pub read_only: bool,
    /// Probe the device again first: the host put a new disk in the slot
    /// since the guest last looked, so its size changed.
    pub reprobe: bool,
}

/// Deserialize a `u128` field that fits a `u64` (see `Msg::Resumed::unix_nanos`).
fn de_u128_via_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
    u64::deserialize(d).map(u128::from)
}

/// A process to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments; exactly one of `argv` and `shell` is set.
    #[serde(default)]
    pub argv: Vec<String>,
    /// A shell command line run with `/bin/sh -c`.
    #[serde(default)]
    pub shell: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default `/`).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Keep stdin open for `Stdin` frames; otherwise stdin is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Run as this guest user (a name from `/etc/passwd`); default root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Kill the process group after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExitStatus {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// The timeout fired and the process group was killed.
    pub timed_out: bool,
}

/// Agent and guest facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    /// Agent build version.
    pub agent_version: String,
    /// Protocol version.
    pub protocol: u32,
    /// Seconds since the guest booted.
    pub uptime_secs: f64,
    /// This boot's id.
    pub boot_id: String,
    /// Guest hostname.
    pub hostname: String,
    /// Guest kernel release.
    pub kernel: String,
}

/// File metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Permission bits and file type (`st_mode`).
    pub mode: u32,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirEntry {
    /// Entry name.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
}

/// Result of an `Eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvalResult {
    /// `repr` of the trailing expression, when there was one and it was not None.
    pub result: Option<String>,
    /// The exception line (`ValueError: ...`) when the code raised.
    pub error: Option<String>,
    /// The formatted traceback when the code raised.
    pub traceback: Option<String>,
    /// What the code printed to stdout.
    pub stdout: String,
    /// What the code printed to stderr.
    pub stderr: String,
}

/// A request failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentError {
    /// Machine-readable kind.
    pub kind: ErrorKind,
    /// Human-readable message naming the value and the fix.
    pub message: String,
}

/// Kinds of agent errors; the daemon maps them to HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was malformed (bad path, empty argv, bad frame).
    BadRequest,
    /// The path does not exist.
    NotFound,
    /// Permission denied.
    PermissionDenied,
    /// The frame exceeded a size cap.
    TooLarge,
    /// Anything else on the guest side.
    Internal,
}

/// A frame that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame body is larger than [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the {max}-byte cap")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The header is larger than [`MAX_HEADER`] or the body.
    #[error("frame header of {len} bytes exceeds the {max}-byte cap or the frame body")]
    HeaderTooLarge {
        /// Announced header length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The header is not valid JSON of a known message; `id` is recovered when possible.
    #[error("malformed frame header: {reason}")]
    BadHeader {
        /// Request id, if the header had one.
        id: Option<u64>,
        /// What serde said.
        reason: String,
    },
}

/// Encode one frame into `out` (appends).
pub fn encode(id: u64, msg: &Msg, payload: &[u8], out: &mut Vec<u8>) {
    let header = serde_json::to_vec(&HeaderRef { id, msg }).unwrap_or_default();
    let body_len = 4 + header.len() + payload.len();
    out.reserve(4 + body_len);
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// Encode one frame into a fresh buffer.
pub fn encode_vec(id: u64, msg: &Msg, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode(id, msg, payload, &mut v);
    v
}

#[derive(Serialize)]
struct HeaderRef<'a> {
    id: u64,
    msg: &'a Msg,
}

/// Incremental decoder: feed bytes as they arrive, take frames out.
///
/// An oversized frame is reported once and its bytes are skipped, so the stream
/// stays in sync and the peer gets an error reply instead of a dropped link.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
    skip: usize,
}

impl Decoder {
    /// A new, empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.skip > 0 {
            let n = self.skip.min(bytes.len());
            self.skip -= n;
            self.buf.extend_from_slice(&bytes[n..]);
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Drop all buffered state (after a reconnect).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.skip = 0;
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let avail = &self.buf[self.pos..];
        if avail.len() < 4 {
            self.compact();
            return Ok(None);
        }
        let body_len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if body_len > MAX_FRAME {
            let have = avail.len() - 4;
            let drop = have.min(body_len);
            self.pos += 4 + drop;
            self.skip = body_len - drop;
            self.compact();
            return Err(DecodeError::FrameTooLarge {
                len: body_len,
                max: MAX_FRAME,
            });
        }
        if avail.len() < 4 + body_len {
            self.compact();
            return Ok(None);
        }
        let body = &avail[4..4 + body_len];
        self.pos += 4 + body_len;
        let res = decode_body(body);
        self.compact();
        res.map(Some)
    }

    fn compact(&mut self) {
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos > 1 << 20) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

/// Decode a frame body (without its 4-byte length prefix).
pub fn decode_body(body: &[u8]) -> Result<Frame, DecodeError> {
    if body.len() < 4 {
        return Err(DecodeError::HeaderTooLarge {
            len: body.len(),
            max: MAX_HEADER,
        });
    }
    let hlen = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
    if hlen > MAX_HEADER || hlen > body.len() - 4 {
        return Err(DecodeError::HeaderTooLarge {
            len: hlen,
            max: MAX_HEADER,
        });
    }
    let header = &body[4..4 + hlen];
    match serde_json::from_slice::<Header>(header) {
        Ok(h) => Ok(Frame {
            id: h.id,
            msg: h.msg,
            payload: body[4 + hlen..].to_vec(),
        }),
        Err(e) => {
            #[derive(Deserialize)]
            struct IdOnly {
                id: u64,
            }
            let id = serde_json::from_slice::<IdOnly>(header).ok().map(|h| h.id);
            Err(DecodeError::BadHeader {
                id,
                reason: e.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_many_frames_split_anywhere() {
        let frames = vec![
            (1, Msg::Ping, vec![]),
            (
                2,
                Msg::Exec(ExecRequest {
                    argv: vec!["echo".into(), "hi".into()],
                    ..Default::default()
                }),
                vec![],
            ),
            (3, Msg::Data, (0..=255u8).cycle().take(70_000).collect()),
            (
                0,
                Msg::HelloOk {
                    protocol: 1,
                    agent_version: "x".into(),
                    boot_id: "b".into(),
                },
                vec![],
            ),
        ];
        let mut wire = Vec::new();
        for (id, m, p) in &frames {
            encode(*id, m, p, &mut wire);
        }
        for step in [1usize, 3, 7, 4096, wire.len()] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for c in wire.chunks(step) {
                d.feed(c);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), frames.len(), "step {step}");
            for (f, (id, m, p)) in got.iter().zip(&frames) {
                assert_eq!(f.id, *id);
                assert_eq!(&f.msg, m);
                assert_eq!(&f.payload, p);
            }
        }
    }

    #[test]
    fn oversized_frame_is_reported_and_skipped() {
        let mut wire = Vec::new();
        let big = (MAX_FRAME + 10) as u32;
        wire.extend_from_slice(&big.to_be_bytes());
        wire.extend(std::iter::repeat_n(0xAAu8, big as usize));
        encode(9, &Msg::Ping, &[], &mut wire);
        let mut d = Decoder::new();
        let mut errs = 0;
        let mut frames = Vec::new();
        for c in wire.chunks(100_000) {
            d.feed(c);
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(DecodeError::FrameTooLarge { .. }) => errs += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert_eq!(errs, 1);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].msg, Msg::Ping);
    }

    #[test]
    fn resumed_round_trips() {
        let msg = Msg::Resumed {
            sandbox_id: "sb".into(),
            hostname: "h".into(),
            unix_nanos: 1_700_000_000_123_456_789,
            entropy_bytes: 32,
        };
        let wire = encode_vec(0, &msg, &[1; 32]);
        let f = decode_body(&wire[4..]).unwrap();
        assert_eq!(f.msg, msg);
    }

    #[test]
    fn transfer_disk_messages_round_trip() {
        for msg in [
            Msg::Capabilities,
            Msg::CapabilitiesOk {
                features: vec![FEATURE_XFER_DISK.into()],
            },
            Msg::DiskData {
                disk_offset: 1 << 30,
                len: 3 * 1024 * 1024 + 777,
            },
            Msg::DiskDone { len: 5 },
            Msg::ReadFileToDisk {
                path: "/tmp/x".into(),
                file_offset: 1 << 33,
                disk_offset: 4096,
                len: XFER_MAX_LEN,
                inline_below: 1 << 20,
            },
            Msg::DiskReadOk {
                size: 1 << 33,
                mode: 0o644,
                len: 0,
                inline: false,
                regular: true,
            },
        ] {
            let wire = encode_vec(3, &msg, &[]);
            assert_eq!(decode_body(&wire[4..]).unwrap().msg, msg);
        }
    }

    #[test]
    fn bad_header_recovers_id() {
        let header = br#"{"id":7,"msg":{"type":"nope"}}"#;
        let mut body = (header.len() as u32).to_be_bytes().to_vec();
        body.extend_from_slice(header);
        match decode_body(&body) {
            Err(DecodeError::BadHeader { id, .. }) => assert_eq!(id, Some(7)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut d = Decoder::new();
        let mut x: u32 = 12345;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            d.feed(&x.to_le_bytes()[..(x % 4) as usize]);
            let _ = d.next_frame();
        }
    }
}
