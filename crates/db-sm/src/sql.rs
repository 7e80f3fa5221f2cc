//! SQL handling shared by the primary and the state machine: refusing
//! statements that would break the replication contract, binding
//! parameters, running writes and reads.
//!
//! Determinism: every replica applies the same statements and must end up
//! byte-for-byte identical. Statements enter the log as the client wrote
//! them; what SQL could read that differs between nodes is fixed or refused
//! where SQLite resolves it, whatever the spelling:
//! - "now", in every form (functions, `CURRENT_TIMESTAMP`, a bound or
//!   computed `'now'`, a column's `DEFAULT`), is the entry's time, the
//!   primary's clock when it logged the write: the state machine's
//!   connection reads time through a VFS whose clock is the entry's (see
//!   `entry_clock`); local time (`'localtime'`, `'utc'`) fails in writes;
//! - `random()` and `randomblob(N)` are replaced on the state machine's
//!   connection by a generator seeded with the log position;
//! - the connection's history (`changes()`, ...), the SQLite build, the file
//!   layout and statistics are refused in writes by the authorizer (see
//!   `node_local`);
//! - a write runs a bounded number of VM steps (see [`WriteLimits`]).
//!
//! Every connection that runs API statements is hardened on first use (see
//! `harden`): an SQLite authorizer, double-quoted string literals off,
//! limits on SQL length, value size and attached databases, a deadline for
//! reads and a step budget for writes.
use bulwark_db_api::api::{Column, Params, Rows, Statement, StatementResult, Value};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

mod guard;
mod node_local;
mod write_functions;
pub use guard::{check_length, in_api_write, WriteLimits, MAX_SQL_BYTES, MAX_VALUE_BYTES, QUERY_TIME_LIMIT};
use guard::{harden, ApiCaller};
pub use write_functions::{install_deterministic_random, install_write_functions};

/// Most rows one query may return.
pub const MAX_ROWS: usize = 100_000;

