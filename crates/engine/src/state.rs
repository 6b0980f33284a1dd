//! The sandbox lifecycle, written down as an exhaustive state machine.
//!
//! ```text
//!   Booting ──agent answered──▶ Running ──pause──▶ Paused
//!      │                          │                  │
//!      ├──────── rm ──────────────┼──────────────────┴──▶ Stopping ──QEMU gone──▶ Dead
//!      │                          │
//!      └── QEMU exited / boot failed / guest unreachable ────────────────────────▶ Dead
//! ```
//!
//! `Dead` is final: a dead sandbox is only removed. A resume starts a new
//! running sandbox under the paused one's id (a new object), so `Paused` never
//! turns back into `Running` in place.

use crate::model::SandboxState;

/// A refused transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a sandbox cannot go from {} to {}", .from.as_str(), .to.as_str())]
pub struct InvalidTransition {
    /// Current state.
    pub from: SandboxState,
    /// Requested state.
    pub to: SandboxState,
}

/// Check a transition.
pub fn transition(from: SandboxState, to: SandboxState) -> Result<SandboxState, InvalidTransition> {
    use SandboxState::{Booting, Dead, Paused, Running, Stopping};
    let ok = match (from, to) {
        (Booting, Running) | (Booting, Stopping) | (Booting, Dead) => true,
        (Running, Paused) | (Running, Stopping) | (Running, Dead) => true,
        (Paused, Stopping) | (Paused, Dead) => true,
        (Stopping, Dead) => true,
        (Booting, Booting) | (Booting, Paused) => false,
        (Running, Running) | (Running, Booting) => false,
        (Paused, Booting) | (Paused, Running) | (Paused, Paused) => false,
        (Stopping, Booting) | (Stopping, Running) | (Stopping, Paused) | (Stopping, Stopping) => {
            false
        }
        (Dead, Booting) | (Dead, Running) | (Dead, Paused) | (Dead, Stopping) | (Dead, Dead) => {
            false
        }
    };
    if ok {
        Ok(to)
    } else {
        Err(InvalidTransition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SandboxState::*;

    #[test]
    fn allowed_and_refused() {
        assert!(transition(Booting, Running).is_ok());
        assert!(transition(Running, Stopping).is_ok());
        assert!(transition(Stopping, Dead).is_ok());
        assert!(transition(Running, Dead).is_ok());
        assert!(transition(Dead, Running).is_err());
        assert!(transition(Stopping, Running).is_err());
        assert!(transition(Running, Booting).is_err());
        assert!(transition(Running, Paused).is_ok());
        assert!(transition(Paused, Stopping).is_ok());
        assert!(transition(Paused, Running).is_err());
        let e = transition(Dead, Stopping).unwrap_err();
        assert_eq!(e.to_string(), "a sandbox cannot go from dead to stopping");
    }

    #[test]
    fn names_round_trip() {
        for s in [Booting, Running, Paused, Stopping, Dead] {
            assert_eq!(SandboxState::parse(s.as_str()), Some(s));
        }
        assert_eq!(SandboxState::parse("zombie"), None);
    }
}
