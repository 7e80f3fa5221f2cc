//! The end state of a scenario: wait until every database node has applied
//! the same index under one primary, then compare a checksum of every user
//! table across the nodes.
use crate::cluster::{Cluster, DbNode, SECRET};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

pub(crate) fn query(addr: std::net::SocketAddr, sql: &str) -> Result<Value, String> {
    let auth = format!("Bearer {SECRET}");
    let body = json!({ "sql": sql, "consistency": "none" }).to_string();
    let r = crate::http(
        addr,
        "POST",
        "/v1/query",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        body.as_bytes(),
        Duration::from_secs(10),
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    if r.status != 200 {
        return Err(format!("{addr}: HTTP {} {}", r.status, r.text()));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("{addr}: {e}"))
}

/// Wait until every node answers with the same applied index under one
/// primary; then a checksum of every user table per node.
pub(crate) fn converge(cluster: &Cluster, problems: &mut Vec<String>) -> (bool, String, Option<DbNode>) {
    let t = Instant::now();
    let mut last: String;
    let settled = loop {
        let st: Vec<Option<Value>> =
            cluster.dbs.iter().map(|d| cluster.db_status(d.addr, Duration::from_secs(1))).collect();
        let applied: BTreeSet<u64> = st.iter().flatten().filter_map(|s| s["applied_index"].as_u64()).collect();
        let primaries = st.iter().flatten().filter(|s| s["role"] == "primary" && s["quorum"] == true).count();
        last = st
            .iter()
            .zip(&cluster.dbs)
            .map(|(s, d)| match s {
                Some(s) => format!("{}: {} term {} applied {}", d.name, s["role"], s["term"], s["applied_index"]),
                None => format!("{}: no answer", d.name),
            })
            .collect::<Vec<_>>()
            .join("; ");
        if st.iter().all(Option::is_some) && applied.len() == 1 && primaries == 1 {
            break true;
        }
        if t.elapsed() > Duration::from_secs(30) {
            problems.push(format!("replicas did not converge within 30 s: {last}"));
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !settled {
        return (false, String::new(), None);
    }
    let primary = cluster.primary();
    let mut sums: Vec<(String, String)> = Vec::new();
    for d in &cluster.dbs {
        let tables = match query(d.addr, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") {
            Ok(v) => v["rows"].as_array().cloned().unwrap_or_default(),
            Err(e) => {
                problems.push(format!("listing tables on {}: {e}", d.name));
                return (false, String::new(), primary);
            }
        };
        let mut all = String::new();
        for t in tables.iter().filter_map(|r| r[0].as_str()) {
            if t.starts_with("_bulwark") || t.starts_with("sqlite_") {
                continue;
            }
            match query(d.addr, &format!("SELECT * FROM \"{t}\" ORDER BY rowid")) {
                Ok(v) => all.push_str(&format!("{t}:{}\n", v["rows"])),
                Err(e) => problems.push(format!("reading {t} on {}: {e}", d.name)),
            }
        }
        sums.push((d.name.clone(), format!("{:016x}", crate::fnv1a(all.as_bytes()))));
    }
    let distinct: BTreeSet<&String> = sums.iter().map(|(_, s)| s).collect();
    if distinct.len() != 1 {
        problems.push(format!("replicas differ: {sums:?} ({last})"));
        return (false, format!("{sums:?}"), primary);
    }
    (true, sums[0].1.clone(), primary)
}
