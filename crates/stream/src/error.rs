//! [`SplitError`]: every way a stream can be refused. Each variant carries the
//! stream offset where the problem was found and says what was expected.

use std::io;

/// Why a migration stream could not be split. `offset` is the byte offset in the
/// input stream (from its first byte) of the item that failed.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// The input ended (at `finish`) in the middle of an item.
    #[error("stream truncated at offset {offset}: expected {expected}")]
    Truncated {
        /// Bytes received in all.
        offset: u64,
        /// What the parser was waiting for.
        expected: &'static str,
    },
    /// A value did not match the format.
    #[error("offset {offset}: expected {expected}, found {found}")]
    Unexpected {
        /// Offset of the bad item.
        offset: u64,
        /// What the format requires there.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// The stream uses a feature this splitter does not handle.
    #[error("offset {offset}: unsupported stream feature: {what}; {fix}")]
    Unsupported {
        /// Offset of the item.
        offset: u64,
        /// The feature, with its value.
        what: String,
        /// What to change on the source.
        fix: &'static str,
    },
    /// A RAM record names a block absent from the MEM_SIZE block list.
    #[error(
        "offset {offset}: RAM record for block {block:?}, which the block list does not contain"
    )]
    UnknownBlock {
        /// Offset of the record.
        offset: u64,
        /// The block name (lossy UTF-8).
        block: String,
    },
    /// A page lies beyond its block's used length.
    #[error("offset {offset}: page at {page_offset:#x} is beyond block {block:?} of {block_len:#x} bytes")]
    PageOutOfRange {
        /// Offset of the record.
        offset: u64,
        /// The block name.
        block: String,
        /// The page's offset in the block.
        page_offset: u64,
        /// The block's used length.
        block_len: u64,
    },
    /// The guest RAM block is not in the stream's block list.
    #[error("offset {offset}: the stream's RAM blocks {blocks:?} do not include the guest RAM block {wanted:?}; pass the memory-backend id as the block name")]
    MissingRamBlock {
        /// Offset of the block list.
        offset: u64,
        /// The block wanted.
        wanted: String,
        /// The blocks the stream has.
        blocks: Vec<String>,
    },
    /// A length or count is over a cap.
    #[error("offset {offset}: {what} is {len}, more than the limit {max}")]
    TooLarge {
        /// Offset of the item.
        offset: u64,
        /// What was measured.
        what: &'static str,
        /// Its value.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// The page sink failed.
    #[error("offset {offset}: writing guest RAM at {ram_offset:#x} ({len} bytes) failed")]
    Sink {
        /// Stream offset of the record being applied.
        offset: u64,
        /// Offset in the RAM block.
        ram_offset: u64,
        /// Bytes in the write.
        len: u64,
        /// The sink's error.
        #[source]
        source: io::Error,
    },
    /// Writing the RAM-less vmstate failed.
    #[error("offset {offset}: writing the RAM-less vmstate failed")]
    Output {
        /// Stream offset reached.
        offset: u64,
        /// The writer's error.
        #[source]
        source: io::Error,
    },
    /// Reading the input failed (`split_reader`).
    #[error("offset {offset}: reading the migration stream failed")]
    Read {
        /// Bytes read before the failure.
        offset: u64,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// `feed` was called again after an error.
    #[error("the splitter already failed at offset {offset}; start a new one")]
    Poisoned {
        /// Where the first error happened.
        offset: u64,
    },
}

impl SplitError {
    /// The stream offset the error refers to.
    pub fn offset(&self) -> u64 {
        match self {
            SplitError::Truncated { offset, .. }
            | SplitError::Unexpected { offset, .. }
            | SplitError::Unsupported { offset, .. }
            | SplitError::UnknownBlock { offset, .. }
            | SplitError::PageOutOfRange { offset, .. }
            | SplitError::MissingRamBlock { offset, .. }
            | SplitError::TooLarge { offset, .. }
            | SplitError::Sink { offset, .. }
            | SplitError::Output { offset, .. }
            | SplitError::Read { offset, .. }
            | SplitError::Poisoned { offset } => *offset,
        }
    }
}
