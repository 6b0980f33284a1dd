//! End-to-end: exec and eval in a real guest.

use std::time::{Duration, Instant};

use zygote_proto::api::{CreateSandbox, ExecBody, ExecEvent};
use zygote_tests::*;

fn body(argv: &[&str]) -> ExecBody {
    ExecBody {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_codes_signals_env_cwd_stdin_timeout() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let mut req = CreateSandbox::default();
    req.env.insert("SANDBOX_WIDE".into(), "everywhere".into());
    let sb = d.create_with(req).await;
    let c = &d.client;

    // exit codes
    let r = d.sh(&sb.id, "exit 0").await;
    assert_eq!((r.exit_code, r.signal, r.timed_out), (Some(0), None, false));
    let r = d.sh(&sb.id, "echo out; echo err >&2; exit 3").await;
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");

    // argv is passed as is, no shell splitting
    let r = c
        .exec(&sb.id, &body(&["/bin/echo", "a  b", "$HOME"]))
        .await
        .unwrap();
    assert_eq!(r.stdout, "a  b $HOME\n");

    // signals
    let r = d.sh(&sb.id, "kill -9 $$").await;
    assert_eq!((r.exit_code, r.signal), (None, Some(9)));
    let r = d.sh(&sb.id, "kill -TERM $$").await;
    assert_eq!(r.signal, Some(15));

    // env: per exec and sandbox-wide
    let mut b = body(&["/bin/sh", "-c", "echo $FOO-$SANDBOX_WIDE"]);
    b.env.insert("FOO".into(), "bar baz".into());
    let r = c.exec(&sb.id, &b).await.unwrap();
    assert_eq!(r.stdout, "bar baz-everywhere\n");

    // cwd
    let mut b = body(&["pwd"]);
    b.cwd = Some("/usr/lib".into());
    assert_eq!(c.exec(&sb.id, &b).await.unwrap().stdout, "/usr/lib\n");
    let mut b = body(&["pwd"]);
    b.cwd = Some("/does/not/exist".into());
    let e = c.exec(&sb.id, &b).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(e.to_string().contains("/does/not/exist"), "{e}");

    // stdin
    let mut b = body(&["sh", "-c", "tr a-z A-Z; echo done"]);
    b.stdin = Some("hello stdin\n".into());
    assert_eq!(
        c.exec(&sb.id, &b).await.unwrap().stdout,
        "HELLO STDIN\ndone\n"
    );
    let mut b = body(&["wc", "-c"]);
    b.stdin_b64 = Some("AAECAwQ=".into()); // 5 bytes
    assert_eq!(c.exec(&sb.id, &b).await.unwrap().stdout.trim(), "5");

    // a timeout kills the whole process group, promptly
    let t0 = Instant::now();
    let mut b = body(&["sh", "-c", "sleep 300 & sleep 300; echo never"]);
    b.timeout_secs = Some(1.0);
    let r = c.exec(&sb.id, &b).await.unwrap();
    assert!(r.timed_out, "{r:?}");
    assert_eq!(r.signal, Some(9));
    assert!(!r.stdout.contains("never"));
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "timeout took {:?}",
        t0.elapsed()
    );
    // ...including the background child: no `sleep 300` survives
    let r = d
        .sh(&sb.id, "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c '^sleep 300' || true")
        .await;
    assert_eq!(r.stdout.trim(), "0", "a `sleep 300` survived the timeout");

    // unknown program
    let e = c
        .exec(&sb.id, &body(&["no-such-program-xyz"]))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(e.to_string().contains("no-such-program-xyz"), "{e}");

    // output streams while the process runs
    let t0 = Instant::now();
    let mut first_out = None;
    let last = c
        .exec_stream(
            &sb.id,
            &body(&["sh", "-c", "echo first; sleep 2; echo second"]),
            |ev| {
                if matches!(ev, ExecEvent::Stdout { .. }) && first_out.is_none() {
                    first_out = Some(t0.elapsed());
                }
            },
        )
        .await
        .unwrap();
    let total = t0.elapsed();
    assert!(
        matches!(
            last,
            ExecEvent::Exit {
                exit_code: Some(0),
                ..
            }
        ),
        "{last:?}"
    );
    let first = first_out.expect("stdout event");
    assert!(
        total - first >= Duration::from_millis(1500),
        "first chunk at {first:?}, exit at {total:?}: output was not streamed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_execs_in_one_sandbox() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let sb = d.create().await;
    // A waits for a flag that only B creates: serialised execs would deadlock
    // until A's own 60 s limit.
    let waiter = {
        let c = d.client.clone();
        let id = sb.id.clone();
        tokio::spawn(async move {
            let mut b = ExecBody {
                cmd: Some("i=0; while [ ! -e /tmp/flag ]; do sleep 0.05; i=$((i+1)); [ $i -gt 1200 ] && exit 7; done; echo saw-flag".into()),
                ..Default::default()
            };
            b.timeout_secs = Some(90.0);
            c.exec(&id, &b).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut handles = Vec::new();
    for i in 0..6 {
        let c = d.client.clone();
        let id = sb.id.clone();
        handles.push(tokio::spawn(async move {
            c.exec(
                &id,
                &ExecBody {
                    cmd: Some(format!(
                        "head -c 200000 /dev/zero | tr '\\0' '{}' | wc -c",
                        i
                    )),
                    ..Default::default()
                },
            )
            .await
        }));
    }
    for h in handles {
        let r = h.await.unwrap().unwrap();
        assert_eq!(r.stdout.trim(), "200000");
    }
    assert_eq!(d.sh(&sb.id, "touch /tmp/flag").await.exit_code, Some(0));
    let r = waiter.await.unwrap().unwrap();
    assert_eq!((r.exit_code, r.stdout.as_str()), (Some(0), "saw-flag\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn eval_state_persists() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;
    let sb = d.create().await;
    let c = &d.client;
    let r = c.eval(&sb.id, "x = 41\nimport math").await.unwrap();
    assert_eq!((r.result, r.error), (None, None));
    let r = c.eval(&sb.id, "x + 1").await.unwrap();
    assert_eq!(r.result.as_deref(), Some("42"));
    let r = c
        .eval(
            &sb.id,
            "def f(n):\n    return n * x\nprint('side', end='')\nf(2)",
        )
        .await
        .unwrap();
    assert_eq!(r.result.as_deref(), Some("82"));
    assert_eq!(r.stdout, "side");
    let r = c.eval(&sb.id, "'a' + 'b'").await.unwrap();
    assert_eq!(r.result.as_deref(), Some("'ab'"));
    let r = c.eval(&sb.id, "1 / 0").await.unwrap();
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("ZeroDivisionError"),
        "{r:?}"
    );
    assert!(
        r.traceback
            .as_deref()
            .unwrap_or("")
            .contains("ZeroDivisionError"),
        "{r:?}"
    );
    // state survives an error
    assert_eq!(
        c.eval(&sb.id, "math.floor(x / 2)")
            .await
            .unwrap()
            .result
            .as_deref(),
        Some("20")
    );
}
