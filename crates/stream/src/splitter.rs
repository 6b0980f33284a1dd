//! [`Splitter`]: the push-driven state machine. Bytes go in with
//! [`Splitter::feed`] in chunks of any size; guest RAM pages go out to a
//! [`PageSink`] and everything else, rewritten for an `x-ignore-shared`
//! destination, goes to a [`Write`].
//!
//! Each step parses one whole item (a section header, one RAM record, one block
//! of the MEM_SIZE list, a footer, a command) from the buffered input before it
//! changes any state, so an item split across chunks is simply retried when more
//! bytes arrive. An incomplete item is at most [`MAX_ITEM`] bytes, which bounds
//! the internal buffer. After RAM END the rest of the stream (device sections,
//! EOF, VMDESCRIPTION) is copied verbatim and checked at [`Splitter::finish`].

use std::io::Write;

use crate::config::{Config, MAX_MACHINE_NAME};
use crate::cursor::{put_str8, Cur};
use crate::format::*;
use crate::sink::{Coalescer, PageSink};
use crate::tail::check_tail;
use crate::{BlockInfo, SplitError, SplitOptions, SplitOutput, SplitStats};

/// Largest item the parser ever needs whole: a COMMAND with 64 KiB of data, or a
/// capabilities subsection of 64 names (a page record is about 4.4 KiB).
pub const MAX_ITEM: usize = 70 * 1024;
/// Most RAM blocks accepted in the MEM_SIZE list.
pub const MAX_BLOCKS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Top,
    ConfigSubs,
    Ram,
    Blocks { remaining: u64 },
    Footer,
    Tail,
}

impl State {
    fn expected(self) -> &'static str {
        match self {
            State::Header => "the stream header (QEVM magic, version 3)",
            State::Top => "a section type byte",
            State::ConfigSubs => "a configuration subsection or the next section",
            State::Ram => "a RAM record",
            State::Blocks { .. } => "a RAM block entry of the MEM_SIZE list",
            State::Footer => "a section footer",
            State::Tail => "device state ending with QEMU_VM_EOF and the VMDESCRIPTION",
        }
    }
}

/// The RAM section being read.
#[derive(Debug, Clone, Copy)]
struct Section {
    kind: u8,
    sid: u32,
    header_written: bool,
}

struct Block {
    name: Vec<u8>,
    len: u64,
}

type Hook = Box<dyn FnMut(&SplitStats) + Send>;

/// Splits one migration stream. See the module docs.
pub struct Splitter<S: PageSink, W: Write> {
    opts: SplitOptions,
    sink: S,
    out: W,
    outbuf: Vec<u8>,
    pending: Vec<u8>,
    pos: u64,
    state: State,
    failed_at: Option<u64>,
    config: Option<Config>,
    seen_config: bool,
    mem_size_seen: bool,
    ram_sid: Option<u32>,
    section: Section,
    blocks: Vec<Block>,
    guest: Option<usize>,
    last_recv: Option<usize>,
    last_sent: Option<usize>,
    written: Vec<u64>,
    coalescer: Coalescer,
    tail: Vec<u8>,
    stats: SplitStats,
    hook: Option<Hook>,
}

impl<S: PageSink, W: Write> std::fmt::Debug for Splitter<S, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splitter")
            .field("state", &self.state)
            .field("pos", &self.pos)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

impl<S: PageSink, W: Write> Splitter<S, W> {
    /// A splitter writing guest RAM into `sink` and the RAM-less vmstate to `out`.
    pub fn new(opts: SplitOptions, sink: S, out: W) -> Splitter<S, W> {
        let coalescer = Coalescer::new(opts.coalesce_bytes);
        Splitter {
            opts,
            sink,
            out,
            outbuf: Vec::new(),
            pending: Vec::new(),
            pos: 0,
            state: State::Header,
            failed_at: None,
            config: None,
            seen_config: false,
            mem_size_seen: false,
            ram_sid: None,
            section: Section {
                kind: 0,
                sid: 0,
                header_written: false,
            },
            blocks: Vec::new(),
            guest: None,
            last_recv: None,
            last_sent: None,
            written: Vec::new(),
            coalescer,
            tail: Vec::new(),
            stats: SplitStats::default(),
            hook: None,
        }
    }

