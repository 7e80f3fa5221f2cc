//! What an API statement may do: the rules every connection that runs
//! `/v1/query` and `/v1/execute` statements enforces, whatever the
//! statement's spelling (quoting, case, comments), because SQLite checks
//! them on the statement it compiled.
//!
//! - **Authorizer** (`sqlite3_set_authorizer`), for API statements only:
//!   no ATTACH/DETACH, no transaction or savepoint statements, no PRAGMA,
//!   no access of any kind to a `_bulwark*` table, index, trigger or view
//!   (the real name, as SQLite resolved it); in writes also no temporary
//!   objects (they live on one connection of one node, so a later write
//!   reading them would differ between a node that restarted and one that
//!   did not) and no recursive CTE (see below). Unknown actions are refused. Bulwark's own
//!   statements (its bookkeeping in `_bulwark_meta` and
//!   `_bulwark_requests`, its savepoints and pragmas) run on the same
//!   connections outside [`ApiCaller`] and are not restricted.
//! - **Double-quoted string literals off** (`SQLITE_DBCONFIG_DQS_DML` and
//!   `_DDL`): `datetime("now")` is an error ("no such column: now"), not
//!   a string where the client may have meant a column.
//!   Schemas already stored with such literals still load.
//! - **Limits** (`sqlite3_limit`): SQL text at most [`MAX_SQL_BYTES`], a
//!   string or blob at most [`MAX_VALUE_BYTES`], no attached database.
//!   Constants, so every replica refuses the same writes.
//! - **Read deadline**: a read runs at most [`QUERY_TIME_LIMIT`] (progress
//!   handler; an interrupted read-only statement rolls nothing back).
//!
//! - **Node-dependent sources** (see `node_local`), in writes: functions
//!   that count the connection's history or name the SQLite build, the
//!   file layout (`dbstat`, the schema table's root pages and row order),
//!   statistics and `ANALYZE`.
//! - **Step budget** for writes: a write (all its statements, and all
//!   they run: triggers, foreign keys, virtual tables' own statements)
//!   runs at most [`WriteLimits::max_steps`] SQLite VM instructions, then
//!   fails with "write exceeded N steps". The budget counts instructions,
//!   never time, and every statement's counter starts at zero before each
//!   API statement, so the same write on the same data stops at the same
//!   instruction on every node. A non-recursive write can still make its
//!   own rows (`json_each` of a bound array joined with itself is 10^12
//!   rows from 2 KB); without the budget every node would apply it forever,
//!   and again after every restart. SQLite answers an interrupted writing
//!   statement by rolling back the whole transaction (`sqlite3VdbeHalt`),
//!   so the state machine applies the batch again without that write (as
//!   for `INSERT OR ROLLBACK`): it fails alone, with the same error on
//!   every node.
//!
//! Recursive CTEs stay refused in writes (recursive triggers are off and
//! cannot be turned on: PRAGMA is refused): the budget would stop them,
//! but a write that needs one is better computed by a read.
use super::node_local::{self, SchemaStatement};
use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::Connection;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Longest SQL text of one statement, in bytes: bind large values as
/// parameters.
pub const MAX_SQL_BYTES: usize = 1 << 20;
/// Largest string or blob a statement may make, in bytes (the largest
/// request a node accepts).
pub const MAX_VALUE_BYTES: usize = bulwark_config::db::MAX_REQUEST_BYTES_LIMIT;
/// Longest a read may run before it is interrupted.
pub const QUERY_TIME_LIMIT: Duration = Duration::from_secs(5);
/// VM instructions between two calls of the progress handler: two looks at
/// the read deadline, or one unit of a write's step budget.
pub const PROGRESS_EVERY_OPS: u64 = 10_000;

/// Bounds on one write (one `/v1/execute` request), the same on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimits {
    /// Most SQLite VM instructions the write may run (counted in units of
    /// `PROGRESS_EVERY_OPS`).
    pub max_steps: u64,
}

impl Default for WriteLimits {
    fn default() -> WriteLimits {
        WriteLimits { max_steps: bulwark_config::db::DEFAULT_MAX_WRITE_STEPS }
    }
}

