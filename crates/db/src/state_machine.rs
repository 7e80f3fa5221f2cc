//! The state machine: the node's SQLite database (`data.db`, WAL).
//!
//! One writer connection applies committed log entries; nothing else ever
//! writes. Each apply batch is one SQLite transaction that also records the
//! last applied log id, the membership and the primary's clock of the last
//! write in `_bulwark_meta`, so applying is idempotent across crashes: after
//! kill -9 the database is at some applied index and openraft replays the
//! log from there.
//!
//! # Durability: the database is rebuilt after a machine crash
//!
//! The Raft log and the snapshots are what is durable; the database is
//! what they produce. So SQLite never syncs (`synchronous = OFF`, for
//! commits and checkpoints alike): its writes only reach the page cache,
//! which survives kill -9 of the process but not a crash or power loss of
//! the machine. The file `data.boot` tells the two apart. It says
//! `running <boot id>` (the kernel's `/proc/sys/kernel/random/boot_id`)
//! from the moment the database is opened, and `clean` once
//! [`StateMachine::close`] has closed and fsynced it. Opening a database
//! whose `data.boot` says `running` with another boot id means the machine
//! went down while writes may not have been on disk: the database and its
//! WAL are replaced by a copy of the last snapshot (or removed, when there
//! is none; the log is then whole) and openraft applies the log from the
//! snapshot's index again, as it does on any restart. Snapshots are
//! fsynced before the log before them is purged, so nothing committed is
//! lost. Measured with 16 clients on 3 nodes sharing one disk: 9,200-9,900
//! writes/s against 7,800-8,200 with `synchronous = NORMAL`, whose
//! checkpoints had to sync about 60 MB of WAL per second and node and held
//! every node's log fsync up for 50-80 ms at each of them. Where no boot
//! id can be read, the database syncs its checkpoints as before
//! (`synchronous = NORMAL`) and is never rebuilt.
//!
//! An entry may carry many client writes (the primary's group commit); each
//! runs in its own savepoint. The WAL is checkpointed by a thread of its
//! own (`start_checkpointer`), never inside an apply.
//!
//! Reads use a small pool of connections opened `SQLITE_OPEN_READ_ONLY`
//! with `PRAGMA query_only = 1`: a write through them is impossible.
//!
//! Snapshots are `VACUUM INTO` copies of the database (`snapshot.db` plus
//! `snapshot.json` with its metadata); installing one copies it into the
//! live database with SQLite's backup API.
use crate::api::{Column, Params, Value, REQUEST_ID_RETENTION_MS};
use crate::raft_types::{
    storage_err, ApplyOutcome, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Write,
};
use crate::sql;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorVerb, RaftSnapshotBuilder};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What the database has applied, published after every apply commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    pub index: u64,
    pub term: u64,
    /// Primary's clock (Unix ms) of the last applied write; 0 if none.
    pub time_ms: u64,
}

struct Shared {
    dir: PathBuf,
    /// Whether SQLite syncs nothing (the database is rebuilt after a
    /// machine crash) or its checkpoints (no boot id to tell crashes by).
    sync: SyncMode,
    writer: Mutex<Connection>,
    seed: Arc<AtomicU64>,
    state: Mutex<(Option<LogId>, StoredMembership)>,
    applied: watch::Sender<Applied>,
    /// The checkpoint thread and what stops it (dropping the sender, or
    /// the state machine being dropped).
    checkpointer: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
}

/// How the database's writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncMode {
    /// Never synced; rebuilt from the snapshot and the log after a crash of
    /// the machine (`synchronous = OFF`).
    RebuiltAfterCrash,
    /// Checkpoints sync the WAL and the database (`synchronous = NORMAL`).
    Checkpoints,
}

impl SyncMode {
    fn pragma(self) -> &'static str {
        match self {
            SyncMode::RebuiltAfterCrash => "OFF",
            SyncMode::Checkpoints => "NORMAL",
        }
    }
}

/// The file saying whether the database may hold writes that are not on
/// disk (see the module doc).
const BOOT_FILE: &str = "data.boot";
const BOOT_FILE_TMP: &str = "data.boot.tmp";

