//! A replica that restarts refuses to vote for a leader lease, as it did
//! before the restart: otherwise it could help elect a second primary while
//! the first still counts a quorum within its lease. openraft 0.9 starts
//! the lease at the node's start; this guards that across upgrades.
mod db_common;

use bulwark_testkit::{wait_until, Process};
use db_common::*;
use std::time::Duration;

#[test]
fn a_restarted_replica_refuses_votes_for_a_lease() {
    let rt = rt();
    let mut c = Cluster::start(&rt, &["127.0.0.1", "127.0.0.1", "127.0.0.1"]);
    let primary = c.wait_primary();
    exec(&rt, &c.client, "CREATE TABLE t (v TEXT)", vec![]);
    let replica = (1..=3).find(|&id| id != primary).unwrap();
    let candidate = (1..=3).find(|&id| id != primary && id != replica).unwrap();
    let term = c.node(replica).status().unwrap().term;

    // kill -9 and restart with a long election timeout, so its lease (and
    // the hold) comfortably outlasts the request below on a slow machine.
    let node = c.node_mut(replica);
    node.kill();
    let cfg = node.config_again().election_timeout(Duration::from_secs(20)).write_timeout(Duration::from_secs(20));
    node.proc = Some(Process::start("db", &cfg.to_toml()));
    wait_until("the restarted replica to answer", || c.node(replica).status().is_some());

    // Another replica campaigns in a higher term with a log at least as
    // long as anyone's: only the lease stands between it and this vote.
    let request = format!(
        r#"{{"vote":{{"leader_id":{{"term":{t},"node_id":{candidate}}},"committed":false}},
            "last_log_id":{{"leader_id":{{"term":{t},"node_id":{candidate}}},"index":1000000}}}}"#,
        t = term + 1
    );
    let r = post(c.node(replica).raft_addr, "/raft/vote", &request, Some(SECRET));
    assert_eq!(r.status, 200, "{}", r.text());
    let answer: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(answer["Ok"]["vote_granted"], false, "a restarted replica granted a vote at once: {answer}");
}
