//! The end state of a scenario: wait until every database node has applied
//! the same index under one primary, then compare a checksum of every user
//! table across the nodes.
use crate::cluster::{Cluster, DbNode, SECRET};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Why a query to a database node failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueryError {
    /// No answer: connect, write or read failed or timed out.
    #[error("{addr}: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// An answer other than 200; `body` is the node's error.
    #[error("{addr}: HTTP {status} {body}")]
    Status { addr: SocketAddr, status: u16, body: String },
    /// 200 with a body that is not JSON.
    #[error("{addr}: answer is not JSON: {source}")]
    Json {
        addr: SocketAddr,
        #[source]
        source: serde_json::Error,
    },
}

/// `POST /v1/query` of `sql` with `consistency = none`: what this node
/// itself has.
pub(crate) fn query(addr: SocketAddr, sql: &str) -> Result<Value, QueryError> {
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
    .map_err(|source| QueryError::Http { addr, source })?;
    if r.status != 200 {
        return Err(QueryError::Status { addr, status: r.status, body: r.text() });
    }
    serde_json::from_slice(&r.body).map_err(|source| QueryError::Json { addr, source })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_answers_no_json_or_nothing_is_named() {
        let mut not_a_db = bulwark_testkit::Backend::start("web9");
        let addr = not_a_db.addr;
        let e = query(addr, "SELECT 1").unwrap_err();
        assert!(matches!(e, QueryError::Json { addr: a, .. } if a == addr), "{e:?}");
        assert!(e.to_string().starts_with(&format!("{addr}: answer is not JSON: ")), "{e}");
        not_a_db.stop();
        let e = query(addr, "SELECT 1").unwrap_err();
        // Refused, or reset when the closing listener still had it queued.
        let QueryError::Http { source, .. } = &e else { panic!("not a connection error: {e:?}") };
        assert_eq!(e.to_string(), format!("{addr}: {source}"));
    }
}