/// This boot of the machine, if the kernel says.
fn current_boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// Whether the database in `dir` must be rebuilt when opened on boot
/// `boot`: `data.boot` says it was open on another boot, or says something
/// else than it ever writes (rebuilding is always safe). No file: a new
/// database, or one from before the file existed, which synced its
/// checkpoints.
fn crashed_since(dir: &Path, boot: &str) -> std::io::Result<bool> {
    match std::fs::read_to_string(dir.join(BOOT_FILE)) {
        Ok(s) => Ok(match s.trim() {
            "clean" => false,
            s => s.strip_prefix("running ").is_none_or(|was| was.trim() != boot),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replace `data.boot` durably with `content`.
fn write_boot_file(dir: &Path, content: &str) -> std::io::Result<()> {
    let tmp = dir.join(BOOT_FILE_TMP);
    std::fs::write(&tmp, format!("{content}\n"))?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, dir.join(BOOT_FILE))?;
    sync_dir(dir)
}

/// `r`, with a file that does not exist counting as success.
fn unless_missing(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// After a crash of the machine while the database was open: replace it
/// (and its WAL) with the last snapshot, or remove it when there is none.
/// The copy is made beside it and renamed over it, so a crash in between
/// leaves either database, and `data.boot` still asks for the rebuild.
fn rebuild_from_snapshot(dir: &Path) -> std::io::Result<()> {
    for name in ["data.db-wal", "data.db-shm"] {
        unless_missing(std::fs::remove_file(dir.join(name)))?;
    }
    match read_snapshot_files(dir)? {
        Some((meta, snapshot)) => {
            let tmp = dir.join("data.rebuild.db");
            std::fs::copy(&snapshot, &tmp)?;
            sync_file(&tmp)?;
            std::fs::rename(&tmp, dir.join("data.db"))?;
            tracing::warn!(snapshot = %meta, "the machine restarted while the database was open: rebuilt it from the last snapshot; the log is applied again from there");
        }
        None => {
            unless_missing(std::fs::remove_file(dir.join("data.db")))?;
            tracing::warn!("the machine restarted while the database was open: removed it (no snapshot yet); the whole log is applied again");
        }
    }
    sync_dir(dir)
}

/// The SQLite state machine handed to openraft.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

/// Builds snapshots without blocking the applier.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

/// Bulwark's own tables in the database. Each apply transaction writes
/// one row of `_bulwark_meta` (a `WITHOUT ROWID` table: one B-tree, so one
/// page) and appends to `_bulwark_requests` in `seq` order (its rowid), so
/// it touches few pages: SQLite writes each changed page whole into the
/// WAL. Measured with 5 writes with request ids per transaction: 5.6 pages
/// against 8.1 with the first layout (a rowid `_bulwark_meta` with its key
/// index, and `_bulwark_requests` keyed by id with an index on time), and
/// 9,966 against 8,891 writes/s (16 clients, 3 nodes, medians of 3).
/// Older databases are converted when opened ([`migrate`]).
const META_DDL: &str = "CREATE TABLE IF NOT EXISTS _bulwark_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS _bulwark_requests (seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE, term INTEGER NOT NULL, idx INTEGER NOT NULL,
        time_ms INTEGER NOT NULL, outcome TEXT NOT NULL)";

/// Convert Bulwark's tables of the first layout (see [`META_DDL`]), in one
/// transaction: the request ids keep their order of time (then id), which
/// is their order of application as far as it can be told, and every node
/// converting the same content gets the same rows.
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let sql_of = |name: &str| -> rusqlite::Result<String> {
        c.query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [name], |r| r.get(0))
    };
    let old_meta = !sql_of("_bulwark_meta")?.contains("WITHOUT ROWID");
    let old_requests = !sql_of("_bulwark_requests")?.contains("seq INTEGER PRIMARY KEY");
    if !old_meta && !old_requests {
        return Ok(());
    }
    let tx = c.unchecked_transaction()?;
    if old_meta {
        tx.execute_batch(
            "CREATE TABLE _bulwark_meta_new (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
             INSERT INTO _bulwark_meta_new (k, v) SELECT k, v FROM _bulwark_meta;
             DROP TABLE _bulwark_meta;
             ALTER TABLE _bulwark_meta_new RENAME TO _bulwark_meta;",
        )?;
    }
    if old_requests {
        tx.execute_batch(
            "CREATE TABLE _bulwark_requests_new (seq INTEGER PRIMARY KEY,
                 id TEXT NOT NULL UNIQUE, term INTEGER NOT NULL, idx INTEGER NOT NULL,
                 time_ms INTEGER NOT NULL, outcome TEXT NOT NULL);
             INSERT INTO _bulwark_requests_new (id, term, idx, time_ms, outcome)
                 SELECT id, term, idx, time_ms, outcome FROM _bulwark_requests ORDER BY time_ms, id;
             DROP TABLE _bulwark_requests;
             ALTER TABLE _bulwark_requests_new RENAME TO _bulwark_requests;",
        )?;
    }
    tx.commit()?;
    tracing::info!("converted Bulwark's tables in the database to the current layout");
    Ok(())
}

/// Forget request ids older than the retention every this many entries
/// (the same entries on every node, so every database stays identical).
const PRUNE_REQUESTS_EVERY: u64 = 256;

/// The stored outcome of an earlier write with this request id, if any.
fn earlier_request(c: &Connection, id: &str) -> rusqlite::Result<Option<ApplyOutcome>> {
    let row: Option<(u64, u64, String)> = c
        .prepare_cached("SELECT term, idx, outcome FROM _bulwark_requests WHERE id = ?")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    row.map(|(term, index, outcome)| {
        let first: ApplyOutcome = serde_json::from_str(&outcome).map_err(json_err)?;
        Ok(ApplyOutcome::Replayed { term, index, first: Box::new(first) })
    })
    .transpose()
}

fn remember_request(
    c: &Connection,
    id: &str,
    log_id: &LogId,
    time_ms: u64,
    outcome: &ApplyOutcome,
) -> rusqlite::Result<()> {
    let s = serde_json::to_string(outcome).map_err(json_err)?;
    c.prepare_cached("INSERT INTO _bulwark_requests (id, term, idx, time_ms, outcome) VALUES (?, ?, ?, ?, ?)")?
        .execute(rusqlite::params![id, log_id.leader_id.term, log_id.index, time_ms, s])?;
    Ok(())
}

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn meta_get<T: serde::de::DeserializeOwned>(c: &Connection, key: &str) -> rusqlite::Result<Option<T>> {
    let has: bool = c
        .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_bulwark_meta'", [], |_| Ok(()))
        .optional()?
        .is_some();
    if !has {
        return Ok(None);
    }
    let v: Option<String> = c.query_row("SELECT v FROM _bulwark_meta WHERE k = ?", [key], |r| r.get(0)).optional()?;
    v.map(|s| serde_json::from_str(&s).map_err(json_err)).transpose()
}

fn meta_set<T: serde::Serialize>(c: &Connection, key: &str, v: &T) -> rusqlite::Result<()> {
    let s = serde_json::to_string(v).map_err(json_err)?;
    c.prepare_cached("INSERT OR REPLACE INTO _bulwark_meta (k, v) VALUES (?, ?)")?.execute([key, &s])?;
    Ok(())
}

fn read_state(c: &Connection) -> rusqlite::Result<(Option<LogId>, StoredMembership, u64)> {
    let applied: Option<LogId> = meta_get(c, "applied")?;
    let membership: StoredMembership = meta_get(c, "membership")?.unwrap_or_default();
    let time_ms: u64 = meta_get(c, "time_ms")?.unwrap_or(0);
    Ok((applied, membership, time_ms))
}

fn applied_of(id: &Option<LogId>, time_ms: u64) -> Applied {
    Applied { index: id.map(|l| l.index).unwrap_or(0), term: id.map(|l| l.leader_id.term).unwrap_or(0), time_ms }
}