/// Who runs the statements on this thread right now.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    /// Bulwark itself: not restricted.
    Bulwark,
    /// A `/v1/query` statement, until `deadline`.
    ApiRead { deadline: Instant },
    /// A `/v1/execute` statement.
    ApiWrite(WriteLimits),
}

thread_local! {
    // SQLite calls the authorizer and the progress handler on the thread
    // that prepares or steps the statement: the one that set this.
    static CALLER: Cell<Caller> = const { Cell::new(Caller::Bulwark) };
    // Why the authorizer last refused, for the error message.
    static REFUSED: Cell<Option<&'static str>> = const { Cell::new(None) };
    // Progress-handler calls during the current write.
    static WRITE_TICKS: Cell<u64> = const { Cell::new(0) };
    // Whether the current write ran out of steps.
    static OVER_BUDGET: Cell<bool> = const { Cell::new(false) };
}

/// While alive, the statements this thread prepares and steps are API
/// statements.
pub struct ApiCaller(Caller);

impl ApiCaller {
    pub fn read(deadline: Instant) -> ApiCaller {
        REFUSED.set(None);
        SchemaStatement::reset();
        ApiCaller(CALLER.replace(Caller::ApiRead { deadline }))
    }

    /// One write, within `limits`: its step count starts at zero.
    pub fn write(limits: WriteLimits) -> ApiCaller {
        REFUSED.set(None);
        SchemaStatement::reset();
        WRITE_TICKS.set(0);
        OVER_BUDGET.set(false);
        ApiCaller(CALLER.replace(Caller::ApiWrite(limits)))
    }
}

impl Drop for ApiCaller {
    fn drop(&mut self) {
        CALLER.set(self.0);
    }
}

/// Whether this thread runs an API write right now.
pub fn in_api_write() -> bool {
    matches!(CALLER.get(), Caller::ApiWrite(_))
}

/// Whether the last API write on this thread was stopped by its step
/// budget.
pub fn over_budget() -> bool {
    OVER_BUDGET.get()
}

/// Call before an API statement is prepared: the authorizer's view of
/// "the statement being compiled" starts afresh.
pub fn compiling() {
    SchemaStatement::reset();
}

/// Call before the first step of an API statement: [`compiling`] again
/// (SQLite compiles the statement again inside its first step when the
/// schema changed since it was prepared), and every prepared statement's
/// VM-step counter on `conn` starts at zero.
///
/// The progress handler fires when a statement's counter reaches a
/// multiple of [`PROGRESS_EVERY_OPS`], counted over the statement's life.
/// Cached statements (Bulwark's, and those virtual tables keep) carry
/// their history, which differs between a node that restarted and one
/// that did not; from zero, the same write fires it at the same
/// instructions on every node.
pub fn new_statement(conn: &Connection) {
    SchemaStatement::reset();
    // SAFETY: the handle is valid while `conn` is borrowed; the loop only
    // walks the connection's own statement list and resets a counter, on
    // the thread that owns the connection.
    unsafe {
        let db = conn.handle();
        let mut stmt = rusqlite::ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
        while !stmt.is_null() {
            rusqlite::ffi::sqlite3_stmt_status(stmt, rusqlite::ffi::SQLITE_STMTSTATUS_VM_STEP, 1);
            stmt = rusqlite::ffi::sqlite3_next_stmt(db, stmt);
        }
    }
}

/// Refuse SQL text longer than [`MAX_SQL_BYTES`].
pub fn check_length(sql: &str) -> Result<(), super::StatementError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(super::StatementError::TooLong { len: sql.len() });
    }
    Ok(())
}

fn reserved(name: &str) -> bool {
    name.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("_bulwark"))
}

