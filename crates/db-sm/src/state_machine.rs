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
//! the machine. `data.boot` tells the two apart, and after a crash of the
//! machine the database is rebuilt from the last snapshot and the log (see
//! `crash_rebuild`). Snapshots are fsynced before the log before them is
//! purged, so nothing committed is lost. With `synchronous = NORMAL`
//! every checkpoint had to sync the WAL written since the last one, tens
//! of MB a second under load, and held up every node's log syncs on a
//! shared disk meanwhile (figures: docs/BENCHMARKS.md, "The disk:
//! checkpoints and SQLite syncs"). Where no boot id can be read, the database syncs its
//! checkpoints as before (`synchronous = NORMAL`) and is never rebuilt.
//!
//! # Failures while applying
//!
//! An entry may carry many client writes (the primary's group commit); each
//! runs in its own savepoint. A write that fails because of its statements
//! and the data is rolled back alone and its failure is its result, the
//! same on every node. A failure of this node's environment (disk full, an
//! I/O error, no memory, a corrupt file, ...; see `apply_error`) is never
//! a result: the whole apply transaction is rolled back, nothing is
//! recorded as applied, and `apply` returns a storage error, on which
//! openraft stops this node's Raft (`/health` answers 503). Nothing is
//! skipped: when the node is started again, openraft applies the log from
//! the last entry the database recorded, so the same entry runs again, and
//! succeeds once the cause is gone (space freed, the disk replaced).
//!
//! The WAL is checkpointed by a thread of its own (`start_checkpointer`),
//! never inside an apply.
//!
//! Reads use a small pool of connections opened `SQLITE_OPEN_READ_ONLY`
//! with `PRAGMA query_only = 1`: a write through them is impossible.
//!
//! Snapshots are `VACUUM INTO` copies of the database in one file,
//! `snapshot.db`, that says by itself which log id it holds (see
//! `snapshot_file`); a received one is checked before it is copied into
//! the live database with SQLite's backup API.
use crate::bulwark_tables::{migrate, read_state, META_DDL};
use crate::crash_rebuild::{crashed_since, current_boot_id, rebuild_from_snapshot, write_boot_file, BOOT_FILE};
use crate::durable::{sync_file, unless_missing};
use crate::entry_clock;
use crate::snapshot_file::{self, SNAPSHOT_FILE};
use crate::sql;
use apply::{apply_entries, apply_locked, stopped_applying};
use bulwark_db_api::raft_types::{
    storage_err, ApplyOutcome, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use checkpoint::{start_checkpointer, WAL_TRUNCATE_FRAMES};
use openraft::storage::RaftStateMachine;
use openraft::{ErrorVerb, RaftSnapshotBuilder};
pub use read_pool::{open_read_only, ReadError, ReadPool};
use rusqlite::{Connection, OpenFlags};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
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
    /// Bounds on each client write (`max_write_steps`).
    write_limits: sql::WriteLimits,
    state: Mutex<(Option<LogId>, StoredMembership)>,
    applied: watch::Sender<Applied>,
    /// Held while `snapshot.db` is replaced or read, so a reader never
    /// sees one file's metadata with another's bytes.
    snapshots: Mutex<()>,
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

/// The SQLite state machine handed to openraft.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

/// Builds snapshots without blocking the applier.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

fn applied_of(last: Option<LogId>, time_ms: u64) -> Applied {
    Applied { index: last.map_or(0, |l| l.index), term: last.map_or(0, |l| l.leader_id.term), time_ms }
}

/// The state machine's connection, on the VFS whose clock is the time of
/// the entry being applied (see `entry_clock`).
fn open_writer(path: &Path, sync: SyncMode) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), entry_clock::VFS_NAME)?;
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