fn open_writer(path: &Path, sync: SyncMode) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(std::time::Duration::from_secs(30))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", sync.pragma())?;
    c.set_prepared_statement_cache_capacity(256);
    // Checkpoints run on their own thread (`start_checkpointer`): SQLite's
    // automatic one runs inside a commit, on the thread that applies
    // entries, and its fsyncs stalled replication for milliseconds. Measured
    // (16 clients, 3 nodes): write p99 5.5-6.4 ms with it, 2.8-4.5 ms with
    // the checkpoint thread once a second (every 100 ms: 6.3-8.6 ms, as the
    // same hot pages were written back ten times as often).
    c.pragma_update(None, "wal_autocheckpoint", 0)?;
    c.execute_batch(META_DDL)?;
    migrate(&c)?;
    Ok(c)
}

/// How often the checkpointer copies the WAL into the database file (the
/// WAL grows by a few tens of MB per second at full write load).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(1000);
/// WAL frames (pages) past which the checkpointer truncates the WAL file
/// (~256 MiB with 4 KiB pages). Below it the file keeps its size and is
/// written again from its start, which needs no new blocks; at full load
/// one second of writes is ~20,000 frames here (a lower limit of 16,384
/// truncated it at every checkpoint).
const WAL_TRUNCATE_FRAMES: i64 = 65_536;

/// The database's checkpoint thread. Every [`CHECKPOINT_EVERY`] it copies
/// the WAL into the database file with a `PASSIVE` checkpoint from a
/// connection of its own, which never blocks the writer. The writer commits
/// meanwhile, so that checkpoint ends a few frames short and SQLite could
/// never start the WAL over; so it then holds the writer (applies wait off
/// the runtime thread, see `apply`) for a second checkpoint of just those
/// frames, after which the next commit writes from the start of the WAL
/// again. A WAL that still grew past `truncate_frames` (a long read kept it)
/// is truncated. The thread ends with the state machine.
fn start_checkpointer(
    shared: std::sync::Weak<Shared>,
    path: PathBuf,
    sync: SyncMode,
    stopped: std::sync::mpsc::Receiver<()>,
    truncate_frames: i64,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    fn checkpoint(c: &Connection, mode: &str) -> rusqlite::Result<(i64, i64)> {
        c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(1)?, r.get(2)?)))
    }
    std::thread::Builder::new().name("db-checkpoint".into()).spawn(move || {
        let own = match Connection::open(&path)
            .and_then(|c| c.pragma_update(None, "synchronous", sync.pragma()).map(|_| c))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("checkpointer: opening {}: {e}", path.display());
                return;
            }
        };
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
            let Some(shared) = shared.upgrade() else { return };
            let result = checkpoint(&own, "PASSIVE").and_then(|(frames, copied)| {
                if frames == 0 || (frames == copied && frames <= truncate_frames) {
                    return Ok(());
                }
                let writer = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
                let (frames, _) = checkpoint(&writer, "PASSIVE")?;
                if frames > truncate_frames {
                    checkpoint(&writer, "TRUNCATE")?;
                }
                Ok(())
            });
            if let Err(e) = result {
                tracing::warn!("checkpoint: {e}");
            }
        }
    })
}

fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl StateMachine {
    /// Open (or create) the database in `dir`. After a crash of the machine
    /// while it was open it is first rebuilt from the last snapshot (see the
    /// module doc); if a stored snapshot is newer than what the database
    /// applied, the snapshot is restored.
    pub fn open(dir: &Path) -> Result<StateMachine, String> {
        StateMachine::open_on_boot(dir, current_boot_id())
    }

    /// [`StateMachine::open`] on the boot `boot` (`None`: unknown).
    fn open_on_boot(dir: &Path, boot: Option<String>) -> Result<StateMachine, String> {
        let path = dir.join("data.db");
        let io = |e: std::io::Error| format!("{}: {e}", dir.join(BOOT_FILE).display());
        let sync = match &boot {
            Some(boot) => {
                if crashed_since(dir, boot).map_err(io)? {
                    rebuild_from_snapshot(dir).map_err(|e| format!("rebuilding the database: {e}"))?;
                }
                write_boot_file(dir, &format!("running {boot}")).map_err(io)?;
                SyncMode::RebuiltAfterCrash
            }
            None => {
                tracing::info!("no boot id (/proc/sys/kernel/random/boot_id): the database syncs its checkpoints");
                SyncMode::Checkpoints
            }
        };
        let mut conn = open_writer(&path, sync).map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut applied, mut membership, mut time_ms) = read_state(&conn).map_err(|e| e.to_string())?;
        if let Some((meta, _)) = read_snapshot_files(dir).map_err(|e| e.to_string())? {
            if meta.last_log_id > applied {
                tracing::warn!(snapshot = ?meta.last_log_id, ?applied, "database is behind its snapshot; restoring the snapshot");
                restore_into(&mut conn, &dir.join("snapshot.db")).map_err(|e| e.to_string())?;
                (applied, membership, time_ms) = read_state(&conn).map_err(|e| e.to_string())?;
            }
        }
        let seed = Arc::new(AtomicU64::new(0));
        sql::install_deterministic_random(&conn, seed.clone()).map_err(|e| e.to_string())?;
        let (tx, _) = watch::channel(applied_of(&applied, time_ms));
        let (stop, stopped) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            sync,
            writer: Mutex::new(conn),
            seed,
            state: Mutex::new((applied, membership)),
            applied: tx,
            checkpointer: Mutex::new(None),
        });
        let thread = start_checkpointer(Arc::downgrade(&shared), path, sync, stopped, WAL_TRUNCATE_FRAMES)
            .map_err(|e| e.to_string())?;
        *shared.checkpointer.lock().unwrap_or_else(|p| p.into_inner()) = Some((stop, thread));
        Ok(StateMachine { shared })
    }

    /// Close the database for a clean stop: stop the checkpoints, close the
    /// writer, fsync the database and its WAL, and mark `data.boot` clean,
    /// so a restart of the machine after this does not rebuild it. Call it
    /// after Raft has stopped; an apply after it goes nowhere (it is not
    /// recorded, so the log applies it again at the next start). Blocking.
    pub fn close(&self) -> Result<(), String> {
        let shared = &self.shared;
        let checkpointer = shared.checkpointer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, thread)) = checkpointer {
            drop(stop);
            let _ = thread.join();
        }
        let mut writer = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let closed = Connection::open_in_memory().map_err(|e| e.to_string())?;
        std::mem::replace(&mut *writer, closed).close().map_err(|(_, e)| format!("closing the database: {e}"))?;
        if shared.sync == SyncMode::RebuiltAfterCrash {
            for name in ["data.db", "data.db-wal"] {
                unless_missing(sync_file(&shared.dir.join(name))).map_err(|e| format!("syncing {name}: {e}"))?;
            }
            write_boot_file(&shared.dir, "clean").map_err(|e| format!("{BOOT_FILE}: {e}"))?;
        }
        Ok(())
    }

    /// Watch what has been applied (index, term, primary clock).
    pub fn applied(&self) -> watch::Receiver<Applied> {
        self.shared.applied.subscribe()
    }

    /// Path of the database file (for read connections).
    pub fn db_path(&self) -> PathBuf {
        self.shared.dir.join("data.db")
    }
}

