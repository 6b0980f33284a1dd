//! Tier 2: 4 KiB regions with real syscalls: copy, prefault, seal, persist/load.

mod common;

use common::{contents, random_source, MIB};
use zygote_mem::{CopyMethod, CopyOptions, Mapping, MemError, PageKind, Prefault, Region};

#[test]
fn small_copy_matches_source_byte_for_byte_with_1_and_2_threads() {
    let size = 24 * MIB + 4096 * 3;
    let (src, expect) = random_source("zygote-t-small-src", size, 1);
    for threads in [1, 2] {
        let dst = Region::create("zygote-t-small-dst", size, false).unwrap();
        assert_eq!(dst.kind(), PageKind::Small);
        assert!(dst.warning().is_none());
        let opts = CopyOptions {
            threads,
            ..Default::default()
        };
        let st = dst.copy_from(&src, &opts).unwrap();
        assert_eq!(st.method, CopyMethod::PwriteFromMap);
        let src_ranges = src.data_ranges().unwrap();
        assert_eq!(st.ranges, src_ranges.len());
        assert_eq!(st.bytes, src_ranges.iter().map(|r| r.len).sum::<u64>());
        assert!(contents(|o, b| dst.read_at(o, b).unwrap(), size) == expect);
        // Holes stay holes: only what the source had is allocated.
        assert_eq!(dst.data_ranges().unwrap(), src_ranges);
    }
}

#[test]
fn prepared_destination_takes_only_the_hinted_ranges_and_copies_exactly() {
    let size = 16 * MIB;
    let (src, expect) = random_source("zygote-t-prep-src", size, 2);
    let ranges = src.data_ranges().unwrap();
    let hinted: u64 = ranges.iter().map(|r| r.len).sum();
    let dst = Region::prepare_destination(
        "zygote-t-prep-dst",
        size,
        false,
        &Prefault::Ranges(ranges.clone()),
    )
    .unwrap();
    let alloc = dst.allocated_bytes().unwrap();
    assert!(
        alloc >= hinted && alloc < size,
        "allocated {alloc}, hinted {hinted}"
    );
    dst.copy_from(&src, &CopyOptions::default()).unwrap();
    assert!(contents(|o, b| dst.read_at(o, b).unwrap(), size) == expect);
    assert_eq!(dst.data_ranges().unwrap(), ranges);
}

#[test]
fn oversized_copy_is_refused_with_the_sizes_and_nothing_written() {
    let (src, _) = random_source("zygote-t-over-src", 8 * MIB, 3);
    let dst = Region::create("zygote-t-over-dst", 4 * MIB, false).unwrap();
    let err = dst.copy_from(&src, &CopyOptions::default()).unwrap_err();
    let MemError::CopyTooLarge { len, dst_alloc, .. } = &err else {
        panic!("expected CopyTooLarge, got {err}");
    };
    assert_eq!((*len, *dst_alloc), (8 * MIB, 4 * MIB));
    assert!(err.to_string().contains("at least 8388608 bytes"), "{err}");
    assert_eq!(dst.allocated_bytes().unwrap(), 0);
}

#[test]
fn sealed_region_refuses_writes_with_eperm_and_keeps_its_bytes() {
    let (src, expect) = random_source("zygote-t-seal-src", 4 * MIB, 4);
    let mut dst =
        Region::prepare_destination("zygote-t-seal-dst", 4 * MIB, false, &Prefault::All).unwrap();
    dst.copy_from(&src, &CopyOptions::default()).unwrap();
    // A writable mapping blocks the seal; dropping it lets the seal through.
    {
        let _m = Mapping::shared(dst.memfd()).unwrap();
        assert!(matches!(dst.seal(), Err(MemError::SealBusy { .. })));
    }
    dst.seal().unwrap();
    assert!(dst.is_sealed().unwrap());
    let eperm = |r: Result<(), MemError>| match r {
        Err(MemError::Io { source, .. }) => source.raw_os_error() == Some(libc::EPERM),
        _ => false,
    };
    assert!(
        eperm(dst.write_at(0, b"x")),
        "pwrite after seal must fail with EPERM"
    );
    assert!(
        eperm(Mapping::shared(dst.memfd()).map(drop)),
        "writable mmap after seal must fail with EPERM"
    );
    assert!(contents(|o, b| dst.read_at(o, b).unwrap(), 4 * MIB) == expect);
}

#[test]
fn persist_writes_a_sparse_file_and_from_file_loads_it_back() {
    let size = 12 * MIB + 4096;
    let (src, expect) = random_source("zygote-t-persist-src", size, 5);
    let region = Region::create("zygote-t-persist", size, false).unwrap();
    region.copy_from(&src, &CopyOptions::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("zygote-mem-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("memory.bin");
    let st = region.persist(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), size);
    let data: u64 = src.data_ranges().unwrap().iter().map(|r| r.len).sum();
    assert!(
        st.bytes_written < data,
        "zero blocks were written: {st:?} of {data}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), expect);
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < size / 2,
        "file is not sparse: {} blocks",
        meta.blocks()
    );

    let (loaded, cst) = Region::from_file(&path, "zygote-t-loaded", false).unwrap();
    assert_eq!(loaded.size(), size);
    assert!(cst.bytes <= st.bytes_written + 2 * MIB, "{cst:?}");
    assert!(contents(|o, b| loaded.read_at(o, b).unwrap(), size) == expect);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn region_backend_path_names_the_memfd() {
    let r = Region::create("zygote-t-path", 4096, false).unwrap();
    let target = std::fs::read_link(r.backend_path()).unwrap();
    assert!(
        target.to_string_lossy().contains("memfd:zygote-t-path"),
        "{target:?}"
    );
    assert_eq!((r.size(), r.alloc_size()), (4096, 4096));
}
