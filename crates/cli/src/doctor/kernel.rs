//! Kernel feature checks: the hugepage pool, memfd and hugetlb memfds, reading
//! another process's page map and memory, userfaultfd, cgroups, `/dev/net/tun`,
//! network namespaces, KSM. The syscalls are zygote-mem's probes; this module
//! only reads `/proc` and `/sys` and judges.

use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use zygote_mem::PoolInfo;

use super::Check;

/// The hint for an empty or exhausted hugepage pool.
pub(crate) const HUGEPAGE_HINT: &str = "echo 512 | sudo tee /proc/sys/vm/nr_hugepages";

pub(super) fn checks() -> Vec<Check> {
    let (pagemap, vm_readv) = other_process_memory();
    vec![
        hugepages(),
        memfd(),
        memfd_hugetlb(),
        pagemap,
        vm_readv,
        userfaultfd(),
        cgroups(),
        dev_net_tun(),
        net_namespaces(),
        ksm(),
    ]
}

fn hugepages() -> Check {
    let n = "hugepages";
    if !zygote_mem::has_2m_pool() {
        return Check::warn(
            n,
            format!(
                "this kernel has no 2 MiB hugetlb pool ({} is missing)",
                zygote_mem::NR_HUGEPAGES_2M_PATH
            ),
            "use a kernel with CONFIG_HUGETLBFS; --hugepages falls back to 4 KiB pages",
        );
    }
    match zygote_mem::pool_info() {
        Ok(p) => hugepage_check(&p),
        Err(e) => Check::warn(n, e.to_string(), HUGEPAGE_HINT),
    }
}

/// The hugepage pool in one of three states: no pool (warn), pool exhausted
/// (warn), or free/total (pass). Surplus pages (handed out beyond the pool and
/// still held after it shrank) are not part of the pool.
pub(crate) fn hugepage_check(p: &PoolInfo) -> Check {
    let n = "hugepages";
    let pool = p.total.saturating_sub(p.surplus);
    let free = p.available();
    let mib = p.page_size >> 20;
    if pool == 0 && free == 0 {
        return Check::warn(
            n,
            format!(
                "no pool: 0 {mib} MiB hugepages reserved (HugePages_Total {}, surplus {}); \
                 --hugepages falls back to 4 KiB pages",
                p.total, p.surplus
            ),
            format!("reserve a pool: {HUGEPAGE_HINT}"),
        );
    }
    let surplus = if p.surplus > 0 {
        format!(", {} surplus in use", p.surplus)
    } else {
        String::new()
    };
    if free == 0 {
        return Check::warn(
            n,
            format!(
                "pool exhausted: 0/{pool} {mib} MiB hugepages free ({} unused but promised \
                 to mappings{surplus}); --hugepages falls back to 4 KiB pages",
                p.reserved
            ),
            format!(
                "grow the pool past the {pool} pages in use ({HUGEPAGE_HINT}, with 512 more \
                 than now), or stop what holds them"
            ),
        );
    }
    Check::pass(
        n,
        format!(
            "{free}/{pool} free {mib} MiB hugepages ({} MiB free{surplus})",
            free * mib
        ),
    )
}

fn memfd() -> Check {
    let n = "memfd";
    match zygote_mem::MemFd::create("zygote-doctor", 1 << 20) {
        Ok(_) => Check::pass(n, "memfd_create works (guest RAM is a shared memfd)"),
        Err(e) => Check::fail(
            n,
            crate::output::chain(&e),
            "zygote needs memfd_create (Linux >= 3.17, not blocked by seccomp)",
        ),
    }
}

fn memfd_hugetlb() -> Check {
    let n = "memfd_hugetlb";
    match zygote_mem::probe_hugetlb_memfd() {
        Ok(()) => Check::pass(n, "memfd_create(MFD_HUGETLB | MFD_HUGE_2MB) works"),
        Err(e) => Check::warn(
            n,
            crate::output::chain(&e),
            "use a kernel with CONFIG_HUGETLBFS; --hugepages falls back to 4 KiB pages",
        ),
    }
}

