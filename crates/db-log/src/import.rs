//! Where a log is opened (`LogStore::open`): a data dir with the old
//! format is imported first, once.
//!
//! Before, the log was a SQLite file `raft-log.db`. When it exists and
//! `raft-log/` does not, its vote, purged id and entries are copied into a
//! new log built in `raft-log.importing/`, synced, and that directory is
//! renamed to `raft-log/` (the commit point: a crash before it imports
//! again). The old file is then renamed `raft-log.db.imported`.
use super::meta::DIR;
use super::record::invalid;
use super::segment::{sync_dir, SEGMENT};
use super::store::LogStore;
use super::writer::{Done, Op};
use bulwark_db_api::raft_types::{Entry, LogId, NodeId, Vote};
use std::io;
use std::path::Path;
use std::sync::mpsc;

/// Where an import from the old format is built before it is renamed.
pub(super) const IMPORTING: &str = "raft-log.importing";
/// The old format's file.
pub(super) const OLD: &str = "raft-log.db";

/// Copy the old SQLite log (`old`) into a new log in `dir/raft-log`.
pub(super) fn import(old: &Path, dir: &Path, seg_size: u64) -> io::Result<()> {
    use rusqlite::OptionalExtension;
    tracing::info!(path = %old.display(), "importing the raft log from the old format");
    let sql = |e: rusqlite::Error| io::Error::other(format!("reading {}: {e}", old.display()));
    let json = |e: serde_json::Error| invalid(format!("{}: {e}", old.display()));
    let tmp = dir.join(IMPORTING);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    {
        let conn = rusqlite::Connection::open(old).map_err(sql)?;
        let meta = |k: &str| -> io::Result<Option<Vec<u8>>> {
            conn.query_row("SELECT v FROM meta WHERE k = ?", [k], |r| r.get(0)).optional().map_err(sql)
        };
        let vote: Option<Vote> = meta("vote")?.map(|v| serde_json::from_slice(&v)).transpose().map_err(json)?;
        let purged: Option<LogId> = meta("purged")?.map(|v| serde_json::from_slice(&v)).transpose().map_err(json)?;
        let mut log = LogStore::open_dir(&tmp, seg_size, None)?;
        log.state.vote = vote;
        log.state.purged = purged;
        log.send(Op::Meta { meta: log.meta(), purge: purged.map(|p| p.index), done: Done::Nothing })?;
        let after = purged.map(|p| p.index as i64).unwrap_or(-1);
        let mut stmt = conn.prepare("SELECT entry FROM log WHERE idx > ? ORDER BY idx").map_err(sql)?;
        let mut rows = stmt.query([after]).map_err(sql)?;
        let mut batch = Vec::new();
        let mut n = 0u64;
        while let Some(row) = rows.next().map_err(sql)? {
            batch.push(serde_json::from_slice::<Entry>(&row.get::<_, Vec<u8>>(0).map_err(sql)?).map_err(json)?);
            n += 1;
            if batch.len() == 1024 {
                log.append_entries(std::mem::take(&mut batch), Done::Nothing)?;
            }
        }
        let (tx, rx) = mpsc::sync_channel(1);
        if batch.is_empty() {
            log.send(Op::Meta { meta: log.meta(), purge: None, done: Done::Block(tx) })?;
        } else {
            log.append_entries(batch, Done::Block(tx))?;
        }
        rx.recv().map_err(|_| io::Error::other("the raft log writer stopped"))??;
        tracing::info!(entries = n, ?vote, ?purged, "imported the old raft log");
    }
    std::fs::rename(&tmp, dir.join(DIR))?;
    sync_dir(dir)
}

/// Rename the imported `raft-log.db` (and a WAL file SQLite left) out of the way.
pub(super) fn retire_old(dir: &Path) -> io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let from = dir.join(format!("{OLD}{suffix}"));
        if from.exists() {
            std::fs::rename(&from, dir.join(format!("{OLD}.imported{suffix}")))?;
        }
    }
    sync_dir(dir)
}

/// Opening a log starts here: the old format, where found, is imported
/// first.
impl LogStore {
    /// Open (or create) the log of node `me` in `dir`, importing an old
    /// `raft-log.db`. A saved vote of `me` for itself is handed to openraft
    /// as not committed (see "Restart inside a term" in the module doc).
    pub fn open(dir: &Path, me: NodeId) -> io::Result<LogStore> {
        LogStore::open_with(dir, SEGMENT, me)
    }

    pub(super) fn open_with(dir: &Path, seg_size: u64, me: NodeId) -> io::Result<LogStore> {
        let path = dir.join(DIR);
        let old = dir.join(OLD);
        if !path.exists() {
            if old.exists() {
                import(&old, dir, seg_size)?;
            } else {
                std::fs::create_dir_all(&path)?;
                sync_dir(dir)?;
            }
        }
        if old.exists() {
            retire_old(dir)?;
        }
        LogStore::open_dir(&path, seg_size, Some(me))
    }
}
