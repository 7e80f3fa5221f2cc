//! Errors of starting and running a node.

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("configuration: {0}")]
    Config(String),
    /// A file or socket operation failed: what was being done, and the
    /// operating system's error.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
}
