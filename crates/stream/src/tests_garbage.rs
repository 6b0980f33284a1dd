//! "Garbage never panics": random bytes and mutated valid streams, fed in random
//! chunk sizes, must end in `Ok` or an error, never a panic, and the verdict must
//! not depend on the chunking. Deterministic (a fixed xorshift seed).

use crate::tests::{full_stream, split, MEM};
use crate::{SplitOptions, Splitter, VecSink};

pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Applies 1-4 random mutations: bit flips, byte sets, inserts, deletes, cuts.
pub(crate) fn mutate(data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(d.len());
        match rng.below(6) {
            0 if !d.is_empty() => d[at] ^= 1 << rng.below(8),
            1 if !d.is_empty() => d[at] = [0, 0xff, 0x7e, 0x10, 0x20, 0x05][rng.below(6)],
            2 => d.insert(at, rng.next() as u8),
            3 if !d.is_empty() => {
                d.remove(at);
            }
            4 => d.truncate(at),
            _ => {
                let n = rng.below(16);
                let src = rng.below(d.len());
                let chunk: Vec<u8> = d.iter().skip(src).take(n).copied().collect();
                d.splice(at..at, chunk);
            }
        }
    }
    d
}

fn chunked(data: &[u8], rng: &mut Rng) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut s = Splitter::new(
        SplitOptions::default(),
        VecSink::new(MEM as usize),
        Vec::new(),
    );
    let mut rest = data;
    while !rest.is_empty() {
        let n = (1 + rng.below(9000)).min(rest.len());
        s.feed(&rest[..n]).map_err(|e| e.to_string())?;
        rest = &rest[n..];
    }
    let r = s.finish().map_err(|e| e.to_string())?;
    Ok((r.out, r.sink.data))
}

fn check(data: &[u8], rng: &mut Rng) {
    let whole = split(data, SplitOptions::default())
        .map(|r| (r.out, r.sink.data))
        .map_err(|e| e.to_string());
    let parts = chunked(data, rng);
    assert_eq!(whole.is_ok(), parts.is_ok(), "{whole:?} vs {parts:?}");
    if let (Ok(a), Ok(b)) = (&whole, &parts) {
        assert!(a == b, "chunking changed the output");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..2000 {
        let len = rng.below(600);
        let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 {
            // Past the header, so the section parser sees the garbage.
            let mut h = b"QEVM\0\0\0\x03".to_vec();
            h.append(&mut d);
            d = h;
        }
        check(&d, &mut rng);
    }
}

#[test]
fn mutated_streams_never_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let base = full_stream();
    let mut accepted = 0;
    for _ in 0..3000 {
        let d = mutate(&base, &mut rng);
        if split(&d, SplitOptions::default()).is_ok() {
            accepted += 1;
        }
        check(&d, &mut rng);
    }
    // Mutations inside page data or device state are legitimately accepted.
    assert!(accepted > 0 && accepted < 3000, "accepted {accepted}");
}
