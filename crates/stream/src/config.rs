//! The `QEMU_VM_CONFIGURATION` section (`vmstate_configuration` in
//! migration/savevm.c): parsing its subsections and writing it back with
//! `x-ignore-shared` among the capabilities, which a destination started with
//! that capability requires (`vmstate_capabilites`' post_load refuses a
//! mismatch).

use crate::cursor::{put_str8, Cur};
use crate::format::{
    CAP_MAPPED_RAM, CAP_X_IGNORE_SHARED, PAGE_BITS, SEC_CONFIGURATION, SEC_SUBSECTION,
    SUB_CAPABILITIES, SUB_TARGET_PAGE_BITS, SUB_UUID,
};
use crate::SplitError;

/// Longest machine name accepted (QEMU's are like "pc-q35-10.0", "microvm").
pub(crate) const MAX_MACHINE_NAME: u32 = 256;
/// Most capabilities accepted in the capabilities subsection.
pub(crate) const MAX_CAPABILITIES: u32 = 64;
/// Most configuration subsections accepted (QEMU 10 defines three).
pub(crate) const MAX_SUBSECTIONS: usize = 8;

/// One subsection, with its body as it will be written.
#[derive(Debug, Clone)]
enum Body {
    Raw(Vec<u8>),
    Caps(Vec<Vec<u8>>),
}

/// The configuration section being rebuilt.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: Vec<u8>,
    subs: Vec<(Vec<u8>, u32, Body)>,
}

/// What a parsed subsection tells the splitter.
#[derive(Debug, Default)]
pub(crate) struct SubInfo {
    pub(crate) ignore_shared: bool,
}

impl Config {
    pub(crate) fn new(name: Vec<u8>) -> Config {
        Config {
            name,
            subs: Vec::new(),
        }
    }

    /// Parses one subsection (starting at its 0x05 byte). `Ok(None)`: more bytes
    /// needed, nothing changed.
    pub(crate) fn parse_sub(
        &mut self,
        b: &[u8],
        offset: u64,
    ) -> Result<Option<(usize, SubInfo)>, SplitError> {
        let mut c = Cur::new(b);
        macro_rules! need {
            ($e:expr) => {
                match $e {
                    Some(v) => v,
                    None => return Ok(None),
                }
            };
        }
        let _marker = need!(c.u8());
        let name = need!(c.str8());
        let version = need!(c.be32());
        let mut info = SubInfo::default();
        let body = if name == SUB_TARGET_PAGE_BITS {
            let bits = need!(c.be32());
            if bits != PAGE_BITS {
                return Err(SplitError::Unsupported {
                    offset,
                    what: format!("target page bits {bits}"),
                    fix: "only x86 guests with 4 KiB target pages are supported",
                });
            }
            Body::Raw(bits.to_be_bytes().to_vec())
        } else if name == SUB_CAPABILITIES {
            let n = need!(c.be32());
            if n > MAX_CAPABILITIES {
                return Err(SplitError::TooLarge {
                    offset,
                    what: "capability count",
                    len: n.into(),
                    max: MAX_CAPABILITIES.into(),
                });
            }
            let mut caps = Vec::new();
            for _ in 0..n {
                caps.push(need!(c.str8()).to_vec());
            }
            if caps.iter().any(|c| c == CAP_MAPPED_RAM) {
                return Err(SplitError::Unsupported {
                    offset,
                    what: "capability mapped-ram".into(),
                    fix: "turn mapped-ram off on the source (it is for file: migration)",
                });
            }
            info.ignore_shared = caps.iter().any(|c| c == CAP_X_IGNORE_SHARED);
            Body::Caps(caps)
        } else if name == SUB_UUID {
            Body::Raw(need!(c.take(16)).to_vec())
        } else {
            return Err(SplitError::Unsupported {
                offset,
                what: format!(
                    "configuration subsection {:?}",
                    String::from_utf8_lossy(name)
                ),
                fix: "this splitter knows target-page-bits, capabilities and uuid (QEMU 10.0)",
            });
        };
        if self.subs.len() >= MAX_SUBSECTIONS {
            return Err(SplitError::TooLarge {
                offset,
                what: "configuration subsection count",
                len: self.subs.len() as u64 + 1,
                max: MAX_SUBSECTIONS as u64,
            });
        }
        if self.subs.iter().any(|(n, _, _)| n == name) {
            return Err(SplitError::Unexpected {
                offset,
                expected: "each configuration subsection once",
                found: format!("a second {:?}", String::from_utf8_lossy(name)),
            });
        }
        self.subs.push((name.to_vec(), version, body));
        Ok(Some((c.pos, info)))
    }

    /// Writes the section with `x-ignore-shared` added to the capabilities
    /// (a new capabilities subsection goes after target-page-bits, where QEMU
    /// puts it).
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        let mut subs = self.subs.clone();
        match subs.iter_mut().find(|(n, _, _)| n == SUB_CAPABILITIES) {
            Some((_, _, Body::Caps(caps))) => {
                if !caps.iter().any(|c| c == CAP_X_IGNORE_SHARED) {
                    caps.push(CAP_X_IGNORE_SHARED.to_vec());
                }
            }
            _ => {
                let at = usize::from(
                    subs.first()
                        .is_some_and(|(n, _, _)| n == SUB_TARGET_PAGE_BITS),
                );
                subs.insert(
                    at,
                    (
                        SUB_CAPABILITIES.to_vec(),
                        1,
                        Body::Caps(vec![CAP_X_IGNORE_SHARED.to_vec()]),
                    ),
                );
            }
        }
        out.push(SEC_CONFIGURATION);
        out.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.name);
        for (name, version, body) in &subs {
            out.push(SEC_SUBSECTION);
            put_str8(out, name);
            out.extend_from_slice(&version.to_be_bytes());
            match body {
                Body::Raw(b) => out.extend_from_slice(b),
                Body::Caps(caps) => {
                    out.extend_from_slice(&(caps.len() as u32).to_be_bytes());
                    for c in caps {
                        put_str8(out, c);
                    }
                }
            }
        }
    }
}
