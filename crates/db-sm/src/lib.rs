//! The state machine of the database tier: each node's SQLite database
//! (`data.db`), which applies committed Raft log entries
//! ([`state_machine`]), the SQL rules that keep every replica identical
//! ([`sql`]), the tables Bulwark keeps beside the application's
//! ([`bulwark_tables`]: the applied log id, the membership, the request ids
//! of recent writes), snapshots ([`snapshot_file`]) and the rebuild after
//! a crash of the machine.
//!
//! Must not touch: the Raft log (`bulwark-db-log`), the network, other
//! tiers, files outside the node's `data_dir`, the process's signal
//! handling or stdout.
//!
//! See `docs/db.md` for the replication contract and the files of a data
//! dir.

mod apply_error;
pub mod bulwark_tables;
mod crash_rebuild;
pub mod durable;
mod entry_clock;
mod request_ids;
pub mod snapshot_file;
pub mod sql;
pub mod state_machine;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
