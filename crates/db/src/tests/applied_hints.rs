//! A replica serves a `bounded` read on the primary's word (the applied
//! hint on its Raft requests): that word must be true when sent, and be
//! dated no later than it was sent. A new primary speaks only once it applied an
//! entry of its own term, a primary only while a majority acknowledged it
//! within the lease, and a replica whose disk stalled does not take a word
//! that waited for its sync as fresh.
use super::{config, get, http, status, status_u64, stop_all, wait_for, TestNode};
use bulwark_config::db::DbConfig;
use bulwark_db_api::api::{Consistency, Params, QueryRequest, Statement};
use bulwark_db_log::test_hooks::SyncGate;
use bulwark_db_sm::test_hooks::ApplyGate;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);

/// A node that waits at most 300 ms for a read to become possible.
fn quick_reads(id: u64, data: &Path, bootstrap: bool) -> DbConfig {
    let mut c = config(id, data, bootstrap);
    c.read_wait = Duration::from_millis(300);
    c
}

/// [`quick_reads`] configs of one node per dir: node 1 bootstraps, the
/// first `voters` vote, the others are learners.
pub(super) fn quick_configs(dirs: &[tempfile::TempDir], voters: usize) -> Vec<(DbConfig, bool)> {
    dirs.iter().enumerate().map(|(i, d)| (quick_reads(i as u64 + 1, d.path(), i == 0), i < voters)).collect()
}

/// Node 1 leads; the others join, voters or not; a table `t` with three
/// rows, applied everywhere.
pub(super) async fn cluster(configs: Vec<(DbConfig, bool)>) -> Vec<TestNode> {
    let nodes: Vec<TestNode> = configs.iter().map(|(c, _)| TestNode::start(c.clone())).collect();
    let n1 = &nodes[0];
    wait_for("node 1 leads", WAIT, || async { get(n1.addr, "/primary").await.map(|r| r.0) == Some(200) }).await;
    for ((c, voter), n) in configs.iter().zip(&nodes).skip(1) {
        let body = serde_json::json!({
            "node_id": c.node_id, "address": n.addr.to_string(), "raft_address": n.raft_addr.to_string(),
            "voter": voter,
        });
        let r = http().post_json(&n1.addr.to_string(), "/v1/members/add", &body, WAIT).await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let client = bulwark_db_api::Client::new([n1.addr.to_string()], super::SECRET);
    client.execute(&[Statement::new("CREATE TABLE t (id INTEGER PRIMARY KEY)")]).await.unwrap();
    for i in 0..3 {
        client.execute(&[Statement::new(format!("INSERT INTO t VALUES ({i})"))]).await.unwrap();
    }
    let last = status_u64(n1.addr, "last_log_index").await.unwrap();
    for n in &nodes {
        wait_for("every node applied the writes", WAIT, || async {
            status_u64(n.addr, "applied_index").await == Some(last)
        })
        .await;
    }
    nodes
}

async fn write(node: &TestNode, sql: &str) {
    let body = serde_json::json!({"statements": [{"sql": sql}]});
    let r = http().post_json(&node.addr.to_string(), "/v1/execute", &body, WAIT).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// `/replica?max_lag=1` on `node`: status and body.
async fn replica_probe(node: &TestNode) -> (u16, serde_json::Value) {
    let (code, body) = get(node.addr, "/replica?max_lag=1").await.expect("the node answers its probe");
    (code, serde_json::from_slice(&body).expect("a JSON probe answer"))
}

/// Wait until `node` answers `/replica?max_lag=1` with 200.
async fn within_a_second(node: &TestNode) {
    wait_for("the node is within a second of the primary", WAIT, || async { replica_probe(node).await.0 == 200 }).await;
}

/// `SELECT count(*) FROM t` as a `bounded` read on `node`: the count when
/// served (200), else `None`.
async fn bounded_count(node: &TestNode, max_lag: Duration) -> Option<u64> {
    let read = QueryRequest::new("SELECT count(*) FROM t", Params::None, Consistency::Bounded { max_lag }, None);
    let r = http().post_json(&node.addr.to_string(), "/v1/query", &read, WAIT).await.ok()?;
    if r.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("query rows");
    Some(v["rows"][0][0].as_u64().expect("a count"))
}

/// A newly elected primary that has not applied an entry of its term yet
/// may miss writes its predecessor acknowledged: its replicas must not
/// take its applied index as the cluster's. Both voters accept a write,
/// then refuse every append (they never learn it is committed); the old
/// primary stops; one of them is elected, and cannot commit its first
/// entry while the other refuses. The learner, which has the write but
/// does not know it is committed either, follows the new primary.
///
/// (The new primary here also lacks a majority by the quorum clock, so
/// either rule keeps its word from the learner; the unit test
/// `a_primary_hints_only_once_it_applied_its_own_entry_and_has_its_majority`
/// checks the first rule alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_does_not_trust_a_new_primary_before_it_applied_its_own_entry() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(quick_configs(&dirs, 3)).await;
    let w = status_u64(nodes[0].addr, "last_log_index").await.unwrap() + 1;
    for n in &nodes[1..] {
        n.refuse_appends.after(w);
    }
    write(&nodes[0], "INSERT INTO t VALUES (100)").await;
    let acknowledged = Instant::now();
    let mut nodes = nodes.into_iter();
    nodes.next().unwrap().join();
    let rest: Vec<TestNode> = nodes.collect();
    let learner = &rest[2];
    learner.refuse_appends.lift();
    // A new primary's first entry reaches the learner.
    wait_for("the learner follows a new primary", WAIT, || async {
        status_u64(learner.addr, "last_log_index").await.is_some_and(|i| i > w)
    })
    .await;
    let max_lag = Duration::from_millis(300);
    assert!(acknowledged.elapsed() > max_lag, "the election took less than the read's bound");
    for _ in 0..3 {
        let count = bounded_count(learner, max_lag).await;
        assert!(count.is_none_or(|c| c == 4), "a bounded read missed a write acknowledged {max_lag:?} ago");
    }
    // The other voter accepts again: the new primary commits its entry
    // (and with it the write), and the learner serves it.
    for n in &rest[..2] {
        n.refuse_appends.lift();
    }
    wait_for("the learner serves the write", WAIT, || async { bounded_count(learner, max_lag).await == Some(4) }).await;
    stop_all(rest);
}

/// openraft 0.9 never steps a primary down: cut off from the majority, it
/// keeps sending heartbeats to whom it still reaches. Its word must age
/// out there, as if it had gone silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_stops_trusting_a_primary_that_lost_its_majority() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(quick_configs(&dirs, 3)).await;
    let learner = &nodes[3];
    within_a_second(learner).await;
    let paused = [nodes[1].pause(), nodes[2].pause()];
    wait_for("the learner's word from the cut-off primary ages out", WAIT, || async {
        replica_probe(learner).await.0 == 503
    })
    .await;
    let (_, probe) = replica_probe(learner).await;
    assert_eq!(probe["role"], "learner", "{probe}");
    let primary = status(nodes[0].addr).await.expect("node 1's status");
    assert_eq!(primary["role"], "primary", "node 1 still believes it leads: {primary}");
    assert_eq!(bounded_count(learner, Duration::from_secs(1)).await, None, "a bounded read on a stale word");
    drop(paused);
    stop_all(nodes);
}

