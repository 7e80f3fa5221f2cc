//! Errors of starting and running a node.
use bulwark_db_api::raft_types::{NodeId, StorageError};
use std::path::PathBuf;

/// Why a node could not start or stopped. Every cause is this node's: its
/// configuration, files or Raft; starting it again helps only once the
/// cause is fixed (a stopped Raft excepted: see [`DbError::RaftStopped`]).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A secret file named by the configuration (`secret`, `peer_secret`,
    /// `monitor_token`) could not be read.
    #[error("configuration: {what}: {source}")]
    Secret {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration: tls: {0}")]
    Tls(#[source] bulwark_mtls::MtlsError),
    #[error("configuration: firewall: {0}")]
    Firewall(#[source] bulwark_firewall::FirewallError),
    /// The Raft timings derived from the configuration are inconsistent.
    #[error("configuration: {0}")]
    RaftConfig(#[source] Box<openraft::ConfigError>),
    /// A file or socket operation failed: what was being done, and the
    /// operating system's error.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storage: raft log: {0}")]
    OpenLog(#[source] std::io::Error),
    #[error("storage: {0}")]
    Log(#[source] std::io::Error),
    #[error("storage: {0}")]
    LogState(#[source] Box<StorageError>),
    #[error("storage: the log archive {}: {source}", path.display())]
    Archive {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage: database: {0}")]
    Database(#[source] bulwark_db_sm::state_machine::StoreError),
    #[error("raft: {0}")]
    Raft(#[source] Box<openraft::error::Fatal<NodeId>>),
    /// Raft stopped while the node ran (the reason as Raft reported it);
    /// the node exits with an error so that it is started again, and then
    /// applies the same entries again.
    #[error("raft: Raft stopped on this node: {0}")]
    RaftStopped(#[source] RaftStop),
}

/// Why Raft stopped while the node ran.
#[derive(Debug, thiserror::Error)]
pub enum RaftStop {
    /// Raft reported a fatal error (its storage failed, its core panicked).
    #[error("{0}")]
    Fatal(#[source] Box<openraft::error::Fatal<NodeId>>),
    /// Raft's metrics ended: its core is gone.
    #[error("its metrics ended")]
    MetricsEnded,
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::error::Fatal;

    #[test]
    fn a_stopped_raft_keeps_openraft_s_error_as_the_source() {
        let e = DbError::RaftStopped(RaftStop::Fatal(Box::new(Fatal::Panicked)));
        assert_eq!(e.to_string(), "raft: Raft stopped on this node: panicked");
        let stop = std::error::Error::source(&e).expect("why Raft stopped");
        let fatal = stop.source().expect("openraft's error");
        assert_eq!(fatal.downcast_ref::<Box<Fatal<NodeId>>>().map(|f| &**f), Some(&Fatal::Panicked));
        let ended = DbError::RaftStopped(RaftStop::MetricsEnded);
        assert_eq!(ended.to_string(), "raft: Raft stopped on this node: its metrics ended");
    }
}
