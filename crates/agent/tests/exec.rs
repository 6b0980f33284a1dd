//! Exec over the real agent binary: exit codes, signals, env, cwd, stdin,
//! timeouts, cancellation and concurrency.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{argv, sh, Agent};
use zygote_proto::agent::{ErrorKind, ExecRequest, Msg};

#[test]
fn exit_codes_and_output() {
    let mut a = Agent::start();
    let out = a.exec(sh("echo hello; echo oops >&2; exit 3"));
    assert_eq!(out.stdout_str(), "hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let exit = out.exit.unwrap();
    assert_eq!(
        (exit.code, exit.signal, exit.timed_out),
        (Some(3), None, false)
    );
    assert!(out.pid.is_some());

    let out = a.exec(argv(&["true"]));
    assert_eq!(out.code(), Some(0));
}

#[test]
fn killed_by_signal() {
    let mut a = Agent::start();
    let out = a.exec(sh("kill -9 $$"));
    let exit = out.exit.unwrap();
    assert_eq!((exit.code, exit.signal), (None, Some(9)));
}

#[test]
fn env_is_base_plus_request() {
    let mut a = Agent::start();
    let mut req = sh("echo $FOO:$HOME:$LANG:$PATH");
    req.env.insert("FOO".into(), "bar".into());
    let out = a.exec(req);
    assert_eq!(
        out.stdout_str(),
        "bar:/root:C.UTF-8:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
}

#[test]
fn cwd_and_missing_cwd() {
    let mut a = Agent::start();
    let dir = common::tempdir("cwd");
    let mut req = argv(&["pwd"]);
    req.cwd = Some(dir.to_str().unwrap().into());
    assert_eq!(a.exec(req).stdout_str().trim(), dir.to_str().unwrap());

    let mut req = argv(&["pwd"]);
    req.cwd = Some("/definitely/not/here".into());
    let e = a.exec(req).error.expect("an error");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("/definitely/not/here"), "{}", e.message);
}

#[test]
fn empty_argv_and_missing_program() {
    let mut a = Agent::start();
    let e = a.exec(ExecRequest::default()).error.unwrap();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(e.message.contains("argv is empty"), "{}", e.message);

    let e = a.exec(argv(&["no-such-program-zyg"])).error.unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        e.message
            .contains("`no-such-program-zyg` not found in PATH"),
        "{}",
        e.message
    );
}

#[test]
fn stdin_is_fed_and_closed() {
    let mut a = Agent::start();
    let id = a.id();
    let mut req = argv(&["sh", "-c", "tr a-z A-Z; echo done"]);
    req.stdin = true;
    a.send(id, &Msg::Exec(req), &[]);
    a.send(id, &Msg::Stdin { eof: false }, b"hello ");
    a.send(id, &Msg::Stdin { eof: true }, b"world\n");
    let out = a.collect_exec(id);
    assert_eq!(out.stdout_str(), "HELLO WORLD\ndone\n");
    assert_eq!(out.code(), Some(0));

    // Without stdin: true, stdin is /dev/null.
    assert_eq!(a.exec(argv(&["cat"])).code(), Some(0));
}

#[test]
fn timeout_kills_the_whole_group() {
    let mut a = Agent::start();
    let dir = common::tempdir("timeout");
    let marker = dir.join("survivor");
    let mut req = sh(&format!(
        "(sleep 1; touch {}) & sleep 100",
        marker.display()
    ));
    req.timeout_ms = Some(500);
    let t = Instant::now();
    let out = a.exec(req);
    let took = t.elapsed();
    let exit = out.exit.unwrap();
    assert!(exit.timed_out);
    assert_eq!(exit.signal, Some(9));
    assert!(took < Duration::from_secs(3), "took {took:?}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!marker.exists(), "a grandchild survived the timeout");
}

#[test]
fn cancel_and_signal() {
    let mut a = Agent::start();
    let id = a.id();
    a.send(id, &Msg::Exec(argv(&["sleep", "100"])), &[]);
    assert!(matches!(a.next_for(id).msg, Msg::Started { .. }));
    a.send(id, &Msg::Signal { signal: 15 }, &[]);
    let out = a.collect_exec(id);
    assert_eq!(out.exit.unwrap().signal, Some(15));

    let id = a.id();
    a.send(id, &Msg::Exec(argv(&["sleep", "100"])), &[]);
    a.send(id, &Msg::Cancel, &[]);
    let out = a.collect_exec(id);
    let exit = out.exit.unwrap();
    assert_eq!((exit.signal, exit.timed_out), (Some(9), false));
}

#[test]
fn background_grandchild_does_not_hold_exit() {
    let mut a = Agent::start();
    let t = Instant::now();
    let out = a.exec(sh("sleep 30 & echo started"));
    assert_eq!(out.stdout_str(), "started\n");
    assert_eq!(out.code(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn concurrent_execs_interleave() {
    let mut a = Agent::start();
    let ids: Vec<u64> = (0..8).map(|_| a.id()).collect();
    for (i, id) in ids.iter().enumerate() {
        let req = sh(&format!(
            "for n in 1 2 3; do echo {i}-$n; sleep 0.1; done; exit {i}"
        ));
        a.send(*id, &Msg::Exec(req), &[]);
    }
    let t = Instant::now();
    let mut outs = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let out = a.collect_exec(*id);
        assert_eq!(out.code(), Some(i as i32));
        assert_eq!(out.stdout_str(), format!("{i}-1\n{i}-2\n{i}-3\n"));
        outs.insert(*id, out);
    }
    // Eight 0.3 s jobs ran at once, not one after another.
    assert!(
        t.elapsed() < Duration::from_millis(2000),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn big_output_is_chunked_and_complete() {
    let mut a = Agent::start();
    let out = a.exec(sh("head -c 3000000 /dev/zero | tr '\\0' x"));
    assert_eq!(out.stdout.len(), 3_000_000);
    assert!(out.stdout.iter().all(|&b| b == b'x'));
}

#[test]
fn stdin_for_unknown_id_is_an_error() {
    let mut a = Agent::start();
    a.send(4242, &Msg::Stdin { eof: true }, b"x");
    match a.next_for(4242).msg {
        Msg::Error(e) => {
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(
                e.message.contains("no request with id 4242"),
                "{}",
                e.message
            );
        }
        m => panic!("{m:?}"),
    }
    for msg in [
        Msg::Signal { signal: 9 },
        Msg::Cancel,
        Msg::Data,
        Msg::DataEnd,
    ] {
        a.send(4243, &msg, &[]);
        assert!(matches!(a.next_for(4243).msg, Msg::Error(_)));
    }
    assert_eq!(a.call(Msg::Ping), Msg::Pong);
}
