//! The Connect protocol with its JSON codec, as envd speaks it (server side
//! only): unary calls (`application/json` both ways, errors as
//! `{"code": "not_found", "message": ...}` with an HTTP status), server
//! streams and client streams (`application/connect+json`: envelopes of
//! `[flags u8][length u32 BE][JSON]`, the last one flagged `0x02` carrying
//! `{}` or `{"error": {...}}`). No compression: a compressed message is
//! refused. Every message is bounded by [`MAX_MESSAGE`].

use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::stream::{BoxStream, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zygote_engine::{EngineError, ErrorClass};

/// Largest message (request or response) in bytes.
pub(crate) const MAX_MESSAGE: usize = 4 << 20;
/// Flag of a compressed envelope.
const FLAG_COMPRESSED: u8 = 0x01;
/// Flag of the end-of-stream envelope.
pub(crate) const FLAG_END: u8 = 0x02;
/// Content type of unary JSON calls.
const UNARY_JSON: &str = "application/json";
/// Content type of streaming JSON calls.
const STREAM_JSON: &str = "application/connect+json";
/// The header by which E2B's SDKs ask for keepalive messages (seconds).
pub(crate) const KEEPALIVE_HEADER: &str = "keepalive-ping-interval";

/// Connect error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub(crate) enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code.
    fn status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// An RPC error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RpcError {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl RpcError {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> RpcError {
        RpcError::new(Code::InvalidArgument, message)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code.as_str(), "message": self.message})
    }

    /// The answer of a unary call that failed.
    pub(crate) fn unary_response(self) -> Response {
        let body = serde_json::to_vec(&self.json()).unwrap_or_default();
        (
            self.code.status(),
            [(header::CONTENT_TYPE, UNARY_JSON)],
            body,
        )
            .into_response()
    }

    /// The end-of-stream envelope of a stream that failed.
    fn end_envelope(&self) -> Bytes {
        let body =
            serde_json::to_vec(&serde_json::json!({"error": self.json()})).unwrap_or_default();
        envelope(FLAG_END, &body)
    }
}

impl From<EngineError> for RpcError {
    fn from(e: EngineError) -> RpcError {
        let message = e.to_string();
        let code = match (&e, e.class()) {
            // The sandbox went away under the call: what E2B's proxy says then.
            (EngineError::NotFound { id }, _) => {
                return RpcError::new(Code::Unavailable, format!("The sandbox {id} was not found"))
            }
            (EngineError::NotRunning { .. }, _) => Code::Unavailable,
            (_, ErrorClass::BadRequest) => Code::InvalidArgument,
            (_, ErrorClass::NotFound) => Code::NotFound,
            (_, ErrorClass::Conflict) => Code::FailedPrecondition,
            (_, ErrorClass::TooLarge)
            | (_, ErrorClass::InsufficientStorage)
            | (_, ErrorClass::TooMany) => Code::ResourceExhausted,
            (_, ErrorClass::Forbidden) => Code::PermissionDenied,
            (_, ErrorClass::Timeout) => Code::DeadlineExceeded,
            (_, ErrorClass::Unavailable) => Code::Unavailable,
            (_, ErrorClass::NotImplemented) => Code::Unimplemented,
            (_, ErrorClass::Internal) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::warn!(error = %e, "envd call failed");
        }
        RpcError::new(code, message)
    }
}

/// One envelope.
pub(crate) fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flags);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// `value` as JSON bytes.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<Bytes, RpcError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| RpcError::new(Code::Internal, format!("encoding the answer: {e}")))
}

