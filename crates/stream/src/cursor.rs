//! [`Cur`]: a bounds-checked big-endian reader over a byte slice that answers
//! `None` when the slice ends, so a parser can wait for more input instead of
//! failing. No allocation, no panics.

/// Reads from `b` starting at `pos`; every getter returns `None` (and leaves the
/// position unspecified) when fewer bytes remain than it needs.
#[derive(Debug)]
pub(crate) struct Cur<'a> {
    b: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cur<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Cur<'a> {
        Cur { b, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }

    pub(crate) fn be16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }

    pub(crate) fn be32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub(crate) fn be64(&mut self) -> Option<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_be_bytes(a))
    }

    /// A QEMU "u8 length + bytes" string (block names, idstrs, capabilities).
    pub(crate) fn str8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
}

/// Appends a QEMU "u8 length + bytes" string; `s` must be at most 255 bytes
/// (every caller passes a name that was read with [`Cur::str8`]).
pub(crate) fn put_str8(out: &mut Vec<u8>, s: &[u8]) {
    let n = u8::try_from(s.len()).unwrap_or(u8::MAX);
    out.push(n);
    out.extend_from_slice(&s[..usize::from(n)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_stops_at_the_end() {
        let b = [1, 0, 2, 0, 0, 0, 3, 2, b'h', b'i'];
        let mut c = Cur::new(&b);
        assert_eq!(c.u8(), Some(1));
        assert_eq!(c.be16(), Some(2));
        assert_eq!(c.be32(), Some(3));
        assert_eq!(c.str8(), Some(&b"hi"[..]));
        assert_eq!(c.u8(), None);
        let mut c = Cur::new(&b[..3]);
        assert_eq!(c.be32(), None);
        assert_eq!(Cur::new(&[5, b'a']).str8(), None);
        assert_eq!(Cur::new(&b).take(usize::MAX), None);
    }
}
