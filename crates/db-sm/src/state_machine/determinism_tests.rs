//! Tests that try to make two replicas store different data from the same
//! log, or stop every node with one write: SQL whose result depends on the
//! node (its clock, its connection's history, its file layout) and writes
//! whose work has no bound.
//!
//! Each entry goes through what the primary does to a write before it is
//! logged (`sql::check_write`, which now
//! only checks it), then is applied as a replica would.
use super::tests::{id, membership};
use super::*;
use bulwark_db_api::api::{Statement, Value};
use bulwark_db_api::raft_types::{Write, WriteBatch};
use openraft::EntryPayload;

/// The primary's clock for every entry below: 2023-11-14 22:13:20.123 UTC,
/// never the clock of the machine running the test.
const T: u64 = 1_700_000_000_123;

/// An entry with one write of `statement`, rewritten by the primary at
/// `time_ms` as `Node::execute` does.
fn logged(i: u64, statement: Statement, time_ms: u64) -> Entry {
    sql::check_write(&statement.sql).expect("the primary accepts the write");
    let sql = statement.sql.clone();
    let write = Write { statements: vec![Statement { sql, ..statement }], request_id: None };
    Entry { log_id: id(i), payload: EntryPayload::Normal(WriteBatch { writes: vec![write], time_ms }) }
}

fn plain(i: u64, sql: &str, time_ms: u64) -> Entry {
    logged(i, Statement::new(sql), time_ms)
}

fn rows(sm: &StateMachine, sql: &str) -> Vec<Vec<String>> {
    let c = open_read_only(&sm.db_path()).unwrap();
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| (0..n).map(|i| r.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}"))).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A node that applied `entries`, and a node restored from its snapshot
/// (with the two data dirs, kept for as long as the nodes are used).
async fn applied_and_restored(entries: Vec<Entry>) -> ([tempfile::TempDir; 2], StateMachine, StateMachine) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut applied_all = StateMachine::open(a.path()).unwrap();
    outcome_ok(&applied_all.apply(entries).await.unwrap());
    let snap = applied_all.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut restored = StateMachine::open(b.path()).unwrap();
    restored.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    ([a, b], applied_all, restored)
}

fn outcome_ok(out: &[Vec<ApplyOutcome>]) {
    for o in out.iter().flatten() {
        assert!(matches!(o, ApplyOutcome::Done(_)), "{o:?}");
    }
}

/// Every spelling of "now" in a write must read the primary's clock (the
/// entry's `time_ms`), as the rewritten forms do; otherwise each node
/// stores its own clock at the moment it applies the entry.
#[tokio::test]
async fn every_spelling_of_now_in_a_write_is_the_primarys_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    sm.apply(vec![membership(1), plain(2, "CREATE TABLE t (form TEXT, got, want)", T)]).await.unwrap();
    let lit = format!("'{}'", sql::format_utc(T));
    // (what the client writes, the same value with the primary's clock,
    // parameters)
    let cases: Vec<(&str, String, Vec<Value>)> = vec![
        ("datetime(?)", format!("datetime({lit})"), vec!["now".into()]),
        ("\"datetime\"()", format!("datetime({lit})"), vec![]),
        ("[julianday]()", format!("julianday({lit})"), vec![]),
        ("`unixepoch`()", format!("unixepoch({lit})"), vec![]),
        ("date(/* today */)", format!("date({lit})"), vec![]),
        ("strftime('%Y-%m-%d %H:%M:%f')", format!("strftime('%Y-%m-%d %H:%M:%f', {lit})"), vec![]),
        ("datetime('n' || 'ow')", format!("datetime({lit})"), vec![]),
        ("julianday(lower('NOW'))", format!("julianday({lit})"), vec![]),
    ];
    let mut entries = Vec::new();
    for (n, (form, want, params)) in cases.iter().enumerate() {
        let label = if params.is_empty() { form.to_string() } else { format!("{form} with {params:?}") };
        let sql = format!("INSERT INTO t VALUES ('{}', {form}, {want})", label.replace('\'', "''"));
        entries.push(logged(3 + n as u64, Statement::with_params(sql, params.clone()), T));
    }
    outcome_ok(&sm.apply(entries).await.unwrap());
    let differ: Vec<_> = rows(&sm, "SELECT form, got, want FROM t").into_iter().filter(|r| r[1] != r[2]).collect();
    assert!(differ.is_empty(), "writes that stored this node's clock instead of the primary's: {differ:#?}");
}

