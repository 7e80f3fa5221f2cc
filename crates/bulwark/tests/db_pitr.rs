//! Point-in-time recovery against a real cluster of `bulwark db`
//! processes: the primary archives its log (`--archive-log`) while it
//! snapshots and purges under write load; a backup plus the archive,
//! replayed to one second before a `DELETE FROM messages`, hold every
//! write acknowledged before that moment and none sent after it.
mod db_common;

use bulwark_db_api::DbRole;
use bulwark_db_api::{Rows, Value};
use bulwark_testkit::{metric_value, request, wait_until, Process};
use db_common::*;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn ok(out: Output) -> serde_json::Value {
    serde_json::from_slice(&succeeded(out).stdout).unwrap()
}

fn metrics(addr: std::net::SocketAddr) -> String {
    let auth = format!("Bearer {SECRET}");
    request(addr, "GET", "/metrics", &[("Authorization", &auth)], b"").unwrap().text()
}

/// One write the test made: its sequence number, when it was sent and
/// when (if) it was acknowledged, Unix ms.
#[derive(Clone, Copy)]
struct Sent {
    seq: i64,
    sent_ms: u64,
    acked_ms: Option<u64>,
}

#[test]
fn restore_to_one_second_before_a_delete_keeps_every_write_acknowledged_before_it() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    // Snapshots every 200 entries: the log purges all along, and only the
    // archive keeps what it purges.
    let data = tempfile::tempdir().unwrap();
    let cfg = config(1, "127.0.0.1", data.path()).bootstrap(true).snapshot_every(200);
    let p = Process::start_with("db", &cfg.to_toml(), &["--archive-log", archive.to_str().unwrap()]);
    let first = DbProc::running(data, p, cfg);
    wait_until("node 1 becomes primary", || first.status().is_some_and(|s| s.role == DbRole::Primary));
    let seed = bulwark_db_api::Client::new([first.addr.to_string()], SECRET);
    let mut nodes = vec![first];
    for id in [2, 3] {
        let n = DbProc::start_tuned(id, "127.0.0.1", |c| c.snapshot_every(200));
        n.join(&rt, &seed, true);
        nodes.push(n);
    }
    let list = nodes.iter().map(|n| n.addr.to_string()).collect::<Vec<_>>().join(",");
    let client = bulwark_db_api::Client::new(nodes.iter().map(|n| n.addr.to_string()), SECRET);
    exec(&rt, &client, "CREATE TABLE messages (seq INTEGER PRIMARY KEY, at TEXT DEFAULT CURRENT_TIMESTAMP)", vec![]);

    let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, log, stop) = (client.clone(), log.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = db_common::rt();
            let mut seq = 0i64;
            while !stop.load(Ordering::SeqCst) {
                seq += 1;
                let sent_ms = now_ms();
                let st =
                    [bulwark_db_api::Statement::with_params("INSERT INTO messages (seq) VALUES (?)", vec![seq.into()])];
                let acked_ms = rt.block_on(client.execute(&st)).ok().map(|_| now_ms());
                log.lock().unwrap().push(Sent { seq, sent_ms, acked_ms });
            }
        })
    };
    let count = || log.lock().unwrap().len();
    wait_until("writes are flowing", || count() >= 100);
    let backup = dir.path().join("site.db");
    let done = ok(db_command(&["backup", "--from-primary", "--to", backup.to_str().unwrap(), "--nodes", &list]));
    let backup_index = done["log_index"].as_u64().unwrap();
    // Well over a snapshot's worth of writes, and two seconds, after it.
    let n = count();
    let t0 = now_ms();
    wait_until("writes after the backup", || count() >= n + 600 && now_ms() >= t0 + 2000);
    let delete_ms = now_ms();
    let deleted = exec(&rt, &client, "DELETE FROM messages", vec![]);
    let n = count();
    wait_until("writes after the delete", || count() >= n + 50);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let sent = log.lock().unwrap().clone();

    // The primary archived through the delete, and its log was purged
    // past the backup meanwhile (snapshots every 200 entries).
    wait_until("the delete archived", || {
        metric_value(&metrics(nodes[0].addr), "bulwark_db_archived_index", &[]) >= deleted.token.index as f64
    });
    let m = metrics(nodes[0].addr);
    assert!(metric_value(&m, "bulwark_db_archive_gaps_total", &[]) == 0.0, "{m}");
    assert!(metric_value(&m, "bulwark_db_archive_failures_total", &[]) == 0.0, "{m}");
    assert!(!nodes[0].logs().contains("gap in the archive"), "{}", nodes[0].logs());

    let target_ms = delete_ms - 1000;
    let target = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(target_ms)).to_string();
    let restored_dir = tempfile::tempdir().unwrap();
    let restored = RestoredNode::new();
    let out =
        ok(restored.restore(&backup, &["--to-time", &target, "--data-dir", restored_dir.path().to_str().unwrap()]));
    assert_eq!(out["backup_log_index"].as_u64(), Some(backup_index), "{out}");
    assert_eq!(out["stopped"], "target", "{out}");
    let restored_index = out["log_index"].as_u64().unwrap();
    assert!(restored_index > backup_index && restored_index < deleted.token.index, "{out}");

    let cfg = restored.config(restored_dir.path());
    let node = DbProc::launch(restored_dir, cfg);
    wait_until("the restored node is a primary", || {
        node.status().is_some_and(|s| s.role == DbRole::Primary && s.quorum)
    });
    let r = node.post("/v1/query", r#"{"sql": "SELECT seq, unixepoch(at) FROM messages ORDER BY seq"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let rows: Rows = serde_json::from_slice(&r.body).unwrap();
    let got: std::collections::BTreeSet<i64> = rows.rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
    let before: Vec<i64> = sent.iter().filter(|s| s.acked_ms.is_some_and(|a| a <= target_ms)).map(|s| s.seq).collect();
    let after: Vec<i64> = sent.iter().filter(|s| s.sent_ms > target_ms).map(|s| s.seq).collect();
    assert!(before.len() > 100 && !after.is_empty(), "{} before, {} after", before.len(), after.len());
    let missing: Vec<i64> = before.iter().copied().filter(|s| !got.contains(s)).collect();
    assert!(missing.is_empty(), "acknowledged before the target, missing: {missing:?}");
    let extra_rows: Vec<i64> = after.iter().copied().filter(|s| got.contains(s)).collect();
    assert!(extra_rows.is_empty(), "sent after the target, present: {extra_rows:?}");
    // The entry's time was SQLite's clock: no row is stamped after the target.
    for row in &rows.rows {
        let Value::Integer(at) = row[1] else { panic!("{row:?}") };
        assert!(at as u64 * 1000 <= target_ms, "{row:?} after {target_ms}");
    }

    // To an index: exactly there; past the archive's end: refused.
    let to = (backup_index + 7).to_string();
    let by_index = tempfile::tempdir().unwrap();
    let out = ok(restored.restore(&backup, &["--to-index", &to, "--data-dir", by_index.path().to_str().unwrap()]));
    assert_eq!(out["log_index"].as_u64(), Some(backup_index + 7), "{out}");
    let beyond = tempfile::tempdir().unwrap();
    let refused =
        restored.restore(&backup, &["--to-index", "999999999", "--data-dir", beyond.path().to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("the archive ends at index"), "{refused:?}");
    assert_eq!(std::fs::read_dir(beyond.path()).unwrap().count(), 0, "a refused restore wrote to the data dir");
}