/// The media type of a request, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Refuse a compressed request body.
fn check_identity(headers: &HeaderMap, name: &str) -> Result<(), RpcError> {
    match headers.get(name).and_then(|v| v.to_str().ok()) {
        None | Some("identity") | Some("") => Ok(()),
        Some(other) => Err(RpcError::new(
            Code::Unimplemented,
            format!("{name} `{other}` is not supported: send uncompressed messages"),
        )),
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(bytes).map_err(|e| RpcError::invalid(format!("invalid message: {e}")))
}

/// A unary request's message.
pub(crate) struct Unary<T>(pub(crate) T);

/// Why a unary request was refused (answered as a unary error).
pub(crate) struct UnaryRejection(RpcError);

impl IntoResponse for UnaryRejection {
    fn into_response(self) -> Response {
        self.0.unary_response()
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Unary<T> {
    type Rejection = UnaryRejection;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers();
        let mt = media_type(headers);
        if mt != UNARY_JSON {
            return Err(UnaryRejection(RpcError::invalid(format!(
                "content type `{mt}` is not supported: send `{UNARY_JSON}` (Connect with the JSON codec)"
            ))));
        }
        check_identity(headers, "content-encoding").map_err(UnaryRejection)?;
        let body = axum::body::to_bytes(req.into_body(), MAX_MESSAGE)
            .await
            .map_err(|_| {
                UnaryRejection(RpcError::new(
                    Code::ResourceExhausted,
                    format!("the message is over {MAX_MESSAGE} bytes or broke off"),
                ))
            })?;
        let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
        parse(body).map(Unary).map_err(UnaryRejection)
    }
}

/// A successful unary answer.
pub(crate) fn unary_ok<T: Serialize>(value: &T) -> Response {
    match to_json(value) {
        Ok(b) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, UNARY_JSON)],
            Body::from(b),
        )
            .into_response(),
        Err(e) => e.unary_response(),
    }
}

/// A unary handler's result, answered either way.
pub(crate) fn unary<T: Serialize>(r: Result<T, RpcError>) -> Response {
    match r {
        Ok(v) => unary_ok(&v),
        Err(e) => e.unary_response(),
    }
}

/// The message of a server-streaming request.
pub(crate) struct StreamRequest<T> {
    pub(crate) msg: T,
    /// Keepalive period the client asked for.
    pub(crate) keepalive: Option<Duration>,
}

/// Why a streaming request was refused (answered as a stream that ends in an error).
pub(crate) struct StreamRejection(RpcError);

impl IntoResponse for StreamRejection {
    fn into_response(self) -> Response {
        stream_error(self.0)
    }
}

/// The keepalive period a request asks for (1 s to 1 h).
pub(crate) fn keepalive_of(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(KEEPALIVE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| (1..=3600).contains(s))
        .map(Duration::from_secs)
}

fn check_stream_type(headers: &HeaderMap) -> Result<(), RpcError> {
    let mt = media_type(headers);
    if mt != STREAM_JSON {
        return Err(RpcError::invalid(format!(
            "content type `{mt}` is not supported: send `{STREAM_JSON}` (Connect streaming with the JSON codec)"
        )));
    }
    check_identity(headers, "connect-content-encoding")
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StreamRequest<T> {
    type Rejection = StreamRejection;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        check_stream_type(req.headers()).map_err(StreamRejection)?;
        let keepalive = keepalive_of(req.headers());
        let mut reader = EnvelopeReader::new(req.into_body());
        let (flags, payload) = reader
            .next()
            .await
            .map_err(StreamRejection)?
            .ok_or_else(|| StreamRejection(RpcError::invalid("the request holds no message")))?;
        if flags & FLAG_END != 0 {
            return Err(StreamRejection(RpcError::invalid(
                "the request holds no message (only an end of stream)",
            )));
        }
        let msg = parse(&payload).map_err(StreamRejection)?;
        Ok(StreamRequest { msg, keepalive })
    }
}

/// The envelopes of a streamed request body, one at a time.
pub(crate) struct EnvelopeReader {
    body: BodyDataStream,
    buf: BytesMut,
    done: bool,
}

impl EnvelopeReader {
    pub(crate) fn new(body: Body) -> EnvelopeReader {
        EnvelopeReader {
            body: body.into_data_stream(),
            buf: BytesMut::new(),
            done: false,
        }
    }

    /// Check a streamed request's headers (content type, no compression).
    pub(crate) fn check(headers: &HeaderMap) -> Result<(), RpcError> {
        check_stream_type(headers)
    }