fn restore_into(conn: &mut Connection, file: &Path) -> rusqlite::Result<()> {
    let src = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.flush_prepared_statement_cache();
    {
        let backup = rusqlite::backup::Backup::new(&src, conn)?;
        backup.run_to_completion(1024, std::time::Duration::ZERO, None)?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(META_DDL)?;
    migrate(conn)?;
    Ok(())
}

fn read_snapshot_files(dir: &Path) -> std::io::Result<Option<(SnapshotMeta, PathBuf)>> {
    let meta_path = dir.join("snapshot.json");
    let db = dir.join("snapshot.db");
    match std::fs::read(&meta_path) {
        Ok(bytes) if db.exists() => {
            let meta: SnapshotMeta = serde_json::from_slice(&bytes)?;
            Ok(Some((meta, db)))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Make `tmp` (a complete snapshot database) the current snapshot with
/// `meta`, durably: file fsynced, renamed, metadata written and fsynced.
fn publish_snapshot(dir: &Path, tmp: &Path, meta: &SnapshotMeta) -> std::io::Result<()> {
    sync_file(tmp)?;
    std::fs::rename(tmp, dir.join("snapshot.db"))?;
    let meta_tmp = dir.join("snapshot.json.tmp");
    std::fs::write(&meta_tmp, serde_json::to_vec(meta)?)?;
    sync_file(&meta_tmp)?;
    std::fs::rename(&meta_tmp, dir.join("snapshot.json"))?;
    sync_dir(dir)
}

fn apply_entries(shared: &Shared, entries: Vec<Entry>) -> Result<Vec<Vec<ApplyOutcome>>, String> {
    let mut conn = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
    apply_locked(shared, &mut conn, entries)
}

/// The seed of `random()` for the write at `position` in the entry at
/// `index` (position 0 keeps the seed entries had before group commit).
fn random_seed(index: u64, position: usize) -> u64 {
    index.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add((position as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Run one write in its own savepoint: it commits or rolls back alone.
fn apply_write(
    shared: &Shared,
    tx: &mut rusqlite::Transaction<'_>,
    log_id: &LogId,
    position: usize,
    write: &Write,
    time_ms: u64,
) -> rusqlite::Result<ApplyOutcome> {
    if let Some(replayed) = write.request_id.as_deref().map(|id| earlier_request(tx, id)).transpose()?.flatten() {
        return Ok(replayed);
    }
    shared.seed.store(random_seed(log_id.index, position), Ordering::Relaxed);
    let mut sp = tx.savepoint()?;
    let outcome = match sql::run_writes(&sp, &write.statements) {
        Ok(results) => {
            sp.commit()?;
            ApplyOutcome::Done(results)
        }
        Err(msg) => {
            sp.rollback()?;
            drop(sp);
            ApplyOutcome::Failed(msg)
        }
    };
    if let Some(id) = &write.request_id {
        remember_request(tx, id, log_id, time_ms, &outcome)?;
    }
    Ok(outcome)
}

fn apply_locked(shared: &Shared, conn: &mut Connection, entries: Vec<Entry>) -> Result<Vec<Vec<ApplyOutcome>>, String> {
    let (mut last, mut membership) = shared.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut membership_changed = false;
    let mut time_ms = shared.applied.borrow().time_ms;
    let mut out = Vec::with_capacity(entries.len());
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
    for e in entries {
        if Some(e.log_id) <= last {
            // Already applied before a crash (idempotent replay).
            out.push(Vec::new());
            continue;
        }
        let outcomes = match e.payload {
            EntryPayload::Blank => Vec::new(),
            EntryPayload::Membership(m) => {
                membership = StoredMembership::new(Some(e.log_id), m);
                membership_changed = true;
                Vec::new()
            }
            EntryPayload::Normal(batch) => {
                time_ms = batch.time_ms;
                if e.log_id.index % PRUNE_REQUESTS_EVERY == 0 {
                    // The ids before the first one that is still kept: ids are
                    // appended in order of application, so of time (up to a
                    // primary whose clock is behind the previous one's;
                    // then some are kept a little longer).
                    tx.prepare_cached(
                        "DELETE FROM _bulwark_requests WHERE seq < coalesce(
                             (SELECT seq FROM _bulwark_requests WHERE time_ms >= ?1 ORDER BY seq LIMIT 1),
                             (SELECT max(seq) + 1 FROM _bulwark_requests))",
                    )
                    .and_then(|mut st| st.execute([batch.time_ms.saturating_sub(REQUEST_ID_RETENTION_MS)]))
                    .map_err(|e| e.to_string())?;
                }
                let mut outcomes = Vec::with_capacity(batch.writes.len());
                for (position, write) in batch.writes.iter().enumerate() {
                    outcomes.push(
                        apply_write(shared, &mut tx, &e.log_id, position, write, batch.time_ms)
                            .map_err(|e| e.to_string())?,
                    );
                }
                outcomes
            }
        };
        last = Some(e.log_id);
        out.push(outcomes);
    }
    meta_set(&tx, "applied", &last).map_err(|e| e.to_string())?;
    if membership_changed {
        meta_set(&tx, "membership", &membership).map_err(|e| e.to_string())?;
    }
    meta_set(&tx, "time_ms", &time_ms).map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())?;
    *shared.state.lock().unwrap_or_else(|p| p.into_inner()) = (last, membership);
    shared.applied.send_replace(applied_of(&last, time_ms));
    Ok(out)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok(self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<ApplyOutcome>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Applied on the calling (runtime) thread when the writer is free:
        // one SQLite transaction without fsync (`synchronous = NORMAL`)
        // takes tens of microseconds, less than handing it to a blocking
        // thread and back, which also costs two context switches per batch
        // on every node. When a checkpoint (a snapshot's or the checkpoint
        // thread's) holds the writer, the batch waits on a blocking thread
        // instead, so the runtime (and the heartbeats) never waits for it.
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (fast, entries) = {
            match self.shared.writer.try_lock() {
                Ok(mut conn) => (Some(apply_locked(&self.shared, &mut conn, entries)), Vec::new()),
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    (Some(apply_locked(&self.shared, &mut p.into_inner(), entries)), Vec::new())
                }
                Err(std::sync::TryLockError::WouldBlock) => (None, entries),
            }
        };
        let outcome = match fast {
            Some(done) => done,
            None => {
                let shared = self.shared.clone();
                tokio::task::spawn_blocking(move || apply_entries(&shared, entries))
                    .await
                    .map_err(|e| storage_err(ErrorVerb::Write, e))?
            }
        };
        outcome.map_err(|e| storage_err(ErrorVerb::Write, e))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let shared = self.shared.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let tmp = shared.dir.join("snapshot.recv.db");
            std::fs::write(&tmp, snapshot.into_inner()).map_err(|e| e.to_string())?;
            sync_file(&tmp).map_err(|e| e.to_string())?;
            let mut conn = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
            restore_into(&mut conn, &tmp).map_err(|e| format!("installing snapshot: {e}"))?;
            // Durable before the log may be purged: the snapshot file,
            // fsynced when published below (a database rebuilt after a
            // crash is copied from it), or this checkpoint where the
            // database syncs its checkpoints.
            if shared.sync == SyncMode::Checkpoints {
                conn.query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(())).map_err(|e| e.to_string())?;
            }
            let (applied, membership, time_ms) = read_state(&conn).map_err(|e| e.to_string())?;
            if applied != meta.last_log_id {
                return Err(format!("snapshot claims {:?} but its database has {:?}", meta.last_log_id, applied));
            }
            publish_snapshot(&shared.dir, &tmp, &meta).map_err(|e| e.to_string())?;
            *shared.state.lock().unwrap_or_else(|p| p.into_inner()) = (applied, membership);
            shared.applied.send_replace(applied_of(&applied, time_ms));
            tracing::info!(snapshot = %meta, "installed snapshot");
            Ok(())
        })
        .await
        .map_err(|e| storage_err(ErrorVerb::Write, e))?
        .map_err(|e| storage_err(ErrorVerb::Write, e))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let dir = self.shared.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<Option<Snapshot>> {
            match read_snapshot_files(&dir)? {
                Some((meta, db)) => Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(std::fs::read(db)?)) })),
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| storage_err(ErrorVerb::Read, e))?
        .map_err(|e| storage_err(ErrorVerb::Read, e))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || -> Result<Snapshot, String> {
            let dir = &shared.dir;
            let tmp = dir.join("snapshot.tmp.db");
            let _ = std::fs::remove_file(&tmp);
            if shared.sync == SyncMode::Checkpoints {
                // Durable up to here before the log can be compacted. (A
                // database rebuilt after a crash relies on the snapshot
                // file, fsynced below, instead.)
                let conn = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
                conn.query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(())).map_err(|e| e.to_string())?;
            }
            let reader = Connection::open_with_flags(dir.join("data.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| e.to_string())?;
            reader.execute("VACUUM INTO ?", [tmp.to_string_lossy()]).map_err(|e| format!("VACUUM INTO: {e}"))?;
            drop(reader);
            let copy =
                Connection::open_with_flags(&tmp, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| e.to_string())?;
            let (applied, membership, _) = read_state(&copy).map_err(|e| e.to_string())?;
            drop(copy);
            let snapshot_id = match applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, crate::raft_types::now_ms()),
                None => format!("0-0-{}", crate::raft_types::now_ms()),
            };
            let meta = SnapshotMeta { last_log_id: applied, last_membership: membership, snapshot_id };
            publish_snapshot(dir, &tmp, &meta).map_err(|e| e.to_string())?;
            let bytes = std::fs::read(dir.join("snapshot.db")).map_err(|e| e.to_string())?;
            tracing::info!(snapshot = %meta, bytes = bytes.len(), "built snapshot");
            Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
        })
        .await
        .map_err(|e| storage_err(ErrorVerb::Read, e))?
        .map_err(|e| storage_err(ErrorVerb::Read, e))
    }
}

