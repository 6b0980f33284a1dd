//! The CLI's polish against a real daemon and real guests: `--json` on every
//! command that prints (exec/run print one document instead of streaming),
//! aligned human tables with headers, no progress output when stderr is not a
//! terminal; plus the man-style `--help`, shell completions and `zygote man`.

use std::process::{Command, Output};

use zygote_tests::*;

fn zygote_env(socket: Option<&std::path::Path>, args: &[&str]) -> Output {
    let mut c = Command::new(zygote_bin());
    c.args(args).env_remove("ZYGOTE_URL");
    if let Some(s) = socket {
        c.env("ZYGOTE_SOCKET", s);
    }
    c.output().expect("run zygote")
}

fn zygote(d: &Daemon, args: &[&str]) -> Output {
    zygote_env(Some(&d.socket), args)
}

fn ok_json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {o:?}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts `table` has a header line first and that, in every line, each
/// column's cell sits under its header: starting where it starts for a plain
/// name, ending where it ends for a name given as `>NAME` (right-aligned).
fn assert_aligned(table: &str, cols: &[&str]) {
    let mut lines = table.lines();
    let header = lines.next().expect("a header line");
    for l in lines {
        let b = l.as_bytes();
        for c in cols {
            let (name, right) = match c.strip_prefix('>') {
                Some(n) => (n, true),
                None => (*c, false),
            };
            let at = header
                .find(name)
                .unwrap_or_else(|| panic!("no {name} in {header:?}"));
            let ok = if right {
                let end = at + name.len();
                b.get(end - 1).is_some_and(|x| *x != b' ') && b.get(end).is_none_or(|x| *x == b' ')
            } else {
                (at == 0 || b.get(at - 1) == Some(&b' ')) && b.get(at).is_some_and(|x| *x != b' ')
            };
            assert!(ok, "column {name} misaligned in {l:?}:\n{table}");
        }
    }
}

