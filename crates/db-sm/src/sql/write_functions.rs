//! SQL functions the state machine's connection answers its own way, so
//! that a write gets the same value on every node.
//!
//! - `random()` and `randomblob(N)`: a generator seeded by the applier for
//!   each write from its log position.
//! - `changes()`, `total_changes()` and `last_insert_rowid()` count, in
//!   SQLite, what ran on the connection before: how a node batched its
//!   entries (Bulwark writes its own bookkeeping in each apply
//!   transaction) and when it last restarted. On this connection they
//!   count from the start of the write ([`begin_write`]):
//!   `last_insert_rowid()` is 0 until the write inserts a row,
//!   `changes()` is 0 until one of its statements has changed rows, and
//!   `total_changes()` counts the rows the write changed so far.
//!   (`changes()` is SQLite's own once the write changed rows: the last
//!   completed statement is then one of the write's.)
//!
//! Reads run on other connections and see SQLite's own functions.
use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

thread_local! {
    // `total_changes()` of the connection when the write on this thread
    // began.
    static CHANGES_BEFORE_WRITE: Cell<u64> = const { Cell::new(0) };
}

/// A write begins on `conn`: its counters start from here.
pub(crate) fn begin_write(conn: &Connection) {
    CHANGES_BEFORE_WRITE.set(conn.total_changes());
    // SAFETY: the handle is valid while `conn` is borrowed; the call only
    // sets the connection's last-insert rowid.
    unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(conn.handle(), 0) };
}

/// Install every function of the module doc on the state machine's
/// connection; `seed` is set by the applier before each write.
pub fn install_write_functions(conn: &Connection, seed: Arc<AtomicU64>) -> rusqlite::Result<()> {
    install_deterministic_random(conn, seed)?;
    install_write_counters(conn)
}

/// Replace `random()` and `randomblob(N)` on the state machine's connection
/// by a generator whose seed the applier sets per log entry.
pub fn install_deterministic_random(conn: &Connection, seed: Arc<AtomicU64>) -> rusqlite::Result<()> {
    fn next(state: &AtomicU64) -> u64 {
        // splitmix64
        let mut z = state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let s = seed.clone();
    conn.create_scalar_function("random", 0, FunctionFlags::SQLITE_UTF8, move |_| Ok(next(&s) as i64))?;
    let s = seed;
    conn.create_scalar_function("randomblob", 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let n = ctx.get::<i64>(0).unwrap_or(1).clamp(1, 1 << 20) as usize;
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&next(&s).to_le_bytes());
        }
        v.truncate(n);
        Ok(v)
    })?;
    Ok(())
}

/// `changes()` and `total_changes()` counted from the start of the write
/// (`last_insert_rowid()` is SQLite's own, reset by [`begin_write`]).
fn install_write_counters(conn: &Connection) -> rusqlite::Result<()> {
    fn changed_in_write(conn: &Connection) -> u64 {
        conn.total_changes().saturating_sub(CHANGES_BEFORE_WRITE.get())
    }
    conn.create_scalar_function("total_changes", 0, FunctionFlags::SQLITE_UTF8, |ctx| {
        // SAFETY: the connection is only used on this thread, inside the
        // call, to read a counter.
        let conn = unsafe { ctx.get_connection()? };
        Ok(changed_in_write(&conn) as i64)
    })?;
    conn.create_scalar_function("changes", 0, FunctionFlags::SQLITE_UTF8, |ctx| {
        // SAFETY: as above.
        let conn = unsafe { ctx.get_connection()? };
        Ok(if changed_in_write(&conn) == 0 { 0 } else { conn.changes() as i64 })
    })?;
    Ok(())
}