fn authorize(ctx: AuthContext<'_>) -> Authorization {
    let caller = CALLER.get();
    if caller == Caller::Bulwark {
        return Authorization::Allow;
    }
    let write = matches!(caller, Caller::ApiWrite(_));
    let refusal = match ctx.action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
            Some("ATTACH and DETACH are not allowed: a node serves only the replicated database")
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => Some(
            "transaction statements are not allowed: each /v1/execute request is one transaction, each read its own",
        ),
        AuthAction::Pragma { .. } => Some("PRAGMA is not allowed through the API"),
        AuthAction::Recursive if write => {
            Some("recursive CTEs are not allowed in writes: compute the rows in a read and write them")
        }
        AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropTempView { .. }
            if write =>
        {
            Some("temporary objects are not allowed in writes: they exist on one node's connection only")
        }
        AuthAction::Unknown { .. } => Some("this kind of statement is not allowed through the API"),
        action if write => node_dependent(&action),
        _ => None,
    };
    let refusal = refusal.or_else(|| {
        names(&ctx.action)
            .into_iter()
            .flatten()
            .any(reserved)
            .then_some("names starting with _bulwark are reserved for replication metadata")
    });
    // The temp schema is one connection's own: no writes into it either.
    // (SQLite's own updates of the temp schema table, which `ALTER TABLE`
    // makes, are not a client's: SQLite refuses clients to write it.)
    let refusal = refusal.or_else(|| {
        let table = match ctx.action {
            AuthAction::Insert { table_name } | AuthAction::Delete { table_name } => Some(table_name),
            AuthAction::Update { table_name, .. } => Some(table_name),
            _ => None,
        };
        (write && ctx.database_name == Some("temp") && table.is_some_and(|t| !node_local::schema_table(t)))
            .then_some("temporary objects are not allowed in writes: they exist on one node's connection only")
    });
    match refusal {
        Some(why) => {
            REFUSED.set(Some(why));
            Authorization::Deny
        }
        None => Authorization::Allow,
    }
}

/// Why a write may not do `action`, if it reads something that differs
/// between nodes (see `node_local`).
fn node_dependent(action: &AuthAction<'_>) -> Option<&'static str> {
    use AuthAction as A;
    let schema_reads = SchemaStatement::allows_schema_reads(action);
    match *action {
        A::Function { function_name } => node_local::function(function_name),
        A::Analyze { .. } => Some(node_local::STATISTICS),
        A::CreateVtable { module_name, .. } if node_local::layout_table(module_name) => Some(node_local::LAYOUT),
        A::Read { table_name, .. } if node_local::layout_table(table_name) => Some(node_local::LAYOUT),
        A::Read { table_name, .. } if node_local::schema_table(table_name) && !schema_reads => Some(node_local::SCHEMA),
        A::Read { table_name, .. }
        | A::Insert { table_name }
        | A::Update { table_name, .. }
        | A::Delete { table_name }
            if node_local::stat_table(table_name) && !schema_reads =>
        {
            Some(node_local::STATISTICS)
        }
        _ => None,
    }
}

/// The schema object names an action touches.
fn names<'a>(action: &AuthAction<'a>) -> [Option<&'a str>; 2] {
    use AuthAction as A;
    match *action {
        A::CreateIndex { index_name, table_name }
        | A::DropIndex { index_name, table_name }
        | A::CreateTempIndex { index_name, table_name }
        | A::DropTempIndex { index_name, table_name } => [Some(index_name), Some(table_name)],
        A::CreateTrigger { trigger_name, table_name }
        | A::DropTrigger { trigger_name, table_name }
        | A::CreateTempTrigger { trigger_name, table_name }
        | A::DropTempTrigger { trigger_name, table_name } => [Some(trigger_name), Some(table_name)],
        A::CreateTable { table_name }
        | A::CreateTempTable { table_name }
        | A::DropTable { table_name }
        | A::DropTempTable { table_name }
        | A::Insert { table_name }
        | A::Delete { table_name }
        | A::Read { table_name, .. }
        | A::Update { table_name, .. }
        | A::AlterTable { table_name, .. }
        | A::Analyze { table_name } => [Some(table_name), None],
        A::CreateView { view_name }
        | A::CreateTempView { view_name }
        | A::DropView { view_name }
        | A::DropTempView { view_name } => [Some(view_name), None],
        A::CreateVtable { table_name, .. } | A::DropVtable { table_name, .. } => [Some(table_name), None],
        A::Reindex { index_name } => [Some(index_name), None],
        _ => [None, None],
    }
}

