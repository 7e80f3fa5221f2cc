//! Applying committed entries: one SQLite transaction per batch of
//! entries, one savepoint per write, and the line between a write's own
//! failure (its result) and this node's (see `apply_error`).
use super::{applied_of, Shared};
use crate::apply_error::{kind_of_code, last_code, ApplyError, FailureKind};
use crate::bulwark_tables::meta_set;
use crate::entry_clock::EntryTime;
use crate::request_ids::{earlier_request, prune_before, remember_request};
use crate::sql::{self, WriteError};
use bulwark_db_api::raft_types::{storage_err, ApplyOutcome, Entry, LogId, StorageError, StoredMembership, Write};
use openraft::{EntryPayload, ErrorVerb};
use rusqlite::Connection;
use std::sync::atomic::Ordering;

pub(super) fn apply_entries(shared: &Shared, entries: Vec<Entry>) -> Result<Vec<Vec<ApplyOutcome>>, ApplyError> {
    let mut conn = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
    apply_locked(shared, &mut conn, entries)
}

/// The writes whose failure rolled back the whole apply transaction
/// (`INSERT OR ROLLBACK`, `ON CONFLICT ROLLBACK`), by log index and
/// position, with their failure.
type RolledBack = std::collections::HashMap<(u64, usize), String>;

/// Apply `entries` in one transaction (see [`apply_once`]). A write whose
/// failure rolls back the whole transaction is a deterministic failure, but
/// it took the writes before it down too: the transaction is applied again
/// with that write failed without running it, so every node ends with the
/// same rows and outcomes however its entries were batched.
pub(super) fn apply_locked(
    shared: &Shared,
    conn: &mut Connection,
    entries: Vec<Entry>,
) -> Result<Vec<Vec<ApplyOutcome>>, ApplyError> {
    let mut rolled_back = RolledBack::new();
    loop {
        match apply_once(shared, conn, &entries, &rolled_back) {
            Err(ApplyError::RolledBack { index, position, message }) => {
                tracing::info!(
                    index,
                    position,
                    "a write's failure rolled back its transaction: applying again without it"
                );
                if rolled_back.insert((index, position), message).is_some() {
                    return Err(ApplyError::RolledBackTwice { index, position });
                }
            }
            done => return done,
        }
    }
}

/// The seed of `random()` for the write at `position` in the entry at
/// `index` (position 0 keeps the seed entries had before group commit).
fn random_seed(index: u64, position: usize) -> u64 {
    index.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add((position as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Where a write is in the log (its entry, and its place in the entry's
/// batch) and the entry's time, SQLite's "now" while it runs.
#[derive(Clone, Copy)]
struct WriteAt<'a> {
    log_id: &'a LogId,
    position: usize,
    time_ms: u64,
}

/// Run one write in its own savepoint: it commits or rolls back alone.
/// A failure of the write itself is its outcome; a failure of this node's
/// environment is an error (see `apply_error`), and nothing of the write is
/// recorded.
fn apply_write(
    shared: &Shared,
    tx: &mut rusqlite::Transaction<'_>,
    at: WriteAt<'_>,
    write: &Write,
    rolled_back: &RolledBack,
) -> Result<ApplyOutcome, ApplyError> {
    let WriteAt { log_id, position, time_ms } = at;
    if let Some(replayed) = write.request_id.as_deref().map(|id| earlier_request(tx, id)).transpose()?.flatten() {
        return Ok(replayed);
    }
    let outcome = match rolled_back.get(&(log_id.index, position)) {
        Some(message) => ApplyOutcome::Failed(message.clone()),
        None => run_write(shared, tx, at, write)?,
    };
    if let Some(id) = &write.request_id {
        remember_request(tx, id, log_id, time_ms, &outcome)?;
    }
    Ok(outcome)
}

/// Run the statements of one write in a savepoint of their own, with the
/// entry's time as SQLite's "now" (see `entry_clock`).
fn run_write(
    shared: &Shared,
    tx: &mut rusqlite::Transaction<'_>,
    at: WriteAt<'_>,
    write: &Write,
) -> Result<ApplyOutcome, ApplyError> {
    let WriteAt { log_id, position, time_ms } = at;
    shared.seed.store(random_seed(log_id.index, position), Ordering::Relaxed);
    let _now = EntryTime::set(time_ms);
    // Opening the savepoint is a successful call into SQLite: the
    // connection's last result code is no longer any earlier failure's.
    let sp = WriteSavepoint::open(tx)?;
    let index = log_id.index;
    Ok(match sql::run_writes_within(tx, &write.statements, shared.write_limits) {
        Ok(results) => {
            sp.release()?;
            ApplyOutcome::Done(results)
        }
        // Stopped by its step budget, on every node at the same step.
        Err(WriteError::OverBudget(message)) => {
            if tx.is_autocommit() {
                // A writing statement was interrupted: SQLite rolled back
                // the whole transaction.
                return Err(ApplyError::RolledBack { index, position, message });
            }
            sp.rollback()?;
            ApplyOutcome::Failed(message)
        }
        Err(WriteError::Failed(message)) => {
            // What SQLite said about the failing call, read before the
            // rollback below resets it.
            let code = last_code(tx);
            if kind_of_code(code) == FailureKind::Environmental {
                return Err(ApplyError::Environmental { index, position, code, message });
            }
            if tx.is_autocommit() {
                // The statement rolled back the whole transaction.
                return Err(ApplyError::RolledBack { index, position, message });
            }
            sp.rollback()?;
            ApplyOutcome::Failed(message)
        }
    })
}

/// One write's savepoint, opened and closed through cached statements:
/// rusqlite's `Savepoint` has SQLite parse `SAVEPOINT` and `RELEASE` anew
/// for every write (a few percent of a node's CPU under small writes).
/// Dropped while open (an error on the way), it rolls the write back, as
/// rusqlite's does; after a statement rolled back the whole transaction
/// there is no savepoint left and that rollback fails, unheard.
struct WriteSavepoint<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> WriteSavepoint<'c> {
    fn open(conn: &'c Connection) -> rusqlite::Result<WriteSavepoint<'c>> {
        conn.prepare_cached("SAVEPOINT _bulwark_write")?.execute([])?;
        Ok(WriteSavepoint { conn, open: true })
    }

    /// Keep the write: it commits with the apply transaction.
    fn release(mut self) -> rusqlite::Result<()> {
        self.open = false;
        self.conn.prepare_cached("RELEASE _bulwark_write")?.execute([]).map(drop)
    }

    /// Undo the write, keeping the transaction's earlier writes.
    fn rollback(mut self) -> rusqlite::Result<()> {
        self.open = false;
        self.undo()
    }

    fn undo(&self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("ROLLBACK TO _bulwark_write")?.execute([])?;
        self.conn.prepare_cached("RELEASE _bulwark_write")?.execute([]).map(drop)
    }
}

impl Drop for WriteSavepoint<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.undo();
        }
    }
}

