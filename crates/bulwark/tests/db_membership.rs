//! Online membership and snapshots: the log is compacted after a snapshot,
//! a new learner (async read replica) is brought up from that snapshot,
//! serves token reads and reports its lag, and nodes are removed online.
mod db_common;

use bulwark_db_api::DbRole;
use bulwark_testkit::wait_until;
use db_common::*;

#[test]
fn every_node_snapshots_once_its_log_outgrows_the_database() {
    let rt = rt();
    let c = Cluster::start_tuned(&rt, &["127.0.0.1", "127.0.0.1", "127.0.0.1"], |c| c.snapshot_log_bytes(1048576));
    exec(&rt, &c.client, "CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT)", vec![]);
    // One 64 KiB row rewritten: the log grows by 64 KiB a write, the
    // database stays one row.
    let mut last = None;
    for n in 0..24 {
        let v = bulwark_db_api::Value::Text(format!("{n:08}").repeat(8 << 10));
        last = Some(exec(&rt, &c.client, "INSERT OR REPLACE INTO big (id, v) VALUES (1, ?)", vec![v]));
    }
    let written = last.unwrap().token.index;
    for n in &c.nodes {
        wait_until(&format!("node {} snapshots past 1 MiB of log", n.id), || {
            n.status().is_some_and(|s| s.snapshot_index.is_some_and(|i| i > 1) && s.applied_index >= written)
        });
        assert!(n.logs().contains("the log since the last one outgrew the database"), "{}", n.logs());
    }
}

#[test]
fn learner_joins_from_a_snapshot_and_nodes_leave_online() {
    let rt = rt();
    let c = Cluster::start_tuned(&rt, &["127.0.0.1", "127.0.0.1", "127.0.0.1"], |c| c.snapshot_every(20));
    exec(&rt, &c.client, "CREATE TABLE t (n INTEGER)", vec![]);
    let mut last = None;
    for n in 0..60 {
        last = Some(exec(&rt, &c.client, "INSERT INTO t VALUES (?)", vec![n.into()]));
    }
    let token = last.unwrap().token;
    wait_until("the primary compacted its log after a snapshot", || {
        c.node(1).status().is_some_and(|s| s.snapshot_index.is_some() && s.purged_index.is_some_and(|p| p > 0))
    });

    // A fresh node can only catch up from the snapshot: the log is gone.
    let learner = DbProc::start_tuned(4, "127.0.0.1", |c| c.snapshot_every(20));
    let s = learner.join(&rt, &c.client, false);
    assert!(s.members.iter().any(|m| m.id == 4 && !m.voter), "{:?}", s.members);
    wait_until("learner installed a snapshot and applied the last write", || {
        learner
            .status()
            .is_some_and(|s| s.role == DbRole::Learner && s.snapshot_index.is_some() && s.applied_index >= token.index)
    });
    assert_eq!(count_on(learner.addr, "t", Some(token)), Some(60));
    wait_until("learner reports a known lag", || learner.status().is_some_and(|s| s.lag.known && s.lag.entries == 0));
    assert!(learner.logs().contains("installed snapshot"), "{}", learner.logs());

    // Remove the learner and one voter online; two voters keep writing.
    let s = rt.block_on(c.client.remove_node(4)).expect("remove learner");
    assert!(!s.members.iter().any(|m| m.id == 4), "{:?}", s.members);
    let s = rt.block_on(c.client.remove_node(3)).expect("remove voter");
    assert_eq!(s.members.iter().filter(|m| m.voter).count(), 2, "{:?}", s.members);
    let w = exec(&rt, &c.client, "INSERT INTO t VALUES (100)", vec![]);
    assert_eq!(count_on(c.node(2).addr, "t", Some(w.token)), Some(61));
}
