//! Shared helpers for the tier-2 tests: deterministic random sources with holes,
//! and serialized access to the host's hugepage pool.

#![allow(dead_code, unreachable_pub)]

use std::fs::File;

use zygote_mem::{has_2m_pool, reserve_pool, MemFd, PoolReservation};

pub const MIB: u64 = 1 << 20;

/// xorshift64*: deterministic bytes without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A memfd of `size` bytes with random data in scattered page runs (about a third
/// of it), holes elsewhere, one run of explicit zeros, and data touching the last
/// byte. Returns the memfd and its full expected contents.
pub fn random_source(name: &str, size: u64, seed: u64) -> (MemFd, Vec<u8>) {
    let src = MemFd::create(name, size).unwrap();
    let mut expect = vec![0u8; size as usize];
    let mut rng = Rng::new(seed);
    let pages = size / 4096;
    for _ in 0..(pages / 24).max(2) {
        let start = rng.below(pages) * 4096;
        let len = ((1 + rng.below(16)) * 4096).min(size - start);
        let mut data = vec![0u8; len as usize];
        rng.fill(&mut data);
        src.write_at(start, &data).unwrap();
        expect[start as usize..(start + len) as usize].copy_from_slice(&data);
    }
    // Written zeros: data for SEEK_DATA, a hole for persist.
    let zeros_at = (size / 2) / 4096 * 4096;
    let zlen = (128 * 1024).min(size - zeros_at);
    src.write_at(zeros_at, &vec![0u8; zlen as usize]).unwrap();
    expect[zeros_at as usize..(zeros_at + zlen) as usize].fill(0);
    let tail = [0xEEu8; 100];
    src.write_at(size - 100, &tail).unwrap();
    expect[(size - 100) as usize..].copy_from_slice(&tail);
    (src, expect)
}

/// Exclusive use of the hugepage pool, restored on drop. Field order matters:
/// the pool is restored before the lock is released.
pub struct HugePool {
    _reservation: PoolReservation,
    _lock: File,
}

/// Takes the cross-process hugepage lock and makes sure `pages` 2 MiB pages are
/// available (growing the pool as root). `None`, with the reason printed, when
/// no pool can be had on this host.
pub fn huge_pool(pages: u64, test: &str) -> Option<HugePool> {
    if !has_2m_pool() {
        eprintln!("SKIP {test}: this kernel has no 2 MiB hugetlb pool (no /sys/kernel/mm/hugepages/hugepages-2048kB)");
        return None;
    }
    let path = std::env::temp_dir().join("zygote-mem-hugepages.lock");
    // flock works on a read-only descriptor too (the file may belong to root).
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .or_else(|_| File::open(&path))
        .unwrap();
    lock.lock().unwrap();
    match reserve_pool(pages) {
        Ok(r) => Some(HugePool {
            _reservation: r,
            _lock: lock,
        }),
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            eprintln!(
                "SKIP {test}: cannot get {pages} free 2 MiB hugepages: {e}{cause} (as root: echo {pages} > /proc/sys/vm/nr_hugepages)"
            );
            None
        }
    }
}

pub fn contents(read: impl Fn(u64, &mut [u8]), size: u64) -> Vec<u8> {
    let mut out = vec![0u8; size as usize];
    for (i, chunk) in out.chunks_mut(8 << 20).enumerate() {
        read(i as u64 * (8 << 20), chunk);
    }
    out
}
