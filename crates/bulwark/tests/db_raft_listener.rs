//! Raft listens apart from the client API: only the peer secret opens it,
//! it serves nothing of the API, the API serves none of Raft, and a
//! cluster replicates with its API ports closed between the nodes
//! (iptables inside a private network namespace, so the host's network is
//! never touched).
mod db_common;

use bulwark_db_api::DbRole;
use bulwark_testkit::netns::sh;
use bulwark_testkit::{request, wait_until};
use db_common::*;
use std::net::SocketAddr;

const PEER_SECRET: &str = "db-test-peer-secret-0123456789";

fn status(addr: SocketAddr, method: &str, path: &str, secret: &str, body: &str) -> u16 {
    let auth = format!("Bearer {secret}");
    request(addr, method, path, &[("Authorization", &auth)], body.as_bytes())
        .unwrap_or_else(|e| panic!("{addr}{path}: {e}"))
        .status
}

#[test]
fn a_client_secret_reaches_raft_on_neither_listener() {
    let data = tempfile::tempdir().unwrap();
    let cfg = config(1, "127.0.0.1", data.path())
        .bootstrap(true)
        .peer_secret(PEER_SECRET)
        .monitor_token("db-test-monitor-0123456789");
    let node = DbProc::launch(data, cfg);
    let (api, raft) = (node.addr, node.raft_addr);
    assert_ne!(api, raft);
    wait_until("node 1 becomes primary", || node.status().is_some_and(|s| s.role == DbRole::Primary));
    let s = node.status().unwrap();
    assert_eq!((s.address, s.raft_address.clone()), (api.to_string(), raft.to_string()));
    assert_eq!(s.members[0].raft_address, raft.to_string(), "{:?}", s.members);

    for path in ["/raft/append", "/raft/vote", "/raft/snapshot", "/raft/elect"] {
        // The client secret and the monitoring token: refused on both.
        for listener in [api, raft] {
            assert_eq!(status(listener, "POST", path, SECRET, "not json"), 403, "client secret on {listener}{path}");
            let monitor = "db-test-monitor-0123456789";
            assert_eq!(status(listener, "POST", path, monitor, "not json"), 403, "monitor on {listener}{path}");
            assert_eq!(status(listener, "POST", path, "someone-else-0123456789", "x"), 401, "{listener}{path}");
        }
        // The peer secret: Raft on its listener (past authorization, a body
        // that is not an RPC is a bad request), never on the API.
        assert_eq!(status(api, "POST", path, PEER_SECRET, "not json"), 404, "peer secret on the API's {path}");
    }
    assert_eq!(status(raft, "POST", "/raft/vote", PEER_SECRET, "not json"), 400);
    // The API's endpoints are not served on the Raft listener.
    let query = r#"{"sql":"SELECT 1"}"#;
    assert_eq!(status(api, "POST", "/v1/query", SECRET, query), 200);
    assert_eq!(status(raft, "POST", "/v1/query", PEER_SECRET, query), 404);
    assert_eq!(status(raft, "GET", "/v1/status", PEER_SECRET, ""), 404);
    assert_eq!(status(raft, "GET", "/metrics", PEER_SECRET, ""), 404);
    assert_eq!(request(raft, "GET", "/health", &[], b"").unwrap().status, 401);
}

#[test]
fn a_cluster_whose_api_ports_are_closed_between_its_nodes_replicates() {
    if bulwark_testkit::netns::isolated("a_cluster_whose_api_ports_are_closed_between_its_nodes_replicates") {
        api_closed_between_nodes_inside_netns();
    }
}

fn api_closed_between_nodes_inside_netns() {
    sh("ip", &["link", "set", "lo", "up"]);
    let rt = rt();
    let ips = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
    let nodes: Vec<DbProc> = ips.iter().enumerate().map(|(i, ip)| DbProc::start(i as u64 + 1, ip, i == 0)).collect();
    // Every node's API port dropped for traffic from the nodes' addresses
    // (the test talks from 127.0.0.1 and still reaches every API).
    for n in &nodes {
        let port = n.addr.port().to_string();
        for from in ips {
            sh("iptables", &["-A", "INPUT", "-p", "tcp", "-s", from, "-d", &n.ip, "--dport", &port, "-j", "DROP"]);
        }
    }
    wait_until("node 1 becomes primary", || nodes[0].status().is_some_and(|s| s.role == DbRole::Primary));
    let boot = bulwark_db_api::Client::new([nodes[0].addr.to_string()], SECRET);
    for n in &nodes[1..] {
        n.join(&rt, &boot, true);
    }
    let c = Cluster { client: bulwark_db_api::Client::new([nodes[0].addr.to_string()], SECRET), nodes };
    wait_until("every node sees three voters", || {
        c.nodes.iter().all(|n| n.status().is_some_and(|s| s.members.iter().filter(|m| m.voter).count() == 3))
    });
    exec(&rt, &c.client, "CREATE TABLE t (v TEXT)", vec![]);
    let w = exec(&rt, &c.client, "INSERT INTO t VALUES ('replicated over Raft alone')", vec![]);
    for n in &c.nodes {
        wait_until("the write reaches every node", || count_on(n.addr, "t", Some(w.token)) == Some(1));
    }
    // The API ports really are closed between the nodes: from node 2's
    // address, node 1's API never answers; its Raft listener does.
    let from_node_2 = |to: SocketAddr| {
        rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(ips[1].parse().unwrap(), 0)).unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(1), socket.connect(to)).await.is_ok_and(|c| c.is_ok())
        })
    };
    assert!(!from_node_2(c.nodes[0].addr), "node 1's API is reachable from node 2's address");
    assert!(from_node_2(c.nodes[0].raft_addr), "node 1's Raft listener is not reachable from node 2's address");
}
