//! The warm Python interpreter over the real agent binary.

mod common;

use common::Agent;
use zygote_proto::agent::{EvalResult, Msg};

fn eval(a: &mut Agent, code: &str) -> EvalResult {
    match a.call(Msg::Eval { code: code.into() }) {
        Msg::EvalOk(r) => r,
        m => panic!("{m:?}"),
    }
}

#[test]
fn state_persists_between_evals() {
    let mut a = Agent::start();
    let r = eval(&mut a, "x = 41");
    assert_eq!(r.result, None);
    assert_eq!(r.error, None);
    let r = eval(&mut a, "x + 1");
    assert_eq!(r.result.as_deref(), Some("42"));
    let r = eval(
        &mut a,
        "import os\nprint('hi')\ndef f(n):\n    return n * 2\nf(x)",
    );
    assert_eq!(r.result.as_deref(), Some("82"));
    assert_eq!(r.stdout, "hi\n");
    assert_eq!(eval(&mut a, "None").result, None);
    assert_eq!(eval(&mut a, "'s'").result.as_deref(), Some("'s'"));
}

#[test]
fn errors_carry_a_user_only_traceback() {
    let mut a = Agent::start();
    let r = eval(
        &mut a,
        "def boom():\n    raise ValueError('bad value')\nboom()",
    );
    assert_eq!(r.error.as_deref(), Some("ValueError: bad value"));
    let tb = r.traceback.unwrap();
    assert!(tb.starts_with("Traceback"), "{tb}");
    assert!(tb.contains("in boom"), "{tb}");
    assert!(tb.contains("raise ValueError('bad value')"), "{tb}");
    assert!(!tb.contains("<string>"), "server frames leaked: {tb}");
    assert!(!tb.contains("_run"), "server frames leaked: {tb}");

    let r = eval(&mut a, "x = (");
    assert!(r.error.unwrap().starts_with("SyntaxError"));
    // The interpreter survived both.
    assert_eq!(eval(&mut a, "1 + 1").result.as_deref(), Some("2"));
}

#[test]
fn output_of_code_and_subprocesses_is_captured() {
    let mut a = Agent::start();
    let r = eval(
        &mut a,
        "import sys, subprocess\nprint('out')\nprint('err', file=sys.stderr)\nsubprocess.run(['echo', 'child'])\n7",
    );
    assert_eq!(r.stdout, "out\nchild\n");
    assert_eq!(r.stderr, "err\n");
    assert_eq!(r.result.as_deref(), Some("7"));
    // Reading stdin cannot eat the protocol.
    let r = eval(&mut a, "import sys\nsys.stdin.read()");
    assert_eq!(r.result.as_deref(), Some("''"));
}

#[test]
fn interpreter_death_is_reported_and_recovered() {
    let mut a = Agent::start();
    eval(&mut a, "y = 1");
    let r = eval(&mut a, "import os\nos._exit(3)");
    assert!(r.error.unwrap().contains("InterpreterExited"));
    let r = eval(&mut a, "'y' in globals()");
    assert_eq!(r.result.as_deref(), Some("False"));
    assert!(r.stderr.contains("state"), "{}", r.stderr);
}

#[test]
fn cancel_interrupts_a_running_eval() {
    let mut a = Agent::start();
    eval(&mut a, "z = 5");
    let id = a.id();
    a.send(
        id,
        &Msg::Eval {
            code: "import time\nwhile True: time.sleep(0.01)".into(),
        },
        &[],
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    a.send(id, &Msg::Cancel, &[]);
    match a.next_for(id).msg {
        Msg::EvalOk(r) => assert_eq!(r.error.as_deref(), Some("KeyboardInterrupt")),
        m => panic!("{m:?}"),
    }
    assert_eq!(eval(&mut a, "z").result.as_deref(), Some("5"));
}

#[test]
fn huge_results_are_truncated_to_fit_a_frame() {
    let mut a = Agent::start();
    let r = eval(&mut a, "print('a' * 200000)\n'b' * 200000");
    assert!(r.stdout.contains("truncated"));
    assert!(r.result.unwrap().contains("truncated"));
}

#[test]
fn evals_queue_in_order() {
    let mut a = Agent::start();
    let ids: Vec<u64> = (0..5).map(|_| a.id()).collect();
    for (i, id) in ids.iter().enumerate() {
        let code = format!("try:\n    L\nexcept NameError:\n    L = []\nL.append({i})\nlen(L)");
        a.send(*id, &Msg::Eval { code }, &[]);
    }
    let mut lens: Vec<String> = ids
        .iter()
        .map(|id| match a.next_for(*id).msg {
            Msg::EvalOk(r) => r.result.unwrap(),
            m => panic!("{m:?}"),
        })
        .collect();
    lens.sort();
    assert_eq!(lens, ["1", "2", "3", "4", "5"]);
}
