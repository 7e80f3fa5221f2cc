//! Point-in-time recovery: a backup plus the log archive (see `archive` in `bulwark-db`)
//! replayed up to a moment or a log index, made the data dir of a new
//! node (`bulwark db restore --from FILE --to-time T | --to-index N`).
//!
//! The backup (checked against its `.sha256` first) is copied into a work
//! directory beside the data dir and opened as a node's state machine;
//! the archived entries after the backup's log index are handed to it in
//! order, through the apply path every node uses (the same SQL executor,
//! the entry's time as SQLite's clock, the same `random()` seeds and
//! request ids), so the database ends as every node's did at that entry.
//! Replay stops before the first entry past the target: an entry whose
//! primary clock is later than `T` (the time a write carries, the one
//! `datetime('now')` saw), or whose index is past `N`. The result is then
//! restored like a backup (`backup::restore_data_dir`): a one-node cluster
//! at the last entry replayed.
//!
//! Refused, before anything is written to the data dir: a target before
//! the backup, an archive that does not continue the backup (a gap: the
//! entries after the backup's index are missing), damage in an archive
//! file other than at the end of the last one, and `--to-index N` past
//! the archive's end.
use crate::archive_file::{self, read_file, Archived};
use crate::backup::{self, BackupError, Recorded};
use crate::backup_tool::{self, ToolError};
use bulwark_db_api::raft_types::Entry;
use bulwark_db_sm::sql::WriteLimits;
use bulwark_db_sm::state_machine::StateMachine;
use openraft::storage::RaftStateMachine;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Entries handed to the state machine at once.
const APPLY_BATCH: usize = 256;

/// Where replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The last entry whose primary clock is at or before this Unix ms.
    Time(u64),
    /// Up to this log index, included.
    Index(u64),
}

/// Why replay ended where it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// The next archived entry is past the target.
    Target,
    /// The archive ends before the target time (its newest entry is older).
    ArchiveEnd,
}

/// A point-in-time restore done.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    /// What the backup held.
    pub backup: Recorded,
    /// What the new node's database holds.
    pub restored: Recorded,
    pub entries_replayed: u64,
    pub stopped: Stopped,
}