/// Apply `entries` in one transaction, the writes in `rolled_back` failed
/// without running. On an error nothing of them is recorded: the
/// transaction is rolled back and the state stays at the last entry
/// applied before.
fn apply_once(
    shared: &Shared,
    conn: &mut Connection,
    entries: &[Entry],
    rolled_back: &RolledBack,
) -> Result<Vec<Vec<ApplyOutcome>>, ApplyError> {
    let (mut last, mut membership) = shared.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut membership_changed = false;
    let mut time_ms = shared.applied.borrow().time_ms;
    let mut out = Vec::with_capacity(entries.len());
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for e in entries {
        if Some(e.log_id) <= last {
            // Already applied before a crash (idempotent replay).
            out.push(Vec::new());
            continue;
        }
        let outcomes = match &e.payload {
            EntryPayload::Blank => Vec::new(),
            EntryPayload::Membership(m) => {
                membership = StoredMembership::new(Some(e.log_id), m.clone());
                membership_changed = true;
                Vec::new()
            }
            EntryPayload::Normal(batch) => {
                time_ms = batch.time_ms;
                prune_before(&tx, e.log_id.index, batch.time_ms)?;
                let mut outcomes = Vec::with_capacity(batch.writes.len());
                for (position, write) in batch.writes.iter().enumerate() {
                    let at = WriteAt { log_id: &e.log_id, position, time_ms: batch.time_ms };
                    outcomes.push(apply_write(shared, &mut tx, at, write, rolled_back)?);
                }
                outcomes
            }
        };
        last = Some(e.log_id);
        out.push(outcomes);
    }
    meta_set(&tx, "applied", &last)?;
    if membership_changed {
        meta_set(&tx, "membership", &membership)?;
    }
    meta_set(&tx, "time_ms", &time_ms)?;
    tx.commit()?;
    let applied = applied_of(last, time_ms);
    *shared.state.lock().unwrap_or_else(|p| p.into_inner()) = (last, membership);
    shared.applied.send_replace(applied);
    Ok(out)
}

/// Log why applying stopped, as a storage error for openraft (which stops
/// this node's Raft on it).
pub(super) fn stopped_applying(e: ApplyError) -> StorageError {
    tracing::error!(
        "the database stopped applying committed entries: {e}. Nothing was recorded or skipped: Raft stops on \
         this node. Mend the cause (free disk space, replace a failing disk, ...) and restart the node: it applies \
         the same entries again"
    );
    storage_err(ErrorVerb::Write, e)
}