    /// The next envelope (flags, payload); `None` at the end of the body.
    pub(crate) async fn next(&mut self) -> Result<Option<(u8, Bytes)>, RpcError> {
        loop {
            if self.buf.len() >= 5 {
                let flags = self.buf[0];
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if len > MAX_MESSAGE {
                    return Err(RpcError::new(
                        Code::ResourceExhausted,
                        format!("a message of {len} bytes is over the {MAX_MESSAGE}-byte cap"),
                    ));
                }
                if flags & FLAG_COMPRESSED != 0 {
                    return Err(RpcError::new(
                        Code::Unimplemented,
                        "compressed messages are not supported: send them uncompressed",
                    ));
                }
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    return Ok(Some((flags, self.buf.split_to(len).freeze())));
                }
            }
            if self.done {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(RpcError::invalid("the request ended inside a message"))
                };
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(RpcError::new(
                        Code::Canceled,
                        format!("the request broke off: {e}"),
                    ))
                }
                None => self.done = true,
            }
        }
    }

    /// The next message, parsed; `None` at the end.
    pub(crate) async fn next_msg<T: DeserializeOwned>(&mut self) -> Result<Option<T>, RpcError> {
        match self.next().await? {
            None => Ok(None),
            Some((flags, _)) if flags & FLAG_END != 0 => Ok(None),
            Some((_, payload)) => parse(&payload).map(Some),
        }
    }
}

fn stream_headers() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CONTENT_TYPE, HeaderValue::from_static(STREAM_JSON))]
}

/// A stream that ends at once with `e`.
pub(crate) fn stream_error(e: RpcError) -> Response {
    (
        StatusCode::OK,
        stream_headers(),
        Body::from(e.end_envelope()),
    )
        .into_response()
}

/// A stream of one message, then the end (the answer of a client stream).
pub(crate) fn stream_single(r: Result<Bytes, RpcError>) -> Response {
    let body = match r {
        Ok(msg) => {
            let mut b = BytesMut::new();
            b.extend_from_slice(&envelope(0, &msg));
            b.extend_from_slice(&envelope(FLAG_END, b"{}"));
            b.freeze()
        }
        Err(e) => e.end_envelope(),
    };
    (StatusCode::OK, stream_headers(), Body::from(body)).into_response()
}

/// Messages of a server stream (JSON bytes each), an error ending it.
pub(crate) type Messages = BoxStream<'static, Result<Bytes, RpcError>>;

enum Next {
    Msg(Option<Result<Bytes, RpcError>>),
    Tick,
}

enum Phase {
    Open {
        msgs: Messages,
        ticker: Option<(tokio::time::Interval, Bytes)>,
    },
    Done,
}

/// A server stream: `msgs` framed as envelopes, `keepalive` messages when
/// nothing else was sent for its period, and the end-of-stream envelope
/// (`{}`, or the error that ended `msgs`). Dropping the body (the client
/// went) drops `msgs`.
pub(crate) fn stream_response(msgs: Messages, keepalive: Option<(Duration, Bytes)>) -> Response {
    let ticker = keepalive.map(|(period, msg)| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        (t, msg)
    });
    let body = futures::stream::unfold(Phase::Open { msgs, ticker }, |phase| async move {
        let Phase::Open {
            mut msgs,
            mut ticker,
        } = phase
        else {
            return None;
        };
        let next = match &mut ticker {
            Some((t, _)) => tokio::select! {
                m = msgs.next() => Next::Msg(m),
                _ = t.tick() => Next::Tick,
            },
            None => Next::Msg(msgs.next().await),
        };
        let item = match next {
            Next::Tick => {
                let ka = ticker.as_ref().map(|(_, k)| k.clone()).unwrap_or_default();
                (envelope(0, &ka), Phase::Open { msgs, ticker })
            }
            Next::Msg(Some(Ok(m))) => {
                if let Some((t, _)) = &mut ticker {
                    t.reset();
                }
                (envelope(0, &m), Phase::Open { msgs, ticker })
            }
            Next::Msg(Some(Err(e))) => (e.end_envelope(), Phase::Done),
            Next::Msg(None) => (envelope(FLAG_END, b"{}"), Phase::Done),
        };
        Some((Ok::<_, std::convert::Infallible>(item.0), item.1))
    });
    (StatusCode::OK, stream_headers(), Body::from_stream(body)).into_response()
}

