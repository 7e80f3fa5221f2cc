//! Online backups of a node's database, and the restore of one into the
//! data dir of a new single-node cluster.
//!
//! A backup is an ordinary SQLite database: a `VACUUM INTO` copy of the
//! node's live database, taken inside one read transaction, so it is
//! consistent while writes go on. Like every database of a node it carries
//! `_bulwark_meta`, which records the log id (term and index) the copy has
//! applied, the membership and the primary's clock of the last write: the
//! file says by itself what it holds ([`recorded`]).
//!
//! The node writes the copy to `backup-tmp/` in its data dir and serves it
//! in chunks (`node/backup.rs` in `bulwark-db`); the tool (`bulwark db backup`) writes the
//! chunks to its file as they arrive, so neither side holds the database
//! in memory. The node also sends the copy's SHA-256, which the tool checks
//! against the bytes it received.
//!
//! Restoring ([`restore_data_dir`]) makes the backup the snapshot of a new
//! node: `snapshot.db` holds the data with the membership changed to the
//! new node alone, and the Raft log holds only a vote one term above the
//! backup's log id, so that the node elects itself in a term newer than
//! every entry it holds. When started, the node copies the snapshot into
//! its database (it is behind the snapshot), openraft purges its empty log
//! up to the snapshot's index, and the node is the primary of a one-node
//! cluster that continues at the backup's log index. Other nodes join it
//! with `add-node` and receive the snapshot.
//!
//! Owns: `backup-tmp/` in the data dir, and the files a restore writes into
//! an empty data dir. Must not touch: the live database (a read connection
//! only) or a data dir that holds anything but what a restore cleared.
use bulwark_db_api::raft_types::{Node, NodeId, StoredMembership, Vote};
use bulwark_db_log::LogStore;
use bulwark_db_sm::bulwark_tables::{meta_set, read_state};
use bulwark_db_sm::durable::{sync_dir, sync_file};
use bulwark_db_sm::snapshot_file;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Folder of a node's data dir holding backups being served.
pub const BACKUP_DIR: &str = "backup-tmp";
/// Largest chunk a node serves in one answer.
pub const CHUNK_BYTES: u64 = 4 << 20;
/// A backup copy left by a tool that never came back is removed after this.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// What a node answers `POST /v1/backup`: a consistent copy is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// Name of the copy on the node (`GET /v1/backup/<id>?offset=N`).
    pub id: String,
    pub bytes: u64,
    /// SHA-256 of the copy, lowercase hex.
    pub sha256: String,
    /// The node that took the copy.
    pub node_id: u64,
    /// The log id the copy has applied.
    pub log_term: u64,
    pub log_index: u64,
    /// The primary's clock (Unix ms) of the last write in the copy.
    pub time_ms: u64,
}

/// What a backup file records about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub log_term: u64,
    pub log_index: u64,
    pub time_ms: u64,
}

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("{}: not a whole database: {report}", path.display())]
    Damaged { path: PathBuf, report: String },
    #[error("{}: holds no applied log entry: not a Bulwark backup", path.display())]
    NotABackup { path: PathBuf },
    #[error("no backup named `{0}` on this node (taken more than an hour ago, or finished)")]
    Unknown(String),
    #[error("{}: the data dir is not empty ({found}); restore into an empty one, or pass --force", path.display())]
    NotEmpty { path: PathBuf, found: String },
    #[error("writing the new node's vote: {0}")]
    Vote(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_path_buf(), source }
}

fn sql(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite { path: path.to_path_buf(), source }
}

/// SHA-256 of a file, lowercase hex, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String, BackupError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex(ctx.finish().as_ref()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The log id and time a backup file (an uncompressed SQLite database)
/// records, after checking it is a whole database (`PRAGMA quick_check`).
pub fn recorded(path: &Path) -> Result<Recorded, BackupError> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sql(path))?;
    let report: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(sql(path))?;
    if report != "ok" {
        return Err(BackupError::Damaged { path: path.to_path_buf(), report });
    }
    let state = read_state(&c).map_err(sql(path))?;
    let last = state.last.ok_or_else(|| BackupError::NotABackup { path: path.to_path_buf() })?;
    Ok(Recorded { log_term: last.leader_id.term, log_index: last.index, time_ms: state.time_ms })
}

/// A name for a new copy: the time and the process, unique on one node.
fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    format!("{ms}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The path of copy `id` in `data_dir`, if `id` is a name [`new_id`]
/// could have made (digits and dashes: never a path of its own).
fn copy_path(data_dir: &Path, id: &str) -> Option<PathBuf> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    ok.then(|| data_dir.join(BACKUP_DIR).join(format!("{id}.db")))
}

