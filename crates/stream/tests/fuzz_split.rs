//! The splitter's fuzz property on stable Rust with a fixed number of cases
//! (the libFuzzer target in `fuzz/` runs the same property open-ended): real
//! QEMU streams from `fuzz/seeds/split/`, mutated (bytes flipped, cut,
//! spliced, duplicated), fed whole and in pieces. The splitter never panics,
//! and the verdict and output never depend on how the bytes were cut.

use proptest::prelude::*;
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

fn seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/split");
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seeds in {}: {e}", dir.display()))
        .flatten()
        // The libFuzzer inputs' first byte picks a chunk size; the stream follows.
        .map(|e| std::fs::read(e.path()).unwrap().split_off(1))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no seed streams in {}", dir.display());
    v
}

/// One mutation of a seed.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Cut { at: usize },
    Splice { at: usize, bytes: Vec<u8> },
    Repeat { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Cut { at }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(at, bytes)| Mutation::Splice { at, bytes }),
        (any::<usize>(), 1usize..512).prop_map(|(at, len)| Mutation::Repeat { at, len }),
    ]
}

fn apply(mut data: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if data.is_empty() {
            break;
        }
        let n = data.len();
        match m {
            Mutation::Flip { at, mask } => data[at % n] ^= mask,
            Mutation::Cut { at } => data.truncate(at % n),
            Mutation::Splice { at, bytes } => {
                let at = at % n;
                data.splice(at..at, bytes.iter().copied());
            }
            Mutation::Repeat { at, len } => {
                let at = at % n;
                let piece: Vec<u8> = data[at..(at + len).min(n)].to_vec();
                data.splice(at..at, piece);
            }
        }
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1500,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pieces_of_an_intact_stream_split_like_the_whole(seed in any::<usize>(), chunk in 1usize..9000) {
        let seeds = seeds();
        let data = &seeds[seed % seeds.len()];
        let whole = run(data, data.len());
        prop_assert!(whole.is_some());
        prop_assert!(whole == run(data, chunk));
    }

    #[test]
    fn mutated_streams_split_the_same_in_any_pieces(
        seed in any::<usize>(),
        muts in proptest::collection::vec(mutation(), 1..6),
        chunk in 1usize..9000,
    ) {
        let seeds = seeds();
        let data = apply(seeds[seed % seeds.len()].clone(), &muts);
        let whole = run(&data, data.len());
        let parts = run(&data, chunk);
        prop_assert_eq!(whole.is_some(), parts.is_some());
        prop_assert!(whole == parts);
    }
}

#[test]
fn unmutated_seeds_split() {
    for s in seeds() {
        assert!(run(&s, 4096).is_some(), "a real QEMU stream must split");
    }
}
