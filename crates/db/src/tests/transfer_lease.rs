//! A leadership transfer makes its target campaign whatever it accepted
//! before, while the primary counts that acceptance for the target's
//! lease: so the target campaigns only a lease after it last accepted a
//! request of a primary's, and the primary sends none meanwhile (no
//! heartbeats, no read confirmations) and claims no quorum while it hands
//! over.
use super::applied_hints::{cluster, quick_configs};
use super::{get, http, status, wait_for};
use bulwark_db_api::api::{Consistency, Params, QueryRequest};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_just_heard_its_primary_does_not_campaign_when_asked() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(quick_configs(&dirs, 3)).await;
    let r =
        http().post_json(&nodes[1].raft_addr.to_string(), "/raft/elect", &serde_json::json!({}), WAIT).await.unwrap();
    assert_eq!(r.status, 503, "campaigned within its lease: {}", String::from_utf8_lossy(&r.body));
    let s = status(nodes[0].addr).await.expect("node 1's status");
    assert_eq!(s["role"], "primary", "{s}");
    super::stop_all(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_handing_over_confirms_no_read_and_claims_no_quorum() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(quick_configs(&dirs, 3)).await;
    let primary = nodes[0].addr.to_string();
    let promote = {
        let primary = primary.clone();
        tokio::spawn(async move {
            http().post_json(&primary, "/v1/promote", &serde_json::json!({"node_id": 2}), WAIT).await.unwrap()
        })
    };
    wait_for("node 1 hands over", WAIT, || async {
        status(nodes[0].addr).await.is_some_and(|s| s["role"] == "primary" && s["quorum"] == false)
    })
    .await;
    let strong = QueryRequest::new("SELECT count(*) FROM t", Params::None, Consistency::Strong, None);
    let r = http().post_json(&primary, "/v1/query", &strong, WAIT).await.unwrap();
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 503, "a strong read confirmed during the transfer: {body}");
    assert!(body.contains("transferring"), "{body}");
    assert_ne!(get(nodes[0].addr, "/primary").await.map(|r| r.0), Some(200));
    let done = promote.await.unwrap();
    assert_eq!(done.status, 200, "the transfer: {}", String::from_utf8_lossy(&done.body));
    wait_for("node 2 leads", WAIT, || async { get(nodes[1].addr, "/primary").await.map(|r| r.0) == Some(200) }).await;
    super::stop_all(nodes);
}

/// A target whose lease is longer than its primary's waits out its own
/// lease before it campaigns, and the transfer succeeds (when the other
/// voters' timers give it the time: node 3 here waits longer still; a
/// voter whose lease and election timeout end before the target's lease
/// wins instead, and the transfer reports it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_node_with_a_longer_lease_waits_for_it() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut configs = quick_configs(&dirs, 3);
    for (node, timeout) in [(1, 1), (2, 3)] {
        configs[node].0.election_timeout = Duration::from_secs(timeout);
        configs[node].0.write_timeout = Duration::from_secs(10);
    }
    let nodes = cluster(configs).await;
    let r = http().post_json(&nodes[0].addr.to_string(), "/v1/promote", &serde_json::json!({"node_id": 2}), WAIT).await;
    let r = r.unwrap();
    assert_eq!(r.status, 200, "the transfer: {}", String::from_utf8_lossy(&r.body));
    wait_for("node 2 leads", WAIT, || async { get(nodes[1].addr, "/primary").await.map(|r| r.0) == Some(200) }).await;
    super::stop_all(nodes);
}

/// A caller that gives up on a transfer (its connection closed, the
/// handler dropped) leaves the primary as it was: heartbeats on, writes
/// accepted. Both replicas here have long leases, so the target is still
/// waiting for its own when the caller leaves, and nobody else campaigns
/// soon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_whose_caller_leaves_hands_the_primary_back() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut configs = quick_configs(&dirs, 3);
    for c in &mut configs[1..] {
        c.0.election_timeout = Duration::from_secs(6);
        c.0.write_timeout = Duration::from_secs(20);
    }
    let nodes = cluster(configs).await;
    let primary = nodes[0].addr.to_string();
    let gone =
        http().post_json(&primary, "/v1/promote", &serde_json::json!({"node_id": 2}), Duration::from_secs(1)).await;
    assert!(gone.is_err(), "the transfer answered within a second: {gone:?}");
    let body = serde_json::json!({"statements": [{"sql": "INSERT INTO t VALUES (60)"}]});
    wait_for("node 1 takes writes again", Duration::from_secs(5), || async {
        http().post_json(&primary, "/v1/execute", &body, WAIT).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    let s = status(nodes[0].addr).await.expect("node 1's status");
    assert_eq!(s["role"], "primary", "{s}");
    super::stop_all(nodes);
}
