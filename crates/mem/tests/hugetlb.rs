//! Tier 2: 2 MiB hugetlb regions with real syscalls. Every test takes the
//! cross-process hugepage lock (they change the host's pool) and needs at most
//! 8 pages at once; each skips, saying why, only when no pool can be reserved.

mod common;

use common::{contents, huge_pool, random_source, MIB};
use zygote_mem::{
    pool_info, CopyMethod, CopyOptions, Mapping, MemError, PageKind, Prefault, Region, HUGE_PAGE_2M,
};

fn eperm<T>(r: Result<T, MemError>) -> bool {
    matches!(r, Err(MemError::Io { source, .. }) if source.raw_os_error() == Some(libc::EPERM))
}

#[test]
fn huge_copy_matches_source_byte_for_byte_every_method_and_thread_count() {
    let Some(_pool) = huge_pool(4, "huge_copy_matches_source") else {
        return;
    };
    let size = 7 * MIB + 3 * 4096; // not 2 MiB aligned: 4 pages, logical size kept
    let (src, expect) = random_source("zygote-h-copy-src", size, 11);
    for (method, threads, prefault) in [
        (CopyMethod::Auto, 1, Prefault::None),
        (CopyMethod::Auto, 2, Prefault::All),
        (CopyMethod::Memcpy, 1, Prefault::All),
        (CopyMethod::PreadIntoMap, 1, Prefault::All),
        (CopyMethod::PreadIntoMap, 2, Prefault::None),
        (CopyMethod::Memcpy, 2, Prefault::None),
    ] {
        let dst = Region::prepare_destination("zygote-h-copy-dst", size, true, &prefault).unwrap();
        assert_eq!(dst.kind(), PageKind::Huge2M, "{:?}", dst.warning());
        assert!(dst.warning().is_none());
        assert_eq!((dst.size(), dst.alloc_size()), (size, 8 * MIB));
        let opts = CopyOptions {
            len: None,
            threads,
            method,
        };
        let st = dst.copy_from(&src, &opts).unwrap();
        if method == CopyMethod::Auto {
            assert_eq!(st.method, CopyMethod::PreadIntoMap);
        }
        assert_eq!(
            st.bytes,
            src.data_ranges()
                .unwrap()
                .iter()
                .map(|r| r.len)
                .sum::<u64>()
        );
        let got = contents(|o, b| dst.read_at(o, b).unwrap(), size);
        assert!(
            got == expect,
            "{method:?} x{threads} {prefault:?}: bytes differ"
        );
        // Reads beyond the logical size are refused even though the file is larger.
        assert!(matches!(
            dst.read_at(size, &mut [0u8; 1]),
            Err(MemError::OutOfRange { .. })
        ));
    }
}

#[test]
fn huge_region_of_a_4096_byte_source_reports_4096() {
    let Some(_pool) = huge_pool(1, "huge_region_of_4096_bytes") else {
        return;
    };
    let (src, expect) = random_source("zygote-h-4k-src", 4096, 12);
    let dst = Region::create("zygote-h-4k", 4096, true).unwrap();
    assert_eq!(dst.kind(), PageKind::Huge2M, "{:?}", dst.warning());
    assert_eq!(dst.size(), 4096);
    assert_eq!(dst.alloc_size(), HUGE_PAGE_2M);
    assert_eq!(dst.memfd().size(), HUGE_PAGE_2M);
    assert_eq!(dst.allocated_bytes().unwrap(), HUGE_PAGE_2M);
    assert_eq!(
        dst.data_ranges()
            .unwrap()
            .iter()
            .map(|r| r.len)
            .sum::<u64>(),
        4096
    );
    let path = dst.backend_path();
    let fd = dst.memfd().as_fd();
    use std::os::fd::AsRawFd;
    assert_eq!(
        path.to_string_lossy(),
        format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd())
    );
    assert!(std::fs::read_link(&path)
        .unwrap()
        .to_string_lossy()
        .contains("zygote-h-4k"));
    dst.copy_from(&src, &CopyOptions::default()).unwrap();
    let mut got = vec![0u8; 4096];
    dst.read_at(0, &mut got).unwrap();
    assert_eq!(got, expect);
}

#[test]
fn huge_region_seals_and_refuses_writes_with_eperm() {
    let Some(_pool) = huge_pool(1, "huge_region_seals") else {
        return;
    };
    let mut r = Region::prepare_destination("zygote-h-seal", 4096, true, &Prefault::All).unwrap();
    assert_eq!(r.kind(), PageKind::Huge2M, "{:?}", r.warning());
    r.write_at(100, b"sealed bytes").unwrap();
    // hugetlb refuses write(2) outright, sealed or not; mappings are the way in.
    assert!(matches!(
        r.memfd().write_at(0, b"x"),
        Err(MemError::Io { .. })
    ));
    {
        let _m = Mapping::shared(r.memfd()).unwrap();
        assert!(matches!(r.seal(), Err(MemError::SealBusy { .. })));
    }
    r.seal().unwrap(); // drops the prefault mapping first
    assert!(r.is_sealed().unwrap());
    assert!(
        eperm(r.write_at(0, b"x")),
        "write through a new mapping must fail with EPERM"
    );
    assert!(
        eperm(Mapping::shared(r.memfd())),
        "writable mmap must fail with EPERM"
    );
    let mut b = [0u8; 12];
    r.read_at(100, &mut b).unwrap();
    assert_eq!(&b, b"sealed bytes");
    let err = r.copy_from(r.memfd(), &CopyOptions::default()).unwrap_err();
    assert!(matches!(err, MemError::Sealed { .. }), "{err}");
}

