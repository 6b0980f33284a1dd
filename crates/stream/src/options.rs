//! The splitter's inputs and outputs: [`SplitOptions`], the counters
//! [`SplitStats`] with the block list ([`BlockInfo`]), and [`SplitOutput`].
//! Plain data, no logic.

use std::collections::BTreeMap;

/// How to split.
#[derive(Debug, Clone)]
pub struct SplitOptions {
    /// The RAMBlock idstr of guest RAM: the memory-backend id (`mem`).
    pub ram_block: String,
    /// `mr->addr` of each block, written into the MEM_SIZE list of the RAM-less
    /// vmstate when the source had x-ignore-shared off (a destination only checks
    /// it for blocks it ignores itself; a `share=off` child ignores none).
    /// Blocks not listed get 0. Ignored when the source stream carries addresses.
    pub block_addrs: BTreeMap<String, u64>,
    /// Largest single sink write when coalescing contiguous pages.
    pub coalesce_bytes: usize,
    /// Cap on the bytes after RAM END (device state + VMDESCRIPTION JSON).
    pub max_tail_bytes: usize,
    /// Require the VMDESCRIPTION JSON at the end (QEMU 10 always sends it for
    /// precopy); with it, a stream cut anywhere is detected.
    pub require_vmdesc: bool,
    /// Cap on the guest RAM block's length.
    pub max_ram_bytes: u64,
}

impl Default for SplitOptions {
    fn default() -> SplitOptions {
        SplitOptions {
            ram_block: "mem".into(),
            block_addrs: BTreeMap::new(),
            coalesce_bytes: 1 << 20,
            max_tail_bytes: 64 << 20,
            require_vmdesc: true,
            max_ram_bytes: 1 << 40,
        }
    }
}

/// One RAM block from the MEM_SIZE list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    /// RAMBlock idstr.
    pub name: String,
    /// used_length in bytes.
    pub len: u64,
    /// `mr->addr` as written to the RAM-less vmstate.
    pub addr: u64,
}

/// Counters, readable at any time with [`Splitter::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitStats {
    /// Bytes fed so far.
    pub bytes_in: u64,
    /// Bytes of RAM-less vmstate written so far.
    pub bytes_out: u64,
    /// Top-level items: configuration, sections, commands.
    pub sections: u64,
    /// RAM sections (START, PART, END) read.
    pub ram_sections: u64,
    /// PART sections dropped because only guest RAM was in them.
    pub dropped_parts: u64,
    /// PAGE records of the guest RAM block (written to the sink).
    pub pages: u64,
    /// ZERO records of the guest RAM block (left as holes).
    pub zero_pages: u64,
    /// Zero records for pages written earlier in the stream (zeroed in the sink).
    pub zeroed_after_write: u64,
    /// Calls to [`PageSink::write_pages`].
    pub sink_writes: u64,
    /// Page records of other blocks (ROM, BIOS) kept in the vmstate.
    pub kept_records: u64,
    /// COMMAND sections passed through (SWITCHOVER_START).
    pub commands: u64,
    /// Machine name from the configuration section.
    pub machine: String,
    /// The MEM_SIZE block list.
    pub blocks: Vec<BlockInfo>,
    /// The source had x-ignore-shared on (its stream carried `mr->addr`).
    pub source_ignore_shared: bool,
    /// Stream offset just after the RAM END section, once reached.
    pub ram_end_offset: Option<u64>,
    /// Bytes after RAM END (device sections, EOF, VMDESCRIPTION).
    pub tail_bytes: u64,
    /// Length of the VMDESCRIPTION JSON (known at finish).
    pub vmdesc_bytes: u64,
}

/// What [`Splitter::finish`] hands back.
#[derive(Debug)]
pub struct SplitOutput<S, W> {
    /// Final counters.
    pub stats: SplitStats,
    /// The page sink, all pages written.
    pub sink: S,
    /// The vmstate writer, flushed.
    pub out: W,
}
