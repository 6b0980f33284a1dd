//! A stable-Rust fuzz harness for the agent frame decoder (a fixed number of
//! cases, so CI runs it in bounded time): whatever bytes arrive, in whatever
//! pieces, the decoder never panics, never holds more than one frame's worth
//! of bytes, and a frame after a damaged or oversized one still decodes.

use proptest::prelude::*;
use zygote_proto::agent::{encode_vec, Decoder, Msg, MAX_FRAME};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Feed `bytes` in pieces of `piece` and drain every frame after each piece.
fn drain(bytes: &[u8], piece: usize) -> (Vec<u64>, usize) {
    let mut d = Decoder::new();
    let mut ids = Vec::new();
    let mut errors = 0;
    for chunk in bytes.chunks(piece.max(1)) {
        d.feed(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => ids.push(f.id),
                Ok(None) => break,
                Err(_) => errors += 1,
            }
            assert!(
                d.buffered() <= 4 + MAX_FRAME + piece,
                "the decoder holds {} bytes",
                d.buffered()
            );
        }
    }
    (ids, errors)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        piece in 1usize..700,
    ) {
        drain(&bytes, piece);
    }

    #[test]
    fn a_frame_after_a_damaged_one_decodes(
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
        flip in any::<(usize, u8)>(),
        piece in 1usize..512,
    ) {
        // Damage the header JSON of the first frame (not its length prefix):
        // it is an error (or, rarely, still valid); the next one decodes.
        let mut bad = encode_vec(7, &Msg::Ping, &payload);
        let hlen = u32::from_be_bytes([bad[4], bad[5], bad[6], bad[7]]) as usize;
        let at = 8 + flip.0 % hlen.max(1);
        bad[at] ^= flip.1 | 1;
        let mut stream = bad;
        stream.extend_from_slice(&encode_vec(42, &Msg::Ping, &[]));
        let (ids, _) = drain(&stream, piece);
        prop_assert!(ids.last() == Some(&42), "{:?}", ids);
    }

    #[test]
    fn garbage_before_a_frame_never_panics(
        garbage in proptest::collection::vec(any::<u8>(), 0..64),
        piece in 1usize..512,
    ) {
        let mut stream = garbage;
        stream.extend_from_slice(&encode_vec(42, &Msg::Ping, &[]));
        drain(&stream, piece);
    }
}

#[test]
fn an_oversized_frame_is_skipped_and_the_next_decodes() {
    for (extra, piece) in [(1usize, 7usize), (4096, 65_536), (99_999, 1 << 20)] {
        let len = (MAX_FRAME + extra) as u32;
        let mut stream = len.to_be_bytes().to_vec();
        stream.resize(4 + len as usize, 0xAB);
        stream.extend_from_slice(&encode_vec(9, &Msg::Ping, b"x"));
        let (ids, errors) = drain(&stream, piece);
        assert_eq!((ids, errors), (vec![9], 1), "extra {extra}, piece {piece}");
    }
}