/// A column `DEFAULT CURRENT_TIMESTAMP` means the time of each insert.
/// Rewriting the DDL into a literal of the moment the table was made (as
/// the primary once did) gives every row that moment (the same on every
/// node, but wrong).
#[tokio::test]
async fn a_default_current_timestamp_is_the_time_of_each_insert() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    let created = T;
    let inserted = T + 86_400_000 + 1_000; // a day and a second later
    let out = sm
        .apply(vec![
            membership(1),
            plain(
                2,
                "CREATE TABLE t (x, at TEXT DEFAULT CURRENT_TIMESTAMP, at2 TEXT DEFAULT (datetime('now')))",
                created,
            ),
        ])
        .await
        .unwrap();
    if let ApplyOutcome::Failed(why) = &out[1][0] {
        // Refusing such a default with a clear error is fine too.
        assert!(why.contains("DEFAULT"), "{why}");
        return;
    }
    outcome_ok(&sm.apply(vec![plain(3, "INSERT INTO t (x) VALUES (1)", inserted)]).await.unwrap());
    let want = sql::format_utc(inserted);
    let got = rows(&sm, "SELECT at, at2 FROM t");
    assert_eq!(got, vec![vec![format!("Text({:?})", &want[..19]), format!("Text({:?})", &want[..19])]]);
}

/// `changes()`, `last_insert_rowid()` and `total_changes()` read the
/// applying connection's history: what ran before on it depends on how
/// entries were batched into apply transactions (Bulwark writes its own
/// bookkeeping at the end of each) and on when the node last restarted.
#[tokio::test]
async fn connection_counters_in_a_write_are_the_same_on_every_node() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = || {
        vec![
            membership(1),
            plain(2, "CREATE TABLE t (x)", T),
            plain(3, "CREATE TABLE u (c, r, tc)", T),
            plain(4, "INSERT INTO t VALUES (1), (2), (3)", T),
        ]
    };
    let counters = || plain(5, "INSERT INTO u VALUES (changes(), last_insert_rowid(), \"total_changes\"())", T);
    // Node A applies everything in one batch.
    let mut node_a = StateMachine::open(a.path()).unwrap();
    let mut all = first();
    all.push(counters());
    outcome_ok(&node_a.apply(all).await.unwrap());
    // Node B applied the first entries, then restarted (kill -9 or an
    // upgrade), then applied the last one.
    {
        let mut node_b = StateMachine::open(b.path()).unwrap();
        outcome_ok(&node_b.apply(first()).await.unwrap());
    }
    let mut node_b = StateMachine::open(b.path()).unwrap();
    outcome_ok(&node_b.apply(vec![counters()]).await.unwrap());
    let (ra, rb) = (rows(&node_a, "SELECT * FROM u"), rows(&node_b, "SELECT * FROM u"));
    assert_eq!(ra, rb, "the same log gave node A {ra:?} and node B {rb:?}");
}

