//! A cgroup per QEMU: its memory (guest RAM plus an allowance for QEMU
//! itself), its CPU time (its vCPUs plus one for QEMU's own threads) and
//! its thread count are capped, so one sandbox cannot starve the host or
//! the daemon. cgroup v2 where the host has it, v1 (memory, cpu, pids)
//! otherwise. QEMU joins its group between fork and exec, before it runs
//! a single instruction.
//!
//! Layout: `<root>/zygote/<home tag>/<VM name>` (v1: under each of the
//! `memory`, `cpu` and `pids` hierarchies). A [`Cgroup`] removes its
//! directories when dropped (once its QEMU is gone); [`Cgroups::sweep`]
//! removes empty groups a dead daemon left (any home's, once a minute old).

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::error::{EngineError, Result};

/// Where the cgroup file systems are mounted.
const ROOT: &str = "/sys/fs/cgroup";
/// The v1 hierarchies a sandbox's group lives in.
const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// QEMU's own memory allowed on top of guest RAM (device state, allocator
/// arenas, I/O buffers): generous, so a busy QEMU never meets it.
pub const DEFAULT_OVERHEAD_MIB: u64 = 256;
/// Under TCG QEMU also fills a translation buffer as guest code runs (1 GiB
/// at most, QEMU's default; an idle booted guest already holds ~70 MiB of it).
pub const TCG_TRANSLATION_MIB: u64 = 1024;
/// Most threads (QEMU's vCPUs, I/O and RCU threads) in one group.
pub const PIDS_MAX: u64 = 256;
/// The CFS period the CPU quota is a share of.
const CPU_PERIOD_US: u64 = 100_000;
/// A leftover group younger than this may be another daemon's, just made.
const SWEEP_MIN_AGE: Duration = Duration::from_secs(60);

/// Which cgroup version the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A QEMU's caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Bytes of memory (guest RAM plus QEMU's allowance).
    pub memory_bytes: u64,
    /// CPUs' worth of time per period.
    pub cpus: u32,
    /// Most tasks.
    pub pids: u64,
}

/// This daemon's cgroups.
#[derive(Debug, Clone)]
pub struct Cgroups {
    version: Version,
    tag: String,
}

/// One QEMU's group: its directories and, until QEMU joined, the
/// `cgroup.procs` files it joins through.
#[derive(Debug)]
pub struct Cgroup {
    version: Version,
    dirs: Vec<PathBuf>,
    procs: Vec<File>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> EngineError {
    move |source| EngineError::Io { what, source }
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(io(format!("cannot write `{value}` to {}", path.display())))
}

/// The base directory of the `tag` home in hierarchy `ctrl` (v1) or the
/// unified one (v2, `ctrl` empty).
fn base(ctrl: &str, tag: &str) -> PathBuf {
    Path::new(ROOT).join(ctrl).join("zygote").join(tag)
}

impl Cgroups {
    /// The host's cgroups, or why there are none to use.
    pub fn detect(tag: &str) -> std::result::Result<Cgroups, String> {
        let root = Path::new(ROOT);
        let version = if root.join("cgroup.controllers").exists() {
            let ctl = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            for c in V1_CONTROLLERS {
                if !ctl.split_whitespace().any(|x| x == c) {
                    return Err(format!("cgroup v2 at {ROOT} has no `{c}` controller"));
                }
            }
            Version::V2
        } else if V1_CONTROLLERS
            .iter()
            .all(|c| root.join(c).join("cgroup.procs").exists())
        {
            Version::V1
        } else {
            return Err(format!(
                "no cgroup v2 at {ROOT} and no v1 hierarchies for {}",
                V1_CONTROLLERS.join(", ")
            ));
        };
        let g = Cgroups {
            version,
            tag: tag.to_string(),
        };
        g.prepare().map_err(|e| e.to_string())?;
        Ok(g)
    }

    /// The host's cgroup version.
    pub fn version(&self) -> Version {
        self.version
    }

    fn bases(&self) -> Vec<PathBuf> {
        match self.version {
            Version::V1 => V1_CONTROLLERS.iter().map(|c| base(c, &self.tag)).collect(),
            Version::V2 => vec![base("", &self.tag)],
        }
    }

    /// Make this home's base groups (v2: with the controllers delegated).
    fn prepare(&self) -> Result<()> {
        for b in self.bases() {
            std::fs::create_dir_all(&b).map_err(io(format!("cannot create {}", b.display())))?;
        }
        if self.version == Version::V2 {
            let top = Path::new(ROOT).join("zygote");
            for dir in [Path::new(ROOT), top.as_path()] {
                write(&dir.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
            }
            write(
                &base("", &self.tag).join("cgroup.subtree_control"),
                "+memory +cpu +pids",
            )?;
        }
        Ok(())
    }

    /// A new group `name` with `caps`, ready for a QEMU to join.
    pub fn create(&self, name: &str, caps: Caps) -> Result<Cgroup> {
        let mut g = Cgroup {
            version: self.version,
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        for b in self.bases() {
            let d = b.join(name);
            match std::fs::create_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(format!("cannot create {}", d.display()))(e)),
            }
            g.dirs.push(d);
        }
        let quota = u64::from(caps.cpus.max(1)) * CPU_PERIOD_US;
        match self.version {
            Version::V1 => {
                let [mem, cpu, pids] = [&g.dirs[0], &g.dirs[1], &g.dirs[2]];
                write(
                    &mem.join("memory.limit_in_bytes"),
                    &caps.memory_bytes.to_string(),
                )?;
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
                write(&pids.join("pids.max"), &caps.pids.to_string())?;
            }
            Version::V2 => {
                let d = &g.dirs[0];
                write(&d.join("memory.max"), &caps.memory_bytes.to_string())?;
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                write(&d.join("pids.max"), &caps.pids.to_string())?;
            }
        }
        for d in &g.dirs {
            let p = d.join("cgroup.procs");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(io(format!("cannot open {}", p.display())))?;
            g.procs.push(f);
        }
        debug!(name, ?caps, "cgroup made");
        Ok(g)
    }