/// `pagemap` and `process_vm_readv` against a child process of ours (`sleep`):
/// the ELF header its binary maps first is read across processes and must say
/// `\x7fELF`; that page's pagemap entry must be present with a frame number.
fn other_process_memory() -> (Check, Check) {
    let (pn, vn) = ("pagemap", "process_vm_readv");
    let hint_root = "run as root (CAP_SYS_PTRACE for process_vm_readv, CAP_SYS_ADMIN for page frame numbers); check kernel.yama.ptrace_scope";
    let mut child = match Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let d = format!("cannot start `sleep` to probe with: {e}");
            return (Check::skip(pn, d.clone()), Check::skip(vn, d));
        }
    };
    let pid = child.id();
    let addr = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 6
                    && f[2] == "00000000"
                    && f[1].starts_with('r')
                    && f[5].starts_with('/'))
                .then(|| u64::from_str_radix(f[0].split('-').next()?, 16).ok())
                .flatten()
            })
        });
    let result = match addr {
        None => {
            let d = format!("cannot read /proc/{pid}/maps of a child process");
            (
                Check::warn(pn, d.clone(), hint_root),
                Check::warn(vn, d, hint_root),
            )
        }
        Some(addr) => {
            let mut buf = [0u8; 4];
            let readv = match zygote_mem::read_process_memory(pid, addr, &mut buf) {
                Ok(4) if &buf == b"\x7fELF" => Check::pass(
                    vn,
                    format!("read a child's memory at {addr:#x} (its ELF header)"),
                ),
                Ok(k) => Check::warn(
                    vn,
                    format!("read {k} bytes {buf:02x?} at {addr:#x}, expected the ELF magic"),
                    hint_root,
                ),
                Err(e) => Check::warn(vn, format!("process_vm_readv: {e}"), hint_root),
            };
            let pagemap = match zygote_mem::pagemap_entry(pid, addr) {
                Ok(e) if e & zygote_mem::PAGEMAP_PRESENT == 0 => Check::warn(
                    pn,
                    format!(
                        "/proc/{pid}/pagemap readable but the page at {addr:#x} reads as absent"
                    ),
                    hint_root,
                ),
                Ok(e) if e & zygote_mem::PAGEMAP_PFN_MASK == 0 => Check::warn(
                    pn,
                    format!("/proc/{pid}/pagemap readable, page frame numbers hidden (zero)"),
                    hint_root,
                ),
                Ok(_) => Check::pass(
                    pn,
                    "/proc/<pid>/pagemap of a child readable with page frame numbers",
                ),
                Err(e) => Check::warn(pn, format!("/proc/{pid}/pagemap: {e}"), hint_root),
            };
            (pagemap, readv)
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn userfaultfd() -> Check {
    let n = "userfaultfd";
    match zygote_mem::probe_userfaultfd() {
        Ok(()) => Check::pass(n, "userfaultfd(2) opens"),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Check::warn(
            n,
            format!("userfaultfd: {e}"),
            "use a kernel with CONFIG_USERFAULTFD",
        ),
        Err(e) => Check::warn(
            n,
            format!("userfaultfd: {e}"),
            "run as root, or allow it: sudo sysctl vm.unprivileged_userfaultfd=1",
        ),
    }
}

fn cgroups() -> Check {
    let n = "cgroups";
    if let Ok(c) = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers") {
        let ctl: Vec<&str> = c.split_whitespace().collect();
        let missing: Vec<&str> = ["cpu", "memory"]
            .into_iter()
            .filter(|w| !ctl.contains(w))
            .collect();
        let detail = format!("v2 at /sys/fs/cgroup, controllers: {}", ctl.join(" "));
        return if missing.is_empty() {
            Check::pass(n, detail)
        } else {
            Check::warn(
                n,
                format!("{detail} (no {})", missing.join(", ")),
                "enable the controllers (kernel command line cgroup_enable=memory; systemd Delegate=)",
            )
        };
    }
    if let Ok(t) = std::fs::read_to_string("/proc/cgroups") {
        let enabled: Vec<&str> = t
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4 && f[3] == "1").then_some(f[0])
            })
            .collect();
        if !enabled.is_empty() {
            return Check::pass(n, format!("v1, controllers: {}", enabled.join(" ")));
        }
    }
    Check::warn(
        n,
        "no cgroup filesystem found (neither /sys/fs/cgroup/cgroup.controllers nor enabled controllers in /proc/cgroups)",
        "mount cgroup2: sudo mount -t cgroup2 none /sys/fs/cgroup",
    )
}

