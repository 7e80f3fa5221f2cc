//! The Raft type configuration: what a log entry carries and what applying
//! it returns.
use crate::api::{Statement, StatementResult};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// Node ids are `u64`; a node is known by its API address.
pub type NodeId = u64;
pub type Node = openraft::BasicNode;

/// One client transaction in a log entry: its statements run all or
/// nothing, in their own savepoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Write {
    pub statements: Vec<Statement>,
    /// The client's idempotency id (see `ExecuteRequest::request_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A log entry's writes, as stored in the Raft log: already made
/// deterministic by the primary, stamped with the primary's clock. The
/// primary puts every write that arrives while earlier entries are being
/// committed into one entry (group commit), so one log append, one
/// replication message and one database transaction on each node carry
/// many writes; each write still succeeds or fails on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredBatch")]
pub struct WriteBatch {
    pub writes: Vec<Write>,
    /// Primary's Unix time in ms when it made the entry (drives the lag in
    /// seconds and request id retention).
    pub time_ms: u64,
}

/// What a stored entry may hold: `writes`, or (entries written before
/// group commit) one write's `statements` and `request_id`.
#[derive(Deserialize)]
struct StoredBatch {
    #[serde(default)]
    writes: Vec<Write>,
    time_ms: u64,
    #[serde(default)]
    statements: Vec<Statement>,
    #[serde(default)]
    request_id: Option<String>,
}

impl From<StoredBatch> for WriteBatch {
    fn from(b: StoredBatch) -> WriteBatch {
        let mut writes = b.writes;
        if writes.is_empty() && !b.statements.is_empty() {
            writes.push(Write { statements: b.statements, request_id: b.request_id });
        }
        WriteBatch { writes, time_ms: b.time_ms }
    }
}

/// What applying one write produced: either every statement's result, or
/// the SQLite error that rolled that write back (identically on every
/// node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    Done(Vec<StatementResult>),
    Failed(String),
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
        R = Vec<ApplyOutcome>,
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