/// Why a point-in-time restore failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Tool(#[from] ToolError),
    #[error("{0}")]
    Backup(#[from] BackupError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the backup holds the log up to index {backup_index} (written at {backup_time_ms} ms), past the target {target}: restore from an older backup")]
    BackupAfterTarget { backup_index: u64, backup_time_ms: u64, target: String },
    #[error("{}: no archived entries after the backup's index {backup_index}", dir.display())]
    EmptyArchive { dir: PathBuf, backup_index: u64 },
    #[error("{}: entries {from}..={to} are missing from the archive (the archiving node missed them, or they were removed): replay cannot go past index {}; restore from a backup taken after the gap", dir.display(), from.saturating_sub(1))]
    Gap { dir: PathBuf, from: u64, to: u64 },
    #[error("{}: damaged record after {good_bytes} bytes (only the end of the newest file may be cut short)", path.display())]
    Damaged { path: PathBuf, good_bytes: u64 },
    #[error("the archive ends at index {last}, before the target index {target}")]
    ArchiveEndsBefore { last: u64, target: u64 },
    #[error("applying entry {index}: {message}")]
    Apply { index: u64, message: String },
    #[error("{0}")]
    StateMachine(#[from] bulwark_db_sm::state_machine::StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io { path: path.to_path_buf(), source }
}

impl Target {
    fn includes(&self, a: &Archived) -> bool {
        match *self {
            Target::Index(n) => a.index <= n,
            // Entries without writes carry no time: they go with the ones before.
            Target::Time(t) => a.time_ms == 0 || a.time_ms <= t,
        }
    }

    fn is_before(&self, b: &Recorded) -> bool {
        match *self {
            Target::Index(n) => n < b.log_index,
            Target::Time(t) => t < b.time_ms,
        }
    }

    fn describe(&self) -> String {
        match *self {
            Target::Index(n) => format!("index {n}"),
            Target::Time(t) => format!("time {t} ms"),
        }
    }
}

/// Restore backup `file` with the entries of `archive` up to `target` into
/// `data_dir` for node `node_id` at `address` (see the module doc).
/// `limits` must be the cluster's `max_write_steps` (a write that ran out
/// of steps there must run out here too). With `force`, what a node keeps
/// in `data_dir` is removed first.
#[allow(clippy::too_many_arguments)]
pub async fn restore_to(
    file: &Path,
    archive: &Path,
    target: Target,
    data_dir: &Path,
    node_id: u64,
    address: &str,
    raft_address: &str,
    limits: WriteLimits,
    force: bool,
) -> Result<Replayed, ReplayError> {
    backup_tool::verify_checksum(file)?;
    if force {
        backup::clear_data_dir(data_dir)?;
    }
    let busy = std::fs::read_dir(data_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if busy {
        let found = "files a restore would replace".to_string();
        return Err(BackupError::NotEmpty { path: data_dir.to_path_buf(), found }.into());
    }
    let work = work_dir(data_dir);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    let result = replay_in(file, archive, target, &work, limits).await;
    let result = match result {
        Ok((backup, entries_replayed, stopped)) => {
            let db = work.join("data.db");
            match std::fs::File::open(&db) {
                Ok(mut f) => backup::restore_data_dir(&mut f, data_dir, node_id, address, raft_address)
                    .await
                    .map(|restored| Replayed { backup, restored, entries_replayed, stopped })
                    .map_err(ReplayError::from),
                Err(e) => Err(ReplayError::Io { path: db, source: e }),
            }
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// A directory beside `data_dir` for the database being rebuilt.
fn work_dir(data_dir: &Path) -> PathBuf {
    let name = data_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    let parent = data_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    parent.join(format!(".{name}.replay-{}", std::process::id()))
}

/// Copy the backup into `work/data.db` and replay the archive into it.
async fn replay_in(
    file: &Path,
    archive: &Path,
    target: Target,
    work: &Path,
    limits: WriteLimits,
) -> Result<(Recorded, u64, Stopped), ReplayError> {
    let db = work.join("data.db");
    {
        let mut reader = backup_tool::open_backup(file)?;
        let mut out = std::fs::File::create(&db).map_err(io(&db))?;
        std::io::copy(&mut reader, &mut out).map_err(io(&db))?;
    }
    let backup = backup::recorded(&db)?;
    if target.is_before(&backup) {
        return Err(ReplayError::BackupAfterTarget {
            backup_index: backup.log_index,
            backup_time_ms: backup.time_ms,
            target: target.describe(),
        });
    }
    let mut sm = StateMachine::open_with(work, limits).map_err(ReplayError::StateMachine)?;
    let replayed = feed(&mut sm, archive, target, backup.log_index).await;
    let closed = sm.close().map_err(ReplayError::StateMachine);
    drop(sm);
    let (count, last, stopped) = replayed?;
    closed?;
    if let (Target::Index(n), false) = (target, stopped == Stopped::Target) {
        return Err(ReplayError::ArchiveEndsBefore { last, target: n });
    }
    // One file, no WAL beside it, for the restore to copy.
    let c = rusqlite::Connection::open(&db).map_err(|e| ReplayError::StateMachine(e.into()))?;
    c.pragma_update(None, "journal_mode", "DELETE").map_err(|e| ReplayError::StateMachine(e.into()))?;
    drop(c);
    Ok((backup, count, stopped))
}

/// Apply the archived entries after `after` up to `target`: answers how
/// many, the last index reached, and why replay ended.
async fn feed(
    sm: &mut StateMachine,
    dir: &Path,
    target: Target,
    after: u64,
) -> Result<(u64, u64, Stopped), ReplayError> {
    let files = archive_file::list(dir).map_err(io(dir))?;
    // The files that may hold `after + 1` and later ones.
    let start = files.iter().rposition(|(first, _)| *first <= after + 1).unwrap_or(0);
    let files = &files[start..];
    let (mut count, mut last) = (0u64, after);
    let mut batch: Vec<Entry> = Vec::with_capacity(APPLY_BATCH);
    let mut stopped = Stopped::ArchiveEnd;
    'files: for (i, (_, path)) in files.iter().enumerate() {
        let contents = read_file(path).map_err(io(path))?;
        if contents.bad_bytes > 0 && i + 1 < files.len() {
            return Err(ReplayError::Damaged { path: path.clone(), good_bytes: contents.good_len });
        }
        for rec in contents.records {
            if rec.index <= after {
                continue;
            }
            if rec.index != last + 1 {
                return Err(ReplayError::Gap { dir: dir.to_path_buf(), from: last + 1, to: rec.index - 1 });
            }
            if !target.includes(&rec) {
                stopped = Stopped::Target;
                break 'files;
            }
            last = rec.index;
            count += 1;
            batch.push(rec.entry);
            if batch.len() == APPLY_BATCH {
                apply(sm, std::mem::take(&mut batch)).await?;
            }
        }
    }
    apply(sm, batch).await?;
    if count == 0 && stopped == Stopped::ArchiveEnd && !files_hold_after(files, after)? {
        return Err(ReplayError::EmptyArchive { dir: dir.to_path_buf(), backup_index: after });
    }
    Ok((count, last, stopped))
}

/// Whether the archive reaches past `after` at all (else it cannot
/// continue the backup).
fn files_hold_after(files: &[(u64, PathBuf)], after: u64) -> Result<bool, ReplayError> {
    match files.last() {
        None => Ok(false),
        Some((_, path)) => {
            let c = read_file(path).map_err(io(path))?;
            Ok(c.records.last().is_some_and(|r| r.index > after))
        }
    }
}

async fn apply(sm: &mut StateMachine, batch: Vec<Entry>) -> Result<(), ReplayError> {
    let Some(first) = batch.first().map(|e| e.log_id.index) else { return Ok(()) };
    sm.apply(batch).await.map_err(|e| ReplayError::Apply { index: first, message: e.to_string() })?;
    Ok(())
}
