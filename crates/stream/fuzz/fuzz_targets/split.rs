//! Fuzzes the splitter: the input's first byte picks a chunk size, the rest is
//! the stream. The splitter must never panic, and feeding in chunks must give
//! the same verdict and output as feeding everything at once.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zygote_stream::{SplitOptions, Splitter, VecSink};

const RAM: usize = 64 * 4096;

fn run(data: &[u8], chunk: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    let opts = SplitOptions {
        max_tail_bytes: 1 << 20,
        ..SplitOptions::default()
    };
    let mut s = Splitter::new(opts, VecSink::new(RAM), Vec::new());
    for c in data.chunks(chunk.max(1)) {
        if s.feed(c).is_err() {
            return None;
        }
    }
    s.finish().ok().map(|r| (r.out, r.sink.data))
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let chunk = 1 + usize::from(first) * 37;
    let whole = run(data, data.len());
    let parts = run(data, chunk);
    assert_eq!(whole.is_some(), parts.is_some());
    assert!(whole == parts);
});
