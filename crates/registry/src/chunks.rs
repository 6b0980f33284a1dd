//! A snapshot bundle (the daemon's tar stream) cut into content-addressed
//! chunks and put back together.
//!
//! Every file of the bundle is split into [`CHUNK`]-byte pieces; a piece of
//! zeros is recorded as such and stored nowhere; any other piece is
//! compressed with zstd and stored in the local layout under the digest of
//! the compressed bytes (deterministic for the same content, so two branches
//! of one parent share every piece they did not change). The [`ChunkIndex`]
//! lists each file's pieces in order; it is the artifact's config blob.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{Layout, RegistryError};

/// The bundle's manifest, its first file.
pub const MANIFEST_FILE: &str = "bundle.json";
/// Bytes per chunk (before compression).
pub const CHUNK: u64 = 4 << 20;
/// zstd level of chunks.
const LEVEL: i32 = 3;
/// Version of the index format.
pub const INDEX_FORMAT: u32 = 1;
/// Largest index accepted (a 64 GiB snapshot has 16 Ki chunks of ~80 bytes).
pub const MAX_INDEX_BYTES: u64 = 16 << 20;

/// The artifact's config: every file of the bundle and its chunks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChunkIndex {
    pub format: u32,
    pub chunk_bytes: u64,
    pub files: Vec<IndexedFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IndexedFile {
    pub name: String,
    pub bytes: u64,
    /// `sha256:` of each compressed chunk, `None` for a chunk of zeros.
    pub chunks: Vec<Option<String>>,
}

impl ChunkIndex {
    /// Every distinct stored chunk, in first-use order.
    pub fn blobs(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.files
            .iter()
            .flat_map(|f| f.chunks.iter().flatten())
            .filter(|d| seen.insert((*d).clone()))
            .cloned()
            .collect()
    }

    /// Checks that the index is consistent (chunk counts, digests, names).
    pub fn validate(&self) -> Result<(), String> {
        if self.format != INDEX_FORMAT || self.chunk_bytes != CHUNK {
            return Err(format!(
                "index format {} with {}-byte chunks is not this zygote's ({INDEX_FORMAT}, {CHUNK})",
                self.format, self.chunk_bytes
            ));
        }
        for f in &self.files {
            if f.chunks.len() as u64 != f.bytes.div_ceil(CHUNK) {
                return Err(format!(
                    "file `{}` lists the wrong number of chunks",
                    f.name
                ));
            }
            if f.name.is_empty() || f.name.split('/').any(|c| c.is_empty() || c == "..") {
                return Err(format!(
                    "file name `{}` is not a plain relative path",
                    f.name
                ));
            }
            for d in f.chunks.iter().flatten() {
                let hex = d.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!("chunk digest `{d}` is not sha256"));
                }
            }
        }
        Ok(())
    }
}

/// What cutting a bundle did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CutStats {
    pub bundle_bytes: u64,
    pub chunks: u64,
    pub zero_chunks: u64,
    /// Chunks that were new to the local layout.
    pub new_chunks: u64,
}

/// Cuts the bundle tar stream `r` into chunks stored in `layout` (blocking).
pub fn cut(r: impl Read, layout: &Layout) -> Result<(ChunkIndex, CutStats), RegistryError> {
    let bad = |m: String| RegistryError::Bundle(m);
    let mut archive = tar::Archive::new(r);
    let mut files = Vec::new();
    let mut stats = CutStats::default();
    let mut buf = vec![0u8; CHUNK as usize];
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar stream: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("unreadable bundle: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let bytes = entry.size();
        let mut chunks = Vec::new();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK) as usize;
            entry
                .read_exact(&mut buf[..n])
                .map_err(|e| bad(format!("the bundle broke off in `{name}`: {e}")))?;
            left -= n as u64;
            stats.chunks += 1;
            if buf[..n].iter().all(|&b| b == 0) {
                stats.zero_chunks += 1;
                chunks.push(None);
                continue;
            }
            let packed = zstd::bulk::compress(&buf[..n], LEVEL)
                .map_err(|e| bad(format!("cannot compress: {e}")))?;
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&packed)));
            if !layout.has_blob(&digest) {
                layout.put_blob("(local)", &digest, &packed)?;
                stats.new_chunks += 1;
            }
            chunks.push(Some(digest));
        }
        stats.bundle_bytes += bytes;
        files.push(IndexedFile {
            name,
            bytes,
            chunks,
        });
    }
    Ok((
        ChunkIndex {
            format: INDEX_FORMAT,
            chunk_bytes: CHUNK,
            files,
        },
        stats,
    ))
}

