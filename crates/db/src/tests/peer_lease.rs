//! A primary trusts a replica's acceptance only for as long as that
//! replica refuses to vote for another (its own leader lease), whatever
//! its own election timeout: nodes configured with different timeouts must
//! not let a primary claim a quorum after its replicas could have elected
//! another.
use super::{config, get, http, status, wait_for, TestNode};
use std::time::Duration;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_with_a_longer_lease_trusts_its_replicas_for_their_lease_only() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Node 1's lease is 2.4 s; nodes 2 and 3 refuse votes for 480 ms after
    // they last heard it.
    let mut slow = config(1, dirs[0].path(), true);
    slow.election_timeout = Duration::from_secs(2);
    slow.write_timeout = Duration::from_secs(10);
    let n1 = TestNode::start(slow);
    wait_for("node 1 leads alone", WAIT, || async { get(n1.addr, "/primary").await.map(|r| r.0) == Some(200) }).await;
    let others: Vec<TestNode> =
        (2..=3).map(|id| TestNode::start(config(id, dirs[id as usize - 1].path(), false))).collect();
    for (id, n) in (2..).zip(&others) {
        let body = serde_json::json!({
            "node_id": id, "address": n.addr.to_string(), "raft_address": n.raft_addr.to_string(), "voter": true,
        });
        let r = http().post_json(&n1.addr.to_string(), "/v1/members/add", &body, WAIT).await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    wait_for("node 1 has its quorum", WAIT, || async { status(n1.addr).await.is_some_and(|s| s["quorum"] == true) })
        .await;
    // Both replicas stop answering: after their 480 ms they may elect
    // another primary, so node 1 must stop counting them by then, not
    // after its own 2.4 s.
    let paused = [others[0].pause(), others[1].pause()];
    let silent = Instant::now();
    tokio::time::sleep_until(silent + Duration::from_millis(1200)).await;
    let s = status(n1.addr).await.expect("node 1's status");
    assert_eq!(s["quorum"], false, "a quorum counted past the replicas' lease: {s}");
    assert!(silent.elapsed() < Duration::from_millis(2300), "the check came too late to tell: {:?}", silent.elapsed());
    assert_ne!(get(n1.addr, "/primary").await.map(|r| r.0), Some(200), "node 1 still answers as primary");
    drop(paused);
    // The replicas wake and may elect one of theirs: some node leads with
    // its quorum again.
    let nodes: Vec<TestNode> = std::iter::once(n1).chain(others).collect();
    wait_for("a primary with its quorum again", WAIT, || async {
        for n in &nodes {
            if status(n.addr).await.is_some_and(|s| s["role"] == "primary" && s["quorum"] == true) {
                return true;
            }
        }
        false
    })
    .await;
    super::stop_all(nodes);
}

/// A node restarted with a shorter election timeout still refuses votes,
/// and does not campaign, for its previous run's lease from its start: a
/// primary may still count an acceptance it gave before the restart for
/// that long. Node 1 leads alone with a 12 s lease, and restarts with a
/// 480 ms one: without the hold it would elect itself within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_a_shorter_lease_waits_out_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut long = config(1, dir.path(), true);
    long.election_timeout = Duration::from_secs(10);
    long.write_timeout = Duration::from_secs(20);
    let n1 = TestNode::start(long);
    wait_for("node 1 leads alone", WAIT, || async { get(n1.addr, "/primary").await.map(|r| r.0) == Some(200) }).await;
    n1.join();

    let started = Instant::now();
    let n1 = TestNode::start(config(1, dir.path(), false));
    let vote = openraft::raft::VoteRequest::<u64>::new(bulwark_db_api::raft_types::Vote::new(50, 2), None);
    let r = http().post_json(&n1.raft_addr.to_string(), "/raft/vote", &vote, WAIT).await.unwrap();
    assert_eq!(r.status, 503, "a vote within the old lease: {}", String::from_utf8_lossy(&r.body));
    tokio::time::sleep_until(started + Duration::from_secs(3)).await;
    let s = status(n1.addr).await.expect("node 1's status");
    assert_ne!(s["role"], "primary", "node 1 campaigned within its old lease: {s}");
    assert!(started.elapsed() < Duration::from_secs(11), "the check came too late to tell");
    n1.join();
}