/// Why the database could not be opened, closed, snapshotted or restored
/// from a snapshot: this node's SQLite or files failed (or a snapshot
/// received is not what it claims); retrying the same request does not
/// help until the cause is fixed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Clock(#[from] entry_clock::ClockError),
    /// A file operation on `path`.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An operation described by `context`.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A SQLite operation described by `context`.
    #[error("{context}: {source}")]
    SqliteAt {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Snapshot(#[from] snapshot_file::SnapshotError),
    #[error("refused the snapshot {meta}: {source}; the database is left as it was")]
    Refused {
        meta: String,
        #[source]
        source: snapshot_file::SnapshotError,
    },
    #[error("{SNAPSHOT_FILE} vanished after it was published")]
    Vanished,
}

fn sqlite_at(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::SqliteAt { context, source }
}

fn io_at(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

impl StateMachine {
    /// Open (or create) the database in `dir`. After a crash of the machine
    /// while it was open it is first rebuilt from the last snapshot (see the
    /// module doc); if a stored snapshot is newer than what the database
    /// applied, the snapshot is restored. With the default write limits
    /// (tests; nodes pass their configured ones to `open_with`).
    #[cfg(test)]
    pub fn open(dir: &Path) -> Result<StateMachine, StoreError> {
        StateMachine::open_with(dir, sql::WriteLimits::default())
    }

    /// `StateMachine::open`, every client write within `write_limits`
    /// (from the node's configuration: `max_write_steps`).
    pub fn open_with(dir: &Path, write_limits: sql::WriteLimits) -> Result<StateMachine, StoreError> {
        StateMachine::open_on_boot_with(dir, current_boot_id(), write_limits)
    }

    /// [`StateMachine::open`] on the boot `boot` (`None`: unknown).
    #[cfg(test)]
    fn open_on_boot(dir: &Path, boot: Option<String>) -> Result<StateMachine, StoreError> {
        StateMachine::open_on_boot_with(dir, boot, sql::WriteLimits::default())
    }

    /// [`StateMachine::open_with`] on the boot `boot` (`None`: unknown).
    fn open_on_boot_with(
        dir: &Path,
        boot: Option<String>,
        write_limits: sql::WriteLimits,
    ) -> Result<StateMachine, StoreError> {
        entry_clock::install()?;
        let path = dir.join("data.db");
        snapshot_file::remove_legacy_metadata(dir)?;
        let io = |source: std::io::Error| StoreError::File { path: dir.join(BOOT_FILE), source };
        let sync = match &boot {
            Some(boot) => {
                if crashed_since(dir, boot).map_err(io)? {
                    rebuild_from_snapshot(dir).map_err(io_at("rebuilding the database"))?;
                }
                write_boot_file(dir, &format!("running {boot}")).map_err(io)?;
                SyncMode::RebuiltAfterCrash
            }
            None => {
                tracing::info!("no boot id (/proc/sys/kernel/random/boot_id): the database syncs its checkpoints");
                SyncMode::Checkpoints
            }
        };
        let mut conn = open_writer(&path, sync).map_err(sqlite_at(path.display().to_string()))?;
        let mut state = read_state(&conn)?;
        if let Some(snapshot) = snapshot_file::current_path(dir)? {
            let holds = snapshot_file::state_of(&snapshot)?;
            if holds.last > state.last {
                tracing::warn!(snapshot = ?holds.last, applied = ?state.last, "database is behind its snapshot; restoring the snapshot");
                restore_into(&mut conn, &snapshot)?;
                state = read_state(&conn)?;
            }
        }
        let seed = Arc::new(AtomicU64::new(0));
        sql::install_write_functions(&conn, seed.clone())?;
        let (tx, _) = watch::channel(applied_of(state.last, state.time_ms));
        let (stop, stopped) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            sync,
            writer: Mutex::new(conn),
            seed,
            write_limits,
            state: Mutex::new((state.last, state.membership)),
            applied: tx,
            snapshots: Mutex::new(()),
            checkpointer: Mutex::new(None),
        });
        let thread = start_checkpointer(Arc::downgrade(&shared), path, sync, stopped, WAL_TRUNCATE_FRAMES)
            .map_err(|source| StoreError::Io { context: "starting the checkpoint thread".into(), source })?;
        *shared.checkpointer.lock().unwrap_or_else(|p| p.into_inner()) = Some((stop, thread));
        Ok(StateMachine { shared })
    }

    /// Close the database for a clean stop: stop the checkpoints, close the
    /// writer, fsync the database and its WAL, and mark `data.boot` clean,
    /// so a restart of the machine after this does not rebuild it. Call it
    /// after Raft has stopped; an apply after it goes nowhere (it is not
    /// recorded, so the log applies it again at the next start). Blocking.
    pub fn close(&self) -> Result<(), StoreError> {
        let shared = &self.shared;
        let checkpointer = shared.checkpointer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, thread)) = checkpointer {
            drop(stop);
            let _ = thread.join();
        }
        let mut writer = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let closed = Connection::open_in_memory()?;
        std::mem::replace(&mut *writer, closed).close().map_err(|(_, e)| sqlite_at("closing the database")(e))?;
        if shared.sync == SyncMode::RebuiltAfterCrash {
            for name in ["data.db", "data.db-wal"] {
                unless_missing(sync_file(&shared.dir.join(name))).map_err(io_at(format!("syncing {name}")))?;
            }
            write_boot_file(&shared.dir, "clean").map_err(io_at(BOOT_FILE))?;
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

/// Install the snapshot received as `bytes`, announced as `meta`: checked
/// first (see `snapshot_file::verify`), so a snapshot that is not what it
/// claims leaves the live database and the current snapshot as they were;
/// then published as the current snapshot and copied into the database.
fn install_received(shared: &Shared, meta: &SnapshotMeta, bytes: Vec<u8>) -> Result<(), StoreError> {
    let tmp = shared.dir.join("snapshot.recv.db");
    std::fs::write(&tmp, bytes).map_err(|source| StoreError::File { path: tmp.clone(), source })?;
    if let Err(source) = snapshot_file::verify(&tmp, meta) {
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::Refused { meta: meta.to_string(), source });
    }
    let _publishing = shared.snapshots.lock().unwrap_or_else(|p| p.into_inner());
    // Published (fsynced) first: if anything below fails or the node
    // crashes, the next start finds the database behind its snapshot and
    // restores it.
    snapshot_file::publish(&shared.dir, &tmp)?;
    let mut conn = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
    restore_into(&mut conn, &shared.dir.join(SNAPSHOT_FILE)).map_err(sqlite_at("installing snapshot"))?;
    // Durable before the log may be purged: the snapshot file, published
    // above (a database rebuilt after a crash is copied from it), or this
    // checkpoint where the database syncs its checkpoints.
    if shared.sync == SyncMode::Checkpoints {
        conn.query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))?;
    }
    let state = read_state(&conn)?;
    let applied = applied_of(state.last, state.time_ms);
    *shared.state.lock().unwrap_or_else(|p| p.into_inner()) = (state.last, state.membership);
    shared.applied.send_replace(applied);
    tracing::info!(snapshot = %meta, "installed snapshot");
    Ok(())
}

