//! Tests that try to make the state machine lose, skip or diverge data:
//! environmental failures while applying, snapshots that are not what they
//! claim, request ids under a clock that jumps.
use super::tests::{
    entry_of, first_prune_after, id, membership, node_with_42_and_its_snapshot, rows_of_t, write, write_once,
};
use super::*;
use crate::request_ids::KEEP_IDS_OF_LAST_ENTRIES;
use bulwark_db_api::api::{Value, REQUEST_ID_RETENTION_MS};
use bulwark_db_api::raft_types::{Write, WriteBatch};
use openraft::EntryPayload;

fn pragma(sm: &StateMachine, sql: &str) -> i64 {
    sm.shared.writer.lock().unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Every row of `t`, as hex, in rowid order.
fn table_t(sm: &StateMachine) -> Vec<String> {
    let c = open_read_only(&sm.db_path()).unwrap();
    let mut st = c.prepare("SELECT hex(b) FROM t ORDER BY rowid").unwrap();
    st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

#[tokio::test]
async fn a_full_disk_stops_the_state_machine_and_the_entry_applies_once_there_is_room() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut roomy = StateMachine::open(a.path()).unwrap();
    let mut cramped = StateMachine::open(b.path()).unwrap();
    let setup = || vec![membership(1), write(2, "CREATE TABLE t (b BLOB)")];
    roomy.apply(setup()).await.unwrap();
    cramped.apply(setup()).await.unwrap();
    // The second node's "disk" is full a few pages from now.
    let pages = pragma(&cramped, "PRAGMA page_count");
    pragma(&cramped, &format!("PRAGMA max_page_count = {}", pages + 2));
    let entries = || {
        vec![
            write_once(3, "big", "INSERT INTO t VALUES (zeroblob(100000))", 3000),
            write(4, "INSERT INTO t VALUES (x'01')"),
        ]
    };

    let out = roomy.apply(entries()).await.unwrap();
    assert!(matches!(&out[0][0], ApplyOutcome::Done(r) if r[0].rows_affected == 1), "{out:?}");

    // The same entries on the full node: it refuses to go on.
    for _ in 0..2 {
        let e = cramped.apply(entries()).await.unwrap_err();
        assert!(e.to_string().contains("full"), "{e}");
        // Nothing recorded, nothing skipped: still at entry 2, no row, the
        // request id not remembered (or the retry would replay a failure).
        assert_eq!(cramped.applied_state().await.unwrap().0, Some(id(2)));
        assert_eq!(cramped.applied().borrow().index, 2);
        assert_eq!(rows_of_t(&cramped), 0);
        let c = open_read_only(&cramped.db_path()).unwrap();
        assert_eq!(c.query_row("SELECT count(*) FROM _bulwark_requests", [], |r| r.get::<_, i64>(0)).unwrap(), 0);
    }

    // Room again (openraft applies the same entries once the node runs
    // again): both nodes hold the same rows.
    pragma(&cramped, "PRAGMA max_page_count = 1073741823");
    let out = cramped.apply(entries()).await.unwrap();
    assert!(matches!(&out[0][0], ApplyOutcome::Done(r) if r[0].rows_affected == 1), "{out:?}");
    assert_eq!(cramped.applied().borrow().index, 4);
    assert_eq!(table_t(&cramped), table_t(&roomy));
    assert_eq!(table_t(&roomy).len(), 2);
}

#[tokio::test]
async fn errors_of_the_statement_and_the_data_are_the_writes_results() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    let with_params = |i: u64, sql: &str, params: Vec<Value>| {
        let w = Write { statements: vec![bulwark_db_api::api::Statement::with_params(sql, params)], request_id: None };
        Entry { log_id: id(i), payload: EntryPayload::Normal(WriteBatch { writes: vec![w], time_ms: 1000 + i }) }
    };
    let out = sm
        .apply(vec![
            membership(1),
            write(2, "CREATE TABLE t (b BLOB)"),
            write(3, "CREATE TABLE s (x INTEGER PRIMARY KEY, y INTEGER NOT NULL CHECK (y > 0)) STRICT"),
            write(4, "INSERT INTO s VALUES (1, 1)"),
            write(5, "INSERT INTO s VALUES (1, 2)"),
            write(6, "INSERT INTO s VALUES (2, 0)"),
            write(7, "INSERT INTO s VALUES (3, 'text')"),
            write(8, "INSERT INTO nope VALUES (1)"),
            write(9, "INSERT INTO s (nope) VALUES (1)"),
            write(10, "INSERT INTO s VALUES (4, 4))"),
            with_params(11, "INSERT INTO s VALUES (?, ?)", vec![Value::Integer(5)]),
            write(12, "SELECT no_such_function()"),
            write(13, "INSERT INTO s VALUES (6, 6)"),
        ])
        .await
        .unwrap();
    for (n, want) in [
        (4, "UNIQUE"),
        (5, "CHECK"),
        (6, "cannot store TEXT"),
        (7, "no such table"),
        (8, "no column named nope"),
        (9, "syntax error"),
        (10, "parameters"),
        (11, "no such function"),
    ] {
        assert!(matches!(&out[n][0], ApplyOutcome::Failed(m) if m.contains(want)), "entry {}: {:?}", n + 1, out[n]);
    }
    assert!(matches!(&out[12][0], ApplyOutcome::Done(_)), "{:?}", out[12]);
    assert_eq!(sm.applied().borrow().index, 13);
}

