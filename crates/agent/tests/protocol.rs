//! Connection-level behaviour: handshake, malformed and oversized frames,
//! info, resume and shutdown in dev mode.

mod common;

use common::Agent;
use zygote_proto::agent::{ErrorKind, Msg, MAX_FRAME};

#[test]
fn hello_ping_info() {
    let mut a = Agent::start();
    assert_eq!(a.call(Msg::Ping), Msg::Pong);
    match a.call(Msg::Info) {
        Msg::InfoOk(i) => {
            assert_eq!(i.agent_version, env!("CARGO_PKG_VERSION"));
            assert!(i.uptime_secs > 0.0);
            assert!(!i.kernel.is_empty());
            assert!(!i.boot_id.is_empty());
        }
        m => panic!("{m:?}"),
    }
}

#[test]
fn protocol_mismatch_is_an_error() {
    let mut a = Agent::spawn();
    a.send(0, &Msg::Hello { protocol: 999 }, &[]);
    match a.next_for(0).msg {
        Msg::Error(e) => {
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains("999"));
        }
        m => panic!("{m:?}"),
    }
}

fn frame_with_header(header: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((4 + header.len()) as u32).to_be_bytes());
    v.extend_from_slice(&(header.len() as u32).to_be_bytes());
    v.extend_from_slice(header);
    v
}

#[test]
fn malformed_header_gets_an_error_with_its_id() {
    let mut a = Agent::start();
    a.raw(&frame_with_header(
        br#"{"id":77,"msg":{"type":"no_such_message"}}"#,
    ));
    match a.next_for(77).msg {
        Msg::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest),
        m => panic!("{m:?}"),
    }
    a.raw(&frame_with_header(b"not json at all"));
    match a.next_for(0).msg {
        Msg::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest),
        m => panic!("{m:?}"),
    }
    // Header length longer than the body.
    let mut v = Vec::new();
    v.extend_from_slice(&8u32.to_be_bytes());
    v.extend_from_slice(&1000u32.to_be_bytes());
    v.extend_from_slice(b"abcd");
    a.raw(&v);
    assert!(matches!(a.next_for(0).msg, Msg::Error(_)));
    assert_eq!(a.call(Msg::Ping), Msg::Pong);
}

#[test]
fn oversized_frame_is_refused_and_the_agent_keeps_serving() {
    let mut a = Agent::start();
    let big = MAX_FRAME + 1000;
    let mut v = Vec::with_capacity(big + 4);
    v.extend_from_slice(&(big as u32).to_be_bytes());
    v.resize(big + 4, 0xAB);
    a.raw(&v);
    match a.next_for(0).msg {
        Msg::Error(e) => assert_eq!(e.kind, ErrorKind::TooLarge),
        m => panic!("{m:?}"),
    }
    assert_eq!(a.call(Msg::Ping), Msg::Pong);
}

#[test]
fn agent_to_host_messages_and_id_zero_are_refused() {
    let mut a = Agent::start();
    assert!(matches!(a.call(Msg::Pong), Msg::Error(_)));
    a.send(0, &Msg::Exec(common::argv(&["true"])), &[]);
    assert!(matches!(a.next_for(0).msg, Msg::Error(_)));
    assert_eq!(a.call(Msg::Ping), Msg::Pong);
}

#[test]
fn duplicate_ids_are_refused() {
    let mut a = Agent::start();
    let id = a.id();
    a.send(id, &Msg::Exec(common::argv(&["sleep", "100"])), &[]);
    assert!(matches!(a.next_for(id).msg, Msg::Started { .. }));
    a.send(id, &Msg::Exec(common::argv(&["true"])), &[]);
    match a.next_for(id).msg {
        Msg::Error(e) => assert!(e.message.contains("already in use")),
        m => panic!("{m:?}"),
    }
    a.send(id, &Msg::Cancel, &[]);
    assert!(a.collect_exec(id).exit.is_some());
}

#[test]
fn resumed_checks_its_payload_and_replies_ok() {
    let mut a = Agent::start();
    let msg = Msg::Resumed {
        sandbox_id: "sb-1".into(),
        hostname: "sb-1".into(),
        unix_nanos: 1_700_000_000_000_000_000,
        entropy_bytes: 32,
    };
    a.send(0, &msg, &[7u8; 32]);
    assert_eq!(a.next_for(0).msg, Msg::Ok);
    a.send(0, &msg, &[7u8; 3]);
    assert!(matches!(a.next_for(0).msg, Msg::Error(_)));
}

#[test]
fn garbage_bodies_never_kill_the_agent() {
    let mut a = Agent::start();
    let mut x: u32 = 0x1234_5678;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut junk = Vec::new();
    for _ in 0..5_000 {
        // Well-framed bodies with random header lengths and random bytes,
        // sometimes JSON-ish, so the stream stays in sync.
        let body_len = (rnd() % 96) as usize;
        let mut body: Vec<u8> = (0..body_len).map(|_| rnd() as u8).collect();
        if body_len >= 4 {
            let hlen = match rnd() % 3 {
                0 => (body_len - 4) as u32,
                1 => rnd() % 200,
                _ => rnd(),
            };
            body[..4].copy_from_slice(&hlen.to_be_bytes());
            if rnd() % 2 == 0 && body_len > 12 {
                body[4..12].copy_from_slice(br#"{"id":1,"#);
            }
        }
        junk.extend_from_slice(&(body_len as u32).to_be_bytes());
        junk.extend_from_slice(&body);
    }
    a.raw(&junk);
    let id = a.id();
    a.send(id, &Msg::Ping, &[]);
    assert_eq!(a.next_for(id).msg, Msg::Pong);
}

#[test]
fn shutdown_in_dev_mode_exits_cleanly() {
    let mut a = Agent::start();
    assert_eq!(a.call(Msg::Shutdown), Msg::Ok);
    let st = a.close();
    assert!(st.success(), "{st:?}");
}
