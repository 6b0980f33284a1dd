//! `zygote doctor`'s hugepage check in its three states on the real pool: no
//! pool (warn), pool exhausted (warn), free/total (pass). It changes the host's
//! pool, so it is one test in its own binary (cargo runs test binaries one after
//! another), takes the cross-process hugepage lock zygote-mem's tests take, and
//! restores `nr_hugepages` and `nr_overcommit_hugepages` on drop, even when an
//! assertion fails.

use std::fs::File;
use std::process::Command;

use zygote_mem::{
    has_2m_pool, nr_hugepages, pool_info, set_nr_hugepages, PageKind, Region, HUGE_PAGE_2M,
    NR_OVERCOMMIT_2M_PATH,
};

/// Puts the pool back as it was when dropped.
struct RestorePool {
    nr: u64,
    overcommit: u64,
}

impl Drop for RestorePool {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_OVERCOMMIT_2M_PATH, format!("{}\n", self.overcommit));
        if let Err(e) = set_nr_hugepages(self.nr) {
            eprintln!("restoring nr_hugepages to {} failed: {e}", self.nr);
        }
    }
}

fn hugepages_check(home: &std::path::Path, sock: &std::path::Path) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_zygote"))
        .args(["doctor", "--json", "--home"])
        .arg(home)
        .arg("--socket")
        .arg(sock)
        .env_remove("ZYGOTE_URL")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}): {o:?}"));
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "hugepages")
        .cloned()
        .expect("a hugepages check")
}

#[test]
fn doctor_hugepages_no_pool_exhausted_and_free() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let why = if !root {
        Some("not root (the test resizes the hugepage pool)")
    } else if !has_2m_pool() {
        Some("this kernel has no 2 MiB hugetlb pool")
    } else {
        None
    };
    if let Some(w) = why {
        assert!(
            std::env::var("ZYGOTE_E2E").as_deref() != Ok("1"),
            "ZYGOTE_E2E=1 but the hugepage doctor test cannot run: {w}"
        );
        eprintln!("SKIP doctor_hugepages: {w}");
        return;
    }
    // Lock first, restore guard second: the guard drops (restores) before unlock.
    let lock_path = std::env::temp_dir().join("zygote-mem-hugepages.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .or_else(|_| File::open(&lock_path))
        .unwrap();
    lock.lock().unwrap();
    let _restore = RestorePool {
        nr: nr_hugepages().unwrap(),
        overcommit: std::fs::read_to_string(NR_OVERCOMMIT_2M_PATH)
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("none.sock");

    // 1. No pool (and no overcommit, or surplus pages would be handed out).
    std::fs::write(NR_OVERCOMMIT_2M_PATH, "0\n").unwrap();
    assert_eq!(set_nr_hugepages(0).unwrap(), 0);
    let c = hugepages_check(tmp.path(), &sock);
    assert_eq!(c["status"], "warn", "{c}");
    assert!(c["detail"].as_str().unwrap().starts_with("no pool"), "{c}");
    assert!(
        c["hint"]
            .as_str()
            .unwrap()
            .contains("echo 512 | sudo tee /proc/sys/vm/nr_hugepages"),
        "{c}"
    );

    // 2. A small pool, every page of it held by a hugetlb memfd of ours.
    let reached = set_nr_hugepages(4).unwrap();
    assert!(reached > 0, "the kernel gave no hugepage at all");
    let free = pool_info().unwrap().available();
    assert!(free > 0, "pool of {reached} but none free");
    let hold = Region::create("zygote-doctor-test-hold", free * HUGE_PAGE_2M, true).unwrap();
    assert_eq!(hold.kind(), PageKind::Huge2M, "{:?}", hold.warning());
    assert_eq!(pool_info().unwrap().available(), 0);
    let c = hugepages_check(tmp.path(), &sock);
    assert_eq!(c["status"], "warn", "{c}");
    let d = c["detail"].as_str().unwrap();
    assert!(
        d.starts_with(&format!("pool exhausted: 0/{reached} ")),
        "{c}"
    );
    assert!(c["hint"].as_str().unwrap().contains("nr_hugepages"), "{c}");

    // 3. Pages released: pass with free/total.
    drop(hold);
    let c = hugepages_check(tmp.path(), &sock);
    assert_eq!(c["status"], "pass", "{c}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{free}/{reached} free")),
        "{c}"
    );
    assert!(c["hint"].is_null(), "{c}");
}