/// Read-only connections to the database, for queries.
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

/// Open a connection through which no write is possible.
pub fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    c.pragma_update(None, "query_only", true)?;
    Ok(c)
}

impl ReadPool {
    pub fn new(path: PathBuf, size: usize) -> ReadPool {
        ReadPool { path, idle: Mutex::new(Vec::new()), permits: tokio::sync::Semaphore::new(size.max(1)) }
    }

    /// Run a read-only query on a pooled connection.
    pub async fn query(
        self: &Arc<Self>,
        sql: String,
        params: Params,
    ) -> Result<(Vec<Column>, Vec<Vec<Value>>), String> {
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match conn {
                Some(c) => c,
                None => open_read_only(&pool.path).map_err(|e| e.to_string())?,
            };
            let result = sql::run_query(&conn, &sql, &params);
            pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Statement;
    use crate::raft_types::WriteBatch;
    use openraft::{CommittedLeaderId, Membership};
    use std::collections::BTreeSet;

    fn id(i: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), i)
    }

    /// An entry with one write of `sql`.
    fn entry_of(i: u64, sql: &str, request_id: Option<&str>, time_ms: u64) -> Entry {
        let write = Write { statements: vec![Statement::new(sql)], request_id: request_id.map(str::to_string) };
        Entry { log_id: id(i), payload: EntryPayload::Normal(WriteBatch { writes: vec![write], time_ms }) }
    }

    fn write(i: u64, sql: &str) -> Entry {
        entry_of(i, sql, None, 1000 + i)
    }

    fn membership(i: u64) -> Entry {
        let m = Membership::new(vec![BTreeSet::from([1u64])], None);
        Entry { log_id: id(i), payload: EntryPayload::Membership(m) }
    }

    #[tokio::test]
    async fn applies_records_state_and_is_idempotent_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = StateMachine::open(dir.path()).unwrap();
            let out = sm
                .apply(vec![
                    membership(1),
                    write(2, "CREATE TABLE t (x INTEGER, r INTEGER)"),
                    write(3, "INSERT INTO t VALUES (1, random())"),
                    write(4, "INSERT INTO nope VALUES (1)"),
                ])
                .await
                .unwrap();
            assert!(matches!(&out[2][0], ApplyOutcome::Done(r) if r[0].rows_affected == 1));
            assert!(matches!(&out[3][0], ApplyOutcome::Failed(m) if m.contains("no such table")));
            assert_eq!(*sm.applied().borrow(), Applied { index: 4, term: 1, time_ms: 1004 });
        }
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let (applied, m) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(id(4)));
        assert_eq!(m.log_id(), &Some(id(1)));
        // Replaying an applied entry does nothing.
        sm.apply(vec![write(3, "INSERT INTO t VALUES (1, 0)"), write(5, "INSERT INTO t VALUES (2, 0)")]).await.unwrap();
        let c = open_read_only(&sm.db_path()).unwrap();
        let n: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2);
    }

    fn write_once(i: u64, request_id: &str, sql: &str, time_ms: u64) -> Entry {
        entry_of(i, sql, Some(request_id), time_ms)
    }

    #[tokio::test]
    async fn a_request_id_applies_once_and_replays_its_first_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let out = sm
            .apply(vec![
                write(1, "CREATE TABLE t (x INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)"),
                write_once(2, "a", "INSERT INTO t (v) VALUES ('first')", 2000),
                write_once(3, "a", "INSERT INTO t (v) VALUES ('first')", 2001),
                write_once(4, "b", "INSERT INTO nope VALUES (1)", 2002),
                write_once(5, "b", "INSERT INTO t (v) VALUES ('never')", 2003),
                write_once(6, "c", "INSERT INTO t (v) VALUES ('second')", 2004),
            ])
            .await
            .unwrap();
        assert!(matches!(&out[1][0], ApplyOutcome::Done(r) if r[0].last_insert_id == 1), "{:?}", out[1]);
        match &out[2][0] {
            ApplyOutcome::Replayed { term: 1, index: 2, first } => {
                assert!(matches!(&**first, ApplyOutcome::Done(r) if r[0].last_insert_id == 1))
            }
            other => panic!("expected a replay of entry 2, got {other:?}"),
        }
        assert!(
            matches!(&out[4][0], ApplyOutcome::Replayed { index: 4, first, .. } if matches!(&**first, ApplyOutcome::Failed(_)))
        );
        assert!(matches!(&out[5][0], ApplyOutcome::Done(r) if r[0].last_insert_id == 2));
        let c = open_read_only(&sm.db_path()).unwrap();
        let n: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2);
        // An hour later (primary's clock in the log) the ids are forgotten:
        // the prune runs at an entry index that is a multiple of 256.
        let later = 2000 + crate::api::REQUEST_ID_RETENTION_MS + 10;
        sm.apply(vec![write_once(256, "x", "INSERT INTO t (v) VALUES ('late')", later)]).await.unwrap();
        let left: i64 = c.query_row("SELECT count(*) FROM _bulwark_requests", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 1, "only the new id is remembered");
        let out = sm.apply(vec![write_once(257, "a", "INSERT INTO t (v) VALUES ('again')", later)]).await.unwrap();
        assert!(matches!(&out[0][0], ApplyOutcome::Done(_)), "{:?}", out[0]);
    }

    #[tokio::test]
    async fn the_writes_of_one_entry_commit_or_fail_each_on_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let w = |sql: &str, id: Option<&str>| Write {
            statements: vec![Statement::new(sql)],
            request_id: id.map(str::to_string),
        };
        let batch = WriteBatch {
            writes: vec![
                w("CREATE TABLE t (x INTEGER PRIMARY KEY, r INTEGER)", None),
                w("INSERT INTO t VALUES (1, random())", Some("a")),
                w("INSERT INTO t VALUES (1, 0)", Some("b")),
                // The same request id twice in one entry: applied once.
                w("INSERT INTO t VALUES (2, random())", Some("a")),
                w("INSERT INTO t VALUES (3, random())", None),
            ],
            time_ms: 5000,
        };
        let out = sm.apply(vec![Entry { log_id: id(1), payload: EntryPayload::Normal(batch) }]).await.unwrap();
        let out = &out[0];
        assert_eq!(out.len(), 5);
        assert!(matches!(&out[1], ApplyOutcome::Done(r) if r[0].rows_affected == 1), "{out:?}");
        assert!(matches!(&out[2], ApplyOutcome::Failed(m) if m.contains("UNIQUE")), "{out:?}");
        assert!(matches!(&out[3], ApplyOutcome::Replayed { index: 1, .. }), "{out:?}");
        assert!(matches!(&out[4], ApplyOutcome::Done(_)), "{out:?}");
        let c = open_read_only(&sm.db_path()).unwrap();
        let rows: Vec<(i64, i64)> = c
            .prepare("SELECT x, r FROM t ORDER BY x")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 3]);
        assert_ne!(rows[0].1, rows[1].1, "each write in an entry draws its own random()");
    }

    #[test]
    fn entries_written_before_group_commit_still_decode() {
        let old = r#"{"statements":[{"sql":"INSERT INTO t VALUES (1)"}],"time_ms":7,"request_id":"k"}"#;
        let b: WriteBatch = serde_json::from_str(old).unwrap();
        assert_eq!(b.time_ms, 7);
        assert_eq!(b.writes.len(), 1);
        assert_eq!(b.writes[0].request_id.as_deref(), Some("k"));
        assert_eq!(b.writes[0].statements[0].sql, "INSERT INTO t VALUES (1)");
        let new: WriteBatch = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(new, b);
    }

    /// Poll (bounded) until `cond` holds.
    fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_off_the_apply_thread_and_truncated_when_large() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let db = dir.path().join("data.db");
        let wal = dir.path().join("data.db-wal");
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        sm.apply(vec![write(1, "CREATE TABLE t (b BLOB)")]).await.unwrap();
        sm.apply(vec![write(2, "INSERT INTO t VALUES (zeroblob(200000))")]).await.unwrap();
        // The writer never checkpoints itself: the 200 KB reach the database
        // file through the checkpoint thread.
        eventually("the passive checkpoint", || size(&db) > 200_000);
        assert!(size(&wal) > 200_000, "a passive checkpoint leaves the WAL file as it is");
        // Past the frame limit the WAL is truncated.
        let (_keep, stopped) = std::sync::mpsc::channel();
        start_checkpointer(Arc::downgrade(&sm.shared), db.clone(), sm.shared.sync, stopped, 1).unwrap();
        eventually("the truncating checkpoint", || size(&wal) == 0);
        sm.apply(vec![write(3, "INSERT INTO t VALUES (x'01')")]).await.unwrap();
        let c = open_read_only(&sm.db_path()).unwrap();
        assert_eq!(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 2);
    }

    #[tokio::test]
    // Holding the writer across awaits is the point: it stands for a
    // snapshot checkpoint on another thread.
    #[allow(clippy::await_holding_lock)]
    async fn apply_waits_off_the_runtime_while_the_writer_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        sm.apply(vec![write(1, "CREATE TABLE t (x)")]).await.unwrap();
        // A snapshot checkpoint holds the writer: the apply must not block
        // the runtime thread (this test runs on a one-thread runtime).
        let shared = sm.shared.clone();
        let busy = shared.writer.lock().unwrap();
        let mut pending = tokio::spawn({
            let mut sm = sm.clone();
            async move { sm.apply(vec![write(2, "INSERT INTO t VALUES (1)")]).await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(futures_poll_once(&mut pending).await.is_none(), "the apply cannot finish while the writer is held");
        drop(busy);
        let out = pending.await.unwrap().unwrap();
        assert!(matches!(&out[0][0], ApplyOutcome::Done(r) if r[0].rows_affected == 1), "{out:?}");
    }

    /// Poll a join handle once without waiting.
    async fn futures_poll_once<T>(h: &mut tokio::task::JoinHandle<T>) -> Option<T> {
        use std::future::Future;
        use std::task::Poll;
        std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *h).poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v.unwrap())),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    #[tokio::test]
    async fn random_is_identical_on_two_replicas() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut vals = Vec::new();
        for d in [&a, &b] {
            let mut sm = StateMachine::open(d.path()).unwrap();
            sm.apply(vec![
                write(1, "CREATE TABLE t (r, b)"),
                write(2, "INSERT INTO t VALUES (random(), randomblob(8))"),
            ])
            .await
            .unwrap();
            let c = open_read_only(&sm.db_path()).unwrap();
            vals.push(
                c.query_row("SELECT r, hex(b) FROM t", [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                    .unwrap(),
            );
        }
        assert_eq!(vals[0], vals[1]);
    }

    #[tokio::test]
    async fn read_connections_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        sm.apply(vec![write(1, "CREATE TABLE t (x)")]).await.unwrap();
        let c = open_read_only(&sm.db_path()).unwrap();
        let e = c.execute_batch("PRAGMA query_only = 0; INSERT INTO t VALUES (1)").unwrap_err();
        assert!(e.to_string().contains("readonly"), "{e}");
    }

    #[tokio::test]
    async fn snapshot_installs_on_a_fresh_node_and_survives_restart() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut src = StateMachine::open(a.path()).unwrap();
        src.apply(vec![membership(1), write(2, "CREATE TABLE t (x)"), write(3, "INSERT INTO t VALUES (42)")])
            .await
            .unwrap();
        let snap = src.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(id(3)));
        assert_eq!(src.get_current_snapshot().await.unwrap().unwrap().meta, snap.meta);

        let mut dst = StateMachine::open(b.path()).unwrap();
        let mut rx = dst.applied();
        dst.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
        assert_eq!(rx.borrow_and_update().index, 3);
        drop(dst);
        let mut dst = StateMachine::open(b.path()).unwrap();
        assert_eq!(dst.applied_state().await.unwrap().0, Some(id(3)));
        let c = open_read_only(&dst.db_path()).unwrap();
        assert_eq!(c.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 42);
        assert_eq!(dst.get_current_snapshot().await.unwrap().unwrap().meta.last_log_id, Some(id(3)));
    }

    /// The rows of `t` (0 when it does not exist).
    fn rows_of_t(sm: &StateMachine) -> i64 {
        let c = open_read_only(&sm.db_path()).unwrap();
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap_or(0)
    }

    fn boot_file(dir: &Path) -> String {
        std::fs::read_to_string(dir.join(BOOT_FILE)).unwrap()
    }

    /// Entries 1-3 (membership, table, a row) then a snapshot, then 4-5
    /// (two more rows), on boot `boot`; not closed, as after kill -9.
    async fn three_rows_one_snapshot(dir: &Path, boot: &str) {
        let mut sm = StateMachine::open_on_boot(dir, Some(boot.into())).unwrap();
        assert_eq!(boot_file(dir).trim(), format!("running {boot}"));
        sm.apply(vec![membership(1), write(2, "CREATE TABLE t (x)"), write(3, "INSERT INTO t VALUES (1)")])
            .await
            .unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        sm.apply(vec![write(4, "INSERT INTO t VALUES (2)"), write(5, "INSERT INTO t VALUES (3)")]).await.unwrap();
        assert_eq!(rows_of_t(&sm), 3);
    }

    #[tokio::test]
    async fn a_crash_of_the_machine_rebuilds_the_database_from_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        three_rows_one_snapshot(dir.path(), "boot-a").await;
        // Damage what was not synced, as a power loss could.
        std::fs::write(dir.path().join("data.db-wal"), b"torn").unwrap();
        let mut sm = StateMachine::open_on_boot(dir.path(), Some("boot-b".into())).unwrap();
        assert_eq!(boot_file(dir.path()).trim(), "running boot-b");
        let (applied, m) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(id(3)), "back at the snapshot");
        assert_eq!(m.log_id(), &Some(id(1)));
        assert_eq!(rows_of_t(&sm), 1);
        // The log applies the rest again.
        sm.apply(vec![write(4, "INSERT INTO t VALUES (2)"), write(5, "INSERT INTO t VALUES (3)")]).await.unwrap();
        assert_eq!(rows_of_t(&sm), 3);
        assert_eq!(*sm.applied().borrow(), Applied { index: 5, term: 1, time_ms: 1005 });
    }

    #[tokio::test]
    async fn a_crash_of_the_machine_before_any_snapshot_starts_the_database_over() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = StateMachine::open_on_boot(dir.path(), Some("boot-a".into())).unwrap();
            sm.apply(vec![membership(1), write(2, "CREATE TABLE t (x)")]).await.unwrap();
        }
        let mut sm = StateMachine::open_on_boot(dir.path(), Some("boot-b".into())).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, None);
        assert_eq!(rows_of_t(&sm), 0);
        sm.apply(vec![membership(1), write(2, "CREATE TABLE t (x)"), write(3, "INSERT INTO t VALUES (1)")])
            .await
            .unwrap();
        assert_eq!(rows_of_t(&sm), 1);
        drop(sm);
        // What `data.boot` never says counts as a crash too.
        std::fs::write(dir.path().join(BOOT_FILE), "?").unwrap();
        sm = StateMachine::open_on_boot(dir.path(), Some("boot-b".into())).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, None);
        assert_eq!(boot_file(dir.path()).trim(), "running boot-b");
    }

    #[tokio::test]
    async fn a_restart_of_the_process_alone_keeps_the_database() {
        let dir = tempfile::tempdir().unwrap();
        three_rows_one_snapshot(dir.path(), "boot-a").await;
        opens_with_every_entry_applied(dir.path(), "boot-a").await;
    }

    /// Open on `boot`: no rebuild, all five entries of
    /// [`three_rows_one_snapshot`] applied.
    async fn opens_with_every_entry_applied(dir: &Path, boot: &str) {
        let mut sm = StateMachine::open_on_boot(dir, Some(boot.into())).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, Some(id(5)));
        assert_eq!(rows_of_t(&sm), 3);
    }

    #[tokio::test]
    async fn a_closed_database_survives_a_restart_of_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        three_rows_one_snapshot(dir.path(), "boot-a").await;
        let sm = StateMachine::open_on_boot(dir.path(), Some("boot-a".into())).unwrap();
        sm.close().unwrap();
        assert_eq!(boot_file(dir.path()).trim(), "clean");
        drop(sm);
        opens_with_every_entry_applied(dir.path(), "boot-b").await;
    }

    #[tokio::test]
    async fn without_a_boot_id_the_database_syncs_its_checkpoints_and_is_never_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = StateMachine::open_on_boot(dir.path(), None).unwrap();
            assert_eq!(sm.shared.sync, SyncMode::Checkpoints);
            let mode: i64 = sm.shared.writer.lock().unwrap().query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
            assert_eq!(mode, 1, "NORMAL");
            sm.apply(vec![membership(1), write(2, "CREATE TABLE t (x)"), write(3, "INSERT INTO t VALUES (1)")])
                .await
                .unwrap();
        }
        assert!(!dir.path().join(BOOT_FILE).exists());
        let mut sm = StateMachine::open_on_boot(dir.path(), None).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, Some(id(3)));
        let sm2 = StateMachine::open_on_boot(tempfile::tempdir().unwrap().path(), Some("b".into())).unwrap();
        let mode: i64 = sm2.shared.writer.lock().unwrap().query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 0, "OFF");
    }

    #[tokio::test]
    async fn tables_of_the_first_layout_are_converted_and_keep_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("data.db")).unwrap();
            c.execute_batch(
                "CREATE TABLE _bulwark_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
                 CREATE TABLE _bulwark_requests (
                     id TEXT PRIMARY KEY, term INTEGER NOT NULL, idx INTEGER NOT NULL,
                     time_ms INTEGER NOT NULL, outcome TEXT NOT NULL) WITHOUT ROWID;
                 CREATE INDEX _bulwark_requests_time ON _bulwark_requests (time_ms);
                 CREATE TABLE t (x);
                 INSERT INTO t VALUES (7);",
            )
            .unwrap();
            meta_set(&c, "applied", &Some(id(3))).unwrap();
            meta_set(&c, "time_ms", &2001u64).unwrap();
            let done = ApplyOutcome::Done(vec![]);
            remember_request(&c, "late", &id(3), 2001, &done).unwrap();
            remember_request(&c, "early", &id(2), 2000, &done).unwrap();
        }
        let mut sm = StateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, Some(id(3)));
        assert_eq!(*sm.applied().borrow(), Applied { index: 3, term: 1, time_ms: 2001 });
        let c = open_read_only(&sm.db_path()).unwrap();
        let sql = |name: &str| -> String {
            c.query_row("SELECT sql FROM sqlite_master WHERE name = ?", [name], |r| r.get(0)).unwrap()
        };
        assert!(sql("_bulwark_meta").contains("WITHOUT ROWID"));
        assert!(sql("_bulwark_requests").contains("seq INTEGER PRIMARY KEY"));
        let ids: Vec<String> = c
            .prepare("SELECT id FROM _bulwark_requests ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, ["early", "late"], "in order of time");
        // A remembered id still applies once.
        let out = sm.apply(vec![write_once(4, "late", "INSERT INTO t VALUES (8)", 2002)]).await.unwrap();
        assert!(matches!(&out[0][0], ApplyOutcome::Replayed { index: 3, .. }), "{out:?}");
        assert_eq!(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 1);
        drop(sm);
        // Opening again leaves the converted tables as they are.
        let mut sm = StateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, Some(id(4)));
    }
}
