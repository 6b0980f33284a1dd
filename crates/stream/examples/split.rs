//! Splits a saved migration stream file:
//! `cargo run -p zygote-stream --example split -- full.bin ram.img vmstate.bin [size]`
//! writes the guest RAM block `mem` into `ram.img` (sparse, `size` bytes, default
//! the block's length rounded to 256 MiB) and the RAM-less vmstate into
//! `vmstate.bin`, then prints the counters.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter};

use zygote_stream::{split_reader, FileSink, SplitOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: split <stream> <ram image> <vmstate> [ram bytes]".into());
    }
    let size: u64 = args
        .get(4)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(256 << 20);
    let img = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&args[2])?;
    img.set_len(size)?;
    let input = BufReader::new(File::open(&args[1])?);
    let out = BufWriter::new(File::create(&args[3])?);
    let t = std::time::Instant::now();
    let r = split_reader(
        input,
        SplitOptions::default(),
        FileSink::new(img, size),
        out,
    )?;
    println!("{:#?}\nsplit in {:?}", r.stats, t.elapsed());
    Ok(())
}