/// A node restored from a snapshot (a `VACUUM INTO` copy) has a different
/// file layout than one that applied every entry; a write that reads the
/// layout (`sqlite_master.rootpage`, `dbstat`) stores different values.
/// (`pragma_*` table functions are refused: they prepare a PRAGMA, which
/// the authorizer denies.)
#[tokio::test]
async fn a_write_reading_the_file_layout_is_the_same_on_a_node_restored_from_a_snapshot() {
    let (_dirs, mut applied_all, mut restored) = applied_and_restored(vec![
        membership(1),
        plain(2, "CREATE TABLE t (b BLOB)", T),
        plain(3, "INSERT INTO t VALUES (zeroblob(200000)), (zeroblob(200000))", T),
        plain(4, "DELETE FROM t", T),
        plain(5, "CREATE TABLE layout (roots, pages)", T),
    ])
    .await;
    // Where the tables' B-trees start (the schema, readable by any write)
    // and which pages hold them (`dbstat`).
    let probe = || {
        vec![
            plain(6, "INSERT INTO layout (roots) SELECT sum(rootpage) FROM sqlite_master", T),
            plain(7, "INSERT INTO layout (pages) SELECT sum(pageno) FROM dbstat", T),
        ]
    };
    let out_a = applied_all.apply(probe()).await.unwrap();
    let out_b = restored.apply(probe()).await.unwrap();
    assert_eq!(format!("{out_a:?}"), format!("{out_b:?}"));
    let (ra, rb) = (rows(&applied_all, "SELECT * FROM layout"), rows(&restored, "SELECT * FROM layout"));
    assert_eq!(ra, rb, "the same log gave the node that applied it {ra:?} and the restored node {rb:?}");
}

/// A write is "bounded by its data", says the guard, so it may run without
/// a step budget. But a non-recursive statement can make its own data:
/// `json_each` of a generated array, joined with itself, is 10^12 rows
/// from one short statement. Every node applies it forever, and again
/// after every restart (the entry stays in the log): the whole database
/// is down for good. The write must be refused or stopped, the same way on
/// every node.
#[test]
fn a_write_that_generates_unbounded_work_is_refused_or_stopped() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (n)").unwrap();
        let sql =
            "INSERT INTO t SELECT count(*) FROM json_each(?1) a, json_each(?1) b, json_each(?1) c, json_each(?1) d";
        let array = format!("[{}0]", "0,".repeat(999)); // 1000 elements, 2 KB
        let r = sql::run_writes(&c, &[Statement::with_params(sql, vec![array.into()])]);
        let _ = tx.send(r.map(|_| ()));
    });
    // Generous: a refusal or a step budget answers in milliseconds; 10^12
    // joined rows take SQLite hours.
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(r) => assert!(r.is_err(), "the write ran to its end?"),
        Err(_) => panic!("the write still runs after 60 s: every node's apply would be stuck on it"),
    }
}

/// An entry of several writes (as the primary's group commit makes).
fn batch(i: u64, sqls: &[&str], time_ms: u64) -> Entry {
    let writes = sqls.iter().map(|s| Write { statements: vec![Statement::new(*s)], request_id: None }).collect();
    Entry { log_id: id(i), payload: EntryPayload::Normal(WriteBatch { writes, time_ms }) }
}