/// The progress handler: the read deadline, the write step budget.
fn progress() -> bool {
    match CALLER.get() {
        Caller::Bulwark => false,
        Caller::ApiRead { deadline } => Instant::now() >= deadline,
        Caller::ApiWrite(limits) => {
            let ticks = WRITE_TICKS.get() + 1;
            WRITE_TICKS.set(ticks);
            let over = ticks.saturating_mul(PROGRESS_EVERY_OPS) > limits.max_steps;
            if over {
                OVER_BUDGET.set(true);
            }
            over
        }
    }
}

/// Install the rules of the module doc on `conn`, once: a connection is
/// hardened when its double-quoted string literals are off. (Installing an
/// authorizer expires the connection's prepared statements, so this must
/// not run per statement.)
pub fn harden(conn: &Connection) -> rusqlite::Result<()> {
    if !conn.db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML)? {
        return Ok(());
    }
    conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES as i32);
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES as i32);
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0);
    conn.authorizer(Some(authorize));
    conn.progress_handler(PROGRESS_EVERY_OPS as i32, Some(progress));
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DDL, false)?;
    // Last: it marks the connection as hardened.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML, false)?;
    Ok(())
}

/// SQLite's message, with the reason when the authorizer refused, the read
/// deadline or the write budget interrupted, or local time was refused.
pub fn explain(source: rusqlite::Error) -> super::StatementError {
    super::StatementError::Sqlite { message: message_of(&source), source }
}

