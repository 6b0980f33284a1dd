//! The bytes after RAM END: non-iterable device sections (`QEMU_VM_SECTION_FULL`,
//! not self-delimiting without the device descriptions), `QEMU_VM_EOF`, and the
//! `QEMU_VM_VMDESCRIPTION` JSON (`qemu_savevm_state_complete_precopy_non_iterable`
//! in migration/savevm.c). They are copied verbatim; this module only checks, at
//! the end, that the copy ends the way a complete stream ends.

use crate::format::{SEC_EOF, SEC_VMDESCRIPTION};
use crate::SplitError;

/// Largest VMDESCRIPTION JSON accepted (q35 guests send a few hundred KiB).
pub const MAX_VMDESC: usize = 16 << 20;

/// Checks that `tail` ends with `QEMU_VM_EOF`, followed by a VMDESCRIPTION whose
/// length matches and whose JSON parses (required when `require_vmdesc`).
/// Returns the JSON's length (0 without one). `base` is the stream offset of
/// `tail[0]`, for errors.
pub(crate) fn check_tail(tail: &[u8], require_vmdesc: bool, base: u64) -> Result<u64, SplitError> {
    let end = base + tail.len() as u64;
    // JSON text never contains a raw 0x06 byte (control characters must be
    // escaped), so the last 0x06 of the tail is the VMDESCRIPTION marker.
    if let Some(i) = tail.iter().rposition(|&b| b == SEC_VMDESCRIPTION) {
        let json = &tail[i + 1..];
        if json.len() >= 4 && i >= 1 && tail[i - 1] == SEC_EOF {
            let len = u32::from_be_bytes([json[0], json[1], json[2], json[3]]) as usize;
            let json = &json[4..];
            if len == json.len() {
                if len > MAX_VMDESC {
                    return Err(SplitError::TooLarge {
                        offset: base + i as u64,
                        what: "VMDESCRIPTION JSON",
                        len: len as u64,
                        max: MAX_VMDESC as u64,
                    });
                }
                return match serde_json::from_slice::<serde_json::Value>(json) {
                    Ok(serde_json::Value::Object(_)) => Ok(len as u64),
                    Ok(_) | Err(_) => Err(SplitError::Unexpected {
                        offset: base + i as u64 + 5,
                        expected: "a VMDESCRIPTION JSON object",
                        found: format!("{len} bytes that do not parse as one"),
                    }),
                };
            }
        }
    }
    if require_vmdesc {
        return Err(SplitError::Truncated {
            offset: end,
            expected: "QEMU_VM_EOF and a complete VMDESCRIPTION at the end of the device state",
        });
    }
    if tail.last() != Some(&SEC_EOF) {
        return Err(SplitError::Truncated {
            offset: end,
            expected: "QEMU_VM_EOF at the end of the device state",
        });
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_desc(json: &[u8]) -> Vec<u8> {
        let mut t = vec![0x04, 1, 2, 3, SEC_EOF, SEC_VMDESCRIPTION];
        t.extend_from_slice(&(json.len() as u32).to_be_bytes());
        t.extend_from_slice(json);
        t
    }

    #[test]
    fn accepts_complete_tails_and_rejects_cut_ones() {
        let t = with_desc(br#"{"devices":[]}"#);
        assert_eq!(check_tail(&t, true, 0).unwrap(), 14);
        for cut in 0..t.len() {
            assert!(check_tail(&t[..cut], true, 0).is_err(), "cut at {cut}");
        }
        assert!(check_tail(&with_desc(b"[1]"), true, 0).is_err());
        assert!(check_tail(&with_desc(b"{nope"), true, 0).is_err());
        assert_eq!(check_tail(&[9, SEC_EOF], false, 0).unwrap(), 0);
        assert!(check_tail(&[9, 1], false, 0).is_err());
        assert!(check_tail(&[], false, 0).is_err());
    }
}
