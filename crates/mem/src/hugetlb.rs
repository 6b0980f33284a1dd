//! The 2 MiB hugepage pool: read it (`/proc/meminfo`, sysfs `nr_hugepages`) and,
//! as root, grow it for a while ([`reserve_pool`], restored on drop).
//!
//! Owns only these files. It does not allocate hugetlb memory itself; regions do
//! (see [`crate::Region`]), and they decide on fallback from what the kernel
//! answers, not from these numbers, which other processes change at any time.

use std::path::{Path, PathBuf};

use crate::MemError;

/// 2 MiB: the hugetlb page size this crate uses.
pub const HUGE_PAGE_2M: u64 = 2 << 20;

/// Where the kernel reports pool totals.
pub const MEMINFO_PATH: &str = "/proc/meminfo";
/// The 2 MiB pool's size, readable by all, writable by root.
pub const NR_HUGEPAGES_2M_PATH: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
/// How many surplus 2 MiB pages the kernel may allocate beyond the pool.
pub const NR_OVERCOMMIT_2M_PATH: &str =
    "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_overcommit_hugepages";

/// Rounds `size` up to a multiple of 2 MiB (saturating at the largest multiple).
pub fn align_2m(size: u64) -> u64 {
    size.checked_next_multiple_of(HUGE_PAGE_2M)
        .unwrap_or(u64::MAX - (u64::MAX % HUGE_PAGE_2M))
}

/// The default-size hugepage pool as `/proc/meminfo` reports it (page counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolInfo {
    /// `HugePages_Total`.
    pub total: u64,
    /// `HugePages_Free`: pages not yet faulted in (reserved ones included).
    pub free: u64,
    /// `HugePages_Rsvd`: free pages promised to existing mappings.
    pub reserved: u64,
    /// `HugePages_Surp`: surplus pages beyond the pool (overcommit).
    pub surplus: u64,
    /// `Hugepagesize` in bytes (the default hugepage size).
    pub page_size: u64,
}

impl PoolInfo {
    /// Pages a new region can still get: free minus reserved.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }
}

/// Parses the hugepage lines of a `/proc/meminfo` text.
pub fn parse_meminfo(text: &str) -> Result<PoolInfo, MemError> {
    let field = |key: &str| -> Result<u64, MemError> {
        let bad = |t: &str| MemError::PoolParse {
            what: key.into(),
            path: MEMINFO_PATH.into(),
            text: t.into(),
        };
        let line = text
            .lines()
            .find(|l| l.split(':').next() == Some(key))
            .ok_or_else(|| bad("(missing)"))?;
        let value = line.split(':').nth(1).unwrap_or("").trim();
        let mut parts = value.split_whitespace();
        let n: u64 = parts
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(line))?;
        Ok(match parts.next() {
            Some("kB") => n * 1024,
            _ => n,
        })
    };
    Ok(PoolInfo {
        total: field("HugePages_Total")?,
        free: field("HugePages_Free")?,
        reserved: field("HugePages_Rsvd")?,
        surplus: field("HugePages_Surp")?,
        page_size: field("Hugepagesize")?,
    })
}

/// Reads the pool from `/proc/meminfo`.
pub fn pool_info() -> Result<PoolInfo, MemError> {
    let text = std::fs::read_to_string(MEMINFO_PATH).map_err(|source| MemError::Pool {
        op: "read".into(),
        path: MEMINFO_PATH.into(),
        source,
    })?;
    parse_meminfo(&text)
}

fn read_count(path: &str) -> Result<u64, MemError> {
    let text = std::fs::read_to_string(path).map_err(|source| MemError::Pool {
        op: "read".into(),
        path: path.into(),
        source,
    })?;
    text.trim().parse().map_err(|_| MemError::PoolParse {
        what: "a page count".into(),
        path: path.into(),
        text: text.clone(),
    })
}

fn write_count(path: &str, n: u64) -> Result<(), MemError> {
    std::fs::write(path, format!("{n}\n")).map_err(|source| MemError::Pool {
        op: format!("write {n} to"),
        path: PathBuf::from(path),
        source,
    })
}

/// The 2 MiB pool size (`nr_hugepages`).
pub fn nr_hugepages() -> Result<u64, MemError> {
    read_count(NR_HUGEPAGES_2M_PATH)
}

/// Sets the 2 MiB pool size (root only) and returns what the kernel actually
/// reached, which may be less when memory is short or fragmented.
pub fn set_nr_hugepages(n: u64) -> Result<u64, MemError> {
    write_count(NR_HUGEPAGES_2M_PATH, n)?;
    nr_hugepages()
}

