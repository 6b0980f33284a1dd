//! What the bench reads from the host it runs on (the daemon's host): memory
//! totals, a process's memory from `/proc/<pid>/smaps`, the daemon's pid and
//! the 2 MiB hugepage pool.

use anyhow::{bail, Result};

/// A `/proc/meminfo` field in KiB.
pub(crate) fn meminfo_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    field_kib(&s, key)
}

/// `VmRSS` of a process in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field_kib(&s, "VmRSS:")
}

fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Host memory of one QEMU process, in KiB, from its smaps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct QemuMemory {
    /// PSS of the whole process (hugetlb pages included, shared ones split).
    pub(crate) pss_kib: u64,
    /// Pages only this process maps (private clean + dirty + private hugetlb).
    pub(crate) private_kib: u64,
    /// PSS of the guest-RAM mapping alone.
    pub(crate) ram_pss_kib: u64,
    /// Private pages of the guest-RAM mapping (a copy-on-write child's own).
    pub(crate) ram_private_kib: u64,
    /// The guest-RAM mapping's page size in KiB (2048 when hugetlb-backed).
    pub(crate) ram_page_kib: u64,
}

/// Reads [`QemuMemory`] of `pid`; the guest-RAM mapping is the largest
/// `/memfd:` mapping (the daemon hands QEMU its memfd by path).
pub(crate) fn qemu_memory(pid: u32) -> Option<QemuMemory> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    Some(parse_smaps(&s))
}

pub(crate) fn parse_smaps(text: &str) -> QemuMemory {
    #[derive(Default)]
    struct Vma {
        memfd: bool,
        size: u64,
        pss: u64,
        private: u64,
        shared_huge: u64,
        private_huge: u64,
        page: u64,
    }
    let mut vmas: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(first) = parts.next() else { continue };
        if !first.ends_with(':') && first.contains('-') {
            // header: range perms offset dev inode [path]
            let path = line.split_whitespace().nth(5).unwrap_or("");
            vmas.push(Vma {
                memfd: path.starts_with("/memfd:"),
                ..Default::default()
            });
            continue;
        }
        let (Some(v), Some(vma)) = (
            parts.next().and_then(|v| v.parse::<u64>().ok()),
            vmas.last_mut(),
        ) else {
            continue;
        };
        match first {
            "Size:" => vma.size = v,
            "Pss:" => vma.pss = v,
            "Private_Clean:" | "Private_Dirty:" => vma.private += v,
            "Shared_Hugetlb:" => vma.shared_huge = v,
            "Private_Hugetlb:" => vma.private_huge = v,
            "KernelPageSize:" => vma.page = v,
            _ => {}
        }
    }
    let mut m = QemuMemory::default();
    for v in &vmas {
        m.pss_kib += v.pss + v.private_huge + v.shared_huge;
        m.private_kib += v.private + v.private_huge;
    }
    if let Some(ram) = vmas.iter().filter(|v| v.memfd).max_by_key(|v| v.size) {
        m.ram_pss_kib = ram.pss + ram.private_huge + ram.shared_huge;
        m.ram_private_kib = ram.private + ram.private_huge;
        m.ram_page_kib = ram.page;
    }
    m
}

/// The pid of the daemon serving `socket` (scanning /proc; the bench runs on
/// the daemon's host). Without a socket, the first `zygote daemon` found.
pub(crate) fn daemon_pid(socket: Option<&str>) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.len() < 2 || !args[0].ends_with("zygote") || args[1] != "daemon" {
            continue;
        }
        match socket {
            None => return Some(pid),
            Some(s) if args.iter().any(|a| a == s) => return Some(pid),
            Some(_) => {}
        }
    }
    None
}

/// 2 MiB pages a guest of `mib` needs.
pub(crate) fn huge_pages_for(mib: u64) -> u64 {
    mib.div_ceil(2)
}

/// Fails unless the 2 MiB pool has `need` pages available (free minus
/// reserved), saying how to grow it; `allow_fallback` turns that into a
/// warning (the cells then run on 4 KiB pages and say so).
pub(crate) fn check_hugepages(
    need: u64,
    what: &str,
    allow_fallback: bool,
) -> Result<Option<String>> {
    if need == 0 {
        return Ok(None);
    }
    let pool = zygote_mem::pool_info().map_err(|e| anyhow::anyhow!("{e}"))?;
    let have = pool.available();
    if have >= need {
        return Ok(None);
    }
    let target = pool.total + (need - have);
    let msg = format!(
        "{what} need {need} free 2 MiB hugepages but the pool has {have} available \
         (HugePages_Total {}, HugePages_Free {}, HugePages_Rsvd {}): grow it with \
         `echo {target} > /proc/sys/vm/nr_hugepages` (and check HugePages_Free reached it), \
         or drop the hugepage cells",
        pool.total, pool.free, pool.reserved
    );
    if allow_fallback {
        Ok(Some(format!(
            "{msg}; running anyway (--allow-hugepage-fallback)"
        )))
    } else {
        bail!("{msg} (or pass --allow-hugepage-fallback to measure the 4 KiB fallback)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 123 /usr/bin/qemu-system-x86_64
Size:               1024 kB
KernelPageSize:        4 kB
Rss:                 800 kB
Pss:                 400 kB
Private_Clean:        10 kB
Private_Dirty:        20 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
7f0000000000-7f0020000000 rw-p 00000000 00:01 4242 /memfd:zygote-abc (deleted)
Size:             524288 kB
KernelPageSize:        4 kB
Rss:               10000 kB
Pss:                6000 kB
Private_Clean:         0 kB
Private_Dirty:      5000 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
7f1000000000-7f1000001000 rw-s 00000000 00:01 4243 /memfd:small (deleted)
Size:                  4 kB
KernelPageSize:        4 kB
Pss:                   4 kB
Private_Dirty:         4 kB
VmFlags: rd wr sh mr mw me ms sd
";

    #[test]
    fn smaps_ram_and_total() {
        let m = parse_smaps(SMAPS);
        assert_eq!(m.ram_pss_kib, 6000);
        assert_eq!(m.ram_private_kib, 5000);
        assert_eq!(m.ram_page_kib, 4);
        assert_eq!(m.pss_kib, 400 + 6000 + 4);
        assert_eq!(m.private_kib, 30 + 5000 + 4);
    }

    #[test]
    fn smaps_hugetlb_ram() {
        let text = "\
7f0000000000-7f0020000000 rw-s 00000000 00:0f 99 /memfd:zygote-x (deleted)
Size:             524288 kB
KernelPageSize:     2048 kB
Pss:                   0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:  524288 kB
";
        let m = parse_smaps(text);
        assert_eq!(
            (m.ram_pss_kib, m.ram_private_kib, m.ram_page_kib),
            (524288, 524288, 2048)
        );
    }

    #[test]
    fn pages_for() {
        assert_eq!(huge_pages_for(512), 256);
        assert_eq!(huge_pages_for(1025), 513);
    }
}