/// Copy the database into a new snapshot and publish it, unless the
/// current snapshot is already newer (one installed meanwhile); answer the
/// current snapshot.
fn build(shared: &Shared) -> Result<Snapshot, StoreError> {
    let dir = &shared.dir;
    let tmp = dir.join("snapshot.tmp.db");
    unless_missing(std::fs::remove_file(&tmp)).map_err(|source| StoreError::File { path: tmp.clone(), source })?;
    if shared.sync == SyncMode::Checkpoints {
        // Durable up to here before the log can be compacted. (A database
        // rebuilt after a crash relies on the snapshot file, fsynced when
        // published, instead.)
        let conn = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))?;
    }
    let reader = Connection::open_with_flags(dir.join("data.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    reader.execute("VACUUM INTO ?", [tmp.to_string_lossy()]).map_err(sqlite_at("VACUUM INTO"))?;
    drop(reader);
    let holds = snapshot_file::state_of(&tmp)?;
    let _publishing = shared.snapshots.lock().unwrap_or_else(|p| p.into_inner());
    let newer = match snapshot_file::current_path(dir)? {
        Some(current) => snapshot_file::state_of(&current)?.last > holds.last,
        None => false,
    };
    if newer {
        let _ = std::fs::remove_file(&tmp);
    } else {
        snapshot_file::publish(dir, &tmp)?;
    }
    let (meta, bytes) = snapshot_file::read_current(dir)?.ok_or(StoreError::Vanished)?;
    tracing::info!(snapshot = %meta, bytes = bytes.len(), kept_newer = newer, "built snapshot");
    Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
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
        // one SQLite transaction without fsync takes tens of microseconds,
        // less than handing it to a blocking thread and back, which also
        // costs two context switches per batch on every node. When a
        // checkpoint (a snapshot's or the checkpoint thread's) holds the
        // writer, the batch waits on a blocking thread instead, so the
        // runtime (and the heartbeats) never waits for it.
        let entries: Vec<Entry> = entries.into_iter().collect();
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::before_apply(&self.shared.dir).await;
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
        outcome.map_err(stopped_applying)
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
        tokio::task::spawn_blocking(move || install_received(&shared, &meta, snapshot.into_inner()))
            .await
            .map_err(|e| storage_err(ErrorVerb::Write, e))?
            .map_err(|e| {
                tracing::error!("{e}");
                storage_err(ErrorVerb::Write, e)
            })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let _reading = shared.snapshots.lock().unwrap_or_else(|p| p.into_inner());
            let current = snapshot_file::read_current(&shared.dir)?;
            Ok(current.map(|(meta, bytes)| Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) }))
        })
        .await
        .map_err(|e| storage_err(ErrorVerb::Read, e))?
        .map_err(|e: snapshot_file::SnapshotError| storage_err(ErrorVerb::Read, e))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || build(&shared))
            .await
            .map_err(|e| storage_err(ErrorVerb::Read, e))?
            .map_err(|e| storage_err(ErrorVerb::Read, e))
    }
}

mod apply;
mod checkpoint;
#[cfg(test)]
mod determinism_tests;
mod read_pool;
#[cfg(test)]
mod safety_tests;
#[cfg(test)]
mod tests;