/// A write that runs past its step budget fails alone, with the same
/// error on every node, however the node batched its entries; the writes
/// around it apply.
#[tokio::test]
async fn a_write_over_its_step_budget_fails_alone_and_alike_on_every_node() {
    let limits = sql::WriteLimits { max_steps: 1_000_000 };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let setup = || vec![membership(1), plain(2, "CREATE TABLE t (n)", T)];
    // 10^12 rows to count; a statement that writes while it runs (the
    // INSERT) and one that only reads (the SELECT: SQLite rolls nothing
    // back when it is interrupted).
    let heavy_insert = "INSERT INTO t SELECT count(*) FROM json_each('[1,2,3,4,5,6,7,8,9,10]') a, \
                        json_each('[1,2,3,4,5,6,7,8,9,10]') b, json_each(zeroblob(0) || '[' || \
                        substr(replace(hex(zeroblob(100000)), '00', ',1'), 2) || ']') c, \
                        json_each('[1,2,3,4,5,6,7,8,9,10]') d";
    let heavy_select = "SELECT count(*) FROM json_each('[1,2,3,4,5,6,7,8,9,10]') a, \
                        json_each('[1,2,3,4,5,6,7,8,9,10]') b, json_each('[1,2,3,4,5,6,7,8,9,10]') c, \
                        json_each('[1,2,3,4,5,6,7,8,9,10]') d, json_each('[1,2,3,4,5,6,7,8,9,10]') e, \
                        json_each('[1,2,3,4,5,6,7,8,9,10]') f";
    let writes = ["INSERT INTO t VALUES (1)", heavy_insert, "INSERT INTO t VALUES (2)", heavy_select];
    // Node A: all four writes in one entry.
    let mut node_a = StateMachine::open_with(a.path(), limits).unwrap();
    node_a.apply(setup()).await.unwrap();
    let out_a = node_a.apply(vec![batch(3, &writes, T)]).await.unwrap();
    // Node B: the same log, applied one entry at a time after a restart.
    {
        let mut node_b = StateMachine::open_with(b.path(), limits).unwrap();
        node_b.apply(setup()).await.unwrap();
    }
    let mut node_b = StateMachine::open_with(b.path(), limits).unwrap();
    let out_b = node_b.apply(vec![batch(3, &writes, T)]).await.unwrap();
    assert_eq!(format!("{out_a:?}"), format!("{out_b:?}"));
    let outcomes = &out_a[0];
    assert!(matches!(&outcomes[0], ApplyOutcome::Done(_)), "{outcomes:?}");
    assert!(matches!(&outcomes[2], ApplyOutcome::Done(_)), "{outcomes:?}");
    for failed in [&outcomes[1], &outcomes[3]] {
        match failed {
            ApplyOutcome::Failed(why) => assert!(why.contains("write exceeded 1000000 steps"), "{why}"),
            other => panic!("not stopped: {other:?}"),
        }
    }
    assert_eq!(rows(&node_a, "SELECT n FROM t ORDER BY rowid"), vec![vec!["Integer(1)"], vec!["Integer(2)"]]);
    assert_eq!(rows(&node_a, "SELECT n FROM t ORDER BY rowid"), rows(&node_b, "SELECT n FROM t ORDER BY rowid"));
    assert_eq!(node_a.applied().borrow().index, 3);
}

/// Local time depends on each node's time zone: refused in writes, with a
/// clear error (the same on every node); reads may use it.
#[tokio::test]
async fn local_time_in_a_write_fails_on_every_node_alike() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    sm.apply(vec![membership(1), plain(2, "CREATE TABLE t (at)", T)]).await.unwrap();
    let out = sm
        .apply(vec![
            plain(3, "INSERT INTO t VALUES (datetime('now', 'local' || 'time'))", T),
            logged(
                4,
                Statement::with_params(
                    "INSERT INTO t VALUES (datetime(?, ?))",
                    vec!["2024-01-01 10:00".into(), "utc".into()],
                ),
                T,
            ),
        ])
        .await
        .unwrap();
    for o in out.iter().flatten() {
        match o {
            ApplyOutcome::Failed(why) => assert!(why.contains("time zone"), "{why}"),
            other => panic!("local time in a write: {other:?}"),
        }
    }
    assert_eq!(rows(&sm, "SELECT count(*) FROM t"), vec![vec!["Integer(0)"]]);
    // Reads keep local time.
    assert_eq!(rows(&sm, "SELECT datetime(0, 'unixepoch', 'localtime') IS NOT NULL"), vec![vec!["Integer(1)"]]);
}

