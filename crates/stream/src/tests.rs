//! Unit tests on synthetic streams: round trips, CONTINUE fixing, empty PART
//! dropping, zero pages, chunking, and every error path.

use crate::format::*;
use crate::{split_reader, SplitError, SplitOptions, SplitOutput, Splitter, VecSink};

pub(crate) const MEM: u64 = 64 * 4096;

/// A RAM record for the builder; `block: None` means CONTINUE.
#[derive(Clone, Copy)]
pub(crate) enum Rec<'a> {
    Page(Option<&'a str>, u64, u8),
    Zero(Option<&'a str>, u64),
}

/// Writes QEMU 10 streams byte by byte, the way savevm.c/ram.c lay them out.
#[derive(Default, Clone)]
pub(crate) struct B(pub(crate) Vec<u8>);

impl B {
    pub(crate) fn new() -> B {
        let mut b = B::default();
        b.be32(MAGIC);
        b.be32(VERSION);
        b
    }
    fn u8(&mut self, v: u8) -> &mut B {
        self.0.push(v);
        self
    }
    fn be16(&mut self, v: u16) -> &mut B {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn be32(&mut self, v: u32) -> &mut B {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn be64(&mut self, v: u64) -> &mut B {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str8(&mut self, s: &str) -> &mut B {
        self.u8(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// Configuration section: `caps` empty means no capabilities subsection.
    pub(crate) fn config(&mut self, caps: &[&str], page_bits: bool, uuid: bool) -> &mut B {
        self.u8(SEC_CONFIGURATION).be32(7);
        self.0.extend_from_slice(b"microvm");
        if page_bits {
            self.u8(SEC_SUBSECTION)
                .str8("configuration/target-page-bits")
                .be32(1)
                .be32(12);
        }
        if !caps.is_empty() {
            self.u8(SEC_SUBSECTION)
                .str8("configuration/capabilities")
                .be32(1);
            self.be32(caps.len() as u32);
            for c in caps {
                self.str8(c);
            }
        }
        if uuid {
            self.u8(SEC_SUBSECTION).str8("configuration/uuid").be32(1);
            self.0.extend_from_slice(&[0xab; 16]);
        }
        self
    }
    /// RAM START with the block list; `addrs` writes `mr->addr` per block.
    pub(crate) fn start(&mut self, blocks: &[(&str, u64, u64)], addrs: bool) -> &mut B {
        self.u8(SEC_START).be32(2).str8("ram").be32(0).be32(4);
        let total: u64 = blocks.iter().map(|b| b.1).sum();
        self.be64(total | F_MEM_SIZE);
        for (name, len, addr) in blocks {
            self.str8(name).be64(*len);
            if addrs {
                self.be64(*addr);
            }
        }
        self.be64(F_EOS).u8(SEC_FOOTER).be32(2)
    }
    pub(crate) fn records(&mut self, recs: &[Rec<'_>]) -> &mut B {
        for r in recs {
            let (block, off, zero, fill) = match *r {
                Rec::Page(b, o, f) => (b, o, false, f),
                Rec::Zero(b, o) => (b, o, true, 0),
            };
            let kind = if zero { F_ZERO } else { F_PAGE };
            let cont = if block.is_none() { F_CONTINUE } else { 0 };
            self.be64(off | kind | cont);
            if let Some(b) = block {
                self.str8(b);
            }
            if zero {
                self.u8(0);
            } else {
                self.0.extend_from_slice(&[fill; 4096]);
            }
        }
        self
    }
    pub(crate) fn section(&mut self, kind: u8, recs: &[Rec<'_>]) -> &mut B {
        self.u8(kind).be32(2);
        self.records(recs);
        self.be64(F_EOS).u8(SEC_FOOTER).be32(2)
    }
    pub(crate) fn switchover(&mut self) -> &mut B {
        self.u8(SEC_COMMAND).be16(CMD_SWITCHOVER_START).be16(0)
    }
    /// Device state (opaque to the splitter), EOF and VMDESCRIPTION.
    pub(crate) fn tail(&mut self) -> &mut B {
        self.u8(SEC_FULL).be32(3).str8("timer").be32(0).be32(2);
        self.0.extend_from_slice(&[1, 2, 3, 4, 0, 6, 0x7e]);
        self.u8(SEC_FOOTER)
            .be32(3)
            .u8(SEC_EOF)
            .u8(SEC_VMDESCRIPTION);
        let json = br#"{"page_size":4096,"devices":[{"name":"timer"}]}"#;
        self.be32(json.len() as u32);
        self.0.extend_from_slice(json);
        self
    }
}

pub(crate) fn blocks() -> Vec<(&'static str, u64, u64)> {
    vec![
        ("mem", MEM, 0),
        ("pc.bios", 8 * 4096, 0xfffe_0000),
        ("rom", 4096, 0),
    ]
}

/// A full stream: mem pages across PARTs with CONTINUE across sections, an
/// all-mem PART, ROM pages in END, a zero page over a written page.
pub(crate) fn full_stream() -> Vec<u8> {
    let mut b = B::new();
    b.config(&[], false, false).start(&blocks(), false);
    b.section(
        SEC_PART,
        &[
            Rec::Page(Some("mem"), 0, 1),
            Rec::Page(None, 4096, 2),
            Rec::Zero(None, 8192),
            Rec::Page(None, 3 * 4096, 3),
        ],
    );
    b.section(
        SEC_PART,
        &[Rec::Page(None, 5 * 4096, 5), Rec::Zero(None, 0)],
    );
    b.section(
        SEC_PART,
        &[
            Rec::Page(Some("pc.bios"), 0, 0xb0),
            Rec::Page(Some("mem"), 6 * 4096, 6),
            Rec::Page(Some("pc.bios"), 4096, 0xb1),
            Rec::Page(None, 2 * 4096, 0xb2),
        ],
    );
    b.section(SEC_PART, &[]).switchover();
    b.section(
        SEC_END,
        &[
            Rec::Page(Some("mem"), 63 * 4096, 63),
            Rec::Zero(Some("rom"), 0),
            Rec::Page(Some("mem"), 7 * 4096, 7),
        ],
    );
    b.tail();
    b.0
}

/// What the splitter must produce from [`full_stream`] with default options.
fn expected_ramless(block_addrs: bool) -> Vec<u8> {
    let mut b = B::new();
    let mut bl = blocks();
    if !block_addrs {
        bl.iter_mut().for_each(|b| b.2 = 0);
    }
    b.config(&["x-ignore-shared"], false, false)
        .start(&bl, true);
    b.section(
        SEC_PART,
        &[
            Rec::Page(Some("pc.bios"), 0, 0xb0),
            Rec::Page(None, 4096, 0xb1),
            Rec::Page(None, 2 * 4096, 0xb2),
        ],
    );
    b.switchover();
    b.section(SEC_END, &[Rec::Zero(Some("rom"), 0)]);
    b.tail();
    b.0
}

pub(crate) fn split(
    data: &[u8],
    opts: SplitOptions,
) -> Result<SplitOutput<VecSink, Vec<u8>>, SplitError> {
    let mut s = Splitter::new(opts, VecSink::new(MEM as usize), Vec::new());
    s.feed(data)?;
    s.finish()
}

fn page(img: &[u8], n: usize) -> &[u8] {
    &img[n * 4096..(n + 1) * 4096]
}

#[test]
fn round_trip_image_and_ramless_vmstate() {
    let r = split(&full_stream(), SplitOptions::default()).unwrap();
    assert_eq!(r.out, expected_ramless(false));
    let img = &r.sink.data;
    for (n, fill) in [
        (0, 0),
        (1, 2),
        (2, 0),
        (3, 3),
        (4, 0),
        (5, 5),
        (6, 6),
        (7, 7),
        (63, 63),
    ] {
        assert!(page(img, n).iter().all(|&b| b == fill), "page {n}");
    }
    let st = r.stats;
    assert_eq!((st.pages, st.zero_pages, st.zeroed_after_write), (7, 2, 1));
    assert_eq!((st.kept_records, st.dropped_parts, st.commands), (4, 3, 1));
    assert_eq!(st.ram_sections, 6);
    assert_eq!(st.machine, "microvm");
    assert_eq!(st.blocks.len(), 3);
    assert!(!st.source_ignore_shared);
    assert_eq!(st.bytes_out, expected_ramless(false).len() as u64);
    assert!(st.vmdesc_bytes > 0);
    assert_eq!(r.sink.zeroed, 1);
}

#[test]
fn block_addrs_option_fills_mr_addr() {
    let mut opts = SplitOptions::default();
    opts.block_addrs.insert("pc.bios".into(), 0xfffe_0000);
    let r = split(&full_stream(), opts).unwrap();
    assert_eq!(r.out, expected_ramless(true));
}

#[test]
fn source_with_ignore_shared_keeps_its_caps_and_addresses() {
    let mut b = B::new();
    b.config(&["x-ignore-shared"], true, true)
        .start(&blocks(), true);
    b.section(SEC_PART, &[Rec::Page(Some("mem"), 0, 9)])
        .section(SEC_END, &[])
        .tail();
    let r = split(&b.0, SplitOptions::default()).unwrap();
    let mut e = B::new();
    e.config(&["x-ignore-shared"], true, true)
        .start(&blocks(), true);
    e.section(SEC_END, &[]).tail();
    assert_eq!(r.out, e.0);
    assert!(r.stats.source_ignore_shared);
    assert_eq!(r.stats.blocks[1].addr, 0xfffe_0000);
    assert_eq!(r.sink.data[0], 9);
}

#[test]
fn capabilities_go_after_target_page_bits() {
    let mut b = B::new();
    b.config(&[], true, true)
        .start(&blocks(), false)
        .section(SEC_END, &[])
        .tail();
    let r = split(&b.0, SplitOptions::default()).unwrap();
    let mut e = B::new();
    e.config(&["x-ignore-shared"], true, true).start(
        &blocks().iter().map(|b| (b.0, b.1, 0)).collect::<Vec<_>>(),
        true,
    );
    e.section(SEC_END, &[]).tail();
    assert_eq!(r.out, e.0);
}

#[test]
fn continue_is_fixed_against_the_records_kept() {
    let mut b = B::new();
    b.config(&[], false, false).start(&blocks(), false);
    b.section(
        SEC_PART,
        &[
            Rec::Page(Some("rom"), 0, 1),
            Rec::Page(Some("mem"), 0, 2),
            Rec::Page(Some("rom"), 0, 3),
            Rec::Page(Some("mem"), 4096, 4),
            Rec::Page(None, 8192, 4),
            Rec::Page(Some("rom"), 0, 5),
        ],
    );
    // CONTINUE at the start of a section refers to the last block of the previous one.
    b.section(
        SEC_END,
        &[Rec::Page(None, 0, 6), Rec::Page(Some("pc.bios"), 0, 7)],
    )
    .tail();
    let r = split(&b.0, SplitOptions::default()).unwrap();
    let mut e = B::new();
    e.config(&["x-ignore-shared"], false, false);
    e.start(
        &blocks().iter().map(|b| (b.0, b.1, 0)).collect::<Vec<_>>(),
        true,
    );
    e.section(
        SEC_PART,
        &[
            Rec::Page(Some("rom"), 0, 1),
            Rec::Page(None, 0, 3),
            Rec::Page(None, 0, 5),
        ],
    );
    e.section(
        SEC_END,
        &[Rec::Page(None, 0, 6), Rec::Page(Some("pc.bios"), 0, 7)],
    )
    .tail();
    assert_eq!(r.out, e.0);
}

#[test]
fn any_chunking_gives_the_same_result() {
    let data = full_stream();
    let whole = split(&data, SplitOptions::default()).unwrap();
    for chunk in [1usize, 2, 3, 7, 100, 4095, 4096, 4097, 5000, 70_000] {
        let mut s = Splitter::new(
            SplitOptions::default(),
            VecSink::new(MEM as usize),
            Vec::new(),
        );
        for c in data.chunks(chunk) {
            s.feed(c).unwrap();
        }
        let r = s.finish().unwrap();
        assert_eq!(r.out, whole.out, "chunk {chunk}");
        assert_eq!(r.sink.data, whole.sink.data, "chunk {chunk}");
        assert_eq!(r.stats.pages, whole.stats.pages);
    }
    let r = split_reader(
        &data[..],
        SplitOptions::default(),
        VecSink::new(MEM as usize),
        Vec::new(),
    )
    .unwrap();
    assert_eq!(r.out, whole.out);
}

#[test]
fn contiguous_pages_are_coalesced() {
    let mut b = B::new();
    b.config(&[], false, false).start(&blocks(), false);
    let recs: Vec<Rec<'_>> = (0..32)
        .map(|i| Rec::Page(if i == 0 { Some("mem") } else { None }, i * 4096, 1))
        .collect();
    b.section(SEC_END, &recs).tail();
    let r = split(
        &b.0,
        SplitOptions {
            coalesce_bytes: 16 * 4096,
            ..SplitOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.sink.writes, 2);
    assert_eq!(r.stats.sink_writes, 2);
}

#[test]
fn ram_end_hook_fires_once_with_pages_in_the_sink() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let data = full_stream();
    let mut s = Splitter::new(
        SplitOptions::default(),
        VecSink::new(MEM as usize),
        Vec::new(),
    );
    s.on_ram_end(move |st| s2.lock().unwrap().push((st.pages, st.ram_end_offset)));
    for c in data.chunks(1000) {
        s.feed(c).unwrap();
    }
    assert!(s.ram_end_reached());
    let r = s.finish().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, 7);
    assert_eq!(seen[0].1, r.stats.ram_end_offset);
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let data = full_stream();
    for cut in 0..data.len() {
        let e = split(&data[..cut], SplitOptions::default()).unwrap_err();
        assert!(matches!(e, SplitError::Truncated { .. }), "cut {cut}: {e}");
    }
}

/// Replaces the first occurrence of `from` in the stream after `skip` bytes.
fn patch(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let i = data
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern");
    let mut d = data[..i].to_vec();
    d.extend_from_slice(to);
    d.extend_from_slice(&data[i + from.len()..]);
    d
}

fn err_of(data: &[u8]) -> String {
    match split(data, SplitOptions::default()) {
        Ok(_) => panic!("accepted a bad stream"),
        Err(e) => e.to_string(),
    }
}

/// A stream whose first PART begins with `rec` (raw record bytes).
fn with_record(rec: &[u8]) -> Vec<u8> {
    let mut b = B::new();
    b.config(&[], false, false).start(&blocks(), false);
    b.u8(SEC_PART).be32(2);
    b.0.extend_from_slice(rec);
    b.be64(F_EOS)
        .u8(SEC_FOOTER)
        .be32(2)
        .section(SEC_END, &[])
        .tail();
    b.0
}

#[test]
fn every_error_path_names_what_was_expected() {
    let ok = full_stream();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (patch(&ok, b"QEVM", b"QEVX"), "QEVM magic"),
        (
            patch(&ok, &[0, 0, 0, 3, 7], &[0, 0, 0, 2, 7]),
            "stream version 3",
        ),
        (
            patch(&ok, &[7, 0, 0, 0, 7], &[7, 0, 0, 1, 7]),
            "machine name length",
        ),
        (
            patch(
                &ok,
                b"\x03ram\0\0\0\0\0\0\0\x04",
                b"\x03ram\0\0\0\0\0\0\0\x03",
            ),
            "RAM section version 4",
        ),
        (
            patch(&ok, b"\x03ram", b"\x03raX"),
            "iterable section \"raX\"",
        ),
        (
            patch(&ok, b"\x08\x00\x0b", b"\x08\x00\x03"),
            "POSTCOPY_ADVISE",
        ),
        (
            patch(&ok, b"\x08\x00\x0b", b"\x08\x00\x01"),
            "OPEN_RETURN_PATH",
        ),
        (
            patch(&ok, b"\x08\x00\x0b", b"\x09\x00\x0b"),
            "a section type",
        ),
        (
            patch(&ok, b"\x08\x00\x0b\x00\x00", b"\x00"),
            "RAM END section before QEMU_VM_EOF",
        ),
        (
            patch(&ok, b"\x08\x00\x0b\x00\x00", b"\x04\0\0\0\x09\x03dev"),
            "device section \"dev\" before RAM END",
        ),
        (
            patch(&ok, &[2, 0, 0, 0, 2], &[2, 0, 0, 0, 9]),
            "section id 9",
        ),
        (
            patch(&ok, &[0x7e, 0, 0, 0, 2, 2], &[0x7e, 0, 0, 0, 5, 2]),
            "footer of the current section",
        ),
        (
            patch(&ok, &[0x10, 0x7e], &[0x10, 0x7f]),
            "section footer (0x7e)",
        ),
        (
            patch(&ok, b"\x07pc.bios", b"\x07pc.biox"),
            "block \"pc.bios\", which the block list does not contain",
        ),
        (
            patch(&ok, b"\x03mem\0\0\0\0\0\x04", b"\x03mex\0\0\0\0\0\x04"),
            "do not include the guest RAM block \"mem\"",
        ),
        (
            patch(
                &ok,
                b"\x03rom\0\0\0\0\0\0\x10\0",
                b"\x03mem\0\0\0\0\0\0\x10\0",
            ),
            "distinct block names",
        ),
        (
            patch(
                &ok,
                b"\x03rom\0\0\0\0\0\0\x10\0",
                b"\x03rom\0\0\0\0\0\0\x20\0",
            ),
            "add up to the MEM_SIZE total",
        ),
        (
            with_record(
                &(F_ZERO | (4096 * 64))
                    .to_be_bytes()
                    .iter()
                    .chain(b"\x03mem\0")
                    .copied()
                    .collect::<Vec<_>>(),
            ),
            "beyond block \"mem\"",
        ),
        (
            with_record(
                &(F_ZERO)
                    .to_be_bytes()
                    .iter()
                    .chain(b"\x03mem\x01")
                    .copied()
                    .collect::<Vec<_>>(),
            ),
            "fill byte 0",
        ),
        (
            with_record(
                &(F_ZERO | F_CONTINUE)
                    .to_be_bytes()
                    .iter()
                    .chain(b"\0")
                    .copied()
                    .collect::<Vec<_>>(),
            ),
            "before the first CONTINUE",
        ),
        (with_record(&F_MULTIFD_FLUSH.to_be_bytes()), "multifd"),
        (with_record(&F_XBZRLE.to_be_bytes()), "xbzrle"),
        (
            with_record(&F_COMPRESS_PAGE.to_be_bytes()),
            "compressed pages",
        ),
        (with_record(&F_HOOK.to_be_bytes()), "RDMA"),
        (with_record(&(F_ZERO | F_PAGE).to_be_bytes()), "flags 0xa"),
        (with_record(&F_FULL.to_be_bytes()), "flags 0x1"),
        (
            with_record(&(F_MEM_SIZE | 4096).to_be_bytes()),
            "MEM_SIZE only once",
        ),
    ];
    for (data, want) in cases {
        let got = err_of(&data);
        assert!(got.contains(want), "wanted {want:?} in {got:?}");
        assert!(got.contains("offset"), "{got}");
    }
}

#[test]
fn configuration_errors() {
    let mut b = B::new();
    b.config(&["mapped-ram"], false, false)
        .start(&blocks(), false)
        .section(SEC_END, &[])
        .tail();
    assert!(err_of(&b.0).contains("mapped-ram"));
    let mut b = B::new();
    b.config(&[], false, false);
    b.u8(SEC_SUBSECTION)
        .str8("configuration/target-page-bits")
        .be32(1)
        .be32(16);
    assert!(err_of(&b.0).contains("target page bits 16"));
    let mut b = B::new();
    b.config(&[], false, false);
    b.u8(SEC_SUBSECTION).str8("configuration/new-thing").be32(1);
    assert!(err_of(&b.0).contains("new-thing"));
    let mut b = B::new();
    b.config(&[], false, false);
    b.u8(SEC_SUBSECTION)
        .str8("configuration/capabilities")
        .be32(1)
        .be32(1000);
    assert!(err_of(&b.0).contains("capability count"));
    let mut b = B::new();
    b.config(&[], false, true).config(&[], false, false);
    assert!(err_of(&b.0).contains("one configuration section"));
    let mut b = B::new();
    b.config(&[], false, true);
    b.u8(SEC_SUBSECTION).str8("configuration/uuid").be32(1);
    b.0.extend_from_slice(&[0; 16]);
    assert!(err_of(&b.0).contains("subsection once"));
    let mut b = B::new();
    b.config(&[], false, false)
        .start(&blocks(), false)
        .start(&blocks(), false);
    assert!(err_of(&b.0).contains("one RAM START"));
}

#[test]
fn tail_cap_sink_errors_and_poisoning() {
    let opts = SplitOptions {
        max_tail_bytes: 10,
        ..SplitOptions::default()
    };
    let e = split(&full_stream(), opts).unwrap_err();
    assert!(e.to_string().contains("device state after RAM END"), "{e}");
    // A sink too small for the guest block.
    let mut s = Splitter::new(SplitOptions::default(), VecSink::new(4096), Vec::new());
    let e = s.feed(&full_stream()).unwrap_err();
    assert!(matches!(e, SplitError::Sink { .. }), "{e}");
    let again = s.feed(b"x").unwrap_err();
    assert!(matches!(again, SplitError::Poisoned { .. }));
    assert!(matches!(
        s.finish().unwrap_err(),
        SplitError::Poisoned { .. }
    ));
    let opts = SplitOptions {
        max_ram_bytes: 4096,
        ..SplitOptions::default()
    };
    assert!(split(&full_stream(), opts)
        .unwrap_err()
        .to_string()
        .contains("guest RAM block length"));
    let opts = SplitOptions {
        ram_block: "other".into(),
        ..SplitOptions::default()
    };
    assert!(matches!(
        split(&full_stream(), opts).unwrap_err(),
        SplitError::MissingRamBlock { .. }
    ));
    let opts = SplitOptions {
        require_vmdesc: false,
        ..SplitOptions::default()
    };
    let d = full_stream();
    let i = d.iter().rposition(|&b| b == SEC_VMDESCRIPTION).unwrap();
    assert!(split(&d[..i], opts).is_ok());
}

/// Writes fuzz seeds (`ZYGOTE_STREAM_WRITE_SEEDS=dir cargo test -p zygote-stream write_fuzz_seeds`).
#[test]
fn write_fuzz_seeds() {
    let Ok(dir) = std::env::var("ZYGOTE_STREAM_WRITE_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut seed = vec![40u8];
    seed.extend_from_slice(&full_stream());
    std::fs::write(dir.join("full"), &seed).unwrap();
    let mut b = B::new();
    b.config(&["x-ignore-shared"], true, true)
        .start(&blocks(), true);
    b.section(SEC_PART, &[Rec::Zero(Some("rom"), 0)])
        .section(SEC_END, &[])
        .tail();
    let mut seed = vec![1u8];
    seed.extend_from_slice(&b.0);
    std::fs::write(dir.join("ignore-shared"), &seed).unwrap();
}
