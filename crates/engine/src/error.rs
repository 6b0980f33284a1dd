//! Engine errors, each with a class the daemon maps onto an HTTP status.

use zygote_proto::agent::ErrorKind;

use crate::agent_link::LinkError;

/// How a caller should treat an error (the daemon maps these to statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is wrong (400).
    BadRequest,
    /// The thing named does not exist (404).
    NotFound,
    /// The thing exists but is in the wrong state (409).
    Conflict,
    /// The request is too large (413).
    TooLarge,
    /// The guest refused (403).
    Forbidden,
    /// Something took too long (504).
    Timeout,
    /// The daemon is going away (503).
    Unavailable,
    /// The home's filesystem has no room (507).
    InsufficientStorage,
    /// Not built yet (501).
    NotImplemented,
    /// A quota would be passed (429).
    TooMany,
    /// Anything else (500).
    Internal,
}

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No sandbox has that id.
    #[error("no sandbox with id `{id}`: list them with `zygote ls`")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// No snapshot has that tag.
    #[error("no snapshot tagged `{tag}`: list them with `zygote snapshot ls`")]
    SnapshotNotFound {
        /// The tag asked for.
        tag: String,
    },
    /// No volume has that name.
    #[error("no volume named `{name}`: list them with `zygote volume ls`, create it with `zygote volume create {name} --size 1G`")]
    VolumeNotFound {
        /// The name asked for.
        name: String,
    },
    /// The request conflicts with the current state (a taken tag, a wrong mode).
    #[error("{0}")]
    Conflict(String),
    /// A capability that is not built yet.
    #[error("{0}")]
    NotImplemented(String),
    /// The image is not built.
    #[error(transparent)]
    Image(#[from] zygote_image::ImageError),
    /// The request is invalid; the message names the value and the fix.
    #[error("{0}")]
    BadRequest(String),
    /// The caller's upload stream broke off.
    #[error("the upload broke off")]
    UploadBroken(#[source] std::io::Error),
    /// The sandbox is not in a state that allows the operation.
    #[error("sandbox `{id}` is {state}{}: create a new one", .reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    NotRunning {
        /// Sandbox id.
        id: String,
        /// Its state.
        state: &'static str,
        /// Why it died.
        reason: Option<String>,
    },
    /// The guest did not boot.
    #[error("sandbox boot failed: {reason}\n--- console tail ---\n{console_tail}")]
    Boot {
        /// What happened.
        reason: String,
        /// The last lines the guest printed.
        console_tail: String,
        /// The boot timed out (rather than QEMU failing).
        timed_out: bool,
    },
    /// Talking to the guest agent failed.
    #[error(transparent)]
    Agent(#[from] LinkError),
    /// QEMU failed.
    #[error(transparent)]
    Qemu(#[from] zygote_qemu::QemuError),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Mem(#[from] zygote_mem::MemError),
    /// Host networking failed.
    #[error(transparent)]
    Net(#[from] zygote_net::NetError),
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A host file operation failed.
    #[error("{what}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// A quota would be passed.
    #[error("{0}")]
    Limit(String),
    /// Not enough free space where the daemon must write.
    #[error("{what} needs about {needed_mib} MiB on {path} and only {free_mib} MiB is free: free space there (delete snapshots with `zygote snapshot rm`) or move --home to a larger filesystem")]
    DiskFull {
        /// What was about to be written.
        what: String,
        /// The filesystem (a directory on it).
        path: String,
        /// MiB it needs.
        needed_mib: u64,
        /// MiB free.
        free_mib: u64,
    },
}

impl EngineError {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            EngineError::NotFound { .. }
            | EngineError::SnapshotNotFound { .. }
            | EngineError::VolumeNotFound { .. } => ErrorClass::NotFound,
            EngineError::Conflict(_) => ErrorClass::Conflict,
            EngineError::NotImplemented(_) => ErrorClass::NotImplemented,
            EngineError::Image(e) => {
                if matches!(e, zygote_image::ImageError::NotFound { .. }) {
                    ErrorClass::NotFound
                } else {
                    ErrorClass::BadRequest
                }
            }
            EngineError::BadRequest(_) | EngineError::UploadBroken(_) => ErrorClass::BadRequest,
            EngineError::NotRunning { .. } => ErrorClass::Conflict,
            EngineError::Boot { timed_out, .. } => {
                if *timed_out {
                    ErrorClass::Timeout
                } else {
                    ErrorClass::Internal
                }
            }
            EngineError::Agent(l) => match l {
                LinkError::Agent(a) => match a.kind {
                    ErrorKind::BadRequest => ErrorClass::BadRequest,
                    ErrorKind::NotFound => ErrorClass::NotFound,
                    ErrorKind::PermissionDenied => ErrorClass::Forbidden,
                    ErrorKind::TooLarge => ErrorClass::TooLarge,
                    ErrorKind::Internal => ErrorClass::Internal,
                },
                LinkError::Timeout(_) | LinkError::HandshakeTimeout(_) => ErrorClass::Timeout,
                LinkError::Closed(_) | LinkError::FellBehind(_) => ErrorClass::Conflict,
                LinkError::TooLarge { .. } => ErrorClass::TooLarge,
                LinkError::Connect { .. }
                | LinkError::Protocol { .. }
                | LinkError::Unexpected(_) => ErrorClass::Internal,
            },
            EngineError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                ErrorClass::InsufficientStorage
            }
            EngineError::DiskFull { .. } => ErrorClass::InsufficientStorage,
            EngineError::Net(n) => match n {
                zygote_net::NetError::BadInput(_) => ErrorClass::BadRequest,
                zygote_net::NetError::Limit(_) => ErrorClass::Conflict,
                zygote_net::NetError::PoolExhausted(_) => ErrorClass::Unavailable,
                zygote_net::NetError::Tool { .. } | zygote_net::NetError::Io { .. } => {
                    ErrorClass::Internal
                }
            },
            EngineError::Qemu(_)
            | EngineError::Mem(_)
            | EngineError::Store(_)
            | EngineError::Io { .. } => ErrorClass::Internal,
            EngineError::ShuttingDown => ErrorClass::Unavailable,
            EngineError::Limit(_) => ErrorClass::TooMany,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
