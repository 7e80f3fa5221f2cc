//! The node's last snapshot: one file, `snapshot.db`, a `VACUUM INTO` copy
//! of the database that says by itself what it holds.
//!
//! Like every database of the node, the copy carries `_bulwark_meta`: the
//! last log id it applied and the membership (see `bulwark_tables`). The
//! snapshot's metadata is read from there, never kept beside the file, so
//! publishing a snapshot is one rename: a crash leaves either the old file
//! or the new one, each whole and each saying what it holds. (Older
//! versions wrote the metadata to `snapshot.json` after renaming the
//! database; a crash between the two renames left a pair that disagreed,
//! and the follower that installed it stopped, again after every restart.
//! A `snapshot.json` left by them is removed when the node opens its data
//! dir: the file alone is the truth.)
//!
//! A snapshot received from the primary is checked before anything of the
//! live database is touched (`verify`): it must be a whole SQLite
//! database (`PRAGMA quick_check`) whose `_bulwark_meta` holds exactly the
//! log id and membership openraft was told it holds.
//!
//! The snapshot id that openraft streams the snapshot under is derived from
//! the file too: `<term>-<index>-<crc32 of the file>`, so two different
//! files never share an id and the same file always has the same one.
//!
//! Owns: `snapshot.db` and the files it is written through. Must not touch:
//! the live database (`state_machine` restores a snapshot into it).
use crate::bulwark_tables::{read_state, AppliedState};
use crate::durable::{sync_dir, sync_file, unless_missing};
use bulwark_db_api::raft_types::SnapshotMeta;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};

/// The current snapshot, in the data dir.
pub const SNAPSHOT_FILE: &str = "snapshot.db";
/// Where older versions kept the snapshot's metadata.
const LEGACY_METADATA_FILES: [&str; 2] = ["snapshot.json", "snapshot.json.tmp"];

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a readable Bulwark database: {source}", path.display())]
    Unreadable { path: PathBuf, source: rusqlite::Error },
    #[error("{}: damaged: {report}", path.display())]
    Damaged { path: PathBuf, report: String },
    #[error(
        "{}: the snapshot was announced as log {claimed} but the file holds log {held}",
        path.display()
    )]
    OtherLog { path: PathBuf, claimed: String, held: String },
    #[error("{}: the snapshot was announced with membership {claimed} but the file holds {held}", path.display())]
    OtherMembership { path: PathBuf, claimed: String, held: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.to_path_buf(), source }
}

fn unreadable(path: &Path) -> impl FnOnce(rusqlite::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Unreadable { path: path.to_path_buf(), source }
}

fn open(path: &Path) -> Result<Connection, SnapshotError> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(unreadable(path))
}

/// What the snapshot database at `path` holds, read from the file.
pub(crate) fn state_of(path: &Path) -> Result<AppliedState, SnapshotError> {
    read_state(&open(path)?).map_err(unreadable(path))
}

/// The metadata openraft knows the snapshot `bytes` (holding `state`) by.
pub(crate) fn meta_of(state: &AppliedState, bytes: &[u8]) -> SnapshotMeta {
    let (term, index) = state.last.map_or((0, 0), |l| (l.leader_id.term, l.index));
    SnapshotMeta {
        last_log_id: state.last,
        last_membership: state.membership.clone(),
        snapshot_id: format!("{term}-{index}-{:08x}", crc32fast::hash(bytes)),
    }
}

/// The path of the current snapshot in `dir`, if there is one.
pub(crate) fn current_path(dir: &Path) -> Result<Option<PathBuf>, SnapshotError> {
    let path = dir.join(SNAPSHOT_FILE);
    match std::fs::metadata(&path) {
        Ok(_) => Ok(Some(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SnapshotError::Io { path, source: e }),
    }
}

/// The current snapshot in `dir`, whole: its metadata and its bytes.
/// Callers hold the state machine's snapshot lock, so the file is not
/// replaced while it is read.
pub(crate) fn read_current(dir: &Path) -> Result<Option<(SnapshotMeta, Vec<u8>)>, SnapshotError> {
    let Some(path) = current_path(dir)? else { return Ok(None) };
    let state = state_of(&path)?;
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    Ok(Some((meta_of(&state, &bytes), bytes)))
}

/// Check the snapshot database at `path` before it is restored: a whole
/// SQLite database holding exactly `claimed`'s log id and membership.
pub(crate) fn verify(path: &Path, claimed: &SnapshotMeta) -> Result<AppliedState, SnapshotError> {
    let c = open(path)?;
    let report: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(unreadable(path))?;
    if report != "ok" {
        return Err(SnapshotError::Damaged { path: path.to_path_buf(), report });
    }
    let held = read_state(&c).map_err(unreadable(path))?;
    let show = |l: &Option<bulwark_db_api::raft_types::LogId>| l.map_or("none".to_string(), |l| l.to_string());
    if held.last != claimed.last_log_id {
        return Err(SnapshotError::OtherLog {
            path: path.to_path_buf(),
            claimed: show(&claimed.last_log_id),
            held: show(&held.last),
        });
    }
    if held.membership != claimed.last_membership {
        return Err(SnapshotError::OtherMembership {
            path: path.to_path_buf(),
            claimed: claimed.last_membership.to_string(),
            held: held.membership.to_string(),
        });
    }
    Ok(held)
}

/// Make `tmp` (a complete snapshot database in `dir`) the current
/// snapshot, durably: the file is fsynced, renamed over the old one, and
/// the directory fsynced. One rename: a crash leaves the old snapshot or
/// the new one.
pub fn publish(dir: &Path, tmp: &Path) -> Result<(), SnapshotError> {
    sync_file(tmp).map_err(io_err(tmp))?;
    let path = dir.join(SNAPSHOT_FILE);
    std::fs::rename(tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir).map_err(io_err(dir))
}

/// Remove the metadata file of older versions (see the module doc), if
/// any: the snapshot file says what it holds.
pub(crate) fn remove_legacy_metadata(dir: &Path) -> Result<(), SnapshotError> {
    let mut removed = false;
    for name in LEGACY_METADATA_FILES {
        let path = dir.join(name);
        removed |= path.exists();
        unless_missing(std::fs::remove_file(&path)).map_err(io_err(&path))?;
    }
    if removed {
        sync_dir(dir).map_err(io_err(dir))?;
        tracing::info!(
            "removed snapshot.json of an older version: the snapshot's metadata is read from {SNAPSHOT_FILE} itself"
        );
    }
    Ok(())
}
