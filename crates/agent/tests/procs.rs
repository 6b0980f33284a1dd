//! Background processes, terminals and directory trees over the real agent
//! binary: spawn, list, attach (replayed tail and live output), input, signals,
//! a shell on a terminal, resize; mkdir, rename, walk, watch.

mod common;

use std::time::{Duration, Instant};

use common::{sh, tempdir, Agent};
use zygote_proto::agent::{ErrorKind, Msg};
use zygote_proto::procs::{FsEventKind, PtySize, SpawnProcess};

fn spawn(a: &mut Agent, req: SpawnProcess) -> u32 {
    match a.call(Msg::Spawn(req)) {
        Msg::Started { pid } => pid,
        m => panic!("spawn: {m:?}"),
    }
}

/// Output of an attach until `Exit` (or until `until` appears, when given).
fn follow(
    a: &mut Agent,
    id: u64,
    until: Option<&str>,
) -> (String, Option<zygote_proto::agent::ExitStatus>) {
    let mut out = String::new();
    loop {
        let f = a.next_for(id);
        match f.msg {
            Msg::Stdout | Msg::Stderr => {
                out.push_str(&String::from_utf8_lossy(&f.payload));
                if until.is_some_and(|u| out.contains(u)) {
                    return (out, None);
                }
            }
            Msg::Exit(x) => return (out, Some(x)),
            m => panic!("attach {id}: {m:?}"),
        }
    }
}

#[test]
fn background_process_lifecycle() {
    let mut a = Agent::start();
    let pid = spawn(
        &mut a,
        SpawnProcess {
            exec: zygote_proto::agent::ExecRequest {
                stdin: true,
                ..sh("echo started; while read l; do echo got:$l; done; echo bye >&2")
            },
            tag: Some("reader".into()),
            ..Default::default()
        },
    );
    // Listed, running.
    let Msg::ProcsOk { procs } = a.call(Msg::Procs) else {
        panic!()
    };
    let p = procs.iter().find(|p| p.pid == pid).unwrap();
    assert_eq!(
        (p.tag.as_deref(), p.exit.clone(), p.stdin),
        (Some("reader"), None, true)
    );
    // A late attach sees what it printed before (the kept tail).
    let id = a.id();
    a.send(id, &Msg::Attach { pid, replay: true }, &[]);
    let (out, _) = follow(&mut a, id, Some("started\n"));
    assert_eq!(out, "started\n");
    // Input reaches it; output follows live; closing stdin ends it.
    assert_eq!(a.call(Msg::ProcInput { pid, eof: false }), Msg::Ok);
    let iid = a.id();
    a.send(iid, &Msg::ProcInput { pid, eof: false }, b"one\n");
    assert_eq!(a.next_for(iid).msg, Msg::Ok);
    let (out, _) = follow(&mut a, id, Some("got:one\n"));
    assert!(out.ends_with("got:one\n"), "{out:?}");
    let iid = a.id();
    a.send(iid, &Msg::ProcInput { pid, eof: true }, b"two\n");
    assert_eq!(a.next_for(iid).msg, Msg::Ok);
    let (out, exit) = follow(&mut a, id, None);
    assert!(
        out.contains("got:two\n") && out.contains("bye\n"),
        "{out:?}"
    );
    assert_eq!(exit.unwrap().code, Some(0));
    // Exited: still listed with its status; input refused; attach gives the exit.
    let Msg::ProcsOk { procs } = a.call(Msg::Procs) else {
        panic!()
    };
    assert_eq!(
        procs
            .iter()
            .find(|p| p.pid == pid)
            .unwrap()
            .exit
            .as_ref()
            .unwrap()
            .code,
        Some(0)
    );
    match a.call(Msg::ProcInput { pid, eof: false }) {
        Msg::Error(e) => assert!(e.message.contains("takes no input"), "{e:?}"),
        m => panic!("{m:?}"),
    }
    let id = a.id();
    a.send(id, &Msg::Attach { pid, replay: false }, &[]);
    assert!(matches!(a.next_for(id).msg, Msg::Exit(_)));
}

#[test]
fn signals_unknown_pids_and_processes_outlive_the_connection() {
    let mut a = Agent::start();
    let pid = spawn(
        &mut a,
        SpawnProcess {
            exec: sh("trap 'echo term; exit 7' TERM; echo ready; while true; do sleep 0.05; done"),
            ..Default::default()
        },
    );
    let id = a.id();
    a.send(id, &Msg::Attach { pid, replay: true }, &[]);
    follow(&mut a, id, Some("ready"));
    // A new connection generation (a reconnecting host): the process runs on.
    a.send(
        0,
        &Msg::Hello {
            protocol: zygote_proto::AGENT_PROTOCOL_VERSION,
        },
        &[],
    );
    assert!(matches!(a.next_for(0).msg, Msg::HelloOk { .. }));
    let Msg::ProcsOk { procs } = a.call(Msg::Procs) else {
        panic!()
    };
    assert!(procs.iter().any(|p| p.pid == pid && p.exit.is_none()));
    let id = a.id();
    a.send(id, &Msg::Attach { pid, replay: false }, &[]);
    assert_eq!(a.call(Msg::ProcSignal { pid, signal: 15 }), Msg::Ok);
    let (out, exit) = follow(&mut a, id, None);
    assert!(out.contains("term"), "{out:?}");
    assert_eq!(exit.unwrap().code, Some(7));
    for m in [
        Msg::ProcSignal {
            pid: 999_999,
            signal: 9,
        },
        Msg::ProcInput {
            pid: 999_999,
            eof: true,
        },
    ] {
        match a.call(m) {
            Msg::Error(e) => assert_eq!(e.kind, ErrorKind::NotFound),
            m => panic!("{m:?}"),
        }
    }
    match a.call(Msg::ProcSignal { pid, signal: 99 }) {
        Msg::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest),
        m => panic!("{m:?}"),
    }
}

