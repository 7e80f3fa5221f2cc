//! Covered answers (openraft's append-entries answered from entries sent
//! ahead, without a round trip) never stand in for a replica's word where
//! a lease or a leadership check depends on it. A primary whose disk
//! stalls while its replicas stop answering must stop claiming a quorum
//! within the lease, while the stall lasts (openraft's core waits on the
//! sync and reports nothing, so its metrics would show the last quorum
//! forever; the quorum clock of `leader_acks` records real acceptances
//! only), and must not look acknowledged afterwards either. A `strong`
//! read confirms leadership with the replicas themselves.
use super::{config, get, http, status_u64, stop_all, wait_for, TestNode, LEASE, SECRET};
use bulwark_db_api::api::{Consistency, Params, QueryRequest, Statement};
use bulwark_db_log::test_hooks::SyncGate;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn primary_code(node: &TestNode) -> Option<u16> {
    get(node.addr, "/primary").await.map(|(code, _)| code)
}

/// Three voters in `dirs`, node 1 primary.
async fn three_voters(dirs: &[tempfile::TempDir; 3]) -> [TestNode; 3] {
    let n1 = TestNode::start(config(1, dirs[0].path(), true));
    wait_for("node 1 leads alone", WAIT, || async { primary_code(&n1).await == Some(200) }).await;
    let n2 = TestNode::start(config(2, dirs[1].path(), false));
    let n3 = TestNode::start(config(3, dirs[2].path(), false));
    for (id, n) in [(2, &n2), (3, &n3)] {
        let body = serde_json::json!({
            "node_id": id, "address": n.addr.to_string(), "raft_address": n.raft_addr.to_string(), "voter": true,
        });
        let r = http().post_json(&n1.addr.to_string(), "/v1/members/add", &body, WAIT).await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    [n1, n2, n3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_primary_with_paused_replicas_stops_being_primary_during_the_stall() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [n1, n2, n3] = three_voters(&dirs).await;
    // Some writes: openraft's appends to both replicas succeed, so the
    // primary sends new entries ahead to them.
    let client = bulwark_db_api::Client::new([n1.addr.to_string()], SECRET);
    client.execute(&[Statement::new("CREATE TABLE t (id INTEGER PRIMARY KEY)")]).await.unwrap();
    for i in 0..5 {
        client.execute(&[Statement::new(format!("INSERT INTO t VALUES ({i})"))]).await.unwrap();
    }
    let last = status_u64(n1.addr, "last_log_index").await.unwrap();
    for n in [&n1, &n2, &n3] {
        wait_for("every node applied the writes", WAIT, || async {
            status_u64(n.addr, "applied_index").await == Some(last)
        })
        .await;
    }

    // The primary's disk stalls: the next write is written, not synced.
    let gate = SyncGate::hold(dirs[0].path());
    let primary = n1.addr.to_string();
    let stalled = tokio::spawn(async move {
        let body = serde_json::json!({"statements": [{"sql": "INSERT INTO t VALUES (100)"}]});
        http().post_json(&primary, "/v1/execute", &body, WAIT).await
    });
    // It was sent ahead to both replicas, which hold it.
    for n in [&n2, &n3] {
        wait_for("the write was sent ahead", WAIT, || async {
            status_u64(n.addr, "last_log_index").await == Some(last + 1)
        })
        .await;
    }
    assert!(gate.held.load(std::sync::atomic::Ordering::SeqCst) > 0, "the sync waits");
    // Both replicas stop answering: within the lease (here: a generous
    // deadline) the primary stops claiming a quorum, with its disk still
    // stalled.
    let paused = [n2.pause(), n3.pause()];
    wait_for("node 1 stops claiming a quorum while its disk stalls", WAIT, || async {
        primary_code(&n1).await == Some(503)
    })
    .await;
    // And never again while it lasts (three leases).
    let until = tokio::time::Instant::now() + LEASE * 3;
    while tokio::time::Instant::now() < until {
        assert_ne!(primary_code(&n1).await, Some(200), "node 1 claims a quorum during the stall");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.release();
    // openraft goes on past the sync (its metrics show the entry) and asks
    // to replicate the entry the replicas accepted before they stopped.
    wait_for("node 1's core went on", WAIT, || async { status_u64(n1.addr, "last_log_index").await == Some(last + 1) })
        .await;
    // No replica answered anything for three leases: never primary again.
    let until = tokio::time::Instant::now() + LEASE * 4;
    while tokio::time::Instant::now() < until {
        assert_ne!(primary_code(&n1).await, Some(200), "node 1 claims a quorum its replicas never gave");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(paused);
    let _ = stalled.await;
    stop_all(vec![n1, n2, n3]);
}

/// `bulwark_db_replication_covered_total` of a node (0 when absent).
async fn covered_total(node: &TestNode) -> u64 {
    let (code, body) = get(node.addr, "/metrics").await.expect("the node answers /metrics");
    assert_eq!(code, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .filter(|l| l.starts_with("bulwark_db_replication_covered_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Only append-entries that carry entries are answered from entries sent
/// ahead: openraft's leadership check behind `strong` reads sends empty
/// ones, and each must reach the replicas. With both replicas frozen right
/// after a burst of writes (while openraft's appends were being answered
/// from entries sent ahead), no `strong` read on the primary succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_reads_need_the_replicas_even_right_after_covered_answers() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [n1, n2, n3] = three_voters(&dirs).await;
    let client = bulwark_db_api::Client::new([n1.addr.to_string()], SECRET);
    client.execute(&[Statement::new("CREATE TABLE t (id INTEGER PRIMARY KEY)")]).await.unwrap();
    for i in 0..50 {
        client.execute(&[Statement::new(format!("INSERT INTO t VALUES ({i})"))]).await.unwrap();
    }
    let last = status_u64(n1.addr, "last_log_index").await.unwrap();
    for n in [&n2, &n3] {
        wait_for("every replica applied the writes", WAIT, || async {
            status_u64(n.addr, "applied_index").await == Some(last)
        })
        .await;
    }
    assert!(covered_total(&n1).await > 0, "no append-entries of 50 writes was answered from entries sent ahead");

    for i in 50..60 {
        client.execute(&[Statement::new(format!("INSERT INTO t VALUES ({i})"))]).await.unwrap();
    }
    let paused = [n2.pause(), n3.pause()];
    let read = QueryRequest::new("SELECT count(*) FROM t", Params::None, Consistency::Strong, None);
    let r = http().post_json(&n1.addr.to_string(), "/v1/query", &read, WAIT).await;
    if let Ok(r) = &r {
        assert_ne!(
            r.status,
            200,
            "a strong read succeeded with both replicas frozen: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    drop(paused);
    stop_all(vec![n1, n2, n3]);
}
