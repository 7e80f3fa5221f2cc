//! The durable Raft log (the "binary log"): the directory `raft-log/` in the
//! data dir. It holds the entries, the vote and the last purged log id.
//!
//! One job a file: `record` (the record format and its doc, "On disk"),
//! `segment` (making segment files), `meta` (the vote and purge point),
//! `index` (what is in memory: where each entry is on disk, the newest
//! entries decoded), `appended` (written entries, read ahead by
//! replication), `writer` (the writer thread, group commit, a replica's
//! inline sync), `recovery` (replaying the segments on open), `import`
//! (the old SQLite log), `store` ([`LogStore`]: opening, appending) and
//! `reader` ([`LogReader`]: reading entries from memory
//! or the files) and `raft` (openraft's `RaftLogStorage` over the store);
//! `test_hooks` (the `test-hooks` feature) lets tests stall a log's syncs.
//!
//! Must not touch: the state machine (`bulwark-db-sm`), the network, other
//! tiers, files of the node's data dir other than `raft-log/` and the old
//! SQLite log it imports.
//!
//! # Why hand-written
//!
//! The crates first. `raft-log` (by openraft's author, the log of
//! Databend's meta service) is correct (sync before the callback, group
//! commit, CRC, torn tail, chunked purge) and was tried here first, but it
//! appends with `O_APPEND` to growing files, so every `fdatasync` also
//! commits the file size (an ext4 journal commit), it group-commits with a
//! waiting window, and it cannot preallocate: with it a 3-node cluster
//! wrote more slowly than with the SQLite log it was to replace (openraft
//! 0.9 replicates one AppendEntries at a time, so a follower's sync latency
//! is part of every round trip), and this log writes faster than either and
//! uses less CPU (figures: docs/BENCHMARKS.md, "The Raft log"). `raft-wal`
//! (the other candidate, with an openraft feature) is not in the registry
//! this project builds from.
mod appended;
mod import;
mod index;
mod meta;
mod raft;
mod reader;
mod record;
mod recovery;
mod segment;
mod store;
#[cfg(any(test, feature = "test-hooks"))]
pub mod test_hooks;
#[cfg(test)]
mod tests;
mod writer;

pub use appended::AppendedEntries;
pub use reader::LogReader;
pub use store::{LogStore, PurgeLimit};
pub use writer::InlineSyncPause;
