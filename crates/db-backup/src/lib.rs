//! The database tier's copies of its data: online backups of a node's
//! database and their restore ([`backup`], [`backup_tool`]), the files of
//! the log archive and the point-in-time restore that replays them
//! ([`replay`]), and the SQL text tools ([`dump`], and [`load`] with the
//! scripts it reads, [`sql_script`]): the work behind `bulwark db backup`,
//! `restore`, `dump` and `load`.
//!
//! Must not touch: a running node's Raft log or database other than
//! through its HTTP API or SQLite's backup API, files outside the paths it
//! is given, other tiers, the process's signal handling or stdout (the
//! `bulwark db` subcommands in `crates/bulwark` own those). The cluster
//! secret is never logged.
//!
//! See `docs/operations.md`, "Backup and restore", for the procedures.

pub mod archive_file;
pub mod backup;
pub mod backup_tool;
pub mod dump;
pub mod load;
pub mod replay;
pub mod sql_script;