#[test]
fn pwrite_into_hugetlb_is_refused_with_a_hint() {
    let Some(_pool) = huge_pool(1, "pwrite_into_hugetlb") else {
        return;
    };
    let (src, _) = random_source("zygote-h-pw-src", 4096, 13);
    let dst = Region::create("zygote-h-pw", 4096, true).unwrap();
    let opts = CopyOptions {
        method: CopyMethod::PwriteFromMap,
        ..Default::default()
    };
    let err = dst.copy_from(&src, &opts).unwrap_err();
    assert!(matches!(err, MemError::HugetlbRefusesWrite { .. }), "{err}");
    assert!(err.to_string().contains("PreadIntoMap"), "{err}");
}

#[test]
fn huge_oversized_copy_is_refused() {
    let Some(_pool) = huge_pool(1, "huge_oversized_copy") else {
        return;
    };
    let (src, _) = random_source("zygote-h-over-src", 2 * MIB + 4096, 14);
    let dst = Region::create("zygote-h-over", 4096, true).unwrap();
    assert_eq!(dst.kind(), PageKind::Huge2M);
    // 4096 logical, 2 MiB allocated: a 2 MiB + 4 KiB source does not fit.
    let err = dst.copy_from(&src, &CopyOptions::default()).unwrap_err();
    assert!(
        matches!(err, MemError::CopyTooLarge { dst_alloc, .. } if dst_alloc == HUGE_PAGE_2M),
        "{err}"
    );
}

#[test]
fn exhausted_pool_falls_back_to_4k_pages_with_a_warning() {
    let Some(pool) = huge_pool(2, "exhausted_pool_falls_back") else {
        return;
    };
    let available = pool_info().unwrap().available();
    assert!(available >= 2);
    // Hold every available page (no overcommit, so the pool is really empty).
    let _guard = pool;
    let _no_surplus = zygote_mem::reserve_pool(0)
        .and_then(|r| r.without_overcommit())
        .unwrap();
    let hold = Region::create("zygote-h-hold", available * HUGE_PAGE_2M, true).unwrap();
    assert_eq!(hold.kind(), PageKind::Huge2M, "{:?}", hold.warning());
    assert_eq!(pool_info().unwrap().available(), 0);

    let more = Region::create("zygote-h-more", 3 * MIB, true).unwrap();
    assert_eq!(more.kind(), PageKind::Small);
    assert_eq!((more.size(), more.alloc_size()), (3 * MIB, 3 * MIB));
    let w = more.warning().expect("a fallback must say so");
    eprintln!("fallback warning: {w}");
    assert!(w.contains("fallocate failed with ENOSPC"), "{w}");
    assert!(w.contains("4 KiB pages"), "{w}");
    // The fallback region is fully usable.
    let (src, expect) = random_source("zygote-h-more-src", 3 * MIB, 15);
    more.copy_from(&src, &CopyOptions::default()).unwrap();
    assert!(contents(|o, b| more.read_at(o, b).unwrap(), 3 * MIB) == expect);
    // The failed attempt's partial pages were given back.
    assert_eq!(pool_info().unwrap().available(), 0);
    drop(hold);
    assert!(pool_info().unwrap().available() >= available);
}

#[test]
fn huge_region_persists_sparse_and_loads_back_into_hugepages() {
    let Some(_pool) = huge_pool(8, "huge_region_persists") else {
        return;
    };
    let size = 6 * MIB + 4096;
    let (src, expect) = random_source("zygote-h-persist-src", size, 16);
    let r = Region::create("zygote-h-persist", size, true).unwrap();
    assert_eq!(r.kind(), PageKind::Huge2M, "{:?}", r.warning());
    r.copy_from(&src, &CopyOptions::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("zygote-mem-htest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("memory.bin");
    let st = r.persist(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(
        meta.len(),
        size,
        "the file has the logical size, not the aligned one"
    );
    // hugetlbfs reports the whole file as data; only non-zero 64 KiB blocks are written.
    let nonzero: u64 = expect
        .chunks(64 << 10)
        .filter(|c| c.iter().any(|&b| b != 0))
        .map(|c| c.len() as u64)
        .sum();
    assert_eq!(
        st.bytes_written, nonzero,
        "zero blocks were written: {st:?}"
    );
    assert!(nonzero < size, "the test source has no zero blocks");
    assert!(
        meta.blocks() * 512 <= nonzero + (64 << 10),
        "file is not sparse"
    );
    assert_eq!(std::fs::read(&path).unwrap(), expect);

    let (loaded, _) = Region::from_file(&path, "zygote-h-loaded", true).unwrap();
    assert_eq!(loaded.kind(), PageKind::Huge2M, "{:?}", loaded.warning());
    assert_eq!((loaded.size(), loaded.alloc_size()), (size, 8 * MIB));
    assert!(contents(|o, b| loaded.read_at(o, b).unwrap(), size) == expect);
    std::fs::remove_dir_all(&dir).unwrap();
}
