//! `bulwark db dump | load | backup | restore` against real clusters of
//! `bulwark db` processes: every SQLite type survives dump → load, an
//! interrupted load resumes without a duplicate row, and a backup taken
//! under write load restores into a new cluster holding exactly the writes
//! up to the log index it records.
mod db_common;

use bulwark_db_api::DbRole;
use bulwark_db_api::{Consistency, Params, Rows, Value};
use bulwark_testkit::wait_until;
use db_common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Run `bulwark db ARGS` with the test secret; panic unless it succeeds.
fn bulwark_db(args: &[&str]) -> Output {
    succeeded(db_command(args))
}

fn nodes_of(c: &Cluster) -> String {
    c.nodes.iter().map(|n| n.addr.to_string()).collect::<Vec<_>>().join(",")
}

fn query(rt: &tokio::runtime::Runtime, c: &Cluster, sql: &str) -> Rows {
    rt.block_on(c.client.query(sql, Params::None, Consistency::Strong, None)).expect("query")
}

#[test]
fn dump_and_load_round_trip_every_sqlite_type() {
    let rt = rt();
    let a = Cluster::start(&rt, &["127.0.0.1"]);
    exec(&rt, &a.client, "CREATE TABLE v (id INTEGER PRIMARY KEY, x, note TEXT)", vec![]);
    exec(&rt, &a.client, "CREATE INDEX v_note ON v (note)", vec![]);
    let values: Vec<Value> = vec![
        Value::Null,
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Real(0.1),
        Value::Real(-2.0),
        Value::Real(1.0e300),
        Value::Text("it's \"quoted\";\nsecond line\r\n\ttab, ünïcödé".into()),
        Value::Text(String::new()),
        Value::Blob(vec![0, 1, 2, 255, b'\'', b'\n']),
        Value::Blob(vec![]),
    ];
    for (i, v) in values.iter().enumerate() {
        exec(
            &rt,
            &a.client,
            "INSERT INTO v (id, x, note) VALUES (?, ?, ?)",
            vec![(i as i64).into(), v.clone(), "n".into()],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("a.sql");
    bulwark_db(&["dump", "--from-primary", "--to", dump.to_str().unwrap(), "--nodes", &nodes_of(&a)]);
    let text = std::fs::read_to_string(&dump).unwrap();
    assert!(!text.contains("_bulwark"), "{text}");

    let b = Cluster::start(&rt, &["127.0.0.1"]);
    bulwark_db(&["load", dump.to_str().unwrap(), "--nodes", &nodes_of(&b)]);
    let q = "SELECT id, x, typeof(x), quote(x), note FROM v ORDER BY id";
    let (ra, rb) = (query(&rt, &a, q), query(&rt, &b, q));
    assert_eq!(ra.rows.len(), values.len());
    assert_eq!(rb.rows, ra.rows);
    let idx = query(&rt, &b, "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = 'v_note'");
    assert_eq!(idx.rows[0][0], Value::Integer(1));
}

#[test]
fn an_interrupted_load_resumes_without_duplicates() {
    let rt = rt();
    let c = Cluster::start(&rt, &["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rows.sql");
    let mut text = String::from("BEGIN TRANSACTION;\nCREATE TABLE r (n INTEGER, s TEXT);\n");
    for n in 0..1000 {
        text.push_str(&format!("INSERT INTO r VALUES({n}, 'row\n{n}');\n"));
    }
    text.push_str("COMMIT;\n");
    std::fs::write(&script, text).unwrap();
    let progress = dir.path().join("rows.sql.progress");
    let s = script.to_str().unwrap();
    let nodes = nodes_of(&c);
    let count = || query(&rt, &c, "SELECT count(*), count(DISTINCT n) FROM r").rows[0].clone();

    // Two batches, then a third whose progress is lost: as if the tool
    // was killed after the primary applied the batch but before it wrote
    // the progress file.
    bulwark_db(&["load", s, "--batch", "100", "--max-batches", "2", "--nodes", &nodes]);
    let after_two = std::fs::read(&progress).unwrap();
    bulwark_db(&["load", s, "--batch", "100", "--max-batches", "1", "--nodes", &nodes]);
    assert_eq!(count(), vec![Value::Integer(299), Value::Integer(299)]);
    std::fs::write(&progress, after_two).unwrap();

    let out = bulwark_db(&["load", s, "--batch", "100", "--nodes", &nodes]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["done"], true, "{report}");
    assert_eq!(count(), vec![Value::Integer(1000), Value::Integer(1000)]);

    // A finished load is not run again by accident.
    let again = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["db", "load", s, "--nodes", &nodes])
        .env("BULWARK_DB_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already finished"));
}

#[test]
fn a_statement_sqlite_refuses_is_named_by_its_line() {
    let rt = rt();
    let c = Cluster::start(&rt, &["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bad.sql");
    std::fs::write(&script, "CREATE TABLE t (a);\nINSERT INTO t VALUES (1);\n\nINSERT INTO nowhere VALUES (2);\n")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["db", "load", script.to_str().unwrap(), "--nodes", &nodes_of(&c)])
        .env("BULWARK_DB_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4") && err.contains("no such table: nowhere"), "{err}");
    // The statements before it are in, once.
    let r = query(&rt, &c, "SELECT count(*) FROM t");
    assert_eq!(r.rows[0][0], Value::Integer(1));
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_backup_under_load_restores_into_a_new_cluster() {
    let rt = rt();
    let c = Cluster::start(&rt, &["127.0.0.1", "127.0.0.1", "127.0.0.1"]);
    exec(&rt, &c.client, "CREATE TABLE w (seq INTEGER PRIMARY KEY, payload TEXT)", vec![]);
    // A writer: every acknowledged write with the log index it got.
    let acked: Arc<Mutex<Vec<(i64, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, acked, stop) = (c.client.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = db_common::rt();
            let mut seq = 0i64;
            while !stop.load(Ordering::SeqCst) {
                seq += 1;
                let st = [bulwark_db_api::Statement::with_params(
                    "INSERT INTO w (seq, payload) VALUES (?, ?)",
                    vec![seq.into(), format!("payload {seq}").into()],
                )];
                let r = rt.block_on(client.execute(&st)).expect("write");
                acked.lock().unwrap().push((seq, r.token.index));
            }
        })
    };
    wait_until("writes are flowing", || acked.lock().unwrap().len() >= 50);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.db.zst");
    let out = bulwark_db(&["backup", "--compress", "--to", file.to_str().unwrap(), "--nodes", &nodes_of(&c)]);
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let index = done["log_index"].as_u64().unwrap();
    let primary = c.wait_primary();
    assert_ne!(done["from"], c.node(primary).addr.to_string(), "taken from a replica: {done}");
    // More writes after the backup, then stop.
    let n = acked.lock().unwrap().len();
    wait_until("writes after the backup", || acked.lock().unwrap().len() >= n + 50);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.iter().any(|&(_, i)| i > index), "no write after the backup's index {index}");

    // The checksum file is sha256sum's.
    let sums = std::fs::read_to_string(dir.path().join("site.db.zst.sha256")).unwrap();
    assert_eq!(sums, format!("{}  site.db.zst\n", sha256_of(&file)));

    // Restore refuses a data dir in use, then makes a new one.
    let busy = c.node(2).data.path().to_str().unwrap().to_string();
    let refused = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["db", "restore", "--from", file.to_str().unwrap(), "--data-dir", &busy, "--node-id", "9"])
        .args(["--address", "127.0.0.1:1", "--raft-address", "127.0.0.1:2"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));

    let data = tempfile::tempdir().unwrap();
    let node = RestoredNode::new();
    let out = succeeded(node.restore(&file, &["--data-dir", data.path().to_str().unwrap()]));
    let restored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(restored["log_index"].as_u64(), Some(index), "{restored}");
    let cfg = node.config(data.path());
    let new = DbProc::launch(data, cfg);
    wait_until("the restored node is a primary", || {
        new.status().is_some_and(|s| s.role == DbRole::Primary && s.quorum)
    });
    // A second node joins the new cluster from its snapshot.
    let joiner = DbProc::start(2, "127.0.0.1", false);
    let client = bulwark_db_api::Client::new([new.addr.to_string()], SECRET);
    joiner.join(&rt, &client, true);
    let w = rt
        .block_on(client.execute(&[bulwark_db_api::Statement::new("INSERT INTO w (seq, payload) VALUES (-1, 'new')")]))
        .unwrap();
    assert!(w.token.index > index);

    let want: Vec<i64> = acked.iter().filter(|&&(_, i)| i <= index).map(|&(s, _)| s).collect();
    for node in [&new, &joiner] {
        let q = serde_json::json!({"sql": "SELECT seq, payload FROM w WHERE seq > 0 ORDER BY seq", "token": w.token});
        let r = post(node.addr, "/v1/query", &q.to_string(), Some(SECRET));
        assert_eq!(r.status, 200, "{}", r.text());
        let rows: Rows = serde_json::from_slice(&r.body).unwrap();
        let got: Vec<i64> = rows.rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
        assert_eq!(got, want, "node {}: rows up to index {index}", node.id);
        assert!(rows.rows.iter().all(|r| r[1] == Value::Text(format!("payload {}", r[0].as_i64().unwrap()))));
    }
}