    /// The group a running process is in (a re-adopted QEMU's), if it is ours.
    pub fn of_pid(&self, pid: u32) -> Option<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mut dirs = Vec::new();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            let ctrl = match self.version {
                Version::V2 if ctrls.is_empty() => "",
                Version::V1 => match V1_CONTROLLERS
                    .iter()
                    .find(|c| ctrls.split(',').any(|x| x == **c))
                {
                    Some(c) => c,
                    None => continue,
                },
                Version::V2 => continue,
            };
            let d = Path::new(ROOT)
                .join(ctrl)
                .join(path.trim_start_matches('/'));
            if d.starts_with(base(ctrl, &self.tag)) {
                dirs.push(d);
            }
        }
        (!dirs.is_empty()).then_some(Cgroup {
            version: self.version,
            dirs,
            procs: Vec::new(),
        })
    }

    /// Remove empty groups (and then empty homes) left by dead daemons:
    /// any home's, once older than a minute.
    pub fn sweep(&self) {
        let tops: Vec<PathBuf> = match self.version {
            Version::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(ROOT).join(c).join("zygote"))
                .collect(),
            Version::V2 => vec![Path::new(ROOT).join("zygote")],
        };
        let mut removed = 0;
        for top in tops {
            for home in subdirs(&top) {
                for g in subdirs(&home) {
                    if old_enough(&g) && std::fs::remove_dir(&g).is_ok() {
                        removed += 1;
                    }
                }
                if home.file_name().and_then(|n| n.to_str()) != Some(self.tag.as_str())
                    && old_enough(&home)
                {
                    let _ = std::fs::remove_dir(&home);
                }
            }
        }
        if removed > 0 {
            info!(removed, "removed empty cgroups a previous daemon left");
        }
    }

    /// Remove this home's base groups if nothing is left in them (shutdown).
    pub fn release(&self) {
        for b in self.bases() {
            let _ = std::fs::remove_dir(&b);
        }
    }
}

fn subdirs(d: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn old_enough(d: &Path) -> bool {
    std::fs::metadata(d)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= SWEEP_MIN_AGE)
}

impl Cgroup {
    /// The `cgroup.procs` files a new QEMU writes itself into (between fork
    /// and exec: writing `0` moves the writer).
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Close the join files (QEMU joined).
    pub fn joined(&mut self) {
        self.procs.clear();
    }

    /// Whether the kernel's OOM killer killed a task of this group.
    pub fn oom_killed(&self) -> bool {
        let (dir, file) = match self.version {
            Version::V1 => (&self.dirs[0], "memory.oom_control"),
            Version::V2 => (&self.dirs[0], "memory.events"),
        };
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| {
                        l.strip_prefix("oom_kill ")
                            .map(|n| n.trim().parse::<u64>().ok())
                    })
                    .flatten()
            })
            .is_some_and(|n| n > 0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.procs.clear();
        let dirs = std::mem::take(&mut self.dirs);
        if dirs.is_empty() {
            return;
        }
        // QEMU may still be exiting: try for a few seconds off the runtime.
        std::thread::spawn(move || {
            for _ in 0..100 {
                if dirs
                    .iter()
                    .all(|d| std::fs::remove_dir(d).is_ok() || !d.exists())
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            warn!(dirs = ?dirs, "a cgroup still holds tasks; the next daemon's sweep removes it");
        });
    }
}

/// The cgroups `cfg` asks for, if the host has them (a warning says when
/// it does not).
pub(crate) fn setup(cfg: &crate::EngineConfig) -> Option<Cgroups> {
    if !cfg.cgroups {
        info!("cgroups off: QEMUs run without memory, CPU and task caps");
        return None;
    }
    match Cgroups::detect(&crate::network::home_tag(&cfg.home)) {
        Ok(c) => {
            info!(version = ?c.version(), "a cgroup per QEMU");
            Some(c)
        }
        Err(why) => {
            warn!(%why, "QEMUs run without cgroups: their memory, CPU and task counts are not capped (pass --cgroups off to say so on purpose)");
            None
        }
    }
}

impl Cgroup {
    /// Leave the group in place (its QEMU runs on for the next daemon).
    pub fn detach(mut self) {
        self.procs.clear();
        self.dirs.clear();
    }
}

impl crate::Engine {
    /// A cgroup for QEMU `name` of `memory_mib` guest RAM and `vcpus`, if
    /// cgroups are on.
    pub(crate) fn qemu_cgroup(
        &self,
        name: &str,
        memory_mib: u64,
        vcpus: u32,
    ) -> Result<Option<Cgroup>> {
        let Some(c) = &self.cgroups else {
            return Ok(None);
        };
        let overhead = self
            .cfg
            .cgroup_overhead_mib
            .unwrap_or(match self.accel.accel {
                zygote_qemu::Accel::Tcg => DEFAULT_OVERHEAD_MIB + TCG_TRANSLATION_MIB,
                _ => DEFAULT_OVERHEAD_MIB,
            });
        let caps = Caps {
            memory_bytes: (memory_mib + overhead) << 20,
            cpus: vcpus + 1,
            pids: PIDS_MAX,
        };
        c.create(name, caps).map(Some)
    }

    /// The group of a re-adopted QEMU.
    pub(crate) fn cgroup_of(&self, pid: u32) -> Option<Cgroup> {
        self.cgroups.as_ref().and_then(|c| c.of_pid(pid))
    }
}
