//! Errors of starting and running a node.

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Io(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
}
