//! Directory watchers a client asked for (none yet: watches are not served).

/// The open watchers (empty until watches are implemented).
#[derive(Debug, Default)]
pub(crate) struct Watchers {}