/// Remove copies older than [`STALE_AFTER`] (a tool that stopped midway).
fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if old.is_some_and(|age| age > STALE_AFTER) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Take a consistent copy of the live database `db` (a read transaction:
/// writes go on meanwhile) into `backup-tmp/` of `data_dir`.
pub fn take_copy(db: &Path, data_dir: &Path, node_id: u64) -> Result<BackupInfo, BackupError> {
    let dir = data_dir.join(BACKUP_DIR);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    remove_stale(&dir);
    let id = new_id();
    let path = copy_path(data_dir, &id).expect("a name new_id makes");
    // Read-only (not `query_only`, which refuses VACUUM INTO even though
    // it writes only the new file).
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sql(db))?;
    c.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql(db))?;
    let target = path.to_str().ok_or_else(|| BackupError::Io {
        path: path.clone(),
        source: std::io::Error::other("the data dir's path is not UTF-8"),
    })?;
    if let Err(e) = c.execute("VACUUM INTO ?", [target]) {
        let _ = std::fs::remove_file(&path);
        return Err(BackupError::Sqlite { path: db.to_path_buf(), source: e });
    }
    drop(c);
    let rec = recorded(&path);
    let rec = match rec {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let bytes = std::fs::metadata(&path).map_err(io(&path))?.len();
    let sha256 = sha256_file(&path)?;
    Ok(BackupInfo {
        id,
        bytes,
        sha256,
        node_id,
        log_term: rec.log_term,
        log_index: rec.log_index,
        time_ms: rec.time_ms,
    })
}

/// Up to [`CHUNK_BYTES`] of copy `id` from `offset` (empty past its end).
pub fn read_chunk(data_dir: &Path, id: &str, offset: u64) -> Result<Vec<u8>, BackupError> {
    use std::io::Seek;
    let path = copy_path(data_dir, id).ok_or_else(|| BackupError::Unknown(id.to_string()))?;
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BackupError::Unknown(id.to_string())),
        Err(e) => return Err(BackupError::Io { path, source: e }),
    };
    f.seek(std::io::SeekFrom::Start(offset)).map_err(io(&path))?;
    let mut out = Vec::new();
    f.take(CHUNK_BYTES).read_to_end(&mut out).map_err(io(&path))?;
    Ok(out)
}

/// Remove copy `id` (the tool has it all).
pub fn finish(data_dir: &Path, id: &str) -> Result<(), BackupError> {
    let path = copy_path(data_dir, id).ok_or_else(|| BackupError::Unknown(id.to_string()))?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BackupError::Unknown(id.to_string())),
        Err(e) => Err(BackupError::Io { path, source: e }),
    }
}

/// The files and folders a node keeps in its data dir.
const NODE_FILES: [&str; 13] = [
    "data.db",
    "data.db-wal",
    "data.db-shm",
    "data.boot",
    "data.boot.tmp",
    "data.rebuild.db",
    "snapshot.db",
    "snapshot.tmp.db",
    "snapshot.recv.db",
    "snapshot.restore.db",
    "raft-log",
    "raft-log.db",
    BACKUP_DIR,
];

/// Remove what a node keeps in `data_dir` (for `restore --force`); other
/// files are left alone.
pub fn clear_data_dir(data_dir: &Path) -> Result<(), BackupError> {
    for name in NODE_FILES {
        let p = data_dir.join(name);
        let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackupError::Io { path: p, source: e }),
        }
    }
    Ok(())
}

/// Make the data dir `data_dir` (empty or missing) that of node `node_id`
/// with its API at `address` and Raft at `raft_address`, the only member of a new cluster holding the database
/// read from `backup` (already checked by the caller against its
/// checksum; the database is checked here). See the module doc. Answers what the backup
/// records.
pub async fn restore_data_dir(
    backup: &mut dyn Read,
    data_dir: &Path,
    node_id: NodeId,
    address: &str,
    raft_address: &str,
) -> Result<Recorded, BackupError> {
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let found: Vec<String> = std::fs::read_dir(data_dir)
        .map_err(io(data_dir))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !found.is_empty() {
        return Err(BackupError::NotEmpty { path: data_dir.to_path_buf(), found: found.join(", ") });
    }
    let tmp = data_dir.join("snapshot.restore.db");
    let copied = std::fs::File::create(&tmp).and_then(|mut f| std::io::copy(backup, &mut f));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(BackupError::Io { path: tmp, source: e });
    }
    let rec = match recorded(&tmp) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    {
        let c = Connection::open(&tmp).map_err(sql(&tmp))?;
        let state = read_state(&c).map_err(sql(&tmp))?;
        let members: BTreeSet<NodeId> = [node_id].into();
        let nodes: BTreeMap<NodeId, Node> = [(node_id, Node::new(address, raft_address))].into();
        let membership = StoredMembership::new(state.last, openraft::Membership::new(vec![members], nodes));
        meta_set(&c, "membership", &membership).map_err(sql(&tmp))?;
        // One file, no WAL beside it: the snapshot is this file alone.
        c.pragma_update(None, "journal_mode", "DELETE").map_err(sql(&tmp))?;
    }
    sync_file(&tmp).map_err(io(&tmp))?;
    snapshot_file::publish(data_dir, &tmp).map_err(|e| BackupError::Io {
        path: data_dir.join(snapshot_file::SNAPSHOT_FILE),
        source: std::io::Error::other(e.to_string()),
    })?;
    // A vote one term above the backup's entries: the node's first
    // election is in a newer term than every entry it holds.
    let mut log = LogStore::open(data_dir, node_id).map_err(io(data_dir))?;
    let vote = Vote::new(rec.log_term + 1, node_id);
    openraft::storage::RaftLogStorage::save_vote(&mut log, &vote)
        .await
        .map_err(|e| BackupError::Vote(e.to_string()))?;
    drop(log);
    sync_dir(data_dir).map_err(io(data_dir))?;
    Ok(rec)
}