fn message_of(e: &rusqlite::Error) -> String {
    let code = e.sqlite_error_code();
    let msg = e.to_string();
    // A refused function is reported as SQLITE_ERROR ("not authorized to
    // use function: ...").
    if code == Some(rusqlite::ErrorCode::AuthorizationForStatementDenied) || msg.starts_with("not authorized") {
        return match REFUSED.get() {
            Some(why) => format!("{msg}: {why}"),
            None => msg,
        };
    }
    match (code, CALLER.get()) {
        (Some(rusqlite::ErrorCode::OperationInterrupted), Caller::ApiWrite(limits)) if OVER_BUDGET.get() => {
            format!(
                "write exceeded {} steps (max_write_steps): split it into smaller writes, or compute its rows in a read",
                limits.max_steps
            )
        }
        (Some(rusqlite::ErrorCode::OperationInterrupted), _) => {
            format!("{msg}: the query ran longer than {} s", QUERY_TIME_LIMIT.as_secs())
        }
        (_, Caller::ApiWrite(_)) if msg.contains("local time unavailable") => format!(
            "{msg}: the 'localtime' and 'utc' modifiers depend on each node's time zone and are not allowed in writes; store UTC"
        ),
        _ => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{run_query, run_writes};
    use bulwark_db_api::api::{Params, Statement};

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        // Bulwark's own bookkeeping, made before and used after hardening.
        c.execute_batch(
            "CREATE TABLE _bulwark_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);",
        )
        .unwrap();
        c
    }

    fn write(c: &Connection, sql: &str) -> Result<(), String> {
        run_writes(c, &[Statement::new(sql)]).map(|_| ()).map_err(|e| e.to_string())
    }

    #[test]
    fn api_reads_cannot_attach_begin_pragma_or_see_bookkeeping() {
        let c = db();
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE secret (x); INSERT INTO secret VALUES (42)")
            .unwrap();
        for (sql, why) in [
            (format!("ATTACH '{}' AS o", other.display()), "ATTACH"),
            ("BEGIN".to_string(), "transaction"),
            ("SAVEPOINT s".to_string(), "transaction"),
            ("PRAGMA journal_mode".to_string(), "PRAGMA"),
            ("SELECT v FROM \"_bulwark_meta\"".to_string(), "_bulwark"),
            ("SELECT v FROM [_BULWARK_META]".to_string(), "_bulwark"),
            ("SELECT v FROM main.`_Bulwark_meta`".to_string(), "_bulwark"),
        ] {
            let e = run_query(&c, &sql, &Params::None).unwrap_err().to_string();
            assert!((e.contains("not authorized") || e.contains("prohibited")) && e.contains(why), "{sql}: {e}");
        }
        // Ordinary reads work, and so does Bulwark's own bookkeeping.
        c.execute("INSERT INTO _bulwark_meta VALUES ('applied', '1')", []).unwrap();
        let v: String = c.query_row("SELECT v FROM _bulwark_meta WHERE k = 'applied'", [], |r| r.get(0)).unwrap();
        assert_eq!(v, "1");
        assert!(run_query(&c, "SELECT count(*) FROM t", &Params::None).is_ok());
    }

    #[test]
    fn api_writes_cannot_touch_bookkeeping_whatever_the_quoting() {
        let c = db();
        for sql in [
            "INSERT INTO \"_BULWARK_META\" VALUES ('applied', 'x')",
            "DELETE FROM \"_bulwark_meta\"",
            "UPDATE [_bulwark_meta] SET v = 'x'",
            "DROP TABLE [_bulwark_meta]",
            "CREATE TABLE \"_bulwark_x\" (a)",
            "CREATE INDEX i ON \"_bulwark_meta\" (v)",
            "ALTER TABLE \"_bulwark_meta\" RENAME TO m",
        ] {
            let e = write(&c, sql).expect_err(sql);
            assert!(e.contains("reserved for replication metadata"), "{sql}: {e}");
        }
        // A view's body is checked when it is used, as the real table.
        write(&c, "CREATE VIEW v AS SELECT * FROM \"_bulwark_meta\"").unwrap();
        let e = run_query(&c, "SELECT * FROM v", &Params::None).unwrap_err().to_string();
        assert!(e.contains("reserved for replication metadata"), "{e}");
        // Trigger bodies (refused earlier as several statements) are
        // checked by the authorizer too, on the names SQLite resolved: a
        // trigger on bookkeeping cannot be made; one on a user table whose
        // body touches bookkeeping is refused when an API write fires it
        // (Bulwark's own statements write only bookkeeping, which no
        // trigger can be on, so they never fire one).
        harden(&c).unwrap();
        let api = ApiCaller::write(WriteLimits::default());
        let e = explain(
            c.execute_batch(
                "CREATE TRIGGER x AFTER INSERT ON \"_bulwark_meta\" BEGIN SELECT RAISE(ABORT, 'stop'); END",
            )
            .unwrap_err(),
        )
        .to_string();
        assert!(e.contains("reserved for replication metadata"), "{e}");
        c.execute_batch("CREATE TRIGGER y AFTER INSERT ON t BEGIN DELETE FROM \"_bulwark_meta\"; END").unwrap();
        drop(api);
        let e = write(&c, "INSERT INTO t (v) VALUES ('fires y')").unwrap_err();
        assert!(e.contains("reserved for replication metadata"), "{e}");
        c.execute("INSERT INTO _bulwark_meta VALUES ('applied', '1')", []).unwrap();
        let n: i64 = c.query_row("SELECT count(*) FROM _bulwark_meta", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn api_writes_refuse_transactions_temp_objects_recursion_and_double_quoted_strings() {
        let c = db();
        for (sql, why) in [
            ("INSERT INTO t (v) VALUES (datetime(\"now\"))", "single-quotes"),
            ("CREATE TEMP TABLE x (a)", "temporary"),
            (
                "INSERT INTO t (v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c",
                "recursive",
            ),
            ("ATTACH ':memory:' AS m", "ATTACH"),
        ] {
            let e = write(&c, sql).unwrap_err();
            assert!(e.contains(why), "{sql}: {e}");
        }
        // Single-quoted literals and plain writes are fine.
        write(&c, "INSERT INTO t (v) VALUES ('now')").unwrap();
        // A non-recursive CTE is fine in a write.
        write(&c, "INSERT INTO t (v) WITH c(x) AS (SELECT 'a') SELECT x FROM c").unwrap();
        let n: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn long_sql_is_refused() {
        let c = db();
        let sql = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
        assert!(run_query(&c, &sql, &Params::None).unwrap_err().to_string().contains("at most"));
        let e = write(&c, &format!("INSERT INTO t (v) VALUES ('{}')", "x".repeat(MAX_SQL_BYTES))).unwrap_err();
        assert!(e.contains("too long") || e.contains("at most"), "{e}");
    }

    #[test]
    fn a_runaway_read_is_interrupted_at_its_deadline() {
        let c = db();
        harden(&c).unwrap();
        let _api = ApiCaller::read(Instant::now() + Duration::from_millis(100));
        let e = c
            .query_row(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_err();
        assert!(explain(e).to_string().contains("interrupted"));
    }
}
