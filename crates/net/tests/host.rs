//! Real namespaces, links and nftables on this host (root; iproute2 and
//! nftables installed by scripts/install-deps.sh). No traffic leaves the
//! machine: the only connection is to an address inside the test's own
//! namespace.

use std::collections::HashSet;
use std::process::Command;

use zygote_net::{ns, Cidr, HostConfig, HostNet, Policy};

fn sh(args: &[&str]) -> String {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = Command::new("nft").arg("--version").output().is_ok();
    if !(root && tools) {
        eprintln!("skipped: needs root and nftables (scripts/install-deps.sh)");
    }
    root && tools
}

fn host() -> std::sync::Arc<HostNet> {
    let mut c = HostConfig::new(format!("t{}", std::process::id()));
    c.spares = 0;
    HostNet::init(c).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_with_its_policy_and_port_then_nothing_left() {
    if !usable() {
        return;
    }
    let h = host();
    let net = tokio::task::spawn_blocking({
        let h = h.clone();
        move || h.create(Policy::open())
    })
    .await
    .unwrap()
    .unwrap();
    let name = net.name().to_string();
    assert!(sh(&["ip", "netns", "list"]).contains(&name));
    let links = sh(&["ip", "-n", &name, "-br", "addr"]);
    assert!(
        links.contains("tap0") && links.contains("10.0.2.1/30"),
        "{links}"
    );
    assert!(links.contains("eth0@"), "{links}");
    let route = sh(&["ip", "-n", &name, "route"]);
    assert!(route.contains("default via 10.200."), "{route}");
    // The policy is the namespace's ruleset, replaced whole.
    let p = Policy {
        internet: false,
        allow_out: vec![Cidr::parse("198.18.0.2/32").unwrap()],
        deny_out: vec![Cidr::parse("198.18.0.0/15").unwrap()],
    };
    net.set_policy(p.clone()).unwrap();
    let rules = sh(&[
        "ip", "netns", "exec", &name, "nft", "list", "table", "inet", "zygote",
    ]);
    assert!(
        rules.contains("198.18.0.0/15") && rules.contains("198.18.0.2"),
        "{rules}"
    );
    net.set_policy(Policy::open()).unwrap();
    let rules = sh(&[
        "ip", "netns", "exec", &name, "nft", "list", "table", "inet", "zygote",
    ]);
    assert!(!rules.contains("198.18.0.0/15"), "{rules}");
    assert_eq!(net.policy(), Policy::open());
    // An exposed port reaches the guest address inside the namespace (here a
    // listener on that address in the namespace itself stands for the guest).
    assert!(sh(&["ip", "-n", &name, "addr", "add", "10.0.2.2/32", "dev", "lo"]).is_empty());
    let listener = ns::run_in(&net.path(), || {
        std::net::TcpListener::bind("10.0.2.2:8000")
            .map_err(|e| zygote_net::NetError::Limit(e.to_string()))
    })
    .unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let (mut c, _) = listener.accept().unwrap();
        c.write_all(b"from inside").unwrap();
    });
    let addr = net.expose(8000).await.unwrap();
    assert!(addr.ip().is_loopback());
    assert_eq!(
        net.expose(8000).await.unwrap(),
        addr,
        "exposing twice gives the same address"
    );
    assert!(net
        .expose(0)
        .await
        .unwrap_err()
        .to_string()
        .contains("port 0"));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut got = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut got)
        .await
        .unwrap();
    assert_eq!(got, "from inside");
    assert_eq!(net.ports(), vec![(8000, addr)]);
    // The host end of the veth pair: `eth0@if<its index>`.
    let peer: u32 = links
        .split("eth0@if")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no veth peer in {links}"));
    assert!(host_link_with_index(peer).unwrap().starts_with("zyh"));
    drop(net);
    assert!(!sh(&["ip", "netns", "list"]).contains(&name));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port closed with the sandbox"
    );
    // Its host link went with it (the kernel frees a namespace, and the
    // pair with it, in the background).
    let t = std::time::Instant::now();
    while host_link_with_index(peer).is_some() {
        assert!(
            t.elapsed().as_secs() < 10,
            "host link {peer} outlived its namespace"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn host_link_with_index(i: u32) -> Option<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .find_map(|e| {
            let idx = std::fs::read_to_string(e.path().join("ifindex")).ok()?;
            (idx.trim().parse::<u32>().ok()? == i)
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_daemons_namespaces_are_swept_and_only_its_own() {
    if !usable() {
        return;
    }
    let h = host();
    let kept = h.create(Policy::open()).unwrap();
    let left = h.create(Policy::open()).unwrap();
    let left_name = left.name().to_string();
    left.detach();
    let mut oc = HostConfig::new(format!("o{}", std::process::id()));
    oc.spares = 0;
    let other = HostNet::init(oc).unwrap();
    let foreign = other.create(Policy::open()).unwrap();
    let keep: HashSet<String> = [kept.name().to_string()].into();
    assert_eq!(h.sweep(&keep), 1);
    let list = sh(&["ip", "netns", "list"]);
    assert!(!list.contains(&left_name), "{list}");
    assert!(
        list.contains(kept.name()) && list.contains(foreign.name()),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spares_are_made_ahead_taken_and_removed_at_shutdown() {
    if !usable() {
        return;
    }
    let mut c = HostConfig::new(format!("s{}", std::process::id()));
    c.spares = 2;
    let h = HostNet::init(c).unwrap();
    h.refill();
    let wait_full = || {
        let t0 = std::time::Instant::now();
        while h.spare_count() < 2 {
            assert!(t0.elapsed().as_secs() < 20, "spares never made");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait_full();
    let prefix = format!("zyg-s{}-", std::process::id());
    let ours = || -> Vec<String> {
        sh(&["ip", "netns", "list"])
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&prefix))
            .map(str::to_string)
            .collect()
    };
    let before = ours();
    assert_eq!(before.len(), 2, "{before:?}");
    // A start takes a spare (with its own policy applied), and more are made.
    let net = h
        .create(Policy {
            internet: false,
            allow_out: vec![],
            deny_out: vec![],
        })
        .unwrap();
    assert!(before.contains(&net.name().to_string()));
    let rules = sh(&[
        "ip",
        "netns",
        "exec",
        net.name(),
        "nft",
        "list",
        "table",
        "inet",
        "zygote",
    ]);
    assert!(rules.contains("jump refuse"), "{rules}");
    wait_full();
    drop(net);
    h.shutdown();
    assert!(ours().is_empty(), "{:?}", ours());
}
