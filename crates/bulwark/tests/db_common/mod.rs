//! Shared helpers of the db tests: a cluster of real `bulwark db`
//! processes on port 0 that join through the membership API.
#![allow(dead_code, unused_imports)]

use bulwark_db_api::DbRole;
use bulwark_db_api::{Client, Consistency, NodeStatus, Params, Rows, Statement, Token};
use bulwark_testkit::config::DbConfig;
use bulwark_testkit::{request, wait_until, HttpResponse, Process};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
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
    /// The config it was started with.
    pub config: DbConfig,
}

/// A node's config as these tests run it: node `id` keeping its data in
/// `data`, the API and Raft both on `ip` port 0, heartbeats every 100 ms,
/// elections after 400 ms, writes given up after 3 s.
pub fn config(id: u64, ip: &str, data: &Path) -> DbConfig {
    let any = SocketAddr::new(ip.parse::<IpAddr>().expect("an IP address"), 0);
    DbConfig::new(id, data, SECRET)
        .listen(any)
        .raft_listen(any)
        .heartbeat_interval(Duration::from_millis(100))
        .election_timeout(Duration::from_millis(400))
        .write_timeout(Duration::from_secs(3))
}

impl DbProc {
    /// A node on `ip`, both listeners on port 0.
    pub fn start(id: u64, ip: &str, bootstrap: bool) -> DbProc {
        DbProc::start_tuned(id, ip, |c| c.bootstrap(bootstrap))
    }

    /// A node on `ip` in a fresh data dir, its [`config`] changed by `tune`.
    pub fn start_tuned(id: u64, ip: &str, tune: impl FnOnce(DbConfig) -> DbConfig) -> DbProc {
        let data = tempfile::tempdir().unwrap();
        let config = tune(config(id, ip, data.path()));
        DbProc::launch(data, config)
    }

    /// Start a node with `config`, whose data dir is (in) `data`.
    pub fn launch(data: tempfile::TempDir, config: DbConfig) -> DbProc {
        let p = Process::start("db", &config.to_toml());
        DbProc::running(data, p, config)
    }

    /// A node the caller started (`p`) with `config`, its data dir (in) `data`.
    pub fn running(data: tempfile::TempDir, p: Process, config: DbConfig) -> DbProc {
        let (addr, raft_addr) = (p.addr("api"), p.addr("raft"));
        let (id, ip) = (config.node_id(), config.listen_address().ip().to_string());
        DbProc { id, ip, data, proc: Some(p), addr, raft_addr, config }
    }

    /// This node's config at the addresses it has now, joining rather than
    /// bootstrapping.
    pub fn config_again(&self) -> DbConfig {
        self.config.clone().listen(self.addr).raft_listen(self.raft_addr).bootstrap(false)
    }

    /// Start again on the same addresses and data dir.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "node {} still running", self.id);
        self.proc = Some(Process::start("db", &self.config_again().to_toml()));
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

/// A `bounded` read with `max_lag_ms = 200`, served by `node` itself (the
/// test follows no redirect): status and rows.
pub fn bounded_read(node: &DbProc) -> (u16, Vec<String>) {
    let r =
        node.post("/v1/query", r#"{"sql":"SELECT v FROM t ORDER BY rowid","consistency":"bounded","max_lag_ms":200}"#);
    let rows = serde_json::from_slice::<bulwark_db_api::Rows>(&r.body)
        .map(|rows| rows.rows.iter().map(|r| r[0].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    (r.status, rows)
}

/// Run `bulwark db ARGS` (an offline command: backup, restore, load, ...)
/// with the test secret.
pub fn db_command(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .arg("db")
        .args(args)
        .env("BULWARK_DB_SECRET", SECRET)
        .output()
        .unwrap()
}

/// `out`, once the command is seen to have succeeded (its output in the
/// failure otherwise).
pub fn succeeded(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "bulwark db: {:?}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Node 1 restored offline from a backup by `bulwark db restore`: the
/// addresses it will listen on, free when chosen (the restore writes them
/// into the node's membership, before the node starts).
pub struct RestoredNode {
    pub api: String,
    pub raft: String,
}

impl RestoredNode {
    pub fn new() -> RestoredNode {
        let free = || std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().to_string();
        let api = free();
        let raft = std::iter::repeat_with(free).find(|a| *a != api).unwrap();
        RestoredNode { api, raft }
    }

    /// `bulwark db restore --from backup` as this node, with `more`
    /// arguments (`--data-dir`, `--to-time`, ...).
    pub fn restore(&self, backup: &Path, more: &[&str]) -> std::process::Output {
        let node = ["--node-id", "1", "--address", &self.api, "--raft-address", &self.raft];
        let from = ["restore", "--from", backup.to_str().unwrap()];
        db_command(&[&from[..], &node, more].concat())
    }

    /// The node's config, its data restored into `data`.
    pub fn config(&self, data: &Path) -> DbConfig {
        config(1, "127.0.0.1", data).listen(self.api.parse().unwrap()).raft_listen(self.raft.parse().unwrap())
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
    pub fn start(rt: &tokio::runtime::Runtime, ips: &[&str]) -> Cluster {
        Cluster::start_tuned(rt, ips, |c| c)
    }

    /// Like [`Cluster::start`], every node's [`config`] changed by `tune`.
    pub fn start_tuned(rt: &tokio::runtime::Runtime, ips: &[&str], tune: impl Fn(DbConfig) -> DbConfig) -> Cluster {
        let mut nodes = vec![DbProc::start_tuned(1, ips[0], |c| tune(c).bootstrap(true))];
        let client = Client::new([nodes[0].addr.to_string()], SECRET);
        wait_until("node 1 becomes primary", || nodes[0].status().is_some_and(|s| s.role == DbRole::Primary));
        for (i, ip) in ips.iter().enumerate().skip(1) {
            let n = DbProc::start_tuned(i as u64 + 1, ip, &tune);
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

/// Inside a private network namespace: loopback up, three nodes on
/// 127.0.0.11-13 with node 1 the primary, and table `t` holding the row
/// `before`; the cluster and the nodes' addresses (for iptables).
pub fn three_node_cluster_with_a_row(rt: &tokio::runtime::Runtime) -> (Cluster, [&'static str; 3]) {
    bulwark_testkit::netns::sh("ip", &["link", "set", "lo", "up"]);
    let ips = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
    let c = Cluster::start(rt, &ips);
    assert_eq!(c.wait_primary(), 1);
    exec(rt, &c.client, "CREATE TABLE t (v TEXT)", vec![]);
    exec(rt, &c.client, "INSERT INTO t VALUES ('before')", vec![]);
    (c, ips)
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
