//! Shared helpers of the db tests: a cluster of real `bulwark db`
//! processes on port 0 that join through the membership API.
#![allow(dead_code, unused_imports)]

use bulwark_db_api::DbRole;
use bulwark_db_api::{Client, Consistency, NodeStatus, Params, Rows, Statement, Token};
use bulwark_testkit::{request, wait_until, HttpResponse, Process};
use std::net::SocketAddr;
use std::time::Duration;

pub const SECRET: &str = "db-test-secret-0123456789";

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// One node: its data dir outlives the process so it can be restarted.
pub struct DbProc {
    pub id: u64,
    pub ip: String,
    pub data: tempfile::TempDir,
    pub proc: Option<Process>,
    /// The client API.
    pub addr: SocketAddr,
    /// The Raft listener.
    pub raft_addr: SocketAddr,
    pub extra: String,
}

/// A node's config: the API on `listen`, Raft on `raft_listen`.
pub fn config(
    id: u64,
    listen: &str,
    raft_listen: &str,
    data: &std::path::Path,
    bootstrap: bool,
    extra: &str,
) -> String {
    format!(
        "node_id = {id}\nlisten = \"{listen}\"\nraft_listen = \"{raft_listen}\"\ndata_dir = \"{}\"\n\
         secret = \"{SECRET}\"\nbootstrap = {bootstrap}\n\
         heartbeat_interval = \"100ms\"\nelection_timeout = \"400ms\"\nwrite_timeout = \"3s\"\n{extra}\n",
        data.display()
    )
}

impl DbProc {
    /// A node on `ip`, both listeners on port 0.
    pub fn start(id: u64, ip: &str, bootstrap: bool, extra: &str) -> DbProc {
        let data = tempfile::tempdir().unwrap();
        let any = format!("{ip}:0");
        let p = Process::start("db", &config(id, &any, &any, data.path(), bootstrap, extra));
        DbProc::running(id, ip, data, p, extra)
    }

    /// A node started by the caller (`p`), with its data dir.
    pub fn running(id: u64, ip: &str, data: tempfile::TempDir, p: Process, extra: &str) -> DbProc {
        let (addr, raft_addr) = (p.addr("api"), p.addr("raft"));
        DbProc { id, ip: ip.to_string(), data, proc: Some(p), addr, raft_addr, extra: extra.to_string() }
    }

    /// This node's config (`extra` added) at the addresses it has now.
    pub fn config_again(&self, extra: &str) -> String {
        config(self.id, &self.addr.to_string(), &self.raft_addr.to_string(), self.data.path(), false, extra)
    }

    /// Start again on the same addresses and data dir.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "node {} still running", self.id);
        self.proc = Some(Process::start("db", &self.config_again(&self.extra)));
    }

    /// Add this node to the cluster `client` reaches, as a voter or a
    /// learner.
    pub fn join(&self, rt: &tokio::runtime::Runtime, client: &Client, voter: bool) -> NodeStatus {
        rt.block_on(client.add_node(self.id, &self.addr.to_string(), &self.raft_addr.to_string(), voter))
            .unwrap_or_else(|e| panic!("adding node {}: {e}", self.id))
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn terminate(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let s = p.terminate();
            assert!(s.success(), "node {} exited with {s:?}; logs:\n{}", self.id, tail(&p.logs()));
        }
    }

    pub fn post(&self, path: &str, body: &str) -> HttpResponse {
        post(self.addr, path, body, Some(SECRET))
    }

    pub fn status(&self) -> Option<NodeStatus> {
        let r = bulwark_testkit::request(
            self.addr,
            "GET",
            "/v1/status",
            &[("Authorization", &format!("Bearer {SECRET}"))],
            b"",
        )
        .ok()?;
        serde_json::from_slice(&r.body).ok()
    }

    pub fn logs(&self) -> String {
        self.proc.as_ref().map(|p| tail(&p.logs())).unwrap_or_default()
    }
}

pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

pub fn post(addr: SocketAddr, path: &str, body: &str, secret: Option<&str>) -> HttpResponse {
    let auth = secret.map(|s| format!("Bearer {s}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    request(addr, "POST", path, &headers, body.as_bytes()).expect("request")
}

/// A cluster whose first node bootstraps alone; the others join through
/// the membership API (so every port can be 0).
pub struct Cluster {
    pub nodes: Vec<DbProc>,
    pub client: Client,
}

impl Cluster {
    pub fn start(rt: &tokio::runtime::Runtime, ips: &[&str], extra: &str) -> Cluster {
        let mut nodes = vec![DbProc::start(1, ips[0], true, extra)];
        let client = Client::new([nodes[0].addr.to_string()], SECRET);
        wait_until("node 1 becomes primary", || nodes[0].status().is_some_and(|s| s.role == DbRole::Primary));
        for (i, ip) in ips.iter().enumerate().skip(1) {
            let n = DbProc::start(i as u64 + 1, ip, false, extra);
            n.join(rt, &client, true);
            nodes.push(n);
        }
        // The client an app would build: every node's address.
        let client = Client::new(nodes.iter().map(|n| n.addr.to_string()), SECRET);
        let c = Cluster { nodes, client };
        let ids: Vec<u64> = c.nodes.iter().map(|n| n.id).collect();
        wait_until("every node sees every voter", || {
            c.nodes
                .iter()
                .all(|n| n.status().is_some_and(|s| s.members.iter().filter(|m| m.voter).count() == ids.len()))
        });
        c
    }

    pub fn node(&self, id: u64) -> &DbProc {
        self.nodes.iter().find(|n| n.id == id).unwrap()
    }

    pub fn node_mut(&mut self, id: u64) -> &mut DbProc {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    /// The node that says it is primary with a majority behind it.
    pub fn primary(&self) -> Option<u64> {
        self.nodes.iter().filter(|n| n.proc.is_some()).find_map(|n| {
            let s = n.status()?;
            (s.role == DbRole::Primary && s.quorum).then_some(n.id)
        })
    }

    pub fn wait_primary(&self) -> u64 {
        let mut p = None;
        wait_until("a primary with a majority", || {
            p = self.primary();
            p.is_some()
        });
        p.unwrap()
    }
}

pub fn exec(
    rt: &tokio::runtime::Runtime,
    c: &Client,
    sql: &str,
    params: Vec<bulwark_db_api::Value>,
) -> bulwark_db_api::ExecuteResult {
    rt.block_on(c.execute(&[Statement::with_params(sql, params)])).expect("execute")
}

/// `SELECT count(*)` served by the node at `addr` itself (no client routing).
pub fn count_on(addr: SocketAddr, table: &str, token: Option<Token>) -> Option<i64> {
    let mut q = serde_json::json!({"sql": format!("SELECT count(*) FROM {table}")});
    if let Some(t) = token {
        q["token"] = serde_json::json!(t);
    }
    let mut r = post(addr, "/v1/query", &q.to_string(), Some(SECRET));
    // A replica that does not know the token's write yet (it was committed
    // by the other replica) sends the read to the primary, as a client
    // follows it.
    if r.status == 307 {
        let primary = r.header("location").and_then(|l| l.strip_prefix("http://")?.split('/').next()?.parse().ok())?;
        r = post(primary, "/v1/query", &q.to_string(), Some(SECRET));
    }
    if r.status != 200 {
        return None;
    }
    let rows: Rows = serde_json::from_slice(&r.body).ok()?;
    rows.rows[0][0].as_i64()
}

pub fn wait_short(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}
