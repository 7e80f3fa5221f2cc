//! The replicated SQL database tier (the MySQL primary-replica role).
//!
//! Owns: each node's SQLite database (the state machine), the durable Raft
//! log ("binary log"), snapshots and log compaction, Raft replication over
//! HTTP with openraft, the HTTP SQL API (`/v1/execute`, `/v1/query`,
//! `/v1/status`, membership, leadership transfer), and [`Client`], the
//! library the app tier uses to talk to a cluster.
//!
//! Must not touch: other tiers, files outside the node's `data_dir`, the
//! process's signal handling or stdout (the `bulwark db` role in
//! `crates/bulwark` owns those), and it never logs the cluster secret.

pub mod api;
mod log_store;
mod raft_types;
pub mod sql;
mod state_machine;

pub use api::{Consistency, ExecuteResult, NodeStatus, Params, ReplicationLag, Rows, Statement, Token, Value};
