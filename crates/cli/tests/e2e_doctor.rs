//! `zygote doctor`: the JSON report lists every check with a status; a home
//! without an image and a socket nobody serves fail their checks (exit 1); a
//! real daemon is reachable on its socket and on TCP, where the right token is
//! accepted and a wrong or missing one refused. No guest is booted.

use std::path::Path;
use std::process::{Command, Output};

use zygote_tests::*;

/// Every check, in report order (the documented contract of `doctor --json`).
const CHECKS: &[&str] = &[
    "platform",
    "hardware_virtualisation",
    "accelerator",
    "qemu",
    "qemu_img",
    "guest_kernel",
    "image",
    "home_space",
    "hugepages",
    "memfd",
    "memfd_hugetlb",
    "pagemap",
    "process_vm_readv",
    "userfaultfd",
    "cgroups",
    "dev_net_tun",
    "net_namespaces",
    "ksm",
    "net_tools",
    "ip_forward",
    "net_dns",
    "daemon",
    "token",
];

fn doctor(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(zygote_bin());
    c.arg("doctor")
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("ZYGOTE_URL")
        .env_remove("ZYGOTE_SOCKET")
        .env_remove("ZYGOTE_TOKEN");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run zygote doctor")
}

/// The parsed report, after checking its shape: every check once, in order,
/// each with a known status, a detail, and a hint on every warn and fail.
fn report(o: &Output) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}): {o:?}"));
    let checks = v["checks"].as_array().expect("checks array");
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, CHECKS, "{v:#}");
    let mut fails = 0;
    for c in checks {
        let st = c["status"].as_str().unwrap();
        assert!(["pass", "warn", "fail", "skip"].contains(&st), "{c}");
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{c}");
        if st == "warn" || st == "fail" {
            assert!(!c["hint"].as_str().unwrap_or("").is_empty(), "no hint: {c}");
        }
        fails += usize::from(st == "fail");
    }
    assert_eq!(v["summary"]["fail"], fails);
    assert_eq!(v["ok"], fails == 0);
    assert_eq!(
        o.status.code(),
        Some(if fails == 0 { 0 } else { 1 }),
        "exit code must be 1 exactly when a check fails: {v:#}"
    );
    v
}

fn check<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

fn status(v: &serde_json::Value, name: &str) -> String {
    check(v, name)["status"].as_str().unwrap().to_string()
}

