use super::*;
use crate::bulwark_tables::meta_set;
use crate::request_ids::remember_request;
use bulwark_db_api::api::Statement;
use bulwark_db_api::raft_types::{Write, WriteBatch};
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use std::collections::BTreeSet;

pub(super) fn id(i: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), i)
}

/// An entry with one write of `sql`.
pub(super) fn entry_of(i: u64, sql: &str, request_id: Option<&str>, time_ms: u64) -> Entry {
    let write = Write { statements: vec![Statement::new(sql)], request_id: request_id.map(str::to_string) };
    Entry { log_id: id(i), payload: EntryPayload::Normal(WriteBatch { writes: vec![write], time_ms }) }
}

pub(super) fn write(i: u64, sql: &str) -> Entry {
    entry_of(i, sql, None, 1000 + i)
}

pub(super) fn membership(i: u64) -> Entry {
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

pub(super) fn write_once(i: u64, request_id: &str, sql: &str, time_ms: u64) -> Entry {
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
    // An hour later (primary's clock in the log) and more than the kept
    // entries later, the ids are forgotten: the prune runs at an entry
    // index that is a multiple of 256.
    let later = 2000 + bulwark_db_api::api::REQUEST_ID_RETENTION_MS + 10;
    let far = first_prune_after(6 + crate::request_ids::KEEP_IDS_OF_LAST_ENTRIES);
    sm.apply(vec![write_once(far, "x", "INSERT INTO t (v) VALUES ('late')", later)]).await.unwrap();
    let left: i64 = c.query_row("SELECT count(*) FROM _bulwark_requests", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 1, "only the new id is remembered");
    let out = sm.apply(vec![write_once(far + 1, "a", "INSERT INTO t (v) VALUES ('again')", later)]).await.unwrap();
    assert!(matches!(&out[0][0], ApplyOutcome::Done(_)), "{:?}", out[0]);
}

/// The first index past `index` at which request ids are pruned.
pub(super) fn first_prune_after(index: u64) -> u64 {
    let every = crate::request_ids::PRUNE_EVERY;
    (index / every + 1) * every
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
            // A write whose second statement fails leaves nothing of its first.
            Write {
                statements: vec![
                    Statement::new("INSERT INTO t VALUES (4, 0)"),
                    Statement::new("INSERT INTO t VALUES (1, 0)"),
                ],
                request_id: Some("c".into()),
            },
        ],
        time_ms: 5000,
    };
    let out = sm.apply(vec![Entry { log_id: id(1), payload: EntryPayload::Normal(batch) }]).await.unwrap();
    let out = &out[0];
    assert_eq!(out.len(), 6);
    assert!(matches!(&out[1], ApplyOutcome::Done(r) if r[0].rows_affected == 1), "{out:?}");
    assert!(matches!(&out[2], ApplyOutcome::Failed(m) if m.contains("UNIQUE")), "{out:?}");
    assert!(matches!(&out[3], ApplyOutcome::Replayed { index: 1, .. }), "{out:?}");
    assert!(matches!(&out[4], ApplyOutcome::Done(_)), "{out:?}");
    assert!(matches!(&out[5], ApplyOutcome::Failed(m) if m.contains("UNIQUE")), "{out:?}");
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
        sm.apply(vec![write(1, "CREATE TABLE t (r, b)"), write(2, "INSERT INTO t VALUES (random(), randomblob(8))")])
            .await
            .unwrap();
        let c = open_read_only(&sm.db_path()).unwrap();
        vals.push(
            c.query_row("SELECT r, hex(b) FROM t", [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).unwrap(),
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
    let (mut src, snap) = node_with_42_and_its_snapshot(a.path()).await;
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
/// A node in `dir` whose table `t` holds 42 (log entries 1 to 3), and
/// the snapshot it built of that.
pub(super) async fn node_with_42_and_its_snapshot(dir: &std::path::Path) -> (StateMachine, Snapshot) {
    let mut sm = StateMachine::open(dir).unwrap();
    sm.apply(vec![membership(1), write(2, "CREATE TABLE t (x)"), write(3, "INSERT INTO t VALUES (42)")]).await.unwrap();
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    (sm, snap)
}

pub(super) fn rows_of_t(sm: &StateMachine) -> i64 {
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
    sm.apply(vec![membership(1), write(2, "CREATE TABLE t (x)"), write(3, "INSERT INTO t VALUES (1)")]).await.unwrap();
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
    sm.apply(vec![membership(1), write(2, "CREATE TABLE t (x)"), write(3, "INSERT INTO t VALUES (1)")]).await.unwrap();
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
