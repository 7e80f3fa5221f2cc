//! The Raft type configuration: what a log entry carries and what applying
//! it returns.
use crate::api::{Statement, StatementResult};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// Node ids are `u64`; a node is known by its API address.
pub type NodeId = u64;
pub type Node = openraft::BasicNode;

/// A write as it is stored in the Raft log: already made deterministic by
/// the primary, stamped with the primary's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteBatch {
    pub statements: Vec<Statement>,
    /// Primary's Unix time in ms when it accepted the write (drives the lag
    /// in seconds).
    pub time_ms: u64,
    /// The client's idempotency id (see `ExecuteRequest::request_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// What applying one entry produced: either every statement's result, or
/// the SQLite error that rolled the whole batch back (identically on
/// every node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    Done(Vec<StatementResult>),
    Failed(String),
    /// Blank and membership entries.
    Nothing,
    /// The batch's request id was already applied at `index` in `term`:
    /// nothing ran; this is that first outcome (`Done` or `Failed`).
    Replayed {
        term: u64,
        index: u64,
        first: Box<ApplyOutcome>,
    },
}

openraft::declare_raft_types!(
    /// Bulwark's Raft types.
    pub TypeConfig:
        D = WriteBatch,
        R = ApplyOutcome,
        NodeId = NodeId,
        Node = Node,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// A storage error with SQLite's (or the file system's) message.
pub(crate) fn storage_err(verb: openraft::ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::IO {
        source: openraft::StorageIOError::new(openraft::ErrorSubject::Store, verb, openraft::AnyError::error(e)),
    }
}

/// Wall-clock Unix time in ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