    /// Calls `hook` once, when the RAM END section has been read and every guest
    /// page is in the sink (the engine uses it to time the pause).
    pub fn on_ram_end(&mut self, hook: impl FnMut(&SplitStats) + Send + 'static) {
        self.hook = Some(Box::new(hook));
    }

    /// Counters so far.
    pub fn stats(&self) -> &SplitStats {
        &self.stats
    }

    /// Whether the RAM END section has been read.
    pub fn ram_end_reached(&self) -> bool {
        self.stats.ram_end_offset.is_some()
    }

    /// Feeds the next bytes of the stream. After an error the splitter is
    /// poisoned: later calls return [`SplitError::Poisoned`].
    pub fn feed(&mut self, data: &[u8]) -> Result<(), SplitError> {
        if let Some(offset) = self.failed_at {
            return Err(SplitError::Poisoned { offset });
        }
        self.stats.bytes_in += data.len() as u64;
        let r = self.feed_inner(data).and_then(|()| self.flush_out());
        if let Err(e) = &r {
            self.failed_at = Some(e.offset());
        }
        r
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<(), SplitError> {
        while !data.is_empty() {
            if self.pending.is_empty() {
                let n = self.run(data)?;
                self.pending.extend_from_slice(&data[n..]);
                return Ok(());
            }
            // Complete the buffered item with bytes from `data`, then give back
            // whatever the items parsed from the buffer did not use.
            let old = self.pending.len();
            let take = data.len().min(MAX_ITEM.saturating_sub(old)).max(1);
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(&data[..take]);
            let n = self.run(&buf)?;
            if n >= old {
                data = &data[n - old..];
            } else if n == 0 {
                if buf.len() >= MAX_ITEM {
                    return Err(SplitError::TooLarge {
                        offset: self.pos,
                        what: "a single stream item",
                        len: buf.len() as u64,
                        max: MAX_ITEM as u64,
                    });
                }
                self.pending = buf;
                data = &data[take..];
            } else {
                // The buffer holds only an incomplete item, so a parse consumes
                // none of it or more than all of it.
                return Err(SplitError::Unexpected {
                    offset: self.pos,
                    expected: "an item boundary (internal buffering error)",
                    found: format!("{n} of {old} buffered bytes consumed"),
                });
            }
        }
        Ok(())
    }

    /// Parses as many whole items from `b` as possible; returns bytes consumed.
    fn run(&mut self, b: &[u8]) -> Result<usize, SplitError> {
        let mut used = 0;
        while let Some(n) = self.step(&b[used..])? {
            used += n;
            self.pos += n as u64;
        }
        Ok(used)
    }

    /// One item. `Ok(None)`: more input needed, no state changed.
    /// `Ok(Some(0))` only with a state change.
    fn step(&mut self, b: &[u8]) -> Result<Option<usize>, SplitError> {
        match self.state {
            State::Header => self.step_header(b),
            State::Top => self.step_top(b),
            State::ConfigSubs => self.step_config_sub(b),
            State::Ram => self.step_record(b),
            State::Blocks { remaining } => self.step_block(b, remaining),
            State::Footer => self.step_footer(b),
            State::Tail => {
                if b.is_empty() {
                    return Ok(None);
                }
                let total = self.tail.len() + b.len();
                if total > self.opts.max_tail_bytes {
                    return Err(SplitError::TooLarge {
                        offset: self.pos,
                        what: "device state after RAM END",
                        len: total as u64,
                        max: self.opts.max_tail_bytes as u64,
                    });
                }
                self.tail.extend_from_slice(b);
                self.outbuf.extend_from_slice(b);
                self.stats.tail_bytes = total as u64;
                Ok(Some(b.len()))
            }
        }
    }

    fn step_header(&mut self, b: &[u8]) -> Result<Option<usize>, SplitError> {
        let mut c = Cur::new(b);
        let magic = need!(c.be32());
        if magic != MAGIC {
            return Err(self.unexpected("the QEVM magic 0x5145564d", format!("{magic:#010x}")));
        }
        let version = need!(c.be32());
        if version != VERSION {
            return Err(self.unexpected("stream version 3", version.to_string()));
        }
        self.outbuf.extend_from_slice(&b[..8]);
        self.state = State::Top;
        Ok(Some(8))
    }

    fn step_top(&mut self, b: &[u8]) -> Result<Option<usize>, SplitError> {
        let mut c = Cur::new(b);
        let kind = need!(c.u8());
        match kind {
            SEC_CONFIGURATION => {
                let len = need!(c.be32());
                if len > MAX_MACHINE_NAME {
                    return Err(self.too_large(
                        "machine name length",
                        len.into(),
                        MAX_MACHINE_NAME.into(),
                    ));
                }
                let name = need!(c.take(len as usize));
                if self.seen_config || self.ram_sid.is_some() {
                    return Err(
                        self.unexpected("one configuration section, before RAM", "another".into())
                    );
                }
                self.seen_config = true;
                self.stats.machine = String::from_utf8_lossy(name).into_owned();
                self.config = Some(Config::new(name.to_vec()));
                self.state = State::ConfigSubs;
            }
            SEC_START => {
                let sid = need!(c.be32());
                let idstr = need!(c.str8());
                let _instance = need!(c.be32());
                let version = need!(c.be32());
                if idstr != RAM_IDSTR {
                    return Err(self.unsupported(
                        format!("iterable section {:?}", String::from_utf8_lossy(idstr)),
                        "only RAM may be iterative: turn off dirty-bitmaps and block migration",
                    ));
                }
                if self.ram_sid.is_some() {
                    return Err(self.unexpected("one RAM START section", "a second".into()));
                }
                if version != RAM_VERSION {
                    return Err(self.unexpected("RAM section version 4", version.to_string()));
                }
                self.ram_sid = Some(sid);
                self.outbuf.extend_from_slice(&b[..c.pos]);
                self.begin_ram(kind, sid, true);
            }
            SEC_PART | SEC_END => {
                let sid = need!(c.be32());
                if self.ram_sid != Some(sid) {
                    return Err(self.unexpected(
                        "a PART/END section of the RAM section",
                        format!("section id {sid}"),
                    ));
                }
                self.begin_ram(kind, sid, false);
            }
            SEC_FULL => {
                let _sid = need!(c.be32());
                let idstr = need!(c.str8());
                return Err(self.unsupported(
                    format!("device section {:?} before RAM END", String::from_utf8_lossy(idstr)),
                    "this splitter copies device state only after RAM END (early-setup devices such as virtio-mem are not supported)",
                ));
            }
            SEC_COMMAND => {
                let cmd = need!(c.be16());
                let len = need!(c.be16());
                let _data = need!(c.take(usize::from(len)));
                if cmd != CMD_SWITCHOVER_START || len != 0 {
                    return Err(self.unsupported(
                        format!("command {} ({cmd}) with {len} bytes", command_name(cmd)),
                        "use plain precopy: postcopy, return-path, switchover-ack and COLO off",
                    ));
                }
                self.outbuf.extend_from_slice(&b[..c.pos]);
                self.stats.commands += 1;
            }
            SEC_EOF => {
                return Err(self.unexpected("the RAM END section before QEMU_VM_EOF", "EOF".into()));
            }
            other => {
                return Err(self.unexpected(
                    "a section type (configuration, RAM START/PART/END, command)",
                    format!("{other:#04x}"),
                ));
            }
        }
        self.stats.sections += 1;
        Ok(Some(c.pos))
    }

    fn begin_ram(&mut self, kind: u8, sid: u32, header_written: bool) {
        self.section = Section {
            kind,
            sid,
            header_written,
        };
        self.stats.ram_sections += 1;
        self.state = State::Ram;
    }

    fn step_config_sub(&mut self, b: &[u8]) -> Result<Option<usize>, SplitError> {
        let first = need!(b.first().copied());
        let offset = self.pos;
        let Some(config) = self.config.as_mut() else {
            return Err(self.unexpected("a configuration section", "none (internal)".into()));
        };
        if first != SEC_SUBSECTION {
            config.write(&mut self.outbuf);
            self.config = None;
            self.state = State::Top;
            return Ok(Some(0));
        }
        let (n, info) = need!(config.parse_sub(b, offset)?);
        self.stats.source_ignore_shared |= info.ignore_shared;
        Ok(Some(n))
    }

    fn step_record(&mut self, b: &[u8]) -> Result<Option<usize>, SplitError> {
        let mut c = Cur::new(b);
        let v = need!(c.be64());
        let flags = v & (PAGE_SIZE - 1);
        let addr = v & !(PAGE_SIZE - 1);
        match flags & !F_CONTINUE {
            F_MEM_SIZE => {
                if self.section.kind != SEC_START || self.mem_size_seen {
                    return Err(self.unexpected(
                        "MEM_SIZE only once, in the RAM START section",
                        "another".into(),
                    ));
                }
                self.mem_size_seen = true;
                self.outbuf
                    .extend_from_slice(&(addr | F_MEM_SIZE).to_be_bytes());
                self.state = State::Blocks { remaining: addr };
                if addr == 0 {
                    self.end_block_list()?;
                }
                Ok(Some(8))
            }
            kind @ (F_ZERO | F_PAGE) => {
                let block = if flags & F_CONTINUE != 0 {
                    match self.last_recv {
                        Some(i) => i,
                        None => {
                            return Err(self.unexpected(
                                "a block name before the first CONTINUE record",
                                "CONTINUE".into(),
                            ))
                        }
                    }
                } else {
                    let name = need!(c.str8());
                    match self.blocks.iter().position(|bl| bl.name == name) {
                        Some(i) => i,
                        None => {
                            return Err(SplitError::UnknownBlock {
                                offset: self.pos,
                                block: String::from_utf8_lossy(name).into_owned(),
                            })
                        }
                    }
                };
                let payload = if kind == F_ZERO {
                    need!(c.take(1))
                } else {
                    need!(c.take(PAGE_SIZE as usize))
                };
                if kind == F_ZERO && payload[0] != 0 {
                    return Err(self.unexpected(
                        "fill byte 0 in a ZERO record (QEMU >= 8.2)",
                        payload[0].to_string(),
                    ));
                }
                let bl = &self.blocks[block];
                if addr.checked_add(PAGE_SIZE).is_none_or(|end| end > bl.len) {
                    return Err(SplitError::PageOutOfRange {
                        offset: self.pos,
                        block: String::from_utf8_lossy(&bl.name).into_owned(),
                        page_offset: addr,
                        block_len: bl.len,
                    });
                }
                self.last_recv = Some(block);
                if Some(block) == self.guest {
                    self.guest_page(addr, kind, payload)?;
                } else {
                    self.keep_record(block, addr, kind, payload);
                }
                Ok(Some(c.pos))
            }
            F_EOS => {
                self.state = State::Footer;
                Ok(Some(8))
            }
            F_MULTIFD_FLUSH => Err(self.unsupported_flags(
                flags,
                "multifd is not supported: turn the multifd capability off",
            )),
            F_XBZRLE => Err(self.unsupported_flags(flags, "turn the xbzrle capability off")),
            F_COMPRESS_PAGE => Err(self.unsupported_flags(
                flags,
                "compressed pages (removed in QEMU 9.1) are not supported",
            )),
            f if f & F_HOOK != 0 => {
                Err(self.unsupported_flags(flags, "RDMA migration is not supported"))
            }
            _ => Err(self.unexpected(
                "a RAM record: ZERO, PAGE, MEM_SIZE or EOS (optionally with CONTINUE)",
                format!("flags {flags:#x} (record {v:#018x})"),
            )),
        }
    }

    fn guest_page(&mut self, addr: u64, kind: u64, payload: &[u8]) -> Result<(), SplitError> {
        let page = addr / PAGE_SIZE;
        let (word, bit) = ((page / 64) as usize, 1u64 << (page % 64));
        let offset = self.pos;
        if kind == F_PAGE {
            self.stats.pages += 1;
            if self.written.len() <= word {
                self.written.resize(word + 1, 0);
            }
            self.written[word] |= bit;
            let before = self.coalescer_flushes(|c, s| c.push(s, addr, payload), offset)?;
            self.stats.sink_writes += before;
            return Ok(());
        }
        self.stats.zero_pages += 1;
        if self.written.get(word).is_some_and(|w| w & bit != 0) {
            if self.coalescer.overlaps(addr, PAGE_SIZE) {
                self.stats.sink_writes += self.coalescer_flushes(|c, s| c.flush(s), offset)?;
            }
            self.written[word] &= !bit;
            self.stats.zeroed_after_write += 1;
            self.sink
                .zero_range(addr, PAGE_SIZE)
                .map_err(|source| SplitError::Sink {
                    offset,
                    ram_offset: addr,
                    len: PAGE_SIZE,
                    source,
                })?;
        }
        Ok(())
    }

    /// Runs a coalescer operation; returns 1 if it wrote to the sink, else 0.
    fn coalescer_flushes(
        &mut self,
        f: impl FnOnce(&mut Coalescer, &mut S) -> Result<bool, (u64, u64, std::io::Error)>,
        offset: u64,
    ) -> Result<u64, SplitError> {
        match f(&mut self.coalescer, &mut self.sink) {
            Ok(wrote) => Ok(u64::from(wrote)),
            Err((ram_offset, len, source)) => Err(SplitError::Sink {
                offset,
                ram_offset,
                len,
                source,
            }),
        }
    }

    fn keep_record(&mut self, block: usize, addr: u64, kind: u64, payload: &[u8]) {
        self.write_section_header();
        if self.last_sent == Some(block) {
            self.outbuf
                .extend_from_slice(&(addr | kind | F_CONTINUE).to_be_bytes());
        } else {
            self.outbuf.extend_from_slice(&(addr | kind).to_be_bytes());
            put_str8(&mut self.outbuf, &self.blocks[block].name);
        }
        self.outbuf.extend_from_slice(payload);
        self.last_sent = Some(block);
        self.stats.kept_records += 1;
    }

    fn write_section_header(&mut self) {
        if !self.section.header_written {
            self.outbuf.push(self.section.kind);
            self.outbuf
                .extend_from_slice(&self.section.sid.to_be_bytes());
            self.section.header_written = true;
        }
    }

    fn step_block(&mut self, b: &[u8], remaining: u64) -> Result<Option<usize>, SplitError> {
        let mut c = Cur::new(b);
        let name = need!(c.str8());
        let len = need!(c.be64());
        let stream_addr = if self.stats.source_ignore_shared {
            Some(need!(c.be64()))
        } else {
            None
        };
        let name_s = String::from_utf8_lossy(name).into_owned();
        if len > remaining {
            return Err(self.unexpected(
                "block lengths that add up to the MEM_SIZE total",
                format!("block {name_s:?} of {len:#x} bytes with {remaining:#x} left"),
            ));
        }
        if self.blocks.len() >= MAX_BLOCKS {
            return Err(self.too_large(
                "RAM block count",
                self.blocks.len() as u64 + 1,
                MAX_BLOCKS as u64,
            ));
        }
        if self.blocks.iter().any(|bl| bl.name == name) {
            return Err(self.unexpected("distinct block names", format!("{name_s:?} twice")));
        }
        if name_s == self.opts.ram_block {
            if len > self.opts.max_ram_bytes {
                return Err(self.too_large("guest RAM block length", len, self.opts.max_ram_bytes));
            }
            self.guest = Some(self.blocks.len());
        }
        let addr =
            stream_addr.unwrap_or_else(|| self.opts.block_addrs.get(&name_s).copied().unwrap_or(0));
        put_str8(&mut self.outbuf, name);
        self.outbuf.extend_from_slice(&len.to_be_bytes());
        self.outbuf.extend_from_slice(&addr.to_be_bytes());
        self.blocks.push(Block {
            name: name.to_vec(),
            len,
        });
        self.stats.blocks.push(BlockInfo {
            name: name_s,
            len,
            addr,
        });
        let remaining = remaining - len;
        self.state = State::Blocks { remaining };
        if remaining == 0 {
            self.end_block_list()?;
        }
        Ok(Some(c.pos))
    }

    fn end_block_list(&mut self) -> Result<(), SplitError> {
        if self.guest.is_none() {
            return Err(SplitError::MissingRamBlock {
                offset: self.pos,
                wanted: self.opts.ram_block.clone(),
                blocks: self.stats.blocks.iter().map(|b| b.name.clone()).collect(),
            });
        }
        self.state = State::Ram;
        Ok(())
    }

    fn step_footer(&mut self, b: &[u8]) -> Result<Option<usize>, SplitError> {
        let mut c = Cur::new(b);
        let marker = need!(c.u8());
        if marker != SEC_FOOTER {
            return Err(self.unexpected("a section footer (0x7e)", format!("{marker:#04x}")));
        }
        let sid = need!(c.be32());
        if sid != self.section.sid {
            return Err(self.unexpected(
                "the footer of the current section",
                format!("section id {sid}"),
            ));
        }
        if self.section.kind == SEC_START && !self.mem_size_seen {
            return Err(self.unexpected(
                "a MEM_SIZE block list in the RAM START section",
                "none".into(),
            ));
        }
        if self.section.kind == SEC_END {
            self.write_section_header();
        }
        if self.section.header_written {
            self.outbuf.extend_from_slice(&F_EOS.to_be_bytes());
            self.outbuf.push(SEC_FOOTER);
            self.outbuf.extend_from_slice(&sid.to_be_bytes());
        } else {
            self.stats.dropped_parts += 1;
        }
        self.state = State::Top;
        if self.section.kind == SEC_END {
            let offset = self.pos + c.pos as u64;
            self.stats.sink_writes += self.coalescer_flushes(|co, s| co.flush(s), offset)?;
            self.state = State::Tail;
            self.stats.ram_end_offset = Some(offset);
            if let Some(mut hook) = self.hook.take() {
                hook(&self.stats);
            }
        }
        Ok(Some(c.pos))
    }

    fn flush_out(&mut self) -> Result<(), SplitError> {
        if self.outbuf.is_empty() {
            return Ok(());
        }
        self.out
            .write_all(&self.outbuf)
            .map_err(|source| SplitError::Output {
                offset: self.pos,
                source,
            })?;
        self.stats.bytes_out += self.outbuf.len() as u64;
        self.outbuf.clear();
        Ok(())
    }

    /// Ends the stream: checks it ended after a complete device state, flushes
    /// the writer and hands back sink, writer and counters.
    pub fn finish(mut self) -> Result<SplitOutput<S, W>, SplitError> {
        if let Some(offset) = self.failed_at {
            return Err(SplitError::Poisoned { offset });
        }
        if self.state != State::Tail || !self.pending.is_empty() {
            return Err(SplitError::Truncated {
                offset: self.stats.bytes_in,
                expected: self.state.expected(),
            });
        }
        let base = self.stats.ram_end_offset.unwrap_or(0);
        self.stats.vmdesc_bytes = check_tail(&self.tail, self.opts.require_vmdesc, base)?;
        self.flush_out()?;
        self.out.flush().map_err(|source| SplitError::Output {
            offset: self.pos,
            source,
        })?;
        Ok(SplitOutput {
            stats: self.stats,
            sink: self.sink,
            out: self.out,
        })
    }

    fn unexpected(&self, expected: &'static str, found: String) -> SplitError {
        SplitError::Unexpected {
            offset: self.pos,
            expected,
            found,
        }
    }

    fn unsupported(&self, what: String, fix: &'static str) -> SplitError {
        SplitError::Unsupported {
            offset: self.pos,
            what,
            fix,
        }
    }

    fn unsupported_flags(&self, flags: u64, fix: &'static str) -> SplitError {
        self.unsupported(format!("RAM record flags {flags:#x}"), fix)
    }

    fn too_large(&self, what: &'static str, len: u64, max: u64) -> SplitError {
        SplitError::TooLarge {
            offset: self.pos,
            what,
            len,
            max,
        }
    }
}
