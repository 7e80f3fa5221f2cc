//! The `bulwark-dbbench` binary prints one JSON report per run.
use std::process::Command;

#[test]
fn the_sqlite_target_prints_a_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let out = Command::new(env!("CARGO_BIN_EXE_bulwark-dbbench"))
        .args(["sqlite", "--path", db.to_str().unwrap(), "--clients", "2", "--seconds", "0"])
        .output()
        .expect("running bulwark-dbbench");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["target"], "sqlite");
    assert_eq!(report["clients"], 2);
    assert!(report["writes"].is_u64() && report["p99_us"].is_u64(), "{report}");
    // The table the loop writes to was made.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.query_row("SELECT count(*) FROM bench", [], |r| r.get::<_, i64>(0)).unwrap();
}

#[test]
fn a_cluster_run_without_a_secret_fails_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_bulwark-dbbench"))
        .args(["cluster", "--nodes", "127.0.0.1:1", "--seconds", "0"])
        .env_remove("BULWARK_DB_SECRET")
        .output()
        .expect("running bulwark-dbbench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster secret"), "{out:?}");
}
