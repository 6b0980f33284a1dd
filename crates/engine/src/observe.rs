//! The engine's own timings: each boot, spawn and branch reports what it
//! measured to an [`Observer`] the embedder installs (the daemon's metrics), so
//! nobody has to read them back out of API answers.

use crate::model::BranchMode;

/// One measured operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Timing {
    /// A sandbox booted: QEMU start to the agent's answer.
    Booted {
        /// Milliseconds.
        ms: f64,
    },
    /// A child of a snapshot started.
    Spawned {
        /// Request to `cont`, ms.
        running_ms: f64,
        /// Request to the agent's answer, ms.
        ready_ms: f64,
        /// It came from the pool of pre-started children.
        prestarted: bool,
    },
    /// A child of a snapshot failed to start.
    SpawnFailed,
    /// A sandbox was branched.
    Branched {
        /// Capture mode.
        mode: BranchMode,
        /// The parent's STOP to RESUME, ms (when QEMU's events gave it).
        pause_ms: Option<f64>,
        /// The whole branch, ms.
        call_ms: f64,
    },
}

/// Receives the engine's timings. Called inline: keep it cheap.
pub trait Observer: Send + Sync {
    /// One operation finished.
    fn timing(&self, t: Timing);
}