/// Writes the bundle tar stream of `index` from the chunks in `layout`
/// (blocking). Every chunk must be there.
pub fn assemble(index: &ChunkIndex, layout: &Layout, w: impl Write) -> Result<(), RegistryError> {
    let io = |what: &'static str| {
        move |e: std::io::Error| RegistryError::Bundle(format!("cannot {what}: {e}"))
    };
    let mut tar = tar::Builder::new(w);
    for f in &index.files {
        let mut h = tar::Header::new_gnu();
        h.set_size(f.bytes);
        h.set_mode(0o600);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        let reader = ChunkReader {
            layout,
            file: f,
            next: 0,
            current: Vec::new(),
            pos: 0,
        };
        tar.append_data(&mut h, &f.name, reader)
            .map_err(io("write the bundle"))?;
    }
    tar.into_inner()
        .map_err(io("finish the bundle"))?
        .flush()
        .map_err(io("flush the bundle"))
}

/// One file of the bundle, read back whole (for `bundle.json`), up to `max` bytes.
pub fn read_file(
    index: &ChunkIndex,
    layout: &Layout,
    name: &str,
    max: u64,
) -> Result<Vec<u8>, RegistryError> {
    let file = index
        .files
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| RegistryError::Bundle(format!("the snapshot has no `{name}`")))?;
    if file.bytes > max {
        return Err(RegistryError::Bundle(format!(
            "`{name}` is {} bytes, over {max}",
            file.bytes
        )));
    }
    let mut out = Vec::new();
    ChunkReader {
        layout,
        file,
        next: 0,
        current: Vec::new(),
        pos: 0,
    }
    .read_to_end(&mut out)
    .map_err(|e| RegistryError::Bundle(format!("cannot read `{name}`: {e}")))?;
    Ok(out)
}

/// Reads one file of the bundle back from its chunks.
struct ChunkReader<'a> {
    layout: &'a Layout,
    file: &'a IndexedFile,
    next: usize,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.current.len() {
            let Some(chunk) = self.file.chunks.get(self.next) else {
                return Ok(0);
            };
            let len = (self.file.bytes - self.next as u64 * CHUNK).min(CHUNK) as usize;
            self.current = match chunk {
                None => vec![0u8; len],
                Some(d) => {
                    let packed = std::fs::read(self.layout.blob_path(d))?;
                    let plain = zstd::bulk::decompress(&packed, CHUNK as usize)?;
                    if plain.len() != len {
                        return Err(std::io::Error::other(format!(
                            "chunk {d} of `{}` holds {} bytes, not {len}",
                            self.file.name,
                            plain.len()
                        )));
                    }
                    plain
                }
            };
            self.next += 1;
            self.pos = 0;
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn cut_and_assemble_round_trip_and_share_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::open(tmp.path()).unwrap();
        let mut memory = vec![0u8; (CHUNK * 3 + 100) as usize];
        memory[10] = 1;
        memory[(CHUNK * 2 + 5) as usize] = 7;
        let one = bundle(&[
            ("bundle.json", b"{}".to_vec()),
            ("memory.bin", memory.clone()),
        ]);
        let (index, stats) = cut(&one[..], &layout).unwrap();
        index.validate().unwrap();
        assert_eq!(stats.zero_chunks, 2);
        assert_eq!(index.files[1].chunks.len(), 4);
        let mut back = Vec::new();
        assemble(&index, &layout, &mut back).unwrap();
        assert_eq!(back.len(), one.len());
        assert_eq!(Sha256::digest(&back), Sha256::digest(&one));
        // A branch that changed one chunk stores one new chunk.
        memory[(CHUNK * 2 + 6) as usize] = 9;
        let two = bundle(&[("bundle.json", b"{}".to_vec()), ("memory.bin", memory)]);
        let (_, stats) = cut(&two[..], &layout).unwrap();
        assert_eq!(stats.new_chunks, 1);
    }

    #[test]
    fn bad_indexes_are_refused() {
        let mut i = ChunkIndex {
            format: INDEX_FORMAT,
            chunk_bytes: CHUNK,
            files: vec![IndexedFile {
                name: "../x".into(),
                bytes: 1,
                chunks: vec![None],
            }],
        };
        assert!(i.validate().unwrap_err().contains("plain relative"));
        i.files[0].name = "x".into();
        i.files[0].bytes = CHUNK + 1;
        assert!(i.validate().unwrap_err().contains("number of chunks"));
    }
}
