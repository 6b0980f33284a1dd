//! Tier 2: real memfd syscalls on this host.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};

use zygote_mem::{DataRange, Mapping, MemFd};

const MIB: u64 = 1 << 20;

#[test]
fn create_reports_size_and_allocates_nothing() {
    let m = MemFd::create("zygote-test-size", 64 * MIB).unwrap();
    assert_eq!(m.size(), 64 * MIB);
    assert_eq!(m.allocated_bytes().unwrap(), 0);
    assert!(m.data_ranges().unwrap().is_empty());
}

#[test]
fn backend_path_opens_the_same_file() {
    let m = MemFd::create("zygote-test-path", 4 * MIB).unwrap();
    let path = m.backend_path();
    assert!(path.starts_with(format!("/proc/{}/fd", std::process::id())));
    let target = std::fs::read_link(&path).unwrap();
    assert!(
        target.to_string_lossy().contains("memfd:zygote-test-path"),
        "{target:?}"
    );
    m.write_at(MIB, b"hello through pwrite").unwrap();
    // Open it again by path, the way QEMU does, and read what we wrote.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    assert_eq!(f.metadata().unwrap().len(), 4 * MIB);
    f.seek(SeekFrom::Start(MIB)).unwrap();
    let mut buf = [0u8; 20];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello through pwrite");
}

#[test]
fn allocated_bytes_grow_after_pwrite() {
    let m = MemFd::create("zygote-test-pwrite", 16 * MIB).unwrap();
    let before = m.allocated_bytes().unwrap();
    m.write_at(3 * MIB, &vec![0xa5; 2 * MIB as usize]).unwrap();
    let after = m.allocated_bytes().unwrap();
    assert!(after >= before + 2 * MIB, "before {before} after {after}");
    assert_eq!(
        m.data_ranges().unwrap(),
        vec![DataRange {
            offset: 3 * MIB,
            len: 2 * MIB
        }]
    );
    let mut back = vec![0u8; 16];
    m.read_at(4 * MIB, &mut back).unwrap();
    assert_eq!(back, vec![0xa5; 16]);
}

#[test]
fn allocated_bytes_grow_after_writing_through_a_mapping() {
    let m = MemFd::create("zygote-test-mmap", 16 * MIB).unwrap();
    let map = Mapping::shared(&m).unwrap();
    assert_eq!(map.len() as u64, 16 * MIB);
    for page in 0..256usize {
        map.write(page * 4096, &[1, 2, 3, 4]).unwrap();
    }
    let alloc = m.allocated_bytes().unwrap();
    assert!(alloc >= 256 * 4096, "allocated {alloc}");
    let ranges = m.data_ranges().unwrap();
    assert_eq!(ranges.first().map(|r| r.offset), Some(0));
    let total: u64 = ranges.iter().map(|r| r.len).sum();
    assert!(total >= 256 * 4096, "{ranges:?}");
    // pwrite and the mapping see the same pages.
    let mut b = [0u8; 4];
    m.read_at(4096 * 10, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3, 4]);
    m.write_at(8 * MIB, b"zz").unwrap();
    let mut c = [0u8; 2];
    map.read(8 * MIB as usize, &mut c).unwrap();
    assert_eq!(&c, b"zz");
    assert!(map.write(16 * MIB as usize - 1, &[0, 0]).is_err());
}
