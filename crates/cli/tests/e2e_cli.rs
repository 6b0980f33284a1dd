//! End-to-end: the CLI contract scripts depend on (exit codes, --json, cp, rm).

use std::process::{Command, Output};

use zygote_tests::*;

fn zygote(d: &Daemon, args: &[&str]) -> Output {
    Command::new(zygote_bin())
        .args(args)
        .env("ZYGOTE_SOCKET", &d.socket)
        .env_remove("ZYGOTE_URL")
        .output()
        .expect("run zygote")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_contract() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start().await;

    // run: exit code and streamed output, sandbox removed afterwards
    let o = zygote(
        &d,
        &[
            "run",
            "--env",
            "A=b",
            "--workdir",
            "/etc",
            "--",
            "sh",
            "-c",
            "echo $A; pwd; exit 5",
        ],
    );
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert_eq!(stdout(&o), "b\n/etc\n");
    assert!(
        d.client.list().await.unwrap().is_empty(),
        "run left a sandbox behind"
    );

    // create --json
    let o = zygote(&d, &["create", "--json", "--memory", "256"]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["memory_mib"], 256);

    // exec: exit codes, signals map to 128+n, timeout to 124
    let o = zygote(&d, &["exec", &id, "--", "sh", "-c", "echo hi >&2; exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).lines().next(),
        Some("hi")
    );
    let o = zygote(&d, &["exec", &id, "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(137));
    let o = zygote(&d, &["exec", &id, "--timeout", "1", "--", "sleep", "60"]);
    assert_eq!(o.status.code(), Some(124));

    // eval: result printed; a Python error exits 1 and prints the error
    let o = zygote(&d, &["eval", &id, "y = 6"]);
    assert!(o.status.success());
    let o = zygote(&d, &["eval", &id, "y * 7"]);
    assert_eq!(stdout(&o).trim(), "42");
    let o = zygote(&d, &["eval", &id, "raise ValueError('boom')"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ValueError: boom"));

    // cp both directions, byte-exact
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.bin");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let o = zygote(
        &d,
        &["cp", src.to_str().unwrap(), &format!("{id}:/root/in.bin")],
    );
    assert!(o.status.success(), "{o:?}");
    let dst = tmp.path().join("dst.bin");
    let o = zygote(
        &d,
        &["cp", &format!("{id}:/root/in.bin"), dst.to_str().unwrap()],
    );
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::read(&dst).unwrap() == data);
    let o = zygote(&d, &["cp", "a", "b"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ID:/"));

    // ls --json, rm --all
    let o = zygote(&d, &["ls", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["id"], id.as_str());
    let o = zygote(&d, &["ls"]);
    assert!(stdout(&o).contains(&id) && stdout(&o).contains("running"));
    let o = zygote(&d, &["rm", "no-such-id"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-id"));
    let o = zygote(&d, &["rm", "--all"]);
    assert!(o.status.success());
    assert!(d.client.list().await.unwrap().is_empty());

    // no daemon: a clear message
    let o = Command::new(zygote_bin())
        .args(["ls"])
        .env("ZYGOTE_SOCKET", tmp.path().join("none.sock"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no zygote daemon answers") && err.contains("zygote daemon"),
        "{err}"
    );
}
