//! Admission: the daemon's quotas on sandboxes, guest memory, snapshots
//! (their count and their bytes on disk) and the disk space it keeps free.
//! A start reserves its share before it launches anything ([`Admission`],
//! released when the start is registered or fails), so concurrent starts
//! cannot together pass a limit each would respect alone. Past a limit the
//! answer is a `Limit` error (HTTP 429) naming the limit and the flag that
//! raises it.

use std::sync::Mutex;

use crate::error::{EngineError, Result};
use crate::model::SandboxState;
use crate::Engine;

/// The daemon's quotas (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Sandboxes with a VM at once (running, starting, or stopping).
    pub max_sandboxes: Option<usize>,
    /// Their guest RAM together, MiB.
    pub max_guest_memory_mib: Option<u64>,
    /// Snapshots (not counting those paused sandboxes own).
    pub max_snapshots: Option<usize>,
    /// Bytes every snapshot takes on disk together, GiB.
    pub max_snapshot_gib: Option<f64>,
    /// Free space kept on the home's file system, GiB: a start or snapshot
    /// that would begin below it is refused (507).
    pub min_free_disk_gib: Option<f64>,
    /// How long a blocking exec that names no timeout may run (then it is
    /// killed and answered `timed_out`); background processes are not bound.
    pub exec_timeout: Option<std::time::Duration>,
}

fn gib(g: f64) -> u64 {
    (g * (1u64 << 30) as f64) as u64
}

/// What starts in flight have reserved: sandboxes and MiB.
#[derive(Debug, Default)]
pub(crate) struct Reserved(Mutex<(usize, u64)>);

/// A start's reservation; dropping it gives the share back (by then the
/// sandbox is registered and counted as such, or the start failed).
pub(crate) struct Admission<'a> {
    reserved: &'a Reserved,
    n: usize,
    mib: u64,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let mut r = self.reserved.0.lock().unwrap_or_else(|p| p.into_inner());
        r.0 = r.0.saturating_sub(self.n);
        r.1 = r.1.saturating_sub(self.mib);
    }
}

impl Engine {
    /// Sandboxes holding a VM now, and their guest RAM in MiB.
    fn live_load(&self) -> (usize, u64) {
        self.map()
            .values()
            .filter(|sb| sb.guest.is_some() && sb.state() != SandboxState::Dead)
            .fold((0, 0), |(n, mib), sb| (n + 1, mib + sb.machine.memory_mib))
    }

    /// Reserve `n` sandboxes of `memory_mib` each, or refuse naming the limit.
    pub(crate) fn admit(&self, n: usize, memory_mib: u64) -> Result<Admission<'_>> {
        let l = self.cfg.limits;
        self.keep_free("a new sandbox")?;
        let (live_n, live_mib) = self.live_load();
        let mut r = self.reserved.0.lock().unwrap_or_else(|p| p.into_inner());
        let (want_n, want_mib) = (n, memory_mib.saturating_mul(n as u64));
        if let Some(max) = l.max_sandboxes {
            let have = live_n + r.0;
            if have + want_n > max {
                return Err(EngineError::Limit(format!(
                    "this daemon runs at most {max} sandboxes (--max-sandboxes) and {have} are running or starting, so {want_n} more would pass it: remove some, or raise --max-sandboxes"
                )));
            }
        }
        if let Some(max) = l.max_guest_memory_mib {
            let have = live_mib + r.1;
            if have + want_mib > max {
                return Err(EngineError::Limit(format!(
                    "guest memory is limited to {max} MiB (--max-guest-memory-mib) and {have} MiB is in use, so {want_mib} MiB more would pass it: remove sandboxes, ask for less memory, or raise --max-guest-memory-mib"
                )));
            }
        }
        r.0 += want_n;
        r.1 += want_mib;
        Ok(Admission {
            reserved: &self.reserved,
            n: want_n,
            mib: want_mib,
        })
    }

    /// Refuse work that writes to disk once the home's file system is below
    /// `--min-free-disk-gib`.
    pub(crate) fn keep_free(&self, what: &str) -> Result<()> {
        let Some(min) = self.cfg.limits.min_free_disk_gib else {
            return Ok(());
        };
        let home = &self.cfg.home;
        let free = crate::disks::free_bytes(home).map_err(|source| EngineError::Io {
            what: format!("cannot statvfs {}", home.display()),
            source,
        })?;
        if free < gib(min) {
            return Err(EngineError::DiskFull {
                what: format!("{what} (this daemon keeps --min-free-disk-gib {min} free)"),
                path: home.display().to_string(),
                needed_mib: gib(min) >> 20,
                free_mib: free >> 20,
            });
        }
        Ok(())
    }

    /// Refuse a new snapshot of `memory_mib` guest RAM past `--max-snapshots`
    /// or `--max-snapshot-gib`, or below `--min-free-disk-gib`.
    pub(crate) fn admit_snapshot(&self, memory_mib: u64) -> Result<()> {
        self.keep_free("a new snapshot")?;
        if let Some(max) = self.cfg.limits.max_snapshot_gib {
            let have = self.snapshots.persisted_bytes();
            let want = memory_mib << 20;
            if have + want > gib(max) {
                return Err(EngineError::Limit(format!(
                    "snapshots may take {max} GiB on disk (--max-snapshot-gib) and take {} MiB, so one of up to {} MiB more would pass it: delete some (`zygote snapshot rm`), or raise --max-snapshot-gib",
                    have >> 20,
                    memory_mib
                )));
            }
        }
        if let Some(max) = self.cfg.limits.max_snapshots {
            let have = self
                .snapshots
                .all()
                .iter()
                .filter(|s| s.meta.owner.is_none())
                .count();
            if have >= max {
                return Err(EngineError::Limit(format!(
                    "this daemon keeps at most {max} snapshots (--max-snapshots) and has {have}: delete some (`zygote snapshot rm`), or raise --max-snapshots"
                )));
            }
        }
        Ok(())
    }
}
