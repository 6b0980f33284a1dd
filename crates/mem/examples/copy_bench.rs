//! Copy throughput: 4 KiB vs 2 MiB hugetlb destination, pre-faulted or not, 1 or
//! 2 threads, for every copy method, from a 1 GiB source memfd with about 600 MB
//! touched in scattered 1 MiB runs. Prints the p50 (and min/max) of N runs.
//!
//! ```text
//! cargo run --release -p zygote-mem --example copy_bench -- [SIZE_MIB] [TOUCHED_MB] [RUNS] [4K|2M]
//! ```
//!
//! The hugetlb rows need root (the pool is grown for the run and restored at the
//! end) or a pool of SIZE_MIB/2 free pages; without one they are skipped.

use std::time::Instant;

use zygote_mem::{reserve_pool, CopyMethod, CopyOptions, MemFd, PageKind, Prefault, Region};

const MIB: u64 = 1 << 20;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn p50(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let size = arg(1, 1024) * MIB;
    let touched = arg(2, 600) * 1_000_000;
    let runs = arg(3, 5) as usize;
    let only = std::env::args().nth(4);

    // Source: 1 MiB runs spread over the file (stride chosen to hit ~`touched`).
    let src = MemFd::create("copy-bench-src", size)?;
    let chunks = size / MIB;
    let want = touched.div_ceil(MIB).min(chunks);
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut buf = vec![0u8; MIB as usize];
    let mut n = 0;
    for i in 0..chunks {
        // Bresenham-style spread: touch `want` of `chunks` evenly.
        if (i + 1) * want / chunks > i * want / chunks {
            for w in buf.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                w.copy_from_slice(&state.to_le_bytes());
            }
            src.write_at(i * MIB, &buf)?;
            n += 1;
        }
    }
    let ranges = src.data_ranges()?;
    println!(
        "source: {} MiB, {} MB touched in {} ranges ({} x 1 MiB), {runs} runs per row",
        size / MIB,
        n * MIB / 1_000_000,
        ranges.len(),
        n
    );

    let pool = match reserve_pool(size.div_ceil(2 * MIB)) {
        Ok(p) => Some(p),
        Err(e) => {
            println!("hugetlb rows skipped: {e}");
            None
        }
    };

    println!(
        "{:<8} {:<14} {:<9} {:>3} | {:>10} {:>10} {:>10} | {:>9} | {:>10}",
        "target", "method", "prefault", "thr", "copy p50", "min", "max", "MB/s p50", "prep p50"
    );
    for huge in [false, true] {
        if (huge && pool.is_none())
            || only
                .as_deref()
                .is_some_and(|o| o != if huge { "2M" } else { "4K" })
        {
            continue;
        }
        let methods: &[CopyMethod] = if huge {
            &[CopyMethod::PreadIntoMap, CopyMethod::Memcpy]
        } else {
            &[CopyMethod::PwriteFromMap, CopyMethod::Memcpy]
        };
        for &method in methods {
            for prefault in [false, true] {
                for threads in [1usize, 2] {
                    let (mut ms, mut mbs, mut prep) = (vec![], vec![], vec![]);
                    for _ in 0..runs {
                        let t = Instant::now();
                        let pf = if prefault {
                            Prefault::Ranges(ranges.clone())
                        } else {
                            Prefault::None
                        };
                        let dst = Region::prepare_destination("copy-bench-dst", size, huge, &pf)?;
                        prep.push(t.elapsed().as_secs_f64() * 1e3);
                        if huge && dst.kind() != PageKind::Huge2M {
                            return Err(format!("no hugepages: {:?}", dst.warning()).into());
                        }
                        let opts = CopyOptions {
                            len: None,
                            threads,
                            method,
                        };
                        let st = dst.copy_from(&src, &opts)?;
                        ms.push(st.ms());
                        mbs.push(st.mb_per_s());
                    }
                    let (m, lo, hi) = p50(&mut ms);
                    let (r, _, _) = p50(&mut mbs);
                    let (p, _, _) = p50(&mut prep);
                    println!(
                        "{:<8} {:<14} {:<9} {:>3} | {:>7.1} ms {:>7.1} ms {:>7.1} ms | {:>9.0} | {:>7.1} ms",
                        if huge { "2M" } else { "4K" },
                        format!("{method:?}"),
                        if prefault { "yes" } else { "no" },
                        threads,
                        m,
                        lo,
                        hi,
                        r,
                        p
                    );
                }
            }
        }
    }
    drop(pool);
    Ok(())
}