/// What the guard refuses in writes is refused whatever the spelling;
/// SQLite's own reads of the schema (DROP, ALTER, CREATE) still work, and
/// reads may look at everything.
#[tokio::test]
async fn writes_cannot_read_the_build_the_layout_or_the_statistics_but_ddl_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    let ddl = [
        "CREATE TABLE t (a, b)",
        "CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, x)",
        "INSERT INTO t VALUES (1, 2)",
        "CREATE TABLE copy AS SELECT * FROM t",
        "CREATE INDEX ta ON t (a)",
        "CREATE VIEW v AS SELECT a FROM t",
        "ALTER TABLE copy ADD COLUMN c DEFAULT 3",
        "ALTER TABLE copy RENAME COLUMN c TO d",
        "ALTER TABLE copy DROP COLUMN d",
        "ALTER TABLE copy RENAME TO copied",
        "DROP VIEW v",
        "DROP INDEX ta",
        "DROP TABLE seq",
        "DROP TABLE copied",
    ];
    let mut entries = vec![membership(1)];
    entries.extend(ddl.iter().enumerate().map(|(n, s)| plain(2 + n as u64, s, T)));
    let out = sm.apply(entries).await.unwrap();
    for (sql, o) in ddl.iter().zip(out.iter().skip(1)) {
        assert!(matches!(&o[..], [ApplyOutcome::Done(_)]), "{sql}: {o:?}");
    }
    let refused = [
        ("INSERT INTO t SELECT sqlite_version(), 1", "version"),
        ("INSERT INTO t SELECT \"SQLITE_SOURCE_ID\"(), 1", "version"),
        ("INSERT INTO t SELECT sqlite_compileoption_used('ENABLE_FTS5'), 1", "version"),
        ("INSERT INTO t SELECT name, 1 FROM sqlite_schema", "sqlite_schema"),
        ("INSERT INTO t SELECT count(*), 1 FROM \"SQLITE_MASTER\"", "sqlite_schema"),
        ("UPDATE t SET a = (SELECT group_concat(name) FROM sqlite_master)", "sqlite_schema"),
        ("CREATE TABLE names AS SELECT name FROM sqlite_master", "sqlite_schema"),
        ("INSERT INTO t SELECT count(*), 1 FROM dbstat('main')", "dbstat"),
        ("CREATE VIRTUAL TABLE pages USING dbstat", "dbstat"),
        ("ANALYZE", "ANALYZE"),
        ("INSERT INTO t SELECT load_extension('x'), 1", "load_extension"),
    ];
    let base = 2 + ddl.len() as u64;
    let entries: Vec<_> = refused.iter().enumerate().map(|(n, (s, _))| plain(base + n as u64, s, T)).collect();
    let out = sm.apply(entries).await.unwrap();
    for ((sql, why), o) in refused.iter().zip(&out) {
        match &o[..] {
            [ApplyOutcome::Failed(e)] => assert!(e.contains(why), "{sql}: {e}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    assert_eq!(rows(&sm, "SELECT a, b FROM t"), vec![vec!["Integer(1)", "Integer(2)"]]);
    // Reads see all of it.
    let c = open_read_only(&sm.db_path()).unwrap();
    for sql in ["SELECT sqlite_version()", "SELECT count(*) FROM sqlite_schema", "SELECT count(*) FROM dbstat"] {
        assert!(sql::run_query(&c, sql, &bulwark_db_api::api::Params::None).is_ok(), "{sql}");
    }
}

/// Rowids of a table without INTEGER PRIMARY KEY are data like any other:
/// a node restored from a snapshot has the same ones, also after deletes.
#[tokio::test]
async fn rowids_are_the_same_on_a_node_restored_from_a_snapshot() {
    let (_dirs, mut applied_all, mut restored) = applied_and_restored(vec![
        membership(1),
        plain(2, "CREATE TABLE p (x PRIMARY KEY)", T),
        plain(3, "CREATE TABLE t (x, y REFERENCES p (x))", T),
        plain(4, "CREATE INDEX tx ON t (x)", T),
        plain(5, "INSERT INTO t (x) SELECT value FROM json_each('[5,4,3,2,1,0,9,8,7,6]')", T),
        plain(6, "DELETE FROM t WHERE x < 5", T),
    ])
    .await;
    let next = || vec![plain(7, "INSERT INTO t (x) VALUES (10)", T), plain(8, "DELETE FROM t WHERE rowid = 7", T)];
    outcome_ok(&applied_all.apply(next()).await.unwrap());
    outcome_ok(&restored.apply(next()).await.unwrap());
    let q = "SELECT rowid, x FROM t ORDER BY rowid";
    assert_eq!(rows(&applied_all, q), rows(&restored, q));
    assert_eq!(rows(&restored, q).len(), 5);
}