fn dev_net_tun() -> Check {
    let n = "dev_net_tun";
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Check::pass(n, "/dev/net/tun opens read-write"),
        Err(e) if e.kind() == ErrorKind::NotFound => Check::warn(
            n,
            "/dev/net/tun does not exist",
            "sudo modprobe tun (inside a container: pass --device /dev/net/tun)",
        ),
        Err(e) => Check::warn(
            n,
            format!("/dev/net/tun: {e}"),
            "run as root (CAP_NET_ADMIN)",
        ),
    }
}

fn net_namespaces() -> Check {
    let n = "net_namespaces";
    if !std::path::Path::new("/proc/self/ns/net").exists() {
        return Check::warn(
            n,
            "/proc/self/ns/net is missing",
            "use a kernel with CONFIG_NET_NS",
        );
    }
    // A child that unshares its network namespace before exec'ing `zygote --version`.
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Check::skip(n, format!("cannot find our own binary: {e}")),
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and calls only
    // unshare(2), which is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.status() {
        Ok(s) if s.success() => Check::pass(n, "a child process created its own network namespace"),
        Ok(s) => Check::warn(n, format!("the probe child exited with {s}"), "run as root"),
        Err(e) => Check::warn(
            n,
            format!("unshare(CLONE_NEWNET): {e}"),
            "run as root (CAP_SYS_ADMIN); check user.max_net_namespaces",
        ),
    }
}

fn ksm() -> Check {
    let n = "ksm";
    let base = std::path::Path::new("/sys/kernel/mm/ksm");
    let read = |f: &str| std::fs::read_to_string(base.join(f)).map(|s| s.trim().to_string());
    match read("run") {
        Err(_) => Check::warn(
            n,
            "no /sys/kernel/mm/ksm: this kernel has no KSM",
            "use a kernel with CONFIG_KSM to merge identical guest pages across sandboxes",
        ),
        Ok(r) if r == "1" => Check::pass(
            n,
            format!(
                "running: {} pages shared, {} sharing",
                read("pages_shared").unwrap_or_else(|_| "?".into()),
                read("pages_sharing").unwrap_or_else(|_| "?".into())
            ),
        ),
        Ok(r) => Check::warn(
            n,
            format!("off (/sys/kernel/mm/ksm/run = {r}): identical pages of unrelated sandboxes are not merged"),
            "echo 1 | sudo tee /sys/kernel/mm/ksm/run",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn pool(total: u64, free: u64, reserved: u64, surplus: u64) -> PoolInfo {
        PoolInfo {
            total,
            free,
            reserved,
            surplus,
            page_size: 2 << 20,
        }
    }

    #[test]
    fn hugepages_in_three_states() {
        let c = hugepage_check(&pool(0, 0, 0, 0));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.starts_with("no pool"), "{}", c.detail);
        assert!(c.hint.unwrap().contains(HUGEPAGE_HINT));
        // Pages still held after the pool shrank to 0 are surplus: still no pool.
        assert!(hugepage_check(&pool(3, 0, 0, 3))
            .detail
            .starts_with("no pool"));
        let c = hugepage_check(&pool(4, 0, 0, 0));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.starts_with("pool exhausted: 0/4"), "{}", c.detail);
        assert!(c.hint.unwrap().contains(HUGEPAGE_HINT));
        // Free but promised to mappings counts as exhausted.
        assert!(hugepage_check(&pool(4, 2, 2, 0))
            .detail
            .starts_with("pool exhausted"));
        let c = hugepage_check(&pool(512, 500, 0, 0));
        assert_eq!(c.status, Status::Pass);
        assert!(c.detail.starts_with("500/512 free"), "{}", c.detail);
        assert!(c.hint.is_none());
    }
}