fn value_of(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

#[derive(Debug, PartialEq)]
enum Tok<'a> {
    Word(&'a str),
    Str(&'a str),
    Punct(char),
    /// Whitespace, comments, quoted identifiers, numbers: copied verbatim.
    Other,
}

/// Split SQL into tokens with their byte ranges.
fn tokens(sql: &str) -> Vec<(Tok<'_>, std::ops::Range<usize>)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        let tok = match c {
            b'\'' => {
                i += 1;
                loop {
                    if i >= b.len() {
                        break;
                    }
                    if b[i] == b'\'' {
                        if i + 1 < b.len() && b[i + 1] == b'\'' {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                let end = if i > start + 1 && b[i - 1] == b'\'' { i - 1 } else { i };
                Tok::Str(&sql[start + 1..end.max(start + 1)])
            }
            b'"' | b'`' | b'[' => {
                let close = if c == b'[' { b']' } else { c };
                i += 1;
                while i < b.len() && b[i] != close {
                    i += 1;
                }
                i = (i + 1).min(b.len());
                Tok::Other
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                Tok::Other
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(b.len());
                Tok::Other
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80) {
                    i += 1;
                }
                Tok::Word(&sql[start..i])
            }
            c if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                Tok::Other
            }
            c if c.is_ascii_whitespace() => {
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                Tok::Other
            }
            _ => {
                // One (possibly multi-byte) character.
                let ch = sql[i..].chars().next().unwrap_or(' ');
                i += ch.len_utf8();
                Tok::Punct(ch)
            }
        };
        out.push((tok, start..i));
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS.SSS` (UTC) of a Unix time in milliseconds.
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}", sod / 3600, sod % 3600 / 60, sod % 60, ms % 1000)
}

/// Statements the API refuses in a write, by first keyword, with the reason.
fn forbidden(first: &str) -> Option<&'static str> {
    Some(match first.to_ascii_uppercase().as_str() {
        "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" => {
            "transaction control is not allowed: the statements of one /v1/execute request are already one transaction"
        }
        "ATTACH" | "DETACH" => "ATTACH/DETACH is not allowed: replicas have only the replicated database",
        "PRAGMA" => "PRAGMA is not allowed in writes: it would change one node's settings, not the replicated data",
        "VACUUM" => "VACUUM is not allowed through the API: nodes compact on their own",
        _ => return None,
    })
}

/// Why a statement is refused, before SQLite runs it or by SQLite. The
/// request (or the data it meets) is at fault: sending it again unchanged
/// fails the same way.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    /// Transaction control, ATTACH, PRAGMA or VACUUM.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("`{0}`: names starting with _bulwark are reserved for replication metadata")]
    Reserved(String),
    #[error("one SQL statement per entry: put several statements in the `statements` list")]
    NotSingle,
    #[error("the SQL text is {len} bytes; at most {max} are allowed (bind large values as parameters)", max = MAX_SQL_BYTES)]
    TooLong { len: usize },
    #[error("the statement has {expected} parameters but none were given")]
    NoParameters { expected: usize },
    #[error("the statement has {expected} parameters but {given} were given")]
    ParameterCount { expected: usize, given: usize },
    #[error("the statement has no parameter named {0}")]
    NoParameterNamed(String),
    #[error("{0}")]
    Bind(#[source] rusqlite::Error),
    /// A value of a result row could not be read.
    #[error("{0}")]
    Row(#[source] rusqlite::Error),
    #[error("preparing the connection: {0}")]
    Harden(#[source] rusqlite::Error),
    /// SQLite's error, with the reason Bulwark refused it when it did
    /// (see `guard::explain`).
    #[error("{message}")]
    Sqlite {
        message: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("only read-only statements are allowed in /v1/query; send writes to /v1/execute")]
    NotReadOnly,
    #[error("the result has more than {max} rows; add a LIMIT", max = MAX_ROWS)]
    TooManyRows,
}

/// Check one write statement on the primary before it enters the log:
/// refuse transaction control, ATTACH, PRAGMA, VACUUM and `_bulwark*`
/// names with a clear error. The statement is logged as written (its
/// "now" is the entry's time wherever it is applied; see `entry_clock`).
pub fn check_write(sql: &str) -> Result<(), StatementError> {
    if let Some(why) = first_keyword(sql).as_deref().and_then(forbidden) {
        return Err(StatementError::Forbidden(why));
    }
    check_reserved(sql)
}

/// Refuse SQL that names a `_bulwark*` object unquoted (the authorizer
/// refuses every other spelling).
fn check_reserved(sql: &str) -> Result<(), StatementError> {
    match tokens(sql)
        .into_iter()
        .find(|(t, _)| matches!(t, Tok::Word(w) if w.to_ascii_lowercase().starts_with("_bulwark")))
    {
        Some((Tok::Word(w), _)) => Err(StatementError::Reserved(w.to_string())),
        _ => Ok(()),
    }
}

/// Refuse SQL text holding more than one statement (SQLite would silently
/// run only the first).
pub fn check_single(sql: &str) -> Result<(), StatementError> {
    let toks = tokens(sql);
    if let Some(semi) = toks.iter().position(|(t, _)| *t == Tok::Punct(';')) {
        if toks[semi + 1..].iter().any(|(t, _)| *t != Tok::Other && *t != Tok::Punct(';')) {
            return Err(StatementError::NotSingle);
        }
    }
    Ok(())
}

/// The first keyword of a statement (for error messages and checks).
pub fn first_keyword(sql: &str) -> Option<String> {
    tokens(sql).into_iter().find_map(|(t, _)| match t {
        Tok::Word(w) => Some(w.to_ascii_uppercase()),
        _ => None,
    })
}

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &Params) -> Result<(), StatementError> {
    let expected = stmt.parameter_count();
    match params {
        Params::None => {
            if expected > 0 {
                return Err(StatementError::NoParameters { expected });
            }
        }
        Params::Positional(vals) => {
            if vals.len() != expected {
                return Err(StatementError::ParameterCount { expected, given: vals.len() });
            }
            for (i, v) in vals.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, v).map_err(StatementError::Bind)?;
            }
        }
        Params::Named(map) => {
            for (k, v) in map {
                let name = if k.starts_with([':', '@', '$']) { k.clone() } else { format!(":{k}") };
                let idx = stmt
                    .parameter_index(&name)
                    .map_err(StatementError::Bind)?
                    .ok_or_else(|| StatementError::NoParameterNamed(name.clone()))?;
                stmt.raw_bind_parameter(idx, v).map_err(StatementError::Bind)?;
            }
            if map.len() != expected {
                return Err(StatementError::ParameterCount { expected, given: map.len() });
            }
        }
    }
    Ok(())
}

fn total_changes(conn: &Connection) -> i64 {
    // SAFETY: the handle is valid for the connection's lifetime and the
    // call only reads a counter.
    unsafe { rusqlite::ffi::sqlite3_total_changes64(conn.handle()) }
}

/// Why a write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Refused by Bulwark's checks or failed in SQLite: SQLite's last
    /// result code on the connection tells whether because of the write
    /// and the data or because of this node (see `apply_error`).
    #[error("{0}")]
    Failed(String),
    /// Stopped after [`WriteLimits::max_steps`] VM instructions: the same
    /// on every node. If the interrupted statement was writing, SQLite
    /// rolled back the whole transaction.
    #[error("{0}")]
    OverBudget(String),
}

/// Run write statements on `conn` (inside a transaction or savepoint the
/// caller owns) within the default [`WriteLimits`].
pub fn run_writes(conn: &Connection, statements: &[Statement]) -> Result<Vec<StatementResult>, WriteError> {
    run_writes_within(conn, statements, WriteLimits::default())
}

/// Run write statements on `conn` (inside a transaction or savepoint the
/// caller owns), all of them within `limits`. Errors carry SQLite's
/// message.
///
/// The statements run under the API's rules (see `harden`); a statement
/// naming a `_bulwark*` object unquoted is refused before SQLite sees it,
/// so no API statement can share the text, and so the prepared-statement
/// cache entry, of one of Bulwark's own.
pub fn run_writes_within(
    conn: &Connection,
    statements: &[Statement],
    limits: WriteLimits,
) -> Result<Vec<StatementResult>, WriteError> {
    harden(conn).map_err(|e| WriteError::Failed(format!("preparing the connection: {e}")))?;
    let _api = ApiCaller::write(limits);
    write_functions::begin_write(conn);
    let mut results = Vec::with_capacity(statements.len());
    for (n, s) in statements.iter().enumerate() {
        let at = |e: String| {
            let e = if statements.len() > 1 { format!("statement {}: {e}", n + 1) } else { e };
            if guard::over_budget() {
                WriteError::OverBudget(e)
            } else {
                WriteError::Failed(e)
            }
        };
        if let Some(why) = first_keyword(&s.sql).as_deref().and_then(forbidden) {
            return Err(at(why.to_string()));
        }
        check_single(&s.sql).map_err(|e| at(e.to_string()))?;
        check_reserved(&s.sql).map_err(|e| at(e.to_string()))?;
        // Cached: the same few statements arrive again and again, and
        // parsing one is a large part of applying it.
        guard::compiling();
        let mut stmt = conn.prepare_cached(&s.sql).map_err(|e| at(guard::explain(e).to_string()))?;
        bind(&mut stmt, &s.params).map_err(|e| at(e.to_string()))?;
        guard::new_statement(conn);
        let before = total_changes(conn);
        {
            let mut rows = stmt.raw_query();
            while rows.next().map_err(|e| at(guard::explain(e).to_string()))?.is_some() {}
        }
        let after = total_changes(conn);
        let rows_affected = if after > before { conn.changes() } else { 0 };
        let inserts = matches!(first_keyword(&s.sql).as_deref(), Some("INSERT" | "REPLACE"));
        let last_insert_id = if inserts && rows_affected > 0 { conn.last_insert_rowid() } else { 0 };
        results.push(StatementResult { rows_affected, last_insert_id });
    }
    Ok(results)
}

/// Run a read on a read-only connection.
///
/// The statement runs under the API's rules (see `harden`) and is
/// interrupted after [`QUERY_TIME_LIMIT`].
pub fn run_query(
    conn: &Connection,
    sql: &str,
    params: &Params,
) -> Result<(Vec<Column>, Vec<Vec<Value>>), StatementError> {
    check_single(sql)?;
    check_length(sql)?;
    harden(conn).map_err(StatementError::Harden)?;
    let _api = ApiCaller::read(std::time::Instant::now() + QUERY_TIME_LIMIT);
    // Cached, as writes are: an app sends the same few reads again and
    // again, and compiling one costs about as much as running it. SQLite
    // compiles a cached statement again (authorizer included) when the
    // schema changed since.
    let mut stmt = conn.prepare_cached(sql).map_err(guard::explain)?;
    if !stmt.readonly() {
        return Err(StatementError::NotReadOnly);
    }
    bind(&mut stmt, params)?;
    // Columns are taken after the first step: SQLite compiles a cached
    // statement again in its first step when the schema changed since, and
    // then `SELECT *` may have other columns than when it was cached.
    let mut columns: Option<Vec<Column>> = None;
    let mut out = Vec::new();
    {
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(guard::explain)? {
            if out.len() >= MAX_ROWS {
                return Err(StatementError::TooManyRows);
            }
            let n = columns.get_or_insert_with(|| columns_of(row.as_ref())).len();
            let mut r = Vec::with_capacity(n);
            for i in 0..n {
                r.push(value_of(row.get_ref(i).map_err(StatementError::Row)?));
            }
            out.push(r);
        }
    }
    // No row: the statement has stepped (and been compiled again if it
    // had to) all the same.
    let columns = columns.unwrap_or_else(|| columns_of(&stmt));
    Ok((columns, out))
}

fn columns_of(stmt: &rusqlite::Statement<'_>) -> Vec<Column> {
    stmt.columns()
        .iter()
        .map(|c| Column { name: c.name().to_string(), decl_type: c.decl_type().map(str::to_string) })
        .collect()
}

/// Fill in the serving node's fields of a result.
pub fn rows(columns: Vec<Column>, rows: Vec<Vec<Value>>, node_id: u64, applied_index: u64) -> Rows {
    Rows { columns, rows, node_id, applied_index }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    const T: u64 = 1_700_000_000_123; // 2023-11-14 22:13:20.123 UTC

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_utc(T), "2023-11-14 22:13:20.123");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn writes_are_logged_as_written() {
        // Time forms, and data that merely looks like them, are left alone:
        // the entry's time is SQLite's "now" where the write is applied.
        for sql in [
            "INSERT INTO t VALUES (CURRENT_TIMESTAMP, datetime('now'), date( ))",
            "INSERT INTO t VALUES ('now', 'utc', 'localtime', 'total_changes')",
            "CREATE TABLE u (at TEXT DEFAULT CURRENT_TIMESTAMP)",
        ] {
            assert!(check_write(sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn refuses_what_cannot_be_replicated() {
        for (sql, word) in [
            ("BEGIN", "transaction"),
            ("  /* x */ pragma journal_mode=delete", "PRAGMA"),
            ("ATTACH 'x.db' AS x", "ATTACH"),
            ("VACUUM", "VACUUM"),
            ("DELETE FROM _bulwark_meta", "reserved"),
        ] {
            let e = check_write(sql).unwrap_err().to_string();
            assert!(e.contains(word), "{sql}: {e}");
        }
    }

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB)").unwrap();
        c
    }

    #[test]
    fn writes_report_rows_affected_and_last_insert_id() {
        let c = db();
        let r = run_writes(
            &c,
            &[
                Statement::with_params("INSERT INTO t (name) VALUES (?)", vec!["a".into()]),
                Statement::with_named("INSERT INTO t (name) VALUES (:n)", [("n".to_string(), "b".into())]),
                Statement::new("UPDATE t SET name = 'c'"),
                Statement::new("CREATE TABLE u (x)"),
            ],
        )
        .unwrap();
        assert_eq!(r[0], StatementResult { rows_affected: 1, last_insert_id: 1 });
        assert_eq!(r[1], StatementResult { rows_affected: 1, last_insert_id: 2 });
        assert_eq!(r[2].rows_affected, 2);
        assert_eq!(r[3].rows_affected, 0);
    }

    #[test]
    fn write_errors_carry_sqlite_messages() {
        let c = db();
        let e = run_writes(&c, &[Statement::new("INSERT INTO nope VALUES (1)")]).unwrap_err().to_string();
        assert!(e.contains("no such table: nope"), "{e}");
        let e = run_writes(&c, &[Statement::new("INSERT INTO t (name) VALUES (?)")]).unwrap_err().to_string();
        assert!(e.contains("1 parameters but none"), "{e}");
        let e = run_writes(&c, &[Statement::new("SELEC 1")]).unwrap_err().to_string();
        assert!(e.contains("syntax error"), "{e}");
        let e = run_writes(&c, &[Statement::new("INSERT INTO t (name) VALUES ('a'); DROP TABLE t")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("one SQL statement"), "{e}");
        let n: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
        run_writes(&c, &[Statement::new("INSERT INTO t (name) VALUES ('a;b'); -- done")]).unwrap();
    }

    #[test]
    fn queries_return_typed_columns_and_refuse_writes() {
        let c = db();
        c.execute("INSERT INTO t (name, data) VALUES ('a', x'00ff')", []).unwrap();
        let (cols, rows) =
            run_query(&c, "SELECT id, name, data, 1.5 AS f FROM t WHERE id = ?", &Params::Positional(vec![1.into()]))
                .unwrap();
        assert_eq!(cols[0], Column { name: "id".into(), decl_type: Some("INTEGER".into()) });
        assert_eq!(cols[3].decl_type, None);
        assert_eq!(
            rows,
            vec![vec![Value::Integer(1), Value::Text("a".into()), Value::Blob(vec![0, 255]), Value::Real(1.5)]]
        );
        let e = run_query(&c, "DELETE FROM t", &Params::None).unwrap_err().to_string();
        assert!(e.contains("read-only"), "{e}");
    }

    #[test]
    fn a_repeated_read_sees_new_rows_and_a_new_schema() {
        let c = db();
        let sql = "SELECT * FROM t ORDER BY id";
        assert!(run_query(&c, sql, &Params::None).unwrap().1.is_empty());
        c.execute("INSERT INTO t (name) VALUES ('a')", []).unwrap();
        let (cols, rows) = run_query(&c, sql, &Params::None).unwrap();
        assert_eq!((cols.len(), rows.len()), (3, 1));
        // The cached statement is compiled again for the new schema, with
        // rows and without.
        c.execute_batch("ALTER TABLE t ADD COLUMN extra TEXT").unwrap();
        let (cols, rows) = run_query(&c, sql, &Params::None).unwrap();
        assert_eq!((cols.len(), rows.len()), (4, 1));
        assert_eq!((cols[3].name.as_str(), &rows[0][3]), ("extra", &Value::Null));
        let empty = "SELECT * FROM t WHERE id > 100";
        assert_eq!(run_query(&c, empty, &Params::None).unwrap().0.len(), 4);
        c.execute_batch("ALTER TABLE t ADD COLUMN more TEXT").unwrap();
        assert_eq!(run_query(&c, empty, &Params::None).unwrap().0.len(), 5);
        // Parameters are bound afresh each time, and a refused write
        // stays refused.
        let by_id = "SELECT name FROM t WHERE id = ?";
        assert_eq!(run_query(&c, by_id, &Params::Positional(vec![1.into()])).unwrap().1.len(), 1);
        assert!(run_query(&c, by_id, &Params::Positional(vec![2.into()])).unwrap().1.is_empty());
        for _ in 0..2 {
            assert!(run_query(&c, "DELETE FROM t", &Params::None).unwrap_err().to_string().contains("read-only"));
        }
        assert_eq!(run_query(&c, sql, &Params::None).unwrap().1.len(), 1);
    }

    #[test]
    fn random_is_reproducible_from_the_seed() {
        let run = || {
            let c = Connection::open_in_memory().unwrap();
            let seed = Arc::new(AtomicU64::new(42));
            install_deterministic_random(&c, seed).unwrap();
            c.query_row("SELECT random(), hex(randomblob(4))", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .unwrap()
        };
        assert_eq!(run(), run());
    }
}
