//! The SQL API cannot be bent: on a 3-node cluster of real processes,
//! ATTACH and BEGIN on `/v1/query`, a trigger on or a write to the quoted
//! bookkeeping table `"_bulwark_meta"`, `datetime("now")` in a write and a
//! runaway recursive read are each refused with SQLite's error and the
//! reason; every node keeps applying and serving afterwards.
mod db_common;

use db_common::*;

fn refused(r: &bulwark_testkit::HttpResponse, sql: &str, needle: &str) {
    assert_eq!(r.status, 400, "{sql}: {}", r.text());
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["code"], "sql", "{sql}: {body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains(needle), "{sql}: `{msg}` does not say `{needle}`");
}

fn query(sql: &str) -> String {
    serde_json::json!({ "sql": sql }).to_string()
}

fn execute(sql: &str) -> String {
    serde_json::json!({ "statements": [{ "sql": sql }] }).to_string()
}

#[test]
fn api_sql_is_refused_what_would_bend_the_cluster() {
    let rt = rt();
    let c = Cluster::start(&rt, &["127.0.0.1"; 3]);
    let primary = c.node(c.wait_primary());
    exec(&rt, &c.client, "CREATE TABLE t (v TEXT)", vec![]);
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("any.db");
    std::fs::write(&file, b"").unwrap(); // an empty file is an empty SQLite database

    for node in &c.nodes {
        let attach = format!("ATTACH '{}' AS other", file.display());
        refused(&node.post("/v1/query", &query(&attach)), &attach, "ATTACH");
        refused(&node.post("/v1/query", &query("BEGIN")), "BEGIN", "transaction");
        refused(&node.post("/v1/query", &query("PRAGMA journal_mode")), "PRAGMA", "PRAGMA");
        let meta = "SELECT * FROM \"_bulwark_meta\"";
        refused(&node.post("/v1/query", &query(meta)), meta, "reserved for replication metadata");
    }
    let trigger = "CREATE TRIGGER stop BEFORE INSERT ON \"_bulwark_meta\" BEGIN SELECT RAISE(ABORT, 'stopped'); END";
    let r = primary.post("/v1/execute", &execute(trigger));
    assert_eq!(r.status, 400, "{trigger}: {}", r.text());
    for (sql, needle) in [
        ("DELETE FROM \"_bulwark_meta\"", "reserved for replication metadata"),
        ("CREATE INDEX i ON \"_BULWARK_REQUESTS\" (id)", "reserved for replication metadata"),
        ("INSERT INTO t VALUES (datetime(\"now\"))", "single-quotes"),
        ("CREATE TEMP TABLE x (a)", "temporary"),
        ("INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c", "recursive"),
    ] {
        refused(&primary.post("/v1/execute", &execute(sql)), sql, needle);
    }
    // A read that would never end is interrupted at its deadline.
    let runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    refused(&c.nodes[1].post("/v1/query", &query(runaway)), runaway, "interrupted");

    // Every node still applies writes and serves reads.
    let w = exec(&rt, &c.client, "INSERT INTO t VALUES ('after')", vec![]);
    for node in &c.nodes {
        assert_eq!(count_on(node.addr, "t", Some(w.token)), Some(1), "node {}", node.id);
    }
}
