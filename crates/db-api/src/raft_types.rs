//! The Raft type configuration: what a log entry carries and what applying
//! it returns.
use crate::api::{Statement, StatementResult};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// Node ids are `u64`.
pub type NodeId = u64;

/// A member of the cluster as the membership records it: two addresses,
/// because Raft and the client API listen apart (so that a firewall can
/// allow Raft between the database nodes only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// `host:port` of the client API: what clients, redirects and writes
    /// forwarded to the primary use. Stored as `addr`, the one address a
    /// member had when Raft shared the API's listener.
    #[serde(rename = "addr")]
    pub api_addr: String,
    /// `host:port` of the Raft listener: what the other nodes dial for
    /// Raft. Empty in a membership recorded before Raft had a listener of
    /// its own; see [`Node::raft_addr`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raft_addr: String,
}

impl Node {
    pub fn new(api_addr: impl Into<String>, raft_addr: impl Into<String>) -> Node {
        Node { api_addr: api_addr.into(), raft_addr: raft_addr.into() }
    }

    /// Where Raft reaches this member: its Raft address, or, for a member
    /// recorded before Raft had a listener of its own, its API address
    /// (where such a node served Raft).
    pub fn raft_addr(&self) -> &str {
        if self.raft_addr.is_empty() {
            &self.api_addr
        } else {
            &self.raft_addr
        }
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "api {}, raft {}", self.api_addr, self.raft_addr())
    }
}

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
pub fn storage_err(verb: openraft::ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::IO {
        source: openraft::StorageIOError::new(openraft::ErrorSubject::Store, verb, openraft::AnyError::error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_names_its_api_and_raft_addresses_and_older_records_still_read() {
        let member = Node::new("10.0.0.1:8110", "10.0.0.1:8130");
        let json = serde_json::to_string(&member).unwrap();
        assert_eq!(json, r#"{"addr":"10.0.0.1:8110","raft_addr":"10.0.0.1:8130"}"#);
        assert_eq!(serde_json::from_str::<Node>(&json).unwrap(), member);
        assert_eq!(member.raft_addr(), "10.0.0.1:8130");
        // A membership recorded when Raft shared the API's listener.
        let older: Node = serde_json::from_str(r#"{"addr":"10.0.0.1:8110"}"#).unwrap();
        assert_eq!((older.api_addr.as_str(), older.raft_addr()), ("10.0.0.1:8110", "10.0.0.1:8110"));
    }
}
