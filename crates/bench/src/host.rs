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

/// Host memory of one QEMU process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct QemuMemory {
    /// PSS of the whole process (hugetlb pages included).
    pub(crate) pss_kib: u64,
    /// Memory no other process shares: anonymous pages (heap, TCG buffers,
    /// a copy-on-write child's written guest pages), private hugetlb pages,
    /// plus a private-memory guest's whole memfd (see `ram_unique_kib`).
    pub(crate) unique_kib: u64,
    /// PSS of the guest-RAM mapping (pages QEMU has mapped so far).
    pub(crate) ram_pss_kib: u64,
    /// Guest RAM only this sandbox holds: for a copy-on-write mapping
    /// (`share=off`), its anonymous (written) pages; for its own memfd
    /// (`share=on`), the memfd's allocated size, mapped by QEMU yet or not.
    pub(crate) ram_unique_kib: u64,
    /// The guest-RAM mapping's page size in KiB (2048 when hugetlb-backed).
    pub(crate) ram_page_kib: u64,
}

#[derive(Debug, Default)]
struct Vma {
    memfd: bool,
    shared: bool,
    size: u64,
    pss: u64,
    anon: u64,
    shared_huge: u64,
    private_huge: u64,
    page: u64,
}

/// Reads [`QemuMemory`] of `pid`; the guest-RAM mapping is the largest
/// `/memfd:` mapping (the daemon hands QEMU its memfd by path).
pub(crate) fn qemu_memory(pid: u32) -> Option<QemuMemory> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (mut m, ram) = parse_smaps(&s);
    if let Some(ram) = ram.filter(|r| r.shared) {
        if let Some(kib) = memfd_allocated_kib(pid, ram.size * 1024) {
            m.unique_kib = m.unique_kib - m.ram_unique_kib + kib;
            m.ram_unique_kib = kib;
        }
    }
    Some(m)
}

/// Allocated KiB (`st_blocks`) of the memfd of `size` bytes `pid` holds open.
fn memfd_allocated_kib(pid: u32, size: u64) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for e in dir.flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        if !link.to_string_lossy().starts_with("/memfd:") {
            continue;
        }
        match std::fs::metadata(e.path()) {
            Ok(md) if md.size() == size => return Some(md.blocks() * 512 / 1024),
            _ => {}
        }
    }
    None
}

fn parse_smaps(text: &str) -> (QemuMemory, Option<Vma>) {
    let mut vmas: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(first) = parts.next() else { continue };
        if !first.ends_with(':') && first.contains('-') {
            // header: range perms offset dev inode [path]
            let f: Vec<&str> = line.split_whitespace().collect();
            vmas.push(Vma {
                memfd: f.get(5).is_some_and(|p| p.starts_with("/memfd:")),
                shared: f.get(1).is_some_and(|p| p.ends_with('s')),
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
            "Anonymous:" => vma.anon = v,
            "Shared_Hugetlb:" => vma.shared_huge = v,
            "Private_Hugetlb:" => vma.private_huge = v,
            "KernelPageSize:" => vma.page = v,
            _ => {}
        }
    }
    let mut m = QemuMemory::default();
    for v in &vmas {
        m.pss_kib += v.pss + v.private_huge + v.shared_huge;
        m.unique_kib += v.anon + v.private_huge;
    }
    let ram_at = vmas
        .iter()
        .enumerate()
        .filter(|(_, v)| v.memfd)
        .max_by_key(|(_, v)| v.size)
        .map(|(i, _)| i);
    let ram = ram_at.map(|i| vmas.swap_remove(i));
    if let Some(r) = &ram {
        m.ram_pss_kib = r.pss + r.private_huge + r.shared_huge;
        m.ram_unique_kib = r.anon + r.private_huge;
        m.ram_page_kib = r.page;
    }
    (m, ram)
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
/// reserved), saying how to grow it or which flag (`drop_hint`) drops those cells; `allow_fallback` turns that into a
/// warning (the cells then run on 4 KiB pages and say so).
pub(crate) fn check_hugepages(
    need: u64,
    what: &str,
    drop_hint: &str,
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
         or drop the hugepage cells ({drop_hint})",
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
Anonymous:            20 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
7f0000000000-7f0020000000 rw-p 00000000 00:01 4242 /memfd:zygote-abc (deleted)
Size:             524288 kB
KernelPageSize:        4 kB
Rss:               10000 kB
Pss:                6000 kB
Private_Clean:         0 kB
Private_Dirty:      5000 kB
Anonymous:          5000 kB
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
    fn smaps_cow_ram_and_total() {
        let (m, ram) = parse_smaps(SMAPS);
        assert!(!ram.unwrap().shared);
        assert_eq!(m.ram_pss_kib, 6000);
        assert_eq!(m.ram_unique_kib, 5000);
        assert_eq!(m.ram_page_kib, 4);
        assert_eq!(m.pss_kib, 400 + 6000 + 4);
        assert_eq!(m.unique_kib, 20 + 5000);
    }

    #[test]
    fn smaps_hugetlb_own_ram() {
        let text = "\
7f0000000000-7f0020000000 rw-s 00000000 00:0f 99 /memfd:zygote-x (deleted)
Size:             524288 kB
KernelPageSize:     2048 kB
Pss:                   0 kB
Anonymous:             0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:  524288 kB
";
        let (m, ram) = parse_smaps(text);
        let ram = ram.unwrap();
        assert!(ram.shared && ram.size == 524288);
        assert_eq!(
            (m.ram_pss_kib, m.ram_unique_kib, m.ram_page_kib),
            (524288, 524288, 2048)
        );
    }

    /// This test process's own memfd, mapped share=on and half written, reads
    /// as its allocated size through /proc/self/fd.
    #[test]
    fn memfd_blocks_of_a_live_process() {
        let fd = zygote_mem::MemFd::create("bench-host-test", 8 << 20).unwrap();
        let data = vec![1u8; 4 << 20];
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(fd.backend_path())
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &data, 0).unwrap();
        let kib = memfd_allocated_kib(std::process::id(), 8 << 20).unwrap();
        assert_eq!(kib, 4096);
    }

    #[test]
    fn pages_for() {
        assert_eq!(huge_pages_for(512), 256);
        assert_eq!(huge_pages_for(1025), 513);
    }
}