#[test]
fn help_reads_like_a_man_page_and_completions_and_man_work() {
    let o = zygote_env(None, &["--help"]);
    assert!(o.status.success());
    let h = text(&o.stdout);
    for s in [
        "DESCRIPTION",
        "ENVIRONMENT",
        "EXAMPLES",
        "EXIT STATUS",
        "Commands:",
    ] {
        assert!(h.contains(s), "--help lacks {s}:\n{h}");
    }
    for v in [
        "ZYGOTE_SOCKET",
        "ZYGOTE_URL",
        "ZYGOTE_TOKEN",
        "ZYGOTE_HOME",
        "ZYGOTE_AGENT_BIN",
        "ZYGOTE_QEMU",
        "ZYGOTE_QEMU_IMG",
        "ZYGOTE_LOG",
    ] {
        assert!(h.contains(v), "--help lacks {v}");
    }
    // Every command's long help has examples.
    for cmd in [
        "daemon",
        "image",
        "run",
        "create",
        "exec",
        "eval",
        "cp",
        "ls",
        "rm",
        "snapshot",
        "branch",
        "spawn",
        "fork",
        "doctor",
        "completions",
        "man",
    ] {
        let o = zygote_env(None, &[cmd, "--help"]);
        assert!(o.status.success(), "{cmd}: {o:?}");
        let h = text(&o.stdout);
        assert!(
            h.contains("Examples:") && h.contains(&format!("zygote {cmd}")),
            "{cmd} --help has no examples:\n{h}"
        );
    }
    // Bad usage exits 2, as documented.
    assert_eq!(zygote_env(None, &["--no-such-flag"]).status.code(), Some(2));

    // Completions: bash parses and knows the commands; zsh and fish generate.
    let tmp = tempfile::tempdir().unwrap();
    let o = zygote_env(None, &["completions", "bash"]);
    assert!(o.status.success());
    let bash = tmp.path().join("zygote.bash");
    std::fs::write(&bash, &o.stdout).unwrap();
    let st = Command::new("bash").arg("-n").arg(&bash).status().unwrap();
    assert!(st.success(), "the bash completion script does not parse");
    let script = text(&o.stdout);
    for w in ["doctor", "snapshot", "fork", "--json"] {
        assert!(script.contains(w), "bash completion lacks {w}");
    }
    // Completing `zygote sn` in bash offers `snapshot`.
    let probe = format!(
        "source {}; COMP_WORDS=(zygote sn); COMP_CWORD=1; COMP_LINE='zygote sn'; COMP_POINT=9; \
         _zygote zygote sn zygote; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    );
    let o2 = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    assert!(text(&o2.stdout).lines().any(|l| l == "snapshot"), "{o2:?}");
    for sh in ["zsh", "fish"] {
        let o = zygote_env(None, &["completions", sh]);
        assert!(
            o.status.success() && text(&o.stdout).contains("doctor"),
            "{sh}"
        );
    }
    let o = zygote_env(None, &["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("tcsh"), "{o:?}");

    // The manual page.
    let o = zygote_env(None, &["man"]);
    assert!(o.status.success());
    let m = text(&o.stdout);
    assert!(m.contains(".TH zygote 1"), "{m}");
    for s in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH \"ENVIRONMENT\"",
        ".SH \"EXIT STATUS\"",
    ] {
        assert!(m.contains(s), "man lacks {s}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_everywhere_and_aligned_tables() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;

    // create --json (stderr stays quiet: no spinner when it is not a terminal)
    let o = zygote(&d, &["create", "--json"]);
    let v = ok_json(&o);
    assert!(text(&o.stderr).trim().is_empty(), "{o:?}");
    let id = v["id"].as_str().unwrap().to_string();

    // exec --json: one document, nothing streamed, the command's exit code
    let o = zygote(
        &d,
        &[
            "exec",
            &id,
            "--json",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["timed_out"], false);
    assert_eq!(v["sandbox"], id.as_str());
    assert!(text(&o.stderr).trim().is_empty(), "{o:?}");
    let o = zygote(
        &d,
        &["exec", &id, "--json", "--timeout", "1", "--", "sleep", "30"],
    );
    assert_eq!(o.status.code(), Some(124));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["timed_out"], true);

    // cp --json, both ways
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("a.txt");
    std::fs::write(&src, b"hello polish").unwrap();
    let v = ok_json(&zygote(
        &d,
        &[
            "cp",
            "--json",
            src.to_str().unwrap(),
            &format!("{id}:/root/a.txt"),
        ],
    ));
    assert_eq!(v["bytes"], 12);
    let dst = tmp.path().join("b.txt");
    let v = ok_json(&zygote(
        &d,
        &[
            "cp",
            "--json",
            &format!("{id}:/root/a.txt"),
            dst.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        (v["bytes"].as_u64(), std::fs::read(&dst).unwrap()),
        (Some(12), b"hello polish".to_vec())
    );

    // branch --wait --json: the snapshot is on disk when it returns
    let v = ok_json(&zygote(
        &d,
        &["branch", &id, "--tag", "polish", "--wait", "--json"],
    ));
    assert_eq!(v["tag"], "polish");
    assert_eq!(v["status"], "ready", "{v}");
    assert!(d.home.join("snapshots/polish/memory.bin").exists());

    // snapshot ls / inspect: JSON and aligned tables
    let v = ok_json(&zygote(&d, &["snapshot", "ls", "--json"]));
    assert_eq!(v.as_array().unwrap().len(), 1);
    let o = zygote(&d, &["snapshot", "ls"]);
    assert!(o.status.success());
    let t = text(&o.stdout);
    assert_aligned(&t, &["TAG", "IMAGE", "MODE", "STATUS", ">MEM_MIB", "FROM"]);
    assert!(t.lines().nth(1).unwrap().starts_with("polish "), "{t}");
    let v = ok_json(&zygote(&d, &["snapshot", "inspect", "polish", "--json"]));
    assert_eq!(v["branched_from"], id.as_str());
    let o = zygote(&d, &["snapshot", "inspect", "polish"]);
    let t = text(&o.stdout);
    assert_aligned(&t, &["FIELD", "VALUE"]);
    assert!(
        t.lines()
            .any(|l| l.starts_with("status") && l.ends_with("ready")),
        "{t}"
    );

    // fork -n 2: JSON, then a table
    let v = ok_json(&zygote(&d, &["fork", "polish", "-n", "2", "--json"]));
    let kids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["sandbox"]["id"]
                .as_str()
                .expect("child started")
                .to_string()
        })
        .collect();
    assert_eq!(kids.len(), 2);
    let o = zygote(&d, &["fork", "polish"]);
    assert!(o.status.success(), "{o:?}");
    let t = text(&o.stdout);
    assert_aligned(&t, &["ID", ">RUNNING_MS", ">READY_MS"]);
    assert_eq!(t.lines().count(), 2, "{t}");
    // spawn: children of a snapshot, never a branch of a sandbox id
    let v = ok_json(&zygote(&d, &["spawn", "polish", "--json"]));
    assert!(v[0]["sandbox"]["snapshot_tag"] == "polish", "{v}");
    let spawned = v[0]["sandbox"]["id"].as_str().unwrap().to_string();
    assert!(zygote(&d, &["rm", &spawned]).status.success());
    let o = zygote(&d, &["spawn", &kids[0]]);
    assert!(
        !o.status.success(),
        "spawn of a sandbox id must fail: {o:?}"
    );
    assert!(text(&o.stderr).contains("no snapshot tagged"), "{o:?}");

    // On a terminal (a pty from script(1)), progress shows on stderr.
    let o = Command::new("script")
        .args([
            "-qec",
            &format!("{} fork polish", zygote_bin()),
            "/dev/null",
        ])
        .env("ZYGOTE_SOCKET", &d.socket)
        .env_remove("ZYGOTE_URL")
        .output()
        .expect("run script(1)");
    assert!(o.status.success(), "{o:?}");
    let tty = text(&o.stdout);
    assert!(
        tty.contains("starting 1 child from snapshot polish") && tty.contains("RUNNING_MS"),
        "{tty:?}"
    );

    // ls: every sandbox in an aligned table; --json the same ids
    let v = ok_json(&zygote(&d, &["ls", "--json"]));
    assert_eq!(v.as_array().unwrap().len(), 5);
    let o = zygote(&d, &["ls"]);
    let t = text(&o.stdout);
    assert_aligned(&t, &["ID", "IMAGE", "STATE", ">MEM_MIB", ">VCPUS"]);
    for k in kids.iter().chain([&id]) {
        assert!(
            t.lines().any(|l| l.starts_with(k.as_str())),
            "{k} not in\n{t}"
        );
    }

    // image ls through the home: table and JSON
    let img = image_home();
    let o = Command::new(zygote_bin())
        .args(["image", "ls", "--home"])
        .arg(&img)
        .output()
        .unwrap();
    let t = text(&o.stdout);
    assert_aligned(&t, &["NAME", "ID", "RELEASE", ">ROOTFS_MB", "KERNEL"]);
    assert!(t.lines().any(|l| l.starts_with("python ")), "{t}");

    // rm --all --json and snapshot rm --json: one document each
    let v = ok_json(&zygote(&d, &["rm", "--all", "--json"]));
    assert_eq!(v.as_array().unwrap().len(), 5);
    assert!(v.as_array().unwrap().iter().all(|r| r["removed"] == true));
    let o = zygote(&d, &["rm", "--json", "no-such-sandbox"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["removed"], false);
    assert!(
        v[0]["error"].as_str().unwrap().contains("no-such-sandbox"),
        "{v}"
    );
    let v = ok_json(&zygote(&d, &["snapshot", "rm", "--json", "polish"]));
    assert_eq!(v[0]["tag"], "polish");

    // run --json: one document, the sandbox removed afterwards
    let o = zygote(&d, &["run", "--json", "--", "sh", "-c", "echo ran; exit 4"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stdout"], "ran\n");
    assert!(v["sandbox"].is_string());
    assert!(
        d.client.list().await.unwrap().is_empty(),
        "run left a sandbox"
    );
}
