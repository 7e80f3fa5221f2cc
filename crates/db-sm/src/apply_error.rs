//! Which failures of an applied write are its result, and which are this
//! node's own trouble.
//!
//! Every node applies the same entries, in the same order, to the same data,
//! with the same binary. A write that fails because of its statements and
//! that data (a constraint, a syntax error, a type mismatch, a table or
//! column that does not exist, a statement the authorizer denies) fails the
//! same way on every node: that failure is the write's result
//! ([`ApplyOutcome::Failed`](bulwark_db_api::raft_types::ApplyOutcome::Failed)),
//! recorded and answered like any other.
//!
//! A failure of this node's environment (its disk is full, an I/O error,
//! no memory, a corrupt file, a lock held by something else, a file it
//! cannot open or write) says nothing about the write. Recording it as the
//! write's result would roll the write back on this node alone while the
//! entry commits everywhere: this node's database would differ from the
//! others' for good, silently. Such a failure stops the state machine
//! instead ([`ApplyError::Environmental`]): the entry is not recorded as
//! applied, nothing after it is applied, and once the cause is gone the
//! node applies the same entry again (see `StateMachine::apply`).
//!
//! SQLite's result code decides, by an exhaustive table of its primary
//! codes ([`kind_of_code`]). A code this table does not know counts as
//! environmental: a node that stops can be restarted once mended, a node
//! whose database diverged cannot be told from a healthy one.
//!
//! Owns: the classification. Must not touch: running statements
//! (`sql::run_writes`) or recording outcomes (the state machine).
use rusqlite::{ffi, Connection};

/// Whose failure a failed write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Follows from the statements and the data: the same on every node.
    Deterministic,
    /// This node's environment: must stop the state machine.
    Environmental,
}

/// The kind of a failure with SQLite's (extended) result `code`.
///
/// `SQLITE_OK`, `SQLITE_ROW` and `SQLITE_DONE` mean the last call into
/// SQLite succeeded: the write was refused by Bulwark's own checks before
/// SQLite ran it (`sql::run_writes`: a forbidden statement, a parameter
/// count that does not match), which depend on the statement alone.
pub(crate) fn kind_of_code(code: i32) -> FailureKind {
    use FailureKind::{Deterministic, Environmental};
    match code {
        // SQLite's "retry the prepare" and "no such snapshot" errors are
        // about the connection's state, not the statement.
        ffi::SQLITE_ERROR_RETRY | ffi::SQLITE_ERROR_SNAPSHOT => return Environmental,
        _ => {}
    }
    match code & 0xff {
        ffi::SQLITE_OK | ffi::SQLITE_ROW | ffi::SQLITE_DONE => Deterministic,
        // Syntax, no such table/column/function, a wrong argument, ...
        ffi::SQLITE_ERROR => Deterministic,
        // UNIQUE, NOT NULL, CHECK, FOREIGN KEY, a trigger's RAISE(...).
        ffi::SQLITE_CONSTRAINT => Deterministic,
        // Datatype mismatch (a non-integer rowid, a STRICT column).
        ffi::SQLITE_MISMATCH => Deterministic,
        // A string, blob or row larger than the (compiled-in) limits.
        ffi::SQLITE_TOOBIG => Deterministic,
        // A bind parameter index out of range.
        ffi::SQLITE_RANGE => Deterministic,
        // Denied by the authorizer, which judges the statement alone.
        ffi::SQLITE_AUTH => Deterministic,
        ffi::SQLITE_FULL => Environmental,
        ffi::SQLITE_IOERR => Environmental,
        ffi::SQLITE_NOMEM => Environmental,
        ffi::SQLITE_CORRUPT => Environmental,
        ffi::SQLITE_NOTADB => Environmental,
        ffi::SQLITE_BUSY => Environmental,
        ffi::SQLITE_LOCKED => Environmental,
        ffi::SQLITE_CANTOPEN => Environmental,
        ffi::SQLITE_READONLY => Environmental,
        ffi::SQLITE_PERM => Environmental,
        ffi::SQLITE_NOLFS => Environmental,
        ffi::SQLITE_PROTOCOL => Environmental,
        ffi::SQLITE_INTERRUPT => Environmental,
        // The schema changed under a prepared statement: a retry succeeds.
        ffi::SQLITE_SCHEMA => Environmental,
        // A statement aborted by a rollback or a callback.
        ffi::SQLITE_ABORT => Environmental,
        // Bugs (in SQLite or in how it is called): nothing to do with the
        // write.
        ffi::SQLITE_INTERNAL | ffi::SQLITE_MISUSE => Environmental,
        // Unused by SQLite today, or not errors at all.
        ffi::SQLITE_NOTFOUND | ffi::SQLITE_EMPTY | ffi::SQLITE_FORMAT => Environmental,
        ffi::SQLITE_NOTICE | ffi::SQLITE_WARNING => Environmental,
        _ => Environmental,
    }
}

