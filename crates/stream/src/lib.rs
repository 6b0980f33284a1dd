//! zygote-stream: splits a QEMU 10 precopy migration stream, while it arrives,
//! into
//!
//! * the guest RAM block's pages (block `mem`, the memory-backend id), written at
//!   their offsets into a [`PageSink`] (zero pages left as holes, contiguous
//!   pages coalesced), and
//! * a RAM-less vmstate that a child QEMU loads with `x-ignore-shared` on over a
//!   memory file holding that image: the configuration names x-ignore-shared,
//!   the MEM_SIZE list carries `mr->addr`, guest-RAM records are dropped (ROM and
//!   BIOS pages of other blocks kept, CONTINUE flags fixed), PART sections left
//!   empty are dropped, and device state is copied verbatim.
//!
//! Drive it with [`Splitter::feed`] (any chunking) and [`Splitter::finish`], or
//! [`split_reader`] over a [`Read`]. Only plain precopy is accepted: multifd,
//! xbzrle, compression, RDMA, postcopy, return-path commands, mapped-ram and
//! iterable sections other than RAM are refused with [`SplitError::Unsupported`].
//!
//! This crate owns the stream format and nothing else: it runs no QEMU, opens no
//! socket, and touches memory only through the [`PageSink`] it is given. Every
//! input is untrusted: no panic, sizes capped, errors carry the stream offset.
//!
//! The format, as written by QEMU 10.0 (`migration/savevm.c`, `migration/ram.c`):
//!
//! ```text
//! be32 0x5145564d 'QEVM', be32 3
//! 0x07 CONFIGURATION  be32 len, machine name, subsections (0x05 u8 len name be32 ver body)
//! 0x01 START be32 id, u8 3 "ram", be32 0, be32 4, MEM_SIZE list, EOS, 0x7e be32 id
//! 0x02 PART  be32 id, RAM records, EOS, 0x7e be32 id          (many)
//! 0x08 COMMAND be16 11 (SWITCHOVER_START), be16 0              (new in 10.0)
//! 0x03 END   be32 id, RAM records, EOS, 0x7e be32 id
//! 0x04 FULL device sections ..., 0x00 EOF, 0x06 be32 len JSON
//! ```

//!
//! Driving a live branch (engine): bind a unix socket, run [`split_reader`] (or
//! a read loop calling [`Splitter::feed`]) on the accepted connection in a
//! blocking thread, with a [`FileSink`] over the new snapshot memfd. On the
//! source: `migrate-set-capabilities` events=on, x-ignore-shared=off,
//! pause-before-switchover=on (multifd, postcopy-ram, return-path,
//! switchover-ack, xbzrle, mapped-ram off), then `migrate {"uri":"unix:<sock>"}`;
//! at status `pre-switchover` snapshot the disk and `migrate-continue`. The
//! [`Splitter::on_ram_end`] hook fires when every page is in the sink; the
//! device state (about 35 KB on microvm) follows. Children load the vmstate with
//! x-ignore-shared on over a `share=off` mapping of the image.

mod config;
mod cursor;
mod error;
pub mod format;
mod options;
mod sink;
mod splitter;
mod tail;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_garbage;

use std::io::{ErrorKind, Read, Write};

pub use error::SplitError;
pub use options::{BlockInfo, SplitOptions, SplitOutput, SplitStats};
pub use sink::{FileSink, PageSink, VecSink};
pub use splitter::{Splitter, MAX_BLOCKS, MAX_ITEM};
pub use tail::MAX_VMDESC;

/// Reads `input` to its end through a [`Splitter`] and finishes it.
pub fn split_reader<R: Read, S: PageSink, W: Write>(
    mut input: R,
    opts: SplitOptions,
    sink: S,
    out: W,
) -> Result<SplitOutput<S, W>, SplitError> {
    let mut splitter = Splitter::new(opts, sink, out);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return splitter.finish(),
            Ok(n) => splitter.feed(&buf[..n])?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(SplitError::Read {
                    offset: splitter.stats().bytes_in,
                    source,
                })
            }
        }
    }
}
