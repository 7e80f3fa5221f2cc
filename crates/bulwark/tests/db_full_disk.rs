//! A replica whose disk fills up must not stay up as a node that never
//! applies anything again: SQLite's SQLITE_FULL stops its state machine
//! (nothing recorded, nothing skipped), Raft stops, and the `bulwark db`
//! process exits non-zero with a clear log line, so that its supervisor
//! starts it again. Once the disk has room, the restarted node applies the
//! same entry again and catches up.
//!
//! The disk is real: a tmpfs of a few MiB mounted on the replica's data
//! dir, inside a private mount namespace (`unshare --mount`, root) so that
//! nothing outlives the test.
mod db_common;

use bulwark_db_api::DbRole;
use bulwark_testkit::netns::sh;
use bulwark_testkit::wait_until;
use db_common::*;

/// Rows of 1 MiB written: more than the replica's disk holds.
const ROWS: i64 = 16;

#[test]
fn a_replica_whose_disk_fills_exits_and_catches_up_once_it_has_room() {
    // Run this same test again in a new mount namespace (needs root, as the
    // test environment has); its mounts disappear with it.
    if bulwark_testkit::netns::isolated_mounts("a_replica_whose_disk_fills_exits_and_catches_up_once_it_has_room") {
        full_disk_inside_mount_namespace();
    }
}

fn full_disk_inside_mount_namespace() {
    let rt = rt();
    let c = Cluster::start(&rt, &["127.0.0.1", "127.0.0.1"]);
    assert_eq!(c.wait_primary(), 1);

    // Node 3's data dir is a 12 MiB disk: room for its Raft log (a 4 MiB
    // segment) and a few MiB of database.
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_string();
    // Mode 0700: a data dir shared with every user (1777, tmpfs's default)
    // is refused.
    sh("mount", &["-t", "tmpfs", "-o", "size=12m,mode=0700", "tmpfs", &dir]);
    let cfg = config(3, "127.0.0.1", data.path());
    let mut victim = DbProc::launch(data, cfg);
    victim.join(&rt, &c.client, true);
    wait_until("node 3 is a replica", || victim.status().is_some_and(|s| s.role == DbRole::Replica));

    exec(&rt, &c.client, "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)", vec![]);
    // The two other nodes commit every write; node 3 runs out of space.
    let mut last = None;
    for i in 0..ROWS {
        last = Some(exec(&rt, &c.client, "INSERT INTO t VALUES (?, zeroblob(1048576))", vec![i.into()]).token);
    }
    let last = last.unwrap();

    let exit = victim.proc.as_mut().unwrap().wait_exit();
    let logs = victim.logs();
    assert!(!exit.success(), "node 3 exited with {exit:?}; logs:\n{logs}");
    assert!(logs.contains("the database stopped applying committed entries"), "{logs}");
    assert!(logs.contains("database or disk is full"), "{logs}");
    assert!(logs.contains("Raft stopped on this node"), "{logs}");
    victim.proc = None;

    // The cause goes away: the disk grows. The restarted node applies the
    // same entry again and catches up, and writes go on.
    sh("mount", &["-o", "remount,size=256m", &dir]);
    victim.restart();
    let after = exec(&rt, &c.client, "INSERT INTO t VALUES (?, zeroblob(16))", vec![ROWS.into()]).token;
    assert!(after.index > last.index);
    wait_until("node 3 catches up", || victim.status().is_some_and(|s| s.applied_index >= after.index));
    assert_eq!(count_on(victim.addr, "t", Some(after)), Some(ROWS + 1));
    let q = r#"{"sql":"SELECT sum(length(b)) FROM t"}"#;
    let sum = post(victim.addr, "/v1/query", q, Some(SECRET));
    assert!(sum.text().contains(&(ROWS * 1048576 + 16).to_string()), "{}", sum.text());
    victim.terminate();
    drop(c);
    sh("umount", &[&dir]);
}
