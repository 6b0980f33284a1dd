//! Sandboxes on the network, end to end with real guests under TCG, real
//! namespaces, veth pairs and nftables. All traffic stays on this machine:
//! the "outside world" is a namespace this test creates, joined to the host
//! by a veth pair in the benchmarking range (198.18.0.1 on the host side,
//! 198.18.0.2 serving HTTP inside); no name is ever resolved.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zygote_proto::api::{CreateSandbox, SpawnBody};
use zygote_proto::net::NetworkBody;
use zygote_tests::{require_e2e, Daemon};

/// One outside world at a time (its addresses are fixed).
static WORLD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PAGE: &str = "hello-from-outside";
const URL: &str = "http://198.18.0.2:8000/";

/// A namespace serving [`PAGE`] on 198.18.0.2:8000, removed on drop.
struct Outside {
    ns: String,
    link: String,
    server: Child,
    _www: tempfile::TempDir,
}

fn run(args: &[&str]) -> String {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

impl Outside {
    fn start() -> Outside {
        let ns = format!("zt-out-{}", std::process::id());
        let link = format!("zto{}", std::process::id() % 100_000);
        let _ = Command::new("ip").args(["link", "delete", &link]).output();
        let _ = Command::new("ip").args(["netns", "delete", &ns]).output();
        run(&["ip", "netns", "add", &ns]);
        run(&[
            "ip", "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        run(&["ip", "addr", "add", "198.18.0.1/30", "dev", &link]);
        run(&["ip", "link", "set", &link, "up"]);
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            "198.18.0.2/30",
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            "198.18.0.1",
        ]);
        let www = tempfile::tempdir().unwrap();
        std::fs::write(www.path().join("index.html"), PAGE).unwrap();
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-m", "http.server", "8000"])
            .args(["--bind", "198.18.0.2", "--directory"])
            .arg(www.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while std::net::TcpStream::connect("198.18.0.2:8000").is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "outside server never came up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Outside {
            ns,
            link,
            server,
            _www: www,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // The pair goes at once with its host end (a namespace is freed in
        // the background).
        let _ = Command::new("ip")
            .args(["link", "delete", &self.link])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .output();
    }
}

/// Fetch `url` in the guest: `OK <body>` or `ERR <reason>`.
async fn fetch(d: &Daemon, id: &str, url: &str) -> String {
    let cmd = format!(
        "python3 -c \"import urllib.request,sys\ntry: print('OK', urllib.request.urlopen(sys.argv[1], timeout=8).read().decode())\nexcept Exception as e: print('ERR', e)\" {url}"
    );
    let r = d.sh(id, &cmd).await;
    format!("{}{}", r.stdout, r.stderr).trim().to_string()
}

fn policy(internet: bool, allow: &[&str], deny: &[&str]) -> NetworkBody {
    NetworkBody {
        enabled: None,
        internet: Some(internet),
        allow_out: allow.iter().map(|s| s.to_string()).collect(),
        deny_out: deny.iter().map(|s| s.to_string()).collect(),
    }
}

/// The namespaces on this host.
fn namespaces() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_policy_and_exposed_ports() {
    if !require_e2e() {
        return;
    }
    let _world = WORLD.lock().await;
    let _out = Outside::start();
    let d = Daemon::start().await;
    let c = &d.client;
    let sb = d.create().await;
    let net = sb
        .network
        .clone()
        .expect("a sandbox of a nat daemon has a network");
    assert_eq!(net.address, "10.0.2.2");
    assert!(net.internet);
    assert_eq!(fetch(&d, &sb.id, URL).await, format!("OK {PAGE}"));

    // Denied: refused at once (a reset), not left to time out.
    c.set_network(&sb.id, &policy(true, &[], &["198.18.0.0/15"]))
        .await
        .unwrap();
    let t0 = Instant::now();
    let got = fetch(&d, &sb.id, URL).await;
    assert!(got.contains("refused"), "{got}");
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "a refusal took {:?}",
        t0.elapsed()
    );

    // Only the allowed address answers.
    let info = c
        .set_network(&sb.id, &policy(false, &["198.18.0.2/32"], &[]))
        .await
        .unwrap();
    assert_eq!(info.network.as_ref().unwrap().allow_out, ["198.18.0.2/32"]);
    assert_eq!(fetch(&d, &sb.id, URL).await, format!("OK {PAGE}"));
    let got = fetch(&d, &sb.id, "http://198.18.0.1:9/").await;
    assert!(got.contains("refused"), "{got}");
    // Back to open.
    c.set_network(&sb.id, &policy(true, &[], &[]))
        .await
        .unwrap();
    assert_eq!(fetch(&d, &sb.id, URL).await, format!("OK {PAGE}"));

    // A guest server reached through an exposed port.
    d.sh(&sb.id, "echo guest-page > /tmp/index.html").await;
    c.start_process(
        &sb.id,
        &zygote_proto::api::ProcessStart {
            cmd: Some("python3 -m http.server 8000 --directory /tmp".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let port = c.expose_port(&sb.id, 8000).await.unwrap();
    assert_eq!(c.expose_port(&sb.id, 8000).await.unwrap(), port);
    let t0 = Instant::now();
    let body = loop {
        match reqwest_get(&port.host).await {
            Some(b) if b.contains("guest-page") => break b,
            _ if t0.elapsed() > Duration::from_secs(30) => {
                panic!("no guest page via {}", port.host)
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert!(body.contains("guest-page"));
    let listed = c.get(&sb.id).await.unwrap().network.unwrap().ports;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].host, port.host);
    // Bad input is named.
    let e = c.expose_port("no-such-sandbox", 8000).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let e = c
        .set_network(&sb.id, &policy(true, &[], &["198.18.0.0/99"]))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("198.18.0.0/99"), "{e}");

    // A sandbox created cut off from the internet.
    let off = d
        .create_with(CreateSandbox {
            network: Some(policy(false, &[], &[])),
            ..Default::default()
        })
        .await;
    let got = fetch(&d, &off.id, URL).await;
    assert!(got.contains("refused"), "{got}");

    // The port goes away with its sandbox.
    c.remove(&sb.id).await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(&port.host).await.is_err(),
        "{} still accepts after the sandbox is gone",
        port.host
    );
}

/// GET `http://addr/` with a plain TCP request; the whole answer.
async fn reqwest_get(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn children_keep_the_address_and_never_collide() {
    if !require_e2e() {
        return;
    }
    let _world = WORLD.lock().await;
    let _out = Outside::start();
    let d = Daemon::start().await;
    let c = &d.client;
    let parent = d.create().await;
    let snap = c.branch(&parent.id, &Default::default()).await.unwrap();
    let kids = c
        .spawn(&SpawnBody {
            snapshot_tag: snap.tag.clone(),
            n: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<String> = kids
        .iter()
        .map(|k| k.sandbox.as_ref().expect("child started").id.clone())
        .collect();
    let (a, b) = tokio::join!(fetch(&d, &ids[0], URL), fetch(&d, &ids[1], URL));
    assert_eq!(a, format!("OK {PAGE}"));
    assert_eq!(b, format!("OK {PAGE}"));
    // A grandchild too, from a live branch of a child.
    let snap2 = c.branch(&ids[0], &Default::default()).await.unwrap();
    let grand = c
        .spawn(&SpawnBody {
            snapshot_tag: snap2.tag.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let g = grand[0].sandbox.as_ref().expect("grandchild started");
    assert_eq!(fetch(&d, &g.id, URL).await, format!("OK {PAGE}"));
    // A spawn's policy replaces the snapshot's (pre-started children too).
    let cut = c
        .spawn(&SpawnBody {
            snapshot_tag: snap.tag.clone(),
            network: Some(policy(true, &[], &["198.18.0.0/15"])),
            ..Default::default()
        })
        .await
        .unwrap();
    let cut = cut[0].sandbox.as_ref().expect("child started");
    assert_eq!(cut.network.as_ref().unwrap().deny_out, ["198.18.0.0/15"]);
    let got = fetch(&d, &cut.id, URL).await;
    assert!(got.contains("refused"), "{got}");
    // The parent still has its own.
    assert_eq!(fetch(&d, &parent.id, URL).await, format!("OK {PAGE}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_left_after_removal_or_a_killed_daemon() {
    if !require_e2e() {
        return;
    }
    let _world = WORLD.lock().await;
    let _out = Outside::start();
    let mut d = Daemon::start_with(&["--prestart", "0"]).await;
    let sb = d.create().await;
    // Its namespace: the one its QEMU runs in.
    let pid = sb.pid.expect("a running sandbox has a QEMU").to_string();
    let ns = run(&["ip", "netns", "identify", &pid]).trim().to_string();
    assert!(ns.starts_with("zyg-"), "QEMU {pid} is in namespace {ns:?}");
    // What a dead daemon of this home left: a namespace with its prefix.
    let prefix = &ns[..ns.rfind('-').unwrap() + 1];
    let stray = format!("{prefix}deadbeef");
    run(&["ip", "netns", "add", &stray]);
    // SIGKILL: the successor re-adopts the sandbox (network and all) and
    // removes the stray.
    let mut child = d.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    d.relaunch(&["--prestart", "0"]).await;
    let now = namespaces();
    assert!(
        !now.contains(&stray),
        "the stray namespace survived: {now:?}"
    );
    assert!(
        now.contains(&ns),
        "the re-adopted sandbox lost its namespace: {now:?}"
    );
    assert_eq!(fetch(&d, &sb.id, URL).await, format!("OK {PAGE}"));
    let port = d.client.expose_port(&sb.id, 8000).await.unwrap();
    // Its host link: the veth peer of the namespace's eth0.
    let links = run(&["ip", "-n", &ns, "-o", "link", "show", "eth0"]);
    let peer: String = links
        .split("@if")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    d.client.remove(&sb.id).await.unwrap();
    assert!(!namespaces().contains(&ns));
    assert!(tokio::net::TcpStream::connect(&port.host).await.is_err());
    let gone = zygote_tests::eventually(Duration::from_secs(10), || {
        !run(&["ip", "-o", "link"]).contains(&format!("{peer}: zyh"))
    });
    assert!(gone, "host link {peer} outlived its sandbox");
    d.stop();
    let left: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The host's rules go with the last sandbox link on the host.
    let others = run(&["ip", "-o", "link"]).contains(": zyh");
    let tables = run(&["nft", "list", "tables"]);
    assert!(others || !tables.contains("ip zygote"), "{tables}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_without_networking() {
    if !require_e2e() {
        return;
    }
    let d = Daemon::start_with(&["--network", "none", "--prestart", "0"]).await;
    let sb = d.create().await;
    assert!(sb.network.is_none());
    let r = d
        .sh(
            &sb.id,
            "test -e /sys/class/net/eth0 && echo card || echo none",
        )
        .await;
    assert_eq!(r.stdout.trim(), "none");
    let e = d.client.expose_port(&sb.id, 8000).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("no network card"), "{e}");
    let e = d
        .client
        .create(&CreateSandbox {
            network: Some(policy(true, &[], &[])),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("--network nat"), "{e}");
}
