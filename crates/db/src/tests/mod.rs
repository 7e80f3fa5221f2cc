//! Tests of whole nodes inside the crate: real data dirs, real listeners
//! on port 0, real HTTP between nodes. Each node runs on a runtime of its
//! own thread, so a test can freeze one (its Raft, HTTP server and timers)
//! as SIGSTOP would, and can craft a node's Raft log before it starts.
use crate::DbNode;
use bulwark_config::db::DbConfig;
use bulwark_db_api::api::{Consistency, Params, QueryRequest, Rows, Token};
use bulwark_db_api::http_client::HttpClient;
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod applied_hints;
mod covered_lease;
mod forwarded_write;
mod mutual_tls;
mod peer_lease;
mod restart_in_term;
mod transfer_lease;

pub(crate) const SECRET: &str = "db-test-secret-0123456789";
/// The leader lease of [`config`]: 1.2 x the 400 ms election timeout.
pub(crate) const LEASE: Duration = Duration::from_millis(480);

/// A node's configuration: the API and Raft on port 0, 100 ms heartbeats,
/// 400 ms election timeout.
pub(crate) fn config(id: u64, data: &Path, bootstrap: bool) -> DbConfig {
    serde_json::from_value(serde_json::json!({
        "node_id": id,
        "listen": "127.0.0.1:0",
        "raft_listen": "127.0.0.1:0",
        "data_dir": data,
        "secret": SECRET,
        "bootstrap": bootstrap,
        "heartbeat_interval": "100ms",
        "election_timeout": "400ms",
        "write_timeout": "3s",
    }))
    .expect("a valid node configuration")
}

/// A node running on a thread of its own.
pub(crate) struct TestNode {
    /// The client API.
    pub(crate) addr: SocketAddr,
    /// The Raft listener.
    pub(crate) raft_addr: SocketAddr,
    /// Makes the node refuse Raft appends (see `RefuseAppends`).
    pub(crate) refuse_appends: std::sync::Arc<crate::node::RefuseAppends>,
    /// Delays the Raft requests reaching the node (see `HoldAppends`).
    pub(crate) hold_appends: std::sync::Arc<crate::node::HoldAppends>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Keeps a node frozen (see [`TestNode::pause`]) until dropped.
pub(crate) struct Paused(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

impl TestNode {
    pub(crate) fn start(config: DbConfig) -> TestNode {
        let (tx, rx) = std::sync::mpsc::channel();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(format!("db-node-{}", config.node_id))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                rt.block_on(async move {
                    let node = match DbNode::bind(config).await {
                        Ok(n) => n,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let bound = node.listeners();
                    let hooks = (node.refuse_appends(), node.hold_appends());
                    let _ = tx.send(Ok((bound[0].1, bound[1].1, hooks, tokio::runtime::Handle::current())));
                    node.run(stop).await.expect("the node stops cleanly");
                });
            })
            .expect("a thread");
        let (addr, raft_addr, (refuse_appends, hold_appends), runtime) =
            rx.recv().expect("the node thread answers").expect("the node starts");
        TestNode { addr, raft_addr, refuse_appends, hold_appends, runtime, shutdown, thread: Some(thread) }
    }

    /// Freeze the node's runtime until the guard is dropped: a task that
    /// blocks its only thread (the log writer and blocking threads stay
    /// idle without it; the kernel still accepts connections, as for a
    /// stopped process).
    pub(crate) fn pause(&self) -> Paused {
        let (frozen_tx, frozen_rx) = std::sync::mpsc::channel();
        let (thaw_tx, thaw_rx) = std::sync::mpsc::channel::<()>();
        self.runtime.spawn(async move {
            let _ = frozen_tx.send(());
            let _ = thaw_rx.recv();
        });
        frozen_rx.recv().expect("the node's runtime runs the freezing task");
        Paused(thaw_tx)
    }

    /// Ask the node to stop (see [`TestNode::join`]).
    pub(crate) fn stop(&self) {
        self.shutdown.cancel();
    }

    pub(crate) fn join(mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            t.join().expect("the node thread ends");
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Stop every node at once and wait for them.
pub(crate) fn stop_all(nodes: Vec<TestNode>) {
    for n in &nodes {
        n.stop();
    }
    for n in nodes {
        n.join();
    }
}

pub(crate) fn http() -> HttpClient {
    HttpClient::new(SECRET, None, None)
}

/// GET `path` on `addr`: status and body (`None` when unreachable).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Option<(u16, Bytes)> {
    let r = http().send(http::Method::GET, &addr.to_string(), path, Bytes::new(), &[], Duration::from_secs(2)).await;
    r.ok().map(|r| (r.status, r.body))
}

/// `/v1/status` of a node, as JSON.
pub(crate) async fn status(addr: SocketAddr) -> Option<serde_json::Value> {
    let (code, body) = get(addr, "/v1/status").await?;
    (code == 200).then(|| serde_json::from_slice(&body).ok()).flatten()
}

/// A number field of a node's status.
pub(crate) async fn status_u64(addr: SocketAddr, field: &str) -> Option<u64> {
    status(addr).await?.get(field)?.as_u64()
}

/// Wait (at most `within`) until `cond` holds; panics with `what` if not.
pub(crate) async fn wait_for<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `sql` on the node at `addr` once it applied `token` (retried while it
/// redirects), as JSON rows.
pub(crate) async fn rows_at(addr: SocketAddr, sql: &str, token: Token) -> serde_json::Value {
    let req = QueryRequest::new(sql, Params::None, Consistency::None, Some(token));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = http().post_json(&addr.to_string(), "/v1/query", &req, Duration::from_secs(5)).await;
        if let Ok(r) = &r {
            if r.status == 200 {
                let rows: Rows = serde_json::from_slice(&r.body).expect("query rows");
                return serde_json::to_value(rows.rows).expect("rows as JSON");
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{addr} never applied {token:?}: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