#[test]
fn a_shell_on_a_terminal() {
    let mut a = Agent::start();
    let pid = spawn(
        &mut a,
        SpawnProcess {
            exec: zygote_proto::agent::ExecRequest {
                argv: vec!["/bin/sh".into(), "-i".into()],
                ..Default::default()
            },
            pty: Some(PtySize { rows: 24, cols: 80 }),
            ..Default::default()
        },
    );
    let id = a.id();
    a.send(id, &Msg::Attach { pid, replay: true }, &[]);
    let iid = a.id();
    a.send(
        iid,
        &Msg::ProcInput { pid, eof: false },
        b"tty; stty size; echo $TERM\n",
    );
    assert_eq!(a.next_for(iid).msg, Msg::Ok);
    let (out, _) = follow(&mut a, id, Some("xterm-256color"));
    assert!(out.contains("/dev/pts/"), "on a terminal: {out:?}");
    assert!(out.contains("24 80"), "{out:?}");
    assert_eq!(
        a.call(Msg::ProcResize {
            pid,
            size: PtySize {
                rows: 50,
                cols: 132
            }
        }),
        Msg::Ok
    );
    let iid = a.id();
    a.send(iid, &Msg::ProcInput { pid, eof: false }, b"stty size\n");
    assert_eq!(a.next_for(iid).msg, Msg::Ok);
    follow(&mut a, id, Some("50 132"));
    let iid = a.id();
    a.send(iid, &Msg::ProcInput { pid, eof: false }, b"exit 3\n");
    assert_eq!(a.next_for(iid).msg, Msg::Ok);
    let (_, exit) = follow(&mut a, id, None);
    assert_eq!(exit.unwrap().code, Some(3));
    match a.call(Msg::ProcResize {
        pid: 1,
        size: PtySize { rows: 0, cols: 10 },
    }) {
        Msg::Error(e) => assert!(e.kind == ErrorKind::NotFound || e.kind == ErrorKind::BadRequest),
        m => panic!("{m:?}"),
    }
}

#[test]
fn make_dir_rename_walk() {
    let mut a = Agent::start();
    let d = tempdir("tree");
    let ds = d.display().to_string();
    assert_eq!(
        a.call(Msg::MakeDir {
            path: format!("{ds}/a/b/c"),
            parents: true
        }),
        Msg::Ok
    );
    match a.call(Msg::MakeDir {
        path: format!("{ds}/x/y"),
        parents: false,
    }) {
        Msg::Error(e) => assert_eq!(e.kind, ErrorKind::NotFound),
        m => panic!("{m:?}"),
    }
    std::fs::write(d.join("a/b/c/f.txt"), b"hello").unwrap();
    assert_eq!(
        a.call(Msg::Rename {
            from: format!("{ds}/a/b/c/f.txt"),
            to: format!("{ds}/a/g.txt")
        }),
        Msg::Ok
    );
    assert_eq!(std::fs::read(d.join("a/g.txt")).unwrap(), b"hello");
    let Msg::WalkOk { entries } = a.call(Msg::Walk {
        path: ds.clone(),
        depth: 1,
    }) else {
        panic!()
    };
    assert_eq!(
        entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    let Msg::WalkOk { entries } = a.call(Msg::Walk {
        path: ds.clone(),
        depth: 5,
    }) else {
        panic!()
    };
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e.path.strip_prefix(&ds).unwrap())
        .collect();
    assert_eq!(names, ["/a", "/a/b", "/a/b/c", "/a/g.txt"]);
    let g = entries.iter().find(|e| e.name == "g.txt").unwrap();
    assert_eq!((g.kind.as_str(), g.size), ("file", 5));
    match a.call(Msg::Walk {
        path: ds.clone(),
        depth: 0,
    }) {
        Msg::Error(e) => assert!(e.message.contains("depth 0"), "{e:?}"),
        m => panic!("{m:?}"),
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn watch_streams_events_until_cancelled() {
    let mut a = Agent::start();
    let d = tempdir("watch");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    let id = a.id();
    a.send(
        id,
        &Msg::Watch {
            path: d.display().to_string(),
            recursive: true,
        },
        &[],
    );
    assert_eq!(a.next_for(id).msg, Msg::Ok, "the watch is in place");
    std::fs::write(d.join("sub/new.txt"), b"x").unwrap();
    std::fs::remove_file(d.join("sub/new.txt")).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains(&FsEventKind::Remove) && Instant::now() < deadline {
        match a.next_for(id).msg {
            Msg::FsEvent(e) => {
                assert!(e.path.ends_with("sub/new.txt"), "{e:?}");
                seen.push(e.kind);
            }
            m => panic!("{m:?}"),
        }
    }
    assert!(
        seen.contains(&FsEventKind::Create) && seen.contains(&FsEventKind::Remove),
        "{seen:?}"
    );
    a.send(id, &Msg::Cancel, &[]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_command_runs_as_the_user_asked_for() {
    let mut a = Agent::start();
    let out = a.exec(zygote_proto::agent::ExecRequest {
        user: Some("nobody".into()),
        ..sh("id -u; echo $USER")
    });
    let text = out.stdout_str();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("65534"), "{text:?} {:?}", out.error);
    assert_eq!(lines.next(), Some("nobody"));
    let out = a.exec(zygote_proto::agent::ExecRequest {
        user: Some("no-such-user-zyg".into()),
        ..sh("true")
    });
    let e = out.error.expect("refused");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("no-such-user-zyg"), "{e:?}");
}