#[test]
fn doctor_fails_without_image_or_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    let sock = tmp.path().join("nobody.sock");
    let o = doctor(&home, &["--json", "--socket", sock.to_str().unwrap()], &[]);
    let v = report(&o);
    assert_eq!(o.status.code(), Some(1));
    for name in ["image", "guest_kernel", "daemon"] {
        assert_eq!(status(&v, name), "fail", "{name}: {v:#}");
    }
    assert!(
        check(&v, "image")["hint"]
            .as_str()
            .unwrap()
            .contains("zygote image build"),
        "{v:#}"
    );
    let d = check(&v, "daemon");
    assert!(
        d["detail"].as_str().unwrap().contains("nobody.sock")
            && d["hint"].as_str().unwrap().contains("zygote daemon"),
        "{d}"
    );
    assert_eq!(status(&v, "token"), "skip");
    // the accelerator the daemon would use, and why kvm_pvm does not count
    let acc = check(&v, "accelerator")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(acc.starts_with("kvm") || acc.starts_with("tcg"), "{acc}");
    let hv = check(&v, "hardware_virtualisation");
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    if pvm {
        assert_eq!(hv["status"], "warn", "{hv}");
        assert!(hv["detail"].as_str().unwrap().contains("kvm_pvm"), "{hv}");
        assert!(acc.starts_with("tcg"), "{acc}");
    }
    // --accel kvm on a host without it is a failing check, not a crash
    if hv["status"] == "warn" {
        let o = doctor(
            &home,
            &[
                "--json",
                "--accel",
                "kvm",
                "--socket",
                sock.to_str().unwrap(),
            ],
            &[],
        );
        let v = report(&o);
        assert_eq!(status(&v, "accelerator"), "fail", "{v:#}");
    }
    // a bad --accel value: the check fails naming the value
    let o = doctor(
        &home,
        &[
            "--json",
            "--accel",
            "hvf",
            "--socket",
            sock.to_str().unwrap(),
        ],
        &[],
    );
    let v = report(&o);
    assert!(check(&v, "accelerator")["detail"]
        .as_str()
        .unwrap()
        .contains("hvf"));

    // the human report: aligned columns, hints, a summary line, same exit code
    let o = doctor(&home, &["--socket", sock.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    let header = text.lines().next().unwrap();
    let col = header.find("STATUS").unwrap();
    for name in CHECKS {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        let st = &line[col..];
        assert!(
            ["pass", "warn", "fail", "skip"]
                .iter()
                .any(|s| st.starts_with(s)),
            "misaligned: {line:?}\n{text}"
        );
    }
    assert!(
        text.contains("hint: build it: sudo zygote image build"),
        "{text}"
    );
    assert!(text.lines().last().unwrap().contains(" fail, "), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_reaches_a_real_daemon_and_checks_its_token() {
    if !require_e2e() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let token = "doctor-Test-Token-0123456789abcdef";
    let tf = tmp.path().join("token");
    std::fs::write(&tf, format!("{token}\n")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(&["--listen", &addr, "--token-file", tf.to_str().unwrap()]).await;
    let img = image_home();

    // Unix socket: reachable, no token involved; the test image is found.
    let o = doctor(
        &img,
        &["--json", "--socket", d.socket.to_str().unwrap()],
        &[],
    );
    let v = report(&o);
    let dm = check(&v, "daemon");
    assert_eq!(dm["status"], "pass", "{dm}");
    assert!(
        dm["detail"].as_str().unwrap().contains("answers at"),
        "{dm}"
    );
    assert_eq!(status(&v, "token"), "skip");
    assert_eq!(status(&v, "image"), "pass", "{v:#}");
    assert_eq!(status(&v, "guest_kernel"), "pass", "{v:#}");
    assert_eq!(status(&v, "qemu"), "pass", "{v:#}");
    assert_eq!(status(&v, "qemu_img"), "pass", "{v:#}");
    // the daemon's own accelerator is the one doctor predicts
    let acc = check(&v, "accelerator")["detail"].as_str().unwrap()[..3].to_string();
    assert!(
        dm["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("accel {acc}")),
        "{dm}"
    );

    // TCP with the right token: accepted.
    let url = format!("http://{addr}");
    let o = doctor(&img, &["--json", "--url", &url], &[("ZYGOTE_TOKEN", token)]);
    let v = report(&o);
    assert_eq!(status(&v, "daemon"), "pass", "{v:#}");
    let t = check(&v, "token");
    assert_eq!(t["status"], "pass", "{t}");
    assert!(t["detail"].as_str().unwrap().contains("accepted"), "{t}");

    // A wrong token, and none: the daemon answers but refuses; exit 1.
    for env in [
        vec![("ZYGOTE_TOKEN", "doctor-Test-Token-WRONG-456789abcdef")],
        vec![],
    ] {
        let o = doctor(&img, &["--json", "--url", &url], &env);
        let v = report(&o);
        assert_eq!(o.status.code(), Some(1), "{v:#}");
        assert_eq!(status(&v, "daemon"), "pass", "{v:#}");
        let t = check(&v, "token");
        assert_eq!(t["status"], "fail", "{t}");
        assert!(t["hint"].as_str().unwrap().contains("ZYGOTE_TOKEN"), "{t}");
    }

    // A TCP port nobody serves: the daemon check fails, the token is skipped.
    let o = doctor(
        &img,
        &[
            "--json",
            "--url",
            &format!("http://127.0.0.1:{}", free_port()),
        ],
        &[],
    );
    let v = report(&o);
    assert_eq!(status(&v, "daemon"), "fail", "{v:#}");
    assert_eq!(status(&v, "token"), "skip", "{v:#}");
}
