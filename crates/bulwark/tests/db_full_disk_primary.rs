//! The primary's disk fills up under write load: the primary must stop
//! (its Raft log or its database cannot be written: Raft stops and the
//! `bulwark db` process exits non-zero, for its supervisor to start it
//! again), a replica takes over and the writes go on, no acknowledged
//! write is lost, and once the disk has room the old primary starts again
//! and catches up. Every node's database passes `PRAGMA integrity_check`.
//!
//! The disk is real: a tmpfs of a few MiB mounted on the primary's data
//! dir, inside a private mount namespace (`unshare --mount`, root) so that
//! nothing outlives the test (as `db_full_disk.rs` does for a replica).
mod db_common;

use bulwark_db_api::DbRole;
use bulwark_testkit::netns::sh;
use bulwark_testkit::wait_until;
use db_common::*;

const TEST: &str = "a_primary_whose_disk_fills_under_load_hands_over_and_loses_no_acknowledged_write";

/// Size of each row: 12 MiB of disk holds a few dozen of them.
const ROW_BYTES: i64 = 256 * 1024;
/// Rows written at most (64 MiB): far more than the primary's disk holds.
const MAX_ROWS: i64 = 256;
/// Rows acknowledged by the new primary before the old one gets room.
const AFTER_HANDOVER: usize = 10;

#[test]
fn a_primary_whose_disk_fills_under_load_hands_over_and_loses_no_acknowledged_write() {
    if bulwark_testkit::netns::isolated_mounts(TEST) {
        full_disk_inside_mount_namespace();
    }
}

/// Whether process `pid` still runs (an exited child stays a zombie until
/// reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false)
}

fn integrity(dir: &std::path::Path) -> String {
    let c = rusqlite::Connection::open_with_flags(dir.join("data.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()));
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap()
}

fn full_disk_inside_mount_namespace() {
    let rt = rt();
    // Node 1, the first primary, has a 12 MiB disk.
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_string();
    sh("mount", &["-t", "tmpfs", "-o", "size=12m,mode=0700", "tmpfs", &dir]);
    let cfg = config(1, "127.0.0.1", data.path()).bootstrap(true);
    let mut first = DbProc::launch(data, cfg);
    let boot = bulwark_db_api::Client::new([first.addr.to_string()], SECRET);
    wait_until("node 1 is primary", || first.status().is_some_and(|s| s.role == DbRole::Primary));
    let mut others = Vec::new();
    for id in [2, 3] {
        let n = DbProc::start(id, "127.0.0.1", false);
        n.join(&rt, &boot, true);
        others.push(n);
    }
    let all: Vec<String> = std::iter::once(&first).chain(&others).map(|n| n.addr.to_string()).collect();
    let client = bulwark_db_api::Client::new(all, SECRET);
    exec(&rt, &client, "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)", vec![]);

    // Write until node 1 has stopped and the new primary has taken
    // AFTER_HANDOVER more writes. A write that fails is not acknowledged
    // (it may or may not be there); every acknowledged one must be.
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    let mut after_exit = 0;
    let mut last = None;
    for i in 0..MAX_ROWS {
        let stmt = bulwark_db_api::Statement::with_params(
            "INSERT INTO t VALUES (?, zeroblob(?))",
            vec![i.into(), ROW_BYTES.into()],
        );
        match rt.block_on(client.execute(&[stmt])) {
            Ok(r) => {
                acknowledged.push(i);
                last = Some(r.token);
            }
            Err(_) => failed += 1,
        }
        if !alive(first.proc.as_ref().unwrap().pid()) {
            after_exit += 1;
            if after_exit > AFTER_HANDOVER && acknowledged.len() > AFTER_HANDOVER {
                break;
            }
        }
    }
    let exit = first.proc.as_mut().unwrap().wait_exit();
    let logs = first.logs();
    assert!(!exit.success(), "node 1 exited with {exit:?}; logs:\n{logs}");
    assert!(logs.contains("Raft stopped on this node"), "{logs}");
    assert!(
        logs.contains("No space left on device") || logs.contains("database or disk is full"),
        "node 1 does not say its disk is full:\n{logs}"
    );
    for l in logs.lines().filter(|l| l.contains("Raft stopped") || l.contains("stopped applying")) {
        eprintln!("node 1: {l}");
    }
    first.proc = None;
    let mut new_primary = 0;
    wait_until("a new primary", || {
        let p = others.iter().find(|n| n.status().is_some_and(|s| s.role == DbRole::Primary && s.quorum));
        new_primary = p.map(|p| p.id).unwrap_or(0);
        new_primary != 0
    });
    eprintln!("{} writes acknowledged, {failed} failed; node {new_primary} took over", acknowledged.len());

    // The cause goes away: node 1 starts again and catches up.
    sh("mount", &["-o", "remount,size=256m", &dir]);
    first.restart();
    let after = exec(&rt, &client, "INSERT INTO t VALUES (?, zeroblob(16))", vec![MAX_ROWS.into()]).token;
    assert!(after.index > last.map(|t| t.index).unwrap_or(0));
    acknowledged.push(MAX_ROWS);
    for n in std::iter::once(&first).chain(&others) {
        wait_until("every node applies the last write", || n.status().is_some_and(|s| s.applied_index >= after.index));
        let q = serde_json::json!({"sql": "SELECT id FROM t ORDER BY id", "token": after}).to_string();
        let r = post(n.addr, "/v1/query", &q, Some(SECRET));
        assert_eq!(r.status, 200, "{}", r.text());
        let rows: bulwark_db_api::Rows = serde_json::from_slice(&r.body).unwrap();
        let ids: std::collections::BTreeSet<i64> = rows.rows.iter().filter_map(|r| r[0].as_i64()).collect();
        let lost: Vec<i64> = acknowledged.iter().filter(|i| !ids.contains(i)).copied().collect();
        assert!(lost.is_empty(), "node {} lost acknowledged writes {lost:?}", n.id);
    }
    let dirs: Vec<std::path::PathBuf> =
        std::iter::once(&first).chain(&others).map(|n| n.data.path().to_path_buf()).collect();
    first.terminate();
    for n in &mut others {
        n.terminate();
    }
    for d in &dirs {
        assert_eq!(integrity(d), "ok", "{}", d.display());
    }
    drop(first);
    sh("umount", &[&dir]);
}
