//! No split brain: a primary cut off from the majority (iptables DROP
//! between its address and its peers', inside a private network namespace
//! so the host's network is never touched) refuses writes while alive; the
//! majority elects a new primary; after healing, the old primary rejoins
//! as a replica and the write it could not commit exists nowhere.
mod db_common;

use bulwark_db_api::DbRole;
use bulwark_testkit::netns::sh;
use bulwark_testkit::wait_until;
use db_common::*;
use std::time::Duration;

#[test]
fn isolated_primary_refuses_writes_and_rejoins_as_replica() {
    if bulwark_testkit::netns::isolated("isolated_primary_refuses_writes_and_rejoins_as_replica") {
        isolated_primary_inside_netns();
    }
}

fn isolated_primary_inside_netns() {
    let rt = rt();
    let (c, ips) = three_node_cluster_with_a_row(&rt);

    // Cut node 1 off from nodes 2 and 3 (both directions). The test itself
    // talks from 127.0.0.1 and still reaches every node.
    for other in &ips[1..] {
        sh("iptables", &["-A", "INPUT", "-s", ips[0], "-d", other, "-j", "DROP"]);
        sh("iptables", &["-A", "INPUT", "-s", other, "-d", ips[0], "-j", "DROP"]);
    }
    let write = r#"{"statements":[{"sql":"INSERT INTO t VALUES ('isolated')"}]}"#;
    let r = c.node(1).post("/v1/execute", write);
    assert_eq!(r.status, 503, "isolated primary accepted a write: {}", r.text());
    eprintln!("first write to the isolated primary: {}", r.text());
    // Once its lease is gone it refuses at once.
    wait_until("the isolated primary refuses writes with no_quorum", || {
        let r = c.node(1).post("/v1/execute", write);
        assert_ne!(r.status, 200, "isolated primary accepted a write: {}", r.text());
        r.status == 503 && r.text().contains("no_quorum")
    });
    assert_eq!(bulwark_testkit::get(c.node(1).addr, "/primary").unwrap().status, 503);

    // The majority side elects a new primary and takes writes.
    let new_primary = {
        let mut p = 0;
        wait_short("a new primary on the majority side", Duration::from_secs(30), || {
            p = [2, 3]
                .into_iter()
                .find(|id| c.node(*id).status().is_some_and(|s| s.role == DbRole::Primary && s.quorum))
                .unwrap_or(0);
            p != 0
        });
        p
    };
    let w = exec(&rt, &c.client, "INSERT INTO t VALUES ('after')", vec![]);

    // Heal: the old primary rejoins as a replica of the new term.
    sh("iptables", &["-F", "INPUT"]);
    wait_until("old primary rejoins as replica", || {
        c.node(1).status().is_some_and(|s| s.role == DbRole::Replica && s.applied_index >= w.token.index)
    });
    for id in 1..=3 {
        let r = c.node(id).post(
            "/v1/query",
            &format!(r#"{{"sql":"SELECT v FROM t ORDER BY rowid","token":{}}}"#, serde_json::json!(w.token)),
        );
        assert_eq!(r.status, 200, "node {id}: {}", r.text());
        let rows: bulwark_db_api::Rows = serde_json::from_slice(&r.body).unwrap();
        let vals: Vec<&str> = rows.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
        assert_eq!(vals, ["before", "after"], "node {id} (primary is {new_primary})");
    }
}
