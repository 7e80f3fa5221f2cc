//! The replicated SQL database tier (the MySQL primary-replica role).
//!
//! Owns: the node that runs the state machine (`bulwark-db-sm`: each
//! node's SQLite database and its snapshots) over the durable Raft log
//! (`bulwark-db-log`, the "binary log"), log compaction, Raft replication
//! over HTTP with openraft 0.9 (`transport`, on a listener of its own),
//! group commit, the HTTP SQL API (`/v1/execute`, `/v1/query`,
//! `/v1/status`, membership, leadership transfer, `/health`, `/primary`,
//! `/replica`) and the log archive. The wire types, the Raft type
//! configuration and the client library the app tier uses are in
//! `bulwark-db-api`; backups, restores, dumps and loads in
//! `bulwark-db-backup`.
//!
//! Must not touch: other tiers, files outside the node's `data_dir`, the
//! process's signal handling or stdout (the `bulwark db` role in
//! `crates/bulwark` owns those). The cluster secret is never logged.
//!
//! See `docs/db.md` for the HTTP API and operations.

mod append_queue;
mod archive;
mod compaction;
mod error;
mod group_commit;
mod leader_acks;
mod node;
mod peer_clock;
#[cfg(test)]
mod tests;
mod transport;

pub use error::{DbError, RaftStop};
pub use node::DbNode;
