//! What a write may not read because it differs between nodes that hold the
//! same data: the applying connection's history, the SQLite build, the
//! file layout. Used by the authorizer (`guard`) for API writes only;
//! reads may look at all of it.
//!
//! - **Functions** ([`function`]): `sqlite_version()`,
//!   `sqlite_source_id()`, `sqlite_compileoption_*()` and
//!   `fts5_source_id()` differ while a cluster is upgraded node by node;
//!   `sqlite_offset()` is a byte offset in the file; `load_extension()`
//!   would run a node's local code. SQLite reports the function it
//!   resolved, so no quoting or spelling gets past. (`random()`,
//!   `randomblob()`, `changes()`, `total_changes()` and
//!   `last_insert_rowid()` are allowed: the state machine's connection
//!   answers them per write, the same on every node; see
//!   `write_functions`.)
//! - **The file layout** ([`layout_table`]): `dbstat` (page numbers and
//!   fill of every B-tree page), `sqlite_dbpage`, `sqlite_stmt`. A node
//!   restored from a snapshot (a `VACUUM INTO` copy) has another layout
//!   than one that applied every entry. Also no `CREATE VIRTUAL TABLE ...
//!   USING dbstat` (or the others) in a write.
//! - **The schema table** (`sqlite_schema`, `sqlite_master`, and the temp
//!   ones; [`schema_table`]): `rootpage` is a page number, and `VACUUM
//!   INTO` writes the schema's rows in another order (tables, then indexes,
//!   then views and triggers), so their rowids and the order any scan
//!   returns differ on a restored node. SQLite reads this table itself
//!   when it compiles `DROP`, `ALTER TABLE` and `CREATE` statements; those
//!   reads follow an action only SQLite's own statements make
//!   ([`SchemaStatement`]) and stay allowed.
//! - **Statistics** (`sqlite_stat1`, `sqlite_stat4`; [`stat_table`]) and
//!   `ANALYZE`: ANALYZE samples an index from an estimate of its size taken
//!   from the B-tree's shape, so the statistics it stores (replicated data)
//!   may differ between nodes. No `ANALYZE` and no access to these tables
//!   in writes (SQLite's own clean-up when a table is dropped excepted).
//!
//! Rowids of user tables are not node-dependent: `VACUUM INTO` copies the
//! rows of every rowid table with their rowids (`xferOptimization` under
//! `DBFLAG_VacuumInto`), and the backup API copies pages.
use rusqlite::hooks::AuthAction;
use std::cell::Cell;

/// Why a write may not call `name` (as SQLite resolved it), if it may not.
pub(super) fn function(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    Some(match name.as_str() {
        "sqlite_version" | "sqlite_source_id" | "sqlite_compileoption_get" | "sqlite_compileoption_used"
        | "fts5_source_id" => {
            "the SQLite version and build are not allowed in writes: they differ between nodes while a cluster is upgraded"
        }
        "sqlite_offset" => "sqlite_offset() is not allowed in writes: it is a position in one node's file",
        "load_extension" => "load_extension() is not allowed",
        _ => return None,
    })
}

/// Tables whose rows describe one node's file.
pub(super) fn layout_table(name: &str) -> bool {
    ["dbstat", "sqlite_dbpage", "sqlite_stmt"].iter().any(|t| t.eq_ignore_ascii_case(name))
}

/// The schema table, under any of its names.
pub(super) fn schema_table(name: &str) -> bool {
    ["sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(name))
}

/// `sqlite_stat1`, `sqlite_stat4` (and the retired 2 and 3).
pub(super) fn stat_table(name: &str) -> bool {
    name.get(..11).is_some_and(|p| p.eq_ignore_ascii_case("sqlite_stat"))
}

pub(super) const LAYOUT: &str =
    "dbstat is not allowed in writes: it describes one node's file, which differs on a node restored from a snapshot";
pub(super) const SCHEMA: &str =
    "reading sqlite_schema is not allowed in writes: its rowids, row order and root pages differ on a node restored from a snapshot; read it with /v1/query";
pub(super) const STATISTICS: &str =
    "ANALYZE and the sqlite_stat tables are not allowed in writes: the statistics depend on each node's file layout";

thread_local! {
    // Whether the statement being compiled on this thread is one of
    // SQLite's own on the schema table (see `SchemaStatement`).
    static SCHEMA_STATEMENT: Cell<bool> = const { Cell::new(false) };
}

/// Tells the reads SQLite makes of the schema table while it compiles
/// `DROP ...`, `ALTER TABLE ...` and `CREATE ...` from a client's reads.
///
/// SQLite's own statements on the schema table follow (in the same
/// compilation) an `ALTER TABLE` or `DROP` action, or an UPDATE or DELETE
/// of the schema table, which SQLite refuses to clients before it asks the
/// authorizer ("table sqlite_master may not be modified"). Those
/// statements are all in the compilation of one DDL statement, whose own
/// text has no SELECT; the one DDL statement that does (`CREATE TABLE ...
/// AS SELECT`) compiles its SELECT before SQLite's UPDATE of the schema
/// table. So after such an action the schema may be read, before it not.
pub(super) struct SchemaStatement;

impl SchemaStatement {
    /// A new statement is compiled from here on.
    pub(super) fn reset() {
        SCHEMA_STATEMENT.set(false);
    }

    /// Note `action`; whether the schema table and the statistics may be
    /// read by the statement being compiled.
    pub(super) fn allows_schema_reads(action: &AuthAction<'_>) -> bool {
        use AuthAction as A;
        let sqlites_own = match action {
            A::AlterTable { .. }
            | A::DropTable { .. }
            | A::DropIndex { .. }
            | A::DropView { .. }
            | A::DropTrigger { .. }
            | A::DropVtable { .. } => true,
            A::Update { table_name, .. } | A::Delete { table_name } => schema_table(table_name),
            _ => false,
        };
        if sqlites_own {
            SCHEMA_STATEMENT.set(true);
        }
        SCHEMA_STATEMENT.get()
    }
}
