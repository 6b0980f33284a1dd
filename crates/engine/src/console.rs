//! A sandbox's serial console log (QEMU appends to it, `append=on`): read
//! only by its tail, and kept under a cap however much the guest prints.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Lines a boot error or a death report quotes.
const TAIL_LINES: usize = 30;
/// Bytes read from the end of the log for a tail.
const TAIL_BYTES: u64 = 64 << 10;
/// The log is cut back when it passes this.
pub(crate) const CAP_BYTES: u64 = 4 << 20;
/// What is kept when it is cut.
const KEEP_BYTES: u64 = 256 << 10;

/// The last `n` bytes of a file (fewer if it is shorter).
fn last_bytes(path: &Path, n: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(n)))?;
    let mut buf = Vec::with_capacity(n.min(len) as usize);
    f.take(n).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The last lines of a console log.
pub(crate) fn tail(path: &Path) -> String {
    let text = last_bytes(path, TAIL_BYTES).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    let tail = lines[start..].join("\n");
    if tail.trim().is_empty() {
        "(the console is empty)".to_string()
    } else {
        tail
    }
}

/// Cut the log back to its last [`KEEP_BYTES`] once it passes `cap`, with a
/// line saying so. QEMU opens it with `O_APPEND`, so its next write lands at
/// the new end. Returns whether it was cut.
pub(crate) fn cap(path: &Path, cap: u64) -> std::io::Result<bool> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= cap {
        return Ok(false);
    }
    let kept = last_bytes(path, KEEP_BYTES)?;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.set_len(0)?;
    writeln!(
        f,
        "[zygote: the console log passed {cap} bytes; the {} bytes before this line were dropped]",
        len - kept.len() as u64
    )?;
    f.write_all(&kept)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_log_is_cut_to_its_end_and_its_tail_read_cheaply() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("console.log");
        assert_eq!(tail(&p), "(the console is empty)");
        assert!(!cap(&p, 10).unwrap());
        let mut text = String::new();
        for i in 0..200_000 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&p, &text).unwrap();
        assert!(tail(&p).ends_with("line 199999"));
        assert!(cap(&p, 1 << 20).unwrap());
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len <= KEEP_BYTES + 200, "{len}");
        let kept = std::fs::read_to_string(&p).unwrap();
        assert!(kept.starts_with("[zygote: the console log passed"));
        assert!(kept.ends_with("line 199999\n"));
        assert!(!cap(&p, 1 << 20).unwrap());
    }
}