#[tokio::test]
async fn a_clock_that_jumps_ahead_does_not_forget_the_request_ids_of_recent_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    let t0 = 1_700_000_000_000;
    sm.apply(vec![
        membership(1),
        entry_of(2, "CREATE TABLE t (b BLOB)", None, t0),
        write_once(3, "a", "INSERT INTO t VALUES (x'01')", t0),
    ])
    .await
    .unwrap();
    // A new primary whose clock is two hours ahead writes the entry that
    // prunes request ids; the client's retry of "a" comes right after.
    let ahead = t0 + 2 * REQUEST_ID_RETENTION_MS;
    let prune = first_prune_after(3);
    let out = sm
        .apply(vec![
            entry_of(prune, "INSERT INTO t VALUES (x'02')", None, ahead),
            write_once(prune + 1, "a", "INSERT INTO t VALUES (x'01')", ahead),
        ])
        .await
        .unwrap();
    assert!(matches!(&out[1][0], ApplyOutcome::Replayed { index: 3, .. }), "{:?}", out[1]);
    assert_eq!(rows_of_t(&sm), 2, "the retry did not apply again");
    // Past the last entries kept, the clock's rule alone decides again.
    let far = first_prune_after(3 + KEEP_IDS_OF_LAST_ENTRIES);
    let out = sm
        .apply(vec![
            entry_of(far, "INSERT INTO t VALUES (x'03')", None, ahead),
            write_once(far + 1, "a", "INSERT INTO t VALUES (x'04')", ahead),
        ])
        .await
        .unwrap();
    assert!(matches!(&out[1][0], ApplyOutcome::Done(_)), "{:?}", out[1]);
}

/// A node with entries 1-2 (membership, table `t`) and a snapshot of them.
async fn node_with_a_snapshot(dir: &Path) -> StateMachine {
    let mut sm = StateMachine::open(dir).unwrap();
    sm.apply(vec![membership(1), write(2, "CREATE TABLE t (x)")]).await.unwrap();
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    sm
}

/// `sm` is as [`node_with_a_snapshot`] left it.
async fn untouched(sm: &mut StateMachine) {
    assert_eq!(sm.applied_state().await.unwrap().0, Some(id(2)));
    assert_eq!(sm.applied().borrow().index, 2);
    assert_eq!(rows_of_t(sm), 0);
    assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta.last_log_id, Some(id(2)));
    assert!(!sm.shared.dir.join("snapshot.recv.db").exists());
}

#[tokio::test]
async fn a_snapshot_that_is_not_what_it_claims_is_refused_and_the_database_is_untouched() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_src, snap) = node_with_42_and_its_snapshot(a.path()).await;
    let bytes = snap.snapshot.into_inner();
    let mut dst = node_with_a_snapshot(b.path()).await;

    // Announced as a later log id than the file holds.
    let mut meta = snap.meta.clone();
    meta.last_log_id = Some(id(5));
    let e = dst.install_snapshot(&meta, Box::new(Cursor::new(bytes.clone()))).await.unwrap_err();
    assert!(e.to_string().contains("announced as log") && e.to_string().contains("holds log"), "{e}");
    untouched(&mut dst).await;

    // Announced with another membership.
    let mut meta = snap.meta.clone();
    let m = openraft::Membership::new(vec![std::collections::BTreeSet::from([1u64, 2])], None);
    meta.last_membership = StoredMembership::new(Some(id(1)), m);
    let e = dst.install_snapshot(&meta, Box::new(Cursor::new(bytes.clone()))).await.unwrap_err();
    assert!(e.to_string().contains("membership"), "{e}");
    untouched(&mut dst).await;

    // Damaged on the way: not a database, or one cut short.
    for damaged in [b"not a database at all, really".repeat(200), bytes[..bytes.len() / 2].to_vec()] {
        let e = dst.install_snapshot(&snap.meta, Box::new(Cursor::new(damaged))).await.unwrap_err();
        assert!(e.to_string().contains("refused the snapshot"), "{e}");
        untouched(&mut dst).await;
    }

    // The snapshot as announced installs.
    dst.install_snapshot(&snap.meta, Box::new(Cursor::new(bytes))).await.unwrap();
    assert_eq!(dst.applied_state().await.unwrap().0, Some(id(3)));
    assert_eq!(rows_of_t(&dst), 1);
    assert_eq!(dst.get_current_snapshot().await.unwrap().unwrap().meta, snap.meta);
}