/// SQLite's extended result code of the last call on `conn`.
///
/// Read it right after the failing call: the next successful call on the
/// connection resets it. `sql::run_writes` reports its failures as text,
/// so this is how the applier learns what SQLite said.
pub(crate) fn last_code(conn: &Connection) -> i32 {
    // SAFETY: the handle is valid while `conn` is borrowed, and the call
    // only reads the connection's last result code.
    unsafe { ffi::sqlite3_extended_errcode(conn.handle()) }
}

/// SQLite's text for a result code (`database or disk is full`).
pub(crate) fn describe_code(code: i32) -> String {
    ffi::Error::new(code).to_string()
}

/// Why entries could not be applied: the state machine stops, and the
/// entries are applied again once the cause is gone. None of these is a
/// write's result.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    /// A write failed because of this node, not because of the write.
    #[error(
        "entry {index}, write {position}: {message} ({}): a failure of this node, not of the write",
        describe_code(*code)
    )]
    Environmental { index: u64, position: usize, code: i32, message: String },
    /// A write's failure rolled back the whole apply transaction (`OR
    /// ROLLBACK`): the failure is the write's result, and the transaction
    /// is applied again with the write failed without running it.
    #[error("entry {index}, write {position}: {message}: rolled back the whole transaction")]
    RolledBack { index: u64, position: usize, message: String },
    /// A write marked as failed rolled the transaction back again: a bug.
    #[error("entry {index}, write {position}: rolled back its transaction again although it no longer runs")]
    RolledBackTwice { index: u64, position: usize },
    /// SQLite failed outside the client's statements (the transaction,
    /// Bulwark's own tables).
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_and_data_errors_are_results_and_everything_else_stops_the_node() {
        use FailureKind::{Deterministic, Environmental};
        for code in [
            ffi::SQLITE_OK,
            ffi::SQLITE_DONE,
            ffi::SQLITE_ERROR,
            ffi::SQLITE_ERROR_MISSING_COLLSEQ,
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            ffi::SQLITE_CONSTRAINT_TRIGGER,
            ffi::SQLITE_MISMATCH,
            ffi::SQLITE_TOOBIG,
            ffi::SQLITE_RANGE,
            ffi::SQLITE_AUTH,
        ] {
            assert_eq!(kind_of_code(code), Deterministic, "{}", describe_code(code));
        }
        for code in [
            ffi::SQLITE_FULL,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_NOMEM,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_BUSY,
            ffi::SQLITE_BUSY_SNAPSHOT,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_READONLY_DBMOVED,
            ffi::SQLITE_ERROR_RETRY,
            ffi::SQLITE_ERROR_SNAPSHOT,
            ffi::SQLITE_ABORT_ROLLBACK,
            ffi::SQLITE_SCHEMA,
            ffi::SQLITE_NOTADB,
            // Codes SQLite may add one day.
            60,
            255,
        ] {
            assert_eq!(kind_of_code(code), Environmental, "{}", describe_code(code));
        }
    }
}
