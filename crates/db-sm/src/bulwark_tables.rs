//! Bulwark's own tables in the database: `_bulwark_meta` (what the
//! database has applied: the last log id, the membership and the primary's
//! clock of the last write) and `_bulwark_requests` (the request ids, see
//! `request_ids`), their layout and its conversion from older versions.
//!
//! Every database and every snapshot carries these tables: a snapshot file
//! says by itself which log id it holds (see `snapshot_file`).
//!
//! Owns: the schema of the two tables and `_bulwark_meta`'s keys. Must not
//! touch: the client's tables.
use bulwark_db_api::raft_types::{LogId, StoredMembership};
use rusqlite::{Connection, OptionalExtension};

/// Each apply transaction writes one row of `_bulwark_meta` (a
/// `WITHOUT ROWID` table: one B-tree, so one page) and appends to
/// `_bulwark_requests` in `seq` order (its rowid), so it touches few pages:
/// SQLite writes each changed page whole into the WAL. The first layout (a
/// rowid `_bulwark_meta` with its key index, and `_bulwark_requests` keyed
/// by id with an index on time) touched about half as many pages again
/// (figures: docs/BENCHMARKS.md). Databases of that layout are converted
/// when opened ([`migrate`]).
pub(crate) const META_DDL: &str =
    "CREATE TABLE IF NOT EXISTS _bulwark_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS _bulwark_requests (seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE, term INTEGER NOT NULL, idx INTEGER NOT NULL,
        time_ms INTEGER NOT NULL, outcome TEXT NOT NULL)";

/// Convert Bulwark's tables of the first layout (see [`META_DDL`]), in one
/// transaction: the request ids keep their order of time (then id), which
/// is their order of application as far as it can be told, and every node
/// converting the same content gets the same rows.
pub(crate) fn migrate(c: &Connection) -> rusqlite::Result<()> {
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

pub(crate) fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

pub(crate) fn meta_get<T: serde::de::DeserializeOwned>(c: &Connection, key: &str) -> rusqlite::Result<Option<T>> {
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

/// Record `v` (as JSON) under `key` in `_bulwark_meta`.
pub fn meta_set<T: serde::Serialize>(c: &Connection, key: &str, v: &T) -> rusqlite::Result<()> {
    let s = serde_json::to_string(v).map_err(json_err)?;
    c.prepare_cached("INSERT OR REPLACE INTO _bulwark_meta (k, v) VALUES (?, ?)")?.execute([key, &s])?;
    Ok(())
}

/// What a database (or a snapshot of one) has applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppliedState {
    /// The last applied log id (`None`: nothing yet).
    pub last: Option<LogId>,
    pub membership: StoredMembership,
    /// The primary's clock (Unix ms) of the last applied write; 0 if none.
    pub time_ms: u64,
}

/// What the database `c` has applied, from `_bulwark_meta`.
pub fn read_state(c: &Connection) -> rusqlite::Result<AppliedState> {
    Ok(AppliedState {
        last: meta_get(c, "applied")?,
        membership: meta_get(c, "membership")?.unwrap_or_default(),
        time_ms: meta_get(c, "time_ms")?.unwrap_or(0),
    })
}
