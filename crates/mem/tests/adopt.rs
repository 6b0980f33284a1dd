//! Adopting a memfd created elsewhere (a restarted daemon takes a QEMU's guest
//! RAM back with `pidfd_getfd`): the size and page kind come from the file, the
//! contents are the same memory, and a file smaller than the guest is refused.

use std::os::fd::OwnedFd;

use zygote_mem::{MemFd, PageKind, Region};

#[test]
fn an_adopted_memfd_is_the_same_memory() {
    let orig = Region::create("adopt-test", 4 << 20, false).unwrap();
    orig.write_at(8192, b"still here").unwrap();
    let dup: OwnedFd = orig.memfd().as_fd().try_clone_to_owned().unwrap();
    let m = MemFd::from_fd(dup, "adopt-test").unwrap();
    assert_eq!((m.size(), m.kind()), (4 << 20, PageKind::Small));
    let r = Region::from_memfd(m, 4 << 20).unwrap();
    let mut buf = [0u8; 10];
    r.read_at(8192, &mut buf).unwrap();
    assert_eq!(&buf, b"still here");
    r.write_at(0, b"both see it").unwrap();
    let mut back = [0u8; 11];
    orig.read_at(0, &mut back).unwrap();
    assert_eq!(&back, b"both see it");
}

#[test]
fn a_memfd_smaller_than_the_guest_is_refused() {
    let orig = Region::create("adopt-small", 1 << 20, false).unwrap();
    let dup = orig.memfd().as_fd().try_clone_to_owned().unwrap();
    let e = Region::from_memfd(MemFd::from_fd(dup, "adopt-small").unwrap(), 2 << 20)
        .unwrap_err()
        .to_string();
    assert!(e.contains("adopt-small") && e.contains("2097152"), "{e}");
}
