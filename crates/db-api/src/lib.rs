//! What a database client and a database node share: the wire types of
//! the HTTP SQL API ([`api`]), the Raft type configuration
//! ([`raft_types`]: what a log entry carries and what applying it
//! returns), the nodes' pooled HTTP client ([`http_client`]) and
//! [`Client`], the library the app tier uses to talk to a cluster.
//!
//! Must not touch: SQLite, the Raft log or any file (a client links this
//! crate without the storage of `bulwark-db-log` and `bulwark-db-sm`),
//! other tiers, the process's signal handling or stdout. The cluster
//! secret is never logged.
//!
//! See `docs/db.md` for the HTTP API.

pub mod api;
mod client;
pub mod http_client;
pub mod raft_types;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use api::{
    Column, Consistency, DbRole, ExecuteResult, Member, NodeStatus, Params, ReplicationLag, Rows, Statement,
    StatementResult, Token, Value,
};
pub use client::{with_x_request_id, AmbiguousWrite, Client, ClientError};