/// A slot for one more open stream, or `resource_exhausted` when all
/// [`crate::MAX_STREAMS`] are taken.
pub(crate) fn stream_slot(
    streams: &std::sync::Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, RpcError> {
    streams.clone().try_acquire_owned().map_err(|_| {
        RpcError::new(
            Code::ResourceExhausted,
            format!(
                "{} streams (process outputs, watches) are open: close some first",
                crate::MAX_STREAMS
            ),
        )
    })
}

/// `msgs`, holding `slot` until the stream is dropped.
pub(crate) fn holding(msgs: Messages, slot: tokio::sync::OwnedSemaphorePermit) -> Messages {
    msgs.map(move |m| {
        let _ = &slot;
        m
    })
    .boxed()
}

/// Every envelope of a whole body (tests and clients of this module).
#[cfg(test)]
pub(crate) fn split_envelopes(mut b: &[u8]) -> Vec<(u8, serde_json::Value)> {
    let mut out = Vec::new();
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        let v = serde_json::from_slice(&b[5..5 + len]).unwrap();
        out.push((b[0], v));
        b = &b[5 + len..];
    }
    assert!(b.is_empty(), "trailing bytes");
    out
}

/// A stream of `Result<T>` as [`Messages`].
pub(crate) fn messages<T, S>(s: S) -> Messages
where
    T: Serialize,
    S: Stream<Item = Result<T, RpcError>> + Send + 'static,
{
    s.map(|r| r.and_then(|v| to_json(&v))).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn envelopes_round_trip_and_are_bounded() {
        let mut body = Vec::new();
        body.extend_from_slice(&envelope(0, br#"{"a":1}"#));
        body.extend_from_slice(&envelope(FLAG_END, b"{}"));
        // Split at every byte boundary: the reader reassembles.
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            body.iter().map(|b| Ok(Bytes::from(vec![*b]))).collect();
        let mut r = EnvelopeReader::new(Body::from_stream(futures::stream::iter(chunks)));
        let (f, p) = r.next().await.unwrap().unwrap();
        assert_eq!((f, &p[..]), (0, &br#"{"a":1}"#[..]));
        let (f, _) = r.next().await.unwrap().unwrap();
        assert_eq!(f, FLAG_END);
        assert!(r.next().await.unwrap().is_none());

        let mut big = vec![0u8];
        big.extend_from_slice(&((MAX_MESSAGE as u32) + 1).to_be_bytes());
        let e = EnvelopeReader::new(Body::from(big))
            .next()
            .await
            .unwrap_err();
        assert_eq!(e.code, Code::ResourceExhausted);
        let e = EnvelopeReader::new(Body::from(vec![1u8, 0, 0, 0, 0]))
            .next()
            .await
            .unwrap_err();
        assert_eq!(e.code, Code::Unimplemented);
        let e = EnvelopeReader::new(Body::from(vec![0u8, 0, 0, 0, 9, b'{']))
            .next()
            .await
            .unwrap_err();
        assert!(e.message.contains("ended inside"), "{e:?}");
    }

    #[tokio::test]
    async fn server_streams_end_with_the_end_envelope() {
        let msgs = messages(futures::stream::iter(vec![
            Ok(serde_json::json!({"n": 1})),
            Err(RpcError::new(Code::NotFound, "gone")),
        ]));
        let resp = stream_response(msgs, None);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let env = split_envelopes(&body);
        assert_eq!(env[0], (0, serde_json::json!({"n": 1})));
        assert_eq!(env[1].0, FLAG_END);
        assert_eq!(env[1].1["error"]["code"], "not_found");
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let held = stream_slot(&slots).unwrap();
        assert_eq!(
            stream_slot(&slots).unwrap_err().code,
            Code::ResourceExhausted
        );
        let s = holding(futures::stream::empty().boxed(), held);
        drop(s);
        assert!(stream_slot(&slots).is_ok());
    }

    #[test]
    fn engine_errors_map_to_codes() {
        let e: RpcError = EngineError::NotFound { id: "sb1".into() }.into();
        assert_eq!(e.code, Code::Unavailable);
        assert!(e.message.contains("was not found"));
        let e: RpcError = EngineError::BadRequest("bad".into()).into();
        assert_eq!((e.code, e.message.as_str()), (Code::InvalidArgument, "bad"));
        assert_eq!(Code::NotFound.status(), StatusCode::NOT_FOUND);
        assert_eq!(Code::Unauthenticated.status(), StatusCode::UNAUTHORIZED);
    }
}
