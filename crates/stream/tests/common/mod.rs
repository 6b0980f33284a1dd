//! Helpers for the real-QEMU test: an independent structural reader of
//! RAM-less streams (written from the format notes, not from the crate's
//! parser, so the comparison does not share its bugs), and mutation runs.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use zygote_stream::{SplitOptions, Splitter, VecSink};

/// The parts of a RAM-less stream that are compared.
#[derive(Debug, Default)]
pub struct Items {
    /// Header and configuration section, byte for byte.
    pub header: Vec<u8>,
    /// MEM_SIZE list: name, used_length, mr->addr.
    pub blocks: Vec<(String, u64, u64)>,
    /// Final content of every page record: (block, offset) -> data ([0] for ZERO).
    pub pages: BTreeMap<(String, u64), Vec<u8>>,
    /// COMMAND sections: (command, data).
    pub commands: Vec<(u16, Vec<u8>)>,
    /// Top-level layout, for the log.
    pub layout: Vec<String>,
    /// Everything after RAM END.
    pub tail: Vec<u8>,
}

struct R<'a>(&'a [u8], usize);

impl R<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.0[self.1..self.1 + n];
        self.1 += n;
        s
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn be16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn be32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn be64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    fn s8(&mut self) -> String {
        let n = self.u8() as usize;
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
}

/// Reads a RAM-less (x-ignore-shared) stream; panics on anything unexpected.
pub fn items(data: &[u8]) -> Items {
    let mut r = R(data, 8);
    let mut it = Items::default();
    let mut cur = String::new();
    assert_eq!(r.u8(), 7, "configuration first");
    let n = r.be32() as usize;
    r.take(n);
    while r.0[r.1] == 5 {
        r.u8();
        let name = r.s8();
        r.be32();
        match name.as_str() {
            "configuration/capabilities" => {
                for _ in 0..r.be32() {
                    r.s8();
                }
            }
            "configuration/uuid" => {
                r.take(16);
            }
            _ => {
                r.take(4);
            }
        }
    }
    it.header = data[..r.1].to_vec();
    loop {
        let t = r.u8();
        match t {
            1..=3 => {
                r.be32();
                if t == 1 {
                    r.s8();
                    r.take(8);
                }
                let mut n = 0;
                loop {
                    let v = r.be64();
                    let (fl, off) = (v & 0xfff, v & !0xfff);
                    if fl & 4 != 0 {
                        let mut total = off;
                        while total > 0 {
                            let (name, len, addr) = (r.s8(), r.be64(), r.be64());
                            total -= len;
                            it.blocks.push((name, len, addr));
                        }
                    }
                    if fl & 0x0a != 0 {
                        if fl & 0x20 == 0 {
                            cur = r.s8();
                        }
                        let d = if fl & 2 != 0 {
                            r.take(1).to_vec()
                        } else {
                            r.take(4096).to_vec()
                        };
                        it.pages.insert((cur.clone(), off), d);
                        n += 1;
                    }
                    if fl & 0x10 != 0 {
                        break;
                    }
                }
                assert_eq!(r.u8(), 0x7e);
                r.be32();
                it.layout
                    .push(format!("{}({n})", ["", "START", "PART", "END"][t as usize]));
                if t == 3 {
                    it.tail = data[r.1..].to_vec();
                    return it;
                }
            }
            8 => {
                let c = r.be16();
                let n = r.be16() as usize;
                it.commands.push((c, r.take(n).to_vec()));
                it.layout.push(format!("CMD{c}"));
            }
            other => panic!("unexpected section {other} at {}", r.1 - 1),
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn run(data: &[u8], chunk: usize) -> bool {
    let mut s = Splitter::new(
        SplitOptions::default(),
        VecSink::new(256 << 20),
        std::io::sink(),
    );
    for c in data.chunks(chunk) {
        if s.feed(c).is_err() {
            return false;
        }
    }
    s.finish().is_ok()
}

/// Mutates real streams (QEMU's RAM-less one many times, the full one a few
/// times near its structure) and checks the splitter never panics and that the
/// verdict does not depend on the chunking.
pub fn mutations_never_panic(ramless: &[u8], full: &[u8]) {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let mut accepted = 0;
    let t = std::time::Instant::now();
    for i in 0..400 {
        let base = if i % 40 == 0 { full } else { ramless };
        let mut d = base.to_vec();
        for _ in 0..1 + rng.below(3) {
            // Bias towards the first 64 KiB and the tail, where the structure is.
            let at = match rng.below(3) {
                0 => rng.below(d.len().min(65536)),
                1 => d.len().saturating_sub(1 + rng.below(40_000.min(d.len()))),
                _ => rng.below(d.len()),
            };
            match rng.below(4) {
                0 => d[at] ^= 1 << rng.below(8),
                1 => d[at] = rng.next() as u8,
                2 => {
                    d.remove(at);
                }
                _ => d.truncate(at),
            }
        }
        let whole = run(&d, d.len().max(1));
        let parts = run(&d, 1 + rng.below(20_000));
        assert_eq!(whole, parts, "mutation {i}: chunking changed the verdict");
        accepted += usize::from(whole);
    }
    eprintln!(
        "mutated real streams: 400 runs, {accepted} accepted, no panic, {:?}",
        t.elapsed()
    );
}
