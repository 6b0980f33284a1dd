//! Child reaping: the only place that calls `waitpid`.
//!
//! As PID 1 the agent inherits every orphan in the guest, so it reaps with
//! `waitpid(-1)` and must not race `std::process::Child::wait`. Spawns go
//! through [`Reaper::spawn`], which records pid → exit callback under the same
//! lock the reaper holds while waiting, so a child that dies instantly is never
//! missed. Unknown pids (orphans) are reaped silently.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use crate::sys;
use crate::util::lock;

/// Called with the raw wait status when a spawned child exits.
pub(crate) type OnExit = Box<dyn FnOnce(i32) + Send>;

/// pid → exit callback for the children the agent spawned.
#[derive(Default)]
pub(crate) struct Reaper {
    waiters: Mutex<HashMap<i32, OnExit>>,
}

impl Reaper {
    /// Spawn `cmd` and register `on_exit` for it atomically with respect to reaping.
    pub(crate) fn spawn(&self, cmd: &mut Command, on_exit: OnExit) -> io::Result<Child> {
        let mut waiters = lock(&self.waiters);
        let child = cmd.spawn()?;
        waiters.insert(child.id() as i32, on_exit);
        Ok(child)
    }

    /// Reap until SIGCHLD wakes us; never returns. SIGCHLD must be blocked in
    /// every thread (main does that before spawning any).
    pub(crate) fn run(&self) -> ! {
        loop {
            self.reap_all();
            // The timeout is only a safety net; SIGCHLD normally wakes us.
            let _ = sys::sigtimedwait(&[libc::SIGCHLD], Duration::from_secs(2));
        }
    }

    /// Reap every exited child now and run their callbacks.
    pub(crate) fn reap_all(&self) {
        let mut done = Vec::new();
        {
            let mut waiters = lock(&self.waiters);
            while let Ok(Some((pid, status))) = sys::waitpid_any_nohang() {
                if let Some(f) = waiters.remove(&pid) {
                    done.push((f, status));
                }
            }
        }
        for (f, status) in done {
            f(status);
        }
    }
}