/// A replica dates the primary's word no later than the request's arrival:
/// a request that waited for a stalled sync is as old as the stall. The
/// replica's disk stalls while a write is replicated; then both other
/// nodes freeze (nothing newer comes); after the stall the replica's lag
/// still shows at least the time since the primary froze.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_dates_the_primary_word_no_later_than_its_arrival() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Node 3 does not campaign while the others are frozen.
    let mut patient = config(3, dirs[2].path(), false);
    patient.election_timeout = Duration::from_secs(5);
    patient.write_timeout = Duration::from_secs(10);
    let nodes = cluster(vec![
        (config(1, dirs[0].path(), true), true),
        (config(2, dirs[1].path(), false), true),
        (patient, true),
    ])
    .await;
    let replica = &nodes[2];
    within_a_second(replica).await;
    let w = status_u64(nodes[0].addr, "last_log_index").await.unwrap() + 1;
    let gate = SyncGate::hold(dirs[2].path());
    // Reads turn node 3's inline syncs off for a while, so that its
    // appends wait on its log writer's thread, not on its runtime (and
    // once one waits there, the later ones follow it).
    assert!(bounded_count(replica, Duration::from_secs(1)).await.is_some());
    let reading = tokio_util::sync::CancellationToken::new();
    let reader = {
        let (addr, reading) = (replica.addr.to_string(), reading.clone());
        tokio::spawn(async move {
            let read = QueryRequest::new("SELECT 1", Params::None, Consistency::None, None);
            while !reading.is_cancelled() {
                let r = http().post_json(&addr, "/v1/query", &read, WAIT).await.expect("node 3 answers a read");
                assert_eq!(r.status, 200);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    write(&nodes[0], "INSERT INTO t VALUES (100)").await;
    wait_for("node 3's sync waits", WAIT, || async { gate.held.load(std::sync::atomic::Ordering::SeqCst) > 0 }).await;
    reading.cancel();
    reader.await.expect("the reads went through");
    let paused = [nodes[0].pause(), nodes[1].pause()];
    let frozen = Instant::now();
    // Every word of the primary's was made before it froze: more than a
    // second ago from here on.
    tokio::time::sleep_until(frozen + Duration::from_millis(1100)).await;
    wait_for("node 3's word from the primary is more than a second old", WAIT, || async {
        replica_probe(replica).await.0 == 503
    })
    .await;
    gate.release();
    wait_for("node 3 appended the write", WAIT, || async {
        status_u64(replica.addr, "last_log_index").await.is_some_and(|i| i >= w)
    })
    .await;
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        let old = frozen.elapsed().as_secs_f64();
        let (code, probe) = replica_probe(replica).await;
        assert_eq!(probe["role"], "replica", "{probe}");
        assert_eq!(code, 503, "a request that waited for the sync passed for a fresh word: {probe}");
        let lag = probe["lag"]["seconds"].as_f64().expect("a lag");
        assert!(lag >= old, "a word made before the primary froze {old} s ago read {lag} s old");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(paused);
    stop_all(nodes);
}

/// A replica whose database falls behind is as stale as the last word of
/// the primary it caught up with, however close together the writes it
/// lacks were made and however fresh the primary's heartbeats: a write
/// acknowledged longer than `max_lag` ago that it has not applied keeps a
/// `bounded` read off it. (Measured by the primary's clock of its last
/// applied write minus the replica's, the two writes here are a few
/// milliseconds apart, and the replica passed for fresh.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_on_its_applies_serves_no_read_older_than_asked() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(quick_configs(&dirs, 3)).await;
    let replica = &nodes[2];
    within_a_second(replica).await;
    write(&nodes[0], "INSERT INTO t VALUES (100)").await;
    let first = status_u64(nodes[0].addr, "last_log_index").await.unwrap();
    wait_for("node 3 applied the first write", WAIT, || async {
        status_u64(replica.addr, "applied_index").await.is_some_and(|i| i >= first)
    })
    .await;
    // Node 3 stops applying; the next write commits on nodes 1 and 2.
    let gate = ApplyGate::hold(dirs[2].path());
    write(&nodes[0], "INSERT INTO t VALUES (101)").await;
    let acknowledged = Instant::now();
    wait_for("node 3 holds the second write in its log", WAIT, || async {
        status_u64(replica.addr, "last_log_index").await.is_some_and(|i| i > first)
    })
    .await;
    // The acknowledged write grows older than the read's bound, while the
    // primary's heartbeats keep reaching node 3.
    let bound = Duration::from_millis(500);
    tokio::time::sleep_until(acknowledged + bound + Duration::from_millis(300)).await;
    if let Some(count) = bounded_count(replica, bound).await {
        assert_eq!(count, 5, "served without a write acknowledged {:?} ago", acknowledged.elapsed());
    }
    let lag = status(replica.addr).await.expect("node 3's status")["lag"].clone();
    assert!(lag["seconds"].as_f64().is_some_and(|s| s >= bound.as_secs_f64()), "{lag}");
    gate.release();
    wait_for("node 3 serves the read once it applied the write", WAIT, || async {
        bounded_count(replica, bound).await == Some(5)
    })
    .await;
    stop_all(nodes);
}

/// The primary's word may spend any time on the wire (a lost packet, a
/// slow handshake): a replica must date it from before it was sent, not
/// from its arrival. Node 3's Raft requests are held on their way in; a
/// write commits on nodes 1 and 2; once it is older than the read's bound,
/// the oldest held request (made before the write) reaches node 3. Dated
/// on arrival, its word made node 3 look fresh, and a `bounded` read there
/// missed the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_word_delayed_on_the_wire_is_as_old_as_when_it_was_sent() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(quick_configs(&dirs, 3)).await;
    let replica = &nodes[2];
    within_a_second(replica).await;
    let hold = replica.hold_appends.clone();
    hold.hold();
    use std::sync::atomic::Ordering::SeqCst;
    wait_for("a request from the primary waits on its way to node 3", WAIT, || async { hold.waiting.load(SeqCst) > 0 })
        .await;
    write(&nodes[0], "INSERT INTO t VALUES (100)").await;
    let acknowledged = Instant::now();
    let bound = Duration::from_millis(300);
    tokio::time::sleep_until(acknowledged + bound + Duration::from_millis(200)).await;
    let released = hold.released.load(SeqCst);
    hold.release_one();
    wait_for("the oldest held request reached node 3", WAIT, || async { hold.released.load(SeqCst) > released }).await;
    if let Some(count) = bounded_count(replica, bound).await {
        assert_eq!(count, 4, "served without a write acknowledged {:?} ago", acknowledged.elapsed());
    }
    hold.lift();
    wait_for("node 3 serves the read once the requests arrive", WAIT, || async {
        bounded_count(replica, bound).await == Some(4)
    })
    .await;
    stop_all(nodes);
}
