//! `bulwark db probe` (the load generator of `bench/failover.sh`) against a
//! 3-node cluster whose primary is killed: it keeps writing, and its JSON
//! lines show the new primary and writes acknowledged in the newer term.
mod db_common;

use db_common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[test]
fn probe_reports_the_failover() {
    let rt = rt();
    let mut c = Cluster::start(&rt, &["127.0.0.1", "127.0.0.1", "127.0.0.1"]);
    let old = c.wait_primary();
    let old_term = c.node(old).status().unwrap().term;
    let nodes: Vec<String> = c.nodes.iter().map(|n| n.addr.to_string()).collect();
    let mut probe = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["db", "probe", "--writers", "2", "--seconds", "6", "--nodes", &nodes.join(",")])
        .env("BULWARK_DB_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    c.node_mut(old).kill();
    let mut out = String::new();
    probe.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let status = probe.wait().unwrap();
    let mut err = String::new();
    probe.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "probe exited with {status:?}: {err}");

    let events: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let ok = |e: &&serde_json::Value| e["ev"] == "write" && e["ok"] == true;
    assert!(
        events.iter().filter(ok).any(|e| e["end"].as_f64().unwrap() < killed_at),
        "no write acknowledged before the kill:\n{out}"
    );
    let after = events
        .iter()
        .filter(ok)
        .find(|e| e["term"].as_u64().unwrap() > old_term)
        .unwrap_or_else(|| panic!("no write acknowledged in a term after {old_term}:\n{out}"));
    assert!(after["end"].as_f64().unwrap() > killed_at);
    let new_primary = events.iter().find(|e| {
        e["ev"] == "status"
            && e["nodes"].as_array().unwrap().iter().any(|n| {
                n["role"] == "primary" && n["term"].as_u64().unwrap() > old_term && n["id"].as_u64() != Some(old)
            })
    });
    let new_primary = new_primary.unwrap_or_else(|| panic!("no status line with a new primary:\n{out}"));
    assert!(new_primary["down"].as_array().unwrap().contains(&c.node(old).addr.to_string().into()), "{new_primary}");
}
