//! Kernel module selection for the initramfs.
//!
//! Owns finding a module by name in an unpacked `lib/modules/<release>` tree,
//! reading its dependencies from the `.modinfo` ELF section (Debian's package has
//! no `modules.dep`; depmod runs at install time), skipping built-in modules
//! (`modules.builtin`) and decompressing `.ko.xz`/`.ko.zst`/`.ko.gz` on the host
//! so busybox `insmod` can load them. Output is in load order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::ImageError;
use crate::host;

/// Modules the guest needs, in the order the fork recipe loads them.
pub(crate) const GUEST_MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_mmio",
    "virtio_console",
    "virtio_blk",
    "virtio_rng",
    "virtio_net",
];

/// A module ready for the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Module {
    /// Canonical name (`-` replaced by `_`).
    pub(crate) name: String,
    /// Uncompressed `.ko` bytes.
    pub(crate) bytes: Vec<u8>,
}

/// The selected modules: files to load (dependency order) and the names that
/// turned out to be built into the kernel.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    pub(crate) load: Vec<Module>,
    pub(crate) builtin: Vec<String>,
}

/// Canonical module name: `virtio-rng` and `virtio_rng` are the same module.
pub(crate) fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Resolves `wanted` plus their dependencies in `modules_dir`.
pub(crate) fn select(
    modules_dir: &Path,
    kernel: &str,
    wanted: &[&str],
) -> Result<Selection, ImageError> {
    let index = index_files(modules_dir)?;
    let builtin = read_builtin(modules_dir);
    let mut loaded: BTreeMap<String, Module> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut builtins: BTreeSet<String> = BTreeSet::new();
    for w in wanted {
        visit(
            &canonical(w),
            kernel,
            &index,
            &builtin,
            &mut loaded,
            &mut order,
            &mut builtins,
            &mut Vec::new(),
        )?;
    }
    let load = order.iter().filter_map(|n| loaded.remove(n)).collect();
    Ok(Selection {
        load,
        builtin: builtins.into_iter().collect(),
    })
}

#[allow(clippy::too_many_arguments)]
fn visit(
    name: &str,
    kernel: &str,
    index: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    loaded: &mut BTreeMap<String, Module>,
    order: &mut Vec<String>,
    builtins: &mut BTreeSet<String>,
    stack: &mut Vec<String>,
) -> Result<(), ImageError> {
    if order.iter().any(|n| n == name) || builtins.contains(name) || stack.iter().any(|n| n == name)
    {
        return Ok(());
    }
    let Some(path) = index.get(name) else {
        if builtin.contains(name) {
            builtins.insert(name.to_string());
            return Ok(());
        }
        return Err(ImageError::ModuleMissing {
            module: name.to_string(),
            kernel: kernel.to_string(),
        });
    };
    let bytes = read_module(path)?;
    let deps = modinfo(&bytes, "depends")
        .map(|d| {
            d.split(',')
                .filter(|s| !s.is_empty())
                .map(canonical)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    stack.push(name.to_string());
    for d in &deps {
        visit(d, kernel, index, builtin, loaded, order, builtins, stack)?;
    }
    stack.pop();
    tracing::debug!(module = name, ?deps, "selected module");
    order.push(name.to_string());
    loaded.insert(
        name.to_string(),
        Module {
            name: name.to_string(),
            bytes,
        },
    );
    Ok(())
}

/// name → path of every `.ko[.xz|.zst|.gz]` under `modules_dir/kernel`.
fn index_files(modules_dir: &Path) -> Result<BTreeMap<String, PathBuf>, ImageError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![modules_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(ImageError::io("read module directory", &dir))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = module_name_of(&p) {
                out.insert(name, p);
            }
        }
    }
    Ok(out)
}

/// `.../virtio-rng.ko.xz` → `virtio_rng`.
fn module_name_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    Some(canonical(stem))
}

fn read_builtin(modules_dir: &Path) -> BTreeSet<String> {
    fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| module_name_of(Path::new(l.trim())))
        .collect()
}

/// Reads a module file, decompressing on the host if needed.
fn read_module(path: &Path) -> Result<Vec<u8>, ImageError> {
    let file = path.to_string_lossy();
    let tool = if file.ends_with(".xz") {
        Some(("xz", "xz-utils"))
    } else if file.ends_with(".zst") {
        Some(("zstd", "zstd"))
    } else if file.ends_with(".gz") {
        Some(("gzip", "gzip"))
    } else {
        None
    };
    match tool {
        None => fs::read(path).map_err(ImageError::io("read module", path)),
        Some((tool, package)) => {
            let exe = host::require_tool(tool, package)?;
            host::run(Command::new(exe).arg("-dc").arg(path))
        }
    }
}

/// A `key=value` from the module's `.modinfo` section.
pub(crate) fn modinfo(elf: &[u8], key: &str) -> Option<String> {
    let section = elf_section(elf, ".modinfo")?;
    let prefix = format!("{key}=");
    section
        .split(|b| *b == 0)
        .find_map(|s| s.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The bytes of a named section of a little-endian ELF64 file.
fn elf_section<'a>(elf: &'a [u8], want: &str) -> Option<&'a [u8]> {
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None;
    }
    let u16_at = |o: usize| -> Option<usize> {
        Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?) as usize)
    };
    let u32_at = |o: usize| -> Option<usize> {
        Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?) as usize)
    };
    let u64_at = |o: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?)).ok()
    };
    let shoff = u64_at(0x28)?;
    let shentsize = u16_at(0x3a)?;
    let shnum = u16_at(0x3c)?;
    let shstrndx = u16_at(0x3e)?;
    let header = |i: usize| -> Option<(usize, usize, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(h)?, u64_at(h + 0x18)?, u64_at(h + 0x20)?))
    };
    let (_, str_off, str_size) = header(shstrndx)?;
    let strtab = elf.get(str_off..str_off.checked_add(str_size)?)?;
    for i in 0..shnum {
        let (name_off, off, size) = header(i)?;
        let name = strtab.get(name_off..)?.split(|b| *b == 0).next()?;
        if name == want.as_bytes() {
            return elf.get(off..off.checked_add(size)?);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            module_name_of(Path::new("a/virtio-rng.ko")).as_deref(),
            Some("virtio_rng")
        );
        assert_eq!(
            module_name_of(Path::new("a/virtio_blk.ko.xz")).as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(module_name_of(Path::new("a/virtio_blk.o")), None);
    }

    #[test]
    fn garbage_is_not_elf() {
        assert_eq!(modinfo(b"not an elf at all", "depends"), None);
        assert_eq!(modinfo(b"\x7fELF\x02\x01", "depends"), None);
    }
}
