//! SQLite never syncs on a db node: after a crash of the machine the
//! database is rebuilt from the node's last snapshot and its log. Here a
//! replica is killed with SIGKILL and its data dir is then made to look
//! like a power loss: `data.boot` names another boot, and the database and
//! WAL are damaged. It must come back with every committed write; a clean
//! stop marks the database clean.
mod db_common;

use bulwark_db_api::DbRole;
use bulwark_testkit::wait_until;
use db_common::*;

#[test]
fn a_node_whose_machine_crashed_rebuilds_its_database_and_loses_nothing() {
    let rt = rt();
    let mut c = Cluster::start_tuned(&rt, &["127.0.0.1", "127.0.0.1", "127.0.0.1"], |c| c.snapshot_every(20));
    let primary = c.wait_primary();
    exec(&rt, &c.client, "CREATE TABLE t (x INTEGER NOT NULL)", vec![]);
    let mut last = None;
    for i in 0..60 {
        last = Some(exec(&rt, &c.client, "INSERT INTO t (x) VALUES (?)", vec![i.into()]));
    }
    let last = last.unwrap().token;
    let victim = (1..=3).find(|&id| id != primary).unwrap();
    let data = c.node(victim).data.path().to_path_buf();
    wait_until("the replica applied every write and took a snapshot", || {
        c.node(victim).status().is_some_and(|s| s.applied_index >= last.index) && data.join("snapshot.db").exists()
    });
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().to_string();
    assert_eq!(std::fs::read_to_string(data.join("data.boot")).unwrap().trim(), format!("running {boot}"));

    c.node_mut(victim).kill();
    // What a power loss could leave: another boot, and the writes SQLite
    // never synced gone or torn.
    std::fs::write(data.join("data.boot"), "running 00000000-0000-0000-0000-000000000000\n").unwrap();
    std::fs::write(data.join("data.db"), b"torn by the power loss").unwrap();
    std::fs::write(data.join("data.db-wal"), b"torn").unwrap();
    // Writes go on meanwhile.
    let after = exec(&rt, &c.client, "INSERT INTO t (x) VALUES (60)", vec![]).token;

    c.node_mut(victim).restart();
    wait_until("the rebuilt replica catches up", || {
        c.node(victim).status().is_some_and(|s| s.role == DbRole::Replica && s.applied_index >= after.index)
    });
    assert_eq!(count_on(c.node(victim).addr, "t", Some(after)), Some(61));
    let sum = post(c.node(victim).addr, "/v1/query", r#"{"sql":"SELECT sum(x) FROM t"}"#, Some(SECRET));
    assert!(sum.text().contains("1830"), "{}", sum.text());
    let logs = c.node(victim).logs();
    assert!(logs.contains("rebuilt it from the last snapshot"), "{}", tail(&logs));
    assert_eq!(std::fs::read_to_string(data.join("data.boot")).unwrap().trim(), format!("running {boot}"));

    // A clean stop syncs the database and says so: no rebuild after a
    // restart of the machine.
    c.node_mut(victim).terminate();
    assert_eq!(std::fs::read_to_string(data.join("data.boot")).unwrap().trim(), "clean");
    c.node_mut(victim).restart();
    wait_until("the replica is back", || {
        c.node(victim).status().is_some_and(|s| s.role == DbRole::Replica && s.applied_index >= after.index)
    });
    assert!(!c.node(victim).logs().contains("rebuilt it"), "{}", tail(&c.node(victim).logs()));
}
