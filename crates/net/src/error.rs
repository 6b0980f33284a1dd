//! Errors of host networking.

/// What went wrong setting up or changing a sandbox's network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A CIDR or address the caller gave is malformed.
    #[error("{0}")]
    BadInput(String),
    /// A host tool (`ip`, `nft`) failed.
    #[error("`{cmd}` failed: {stderr}")]
    Tool {
        /// The command line.
        cmd: String,
        /// What it printed.
        stderr: String,
    },
    /// A system call or file operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Every host-side address of the pool is taken.
    #[error("the host address pool {0} is exhausted: remove sandboxes or give the daemon a larger --network-pool")]
    PoolExhausted(String),
    /// A limit was reached.
    #[error("{0}")]
    Limit(String),
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, NetError>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Io { what, source }
}