#[tokio::test]
async fn a_snapshot_json_of_an_older_version_is_removed_and_the_snapshot_file_says_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = node_with_a_snapshot(dir.path()).await;
    sm.apply(vec![write(3, "INSERT INTO t VALUES (1)")]).await.unwrap();
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    drop(sm);
    // An older version renamed snapshot.db, then wrote snapshot.json: a
    // crash between the two left the metadata of the snapshot before.
    let stale = SnapshotMeta {
        last_log_id: Some(id(2)),
        last_membership: StoredMembership::default(),
        snapshot_id: "1-2-1700000000000".into(),
    };
    std::fs::write(dir.path().join("snapshot.json"), serde_json::to_vec(&stale).unwrap()).unwrap();
    std::fs::write(dir.path().join("snapshot.json.tmp"), b"{").unwrap();

    let mut sm = StateMachine::open(dir.path()).unwrap();
    assert!(!dir.path().join("snapshot.json").exists());
    assert!(!dir.path().join("snapshot.json.tmp").exists());
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(id(3)));
    assert_eq!(current.meta.last_membership.log_id(), &Some(id(1)));
    // It installs on another node as it is.
    let other = tempfile::tempdir().unwrap();
    let mut fresh = StateMachine::open(other.path()).unwrap();
    fresh.install_snapshot(&current.meta, current.snapshot).await.unwrap();
    assert_eq!(rows_of_t(&fresh), 1);
}

#[tokio::test]
async fn the_snapshot_id_follows_the_file_and_an_older_build_never_replaces_a_newer_snapshot() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut node = node_with_a_snapshot(a.path()).await;
    let first = node.get_current_snapshot().await.unwrap().unwrap().meta;
    assert!(first.snapshot_id.starts_with("1-2-"), "{}", first.snapshot_id);
    assert_eq!(node.get_current_snapshot().await.unwrap().unwrap().meta, first, "the same file, the same id");

    // A newer snapshot arrives from the primary; a build of the (older)
    // database does not replace it.
    let mut src = StateMachine::open(b.path()).unwrap();
    src.apply(vec![membership(1), write(2, "CREATE TABLE t (x)"), write(3, "INSERT INTO t VALUES (1)")]).await.unwrap();
    let newer = src.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let tmp = a.path().join("snapshot.recv.db");
    std::fs::write(&tmp, newer.snapshot.into_inner()).unwrap();
    {
        let _publishing = node.shared.snapshots.lock().unwrap();
        snapshot_file::publish(a.path(), &tmp).unwrap();
    }
    let built = node.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(built.meta, newer.meta);
    assert_ne!(built.meta.snapshot_id, first.snapshot_id);
}

#[tokio::test]
async fn a_write_that_rolls_back_the_whole_transaction_fails_alone_on_every_node() {
    let w = |sql: &str| Write { statements: vec![bulwark_db_api::api::Statement::new(sql)], request_id: None };
    let entries = || {
        vec![
            membership(1),
            write(2, "CREATE TABLE u (x INTEGER PRIMARY KEY, y UNIQUE ON CONFLICT ROLLBACK)"),
            write(3, "INSERT INTO u VALUES (1, 1)"),
            Entry {
                log_id: id(4),
                payload: EntryPayload::Normal(WriteBatch {
                    writes: vec![
                        w("INSERT INTO u VALUES (2, 2)"),
                        w("INSERT OR ROLLBACK INTO u VALUES (1, 10)"),
                        w("INSERT INTO u VALUES (3, 3)"),
                        w("INSERT INTO u VALUES (4, 1)"),
                        w("INSERT INTO u VALUES (5, 5)"),
                    ],
                    time_ms: 1004,
                }),
            },
            write(5, "INSERT INTO u VALUES (6, 6)"),
        ]
    };
    let rows = |sm: &StateMachine| -> Vec<i64> {
        let c = open_read_only(&sm.db_path()).unwrap();
        let mut st = c.prepare("SELECT x FROM u ORDER BY x").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    };
    // One node applies everything in one transaction, another entry by entry.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut together = StateMachine::open(a.path()).unwrap();
    let out = together.apply(entries()).await.unwrap();
    let mut apart = StateMachine::open(b.path()).unwrap();
    let mut out_apart = Vec::new();
    for e in entries() {
        out_apart.extend(apart.apply(vec![e]).await.unwrap());
    }
    assert_eq!(out, out_apart);
    let entry4 = &out[3];
    assert!(matches!(&entry4[0], ApplyOutcome::Done(_)), "{entry4:?}");
    assert!(matches!(&entry4[1], ApplyOutcome::Failed(m) if m.contains("UNIQUE")), "{entry4:?}");
    assert!(matches!(&entry4[2], ApplyOutcome::Done(_)), "{entry4:?}");
    assert!(matches!(&entry4[3], ApplyOutcome::Failed(m) if m.contains("UNIQUE")), "{entry4:?}");
    assert!(matches!(&entry4[4], ApplyOutcome::Done(_)), "{entry4:?}");
    assert_eq!(rows(&together), [1, 2, 3, 5, 6]);
    assert_eq!(rows(&apart), rows(&together));
    assert_eq!(together.applied().borrow().index, 5);
}