/// A temporary change to the pool, undone on drop: `nr_hugepages` (and
/// `nr_overcommit_hugepages`, if changed) go back to what they were.
#[derive(Debug)]
#[must_use = "dropping the reservation restores the pool at once"]
pub struct PoolReservation {
    previous: u64,
    previous_overcommit: Option<u64>,
}

impl PoolReservation {
    /// `nr_hugepages` before the reservation.
    pub fn previous(&self) -> u64 {
        self.previous
    }

    /// Sets `nr_overcommit_hugepages` to 0 until drop, so that an empty pool
    /// really is empty (surplus pages would otherwise be handed out).
    pub fn without_overcommit(mut self) -> Result<PoolReservation, MemError> {
        let now = read_count(NR_OVERCOMMIT_2M_PATH)?;
        if now != 0 {
            write_count(NR_OVERCOMMIT_2M_PATH, 0)?;
            self.previous_overcommit.get_or_insert(now);
        }
        Ok(self)
    }
}

impl Drop for PoolReservation {
    fn drop(&mut self) {
        if let Err(error) = write_count(NR_HUGEPAGES_2M_PATH, self.previous) {
            tracing::warn!(%error, previous = self.previous, "restoring nr_hugepages failed");
        }
        if let Some(n) = self.previous_overcommit {
            if let Err(error) = write_count(NR_OVERCOMMIT_2M_PATH, n) {
                tracing::warn!(%error, previous = n, "restoring nr_overcommit_hugepages failed");
            }
        }
    }
}

/// Makes sure at least `pages` 2 MiB hugepages are available (free and not
/// reserved), growing `nr_hugepages` if needed (root only). The pool goes back to
/// its previous size when the returned guard drops; pages still held by regions
/// then stay allocated (as surplus) until those regions drop.
pub fn reserve_pool(pages: u64) -> Result<PoolReservation, MemError> {
    let previous = nr_hugepages()?;
    let guard = PoolReservation {
        previous,
        previous_overcommit: None,
    };
    let info = pool_info()?;
    if info.page_size != HUGE_PAGE_2M {
        // /proc/meminfo reports the default size; only count it when it is ours.
        tracing::debug!(
            page_size = info.page_size,
            "default hugepage size is not 2 MiB"
        );
    }
    let available = info.available();
    if available >= pages {
        return Ok(guard);
    }
    let target = previous + (pages - available);
    let total = set_nr_hugepages(target)?;
    let free = pool_info()?.available();
    if free < pages {
        return Err(MemError::PoolShort {
            wanted: pages,
            free,
            total,
        });
    }
    tracing::debug!(previous, total, "hugepage pool grown");
    Ok(guard)
}

/// Whether `path` exists: whether this kernel has a 2 MiB hugetlb pool at all.
pub fn has_2m_pool() -> bool {
    Path::new(NR_HUGEPAGES_2M_PATH).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "MemTotal:       24730768 kB\nAnonHugePages:    204800 kB\n\
        HugePages_Total:       2\nHugePages_Free:        1\nHugePages_Rsvd:        1\n\
        HugePages_Surp:        0\nHugepagesize:       2048 kB\nHugetlb:            4096 kB\n";

    #[test]
    fn parses_meminfo() {
        let p = parse_meminfo(SAMPLE).unwrap();
        assert_eq!(
            p,
            PoolInfo {
                total: 2,
                free: 1,
                reserved: 1,
                surplus: 0,
                page_size: 2 << 20
            }
        );
        assert_eq!(p.available(), 0);
    }

    #[test]
    fn meminfo_without_hugepages_is_an_error_naming_the_field() {
        let err = parse_meminfo("MemTotal: 1 kB\n").unwrap_err();
        assert!(err.to_string().contains("HugePages_Total"), "{err}");
    }

    #[test]
    fn aligns_to_2m() {
        assert_eq!(align_2m(1), HUGE_PAGE_2M);
        assert_eq!(align_2m(4096), HUGE_PAGE_2M);
        assert_eq!(align_2m(HUGE_PAGE_2M), HUGE_PAGE_2M);
        assert_eq!(align_2m(HUGE_PAGE_2M + 1), 2 * HUGE_PAGE_2M);
        assert_eq!(align_2m(u64::MAX) % HUGE_PAGE_2M, 0);
    }

    #[test]
    fn live_pool_is_readable() {
        let p = pool_info().unwrap();
        assert!(p.free <= p.total + p.surplus, "{p:?}");
    }
}
