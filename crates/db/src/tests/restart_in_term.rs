//! A primary restarted inside its term must not lead that term again.
//!
//! Three data dirs hold the same log, 0..=100 (the membership, then
//! entries of term 5 by node 1), and the vote (term 5, node 1,
//! committed): node 1 was primary when all three stopped. Node 2 also
//! holds an entry (5, node 1, 101) that node 1 sent it but never kept
//! (sent ahead, then node 1 was killed before it wrote it, or lost it with
//! the page cache). If node 1 led term 5 again at once, its next write
//! would get the log id (5, 1, 101) too; node 2 would take it for the one
//! it holds, and the tables would differ forever.
use super::{config, rows_at, stop_all, TestNode, SECRET};
use bulwark_db_api::api::Statement;
use bulwark_db_api::raft_types::{Entry, LogId, Node, Vote, Write, WriteBatch};
use bulwark_db_log::{test_hooks::append, LogStore};
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const TERM: u64 = 5;

/// A listener on port 0 that forwards every connection to a node's
/// listener once it is known: the node's address (API or Raft) in the
/// crafted membership, which must be written before the node (on port 0
/// too) is bound.
struct Relay {
    addr: SocketAddr,
    target: watch::Sender<Option<SocketAddr>>,
}

impl Relay {
    async fn bind() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (target, rx) = watch::channel(None);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(to) = rx.wait_for(|t| t.is_some()).await.map(|t| t.expect("a target")) else { return };
                    if let Ok(mut node) = TcpStream::connect(to).await {
                        let _ = node.set_nodelay(true);
                        let _ = client.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
                    }
                });
            }
        });
        Relay { addr, target }
    }
}

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(TERM, 1), index)
}

fn write(index: u64, sql: &str) -> Entry {
    let batch = WriteBatch {
        writes: vec![Write { statements: vec![Statement::new(sql)], request_id: Some(format!("crafted-{index}")) }],
        time_ms: 1_700_000_000_000 + index,
    };
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(batch) }
}

/// The log every node holds: membership at 0, a blank entry at 1 (node 1's
/// election), the table at 2, rows 3..=100.
/// `addrs`: each node's API and Raft address.
fn common_log(addrs: &[(SocketAddr, SocketAddr)]) -> Vec<Entry> {
    let voters: BTreeSet<u64> = (1..=3).collect();
    let nodes: BTreeMap<u64, Node> = addrs
        .iter()
        .enumerate()
        .map(|(i, (api, raft))| (i as u64 + 1, Node::new(api.to_string(), raft.to_string())))
        .collect();
    let mut log = vec![
        Entry { log_id: LogId::default(), payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)) },
        Entry { log_id: log_id(1), payload: EntryPayload::Blank },
        write(2, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"),
    ];
    log.extend((3..=100).map(|i| write(i, &format!("INSERT INTO t VALUES ({i}, 'row {i}')"))));
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_primary_never_leads_its_old_term_again() {
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push((Relay::bind().await, Relay::bind().await));
    }
    let addrs: Vec<(SocketAddr, SocketAddr)> = relays.iter().map(|(api, raft)| (api.addr, raft.addr)).collect();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for (i, dir) in dirs.iter().enumerate() {
        let id = i as u64 + 1;
        let mut log = LogStore::open(dir.path(), id).unwrap();
        let mut entries = common_log(&addrs);
        if id == 2 {
            entries.push(write(101, "INSERT INTO t VALUES (101, 'only node 2 has it')"));
        }
        append(&mut log, entries).await;
        openraft::storage::RaftLogStorage::save_vote(&mut log, &Vote::new_committed(TERM, 1)).await.unwrap();
    }
    let nodes: Vec<TestNode> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let mut c = config(i as u64 + 1, dir.path(), false);
            c.advertise = Some(addrs[i].0.into());
            c.raft_advertise = Some(addrs[i].1.into());
            TestNode::start(c)
        })
        .collect();
    for ((api, raft), node) in relays.iter().zip(&nodes) {
        api.target.send_replace(Some(node.addr));
        raft.target.send_replace(Some(node.raft_addr));
    }

    let client = bulwark_db_api::Client::new(addrs.iter().map(|(api, _)| api.to_string()), SECRET);
    let written = client
        .execute(&[Statement::new("INSERT INTO t VALUES (1000, 'written after the restart')")])
        .await
        .expect("a primary takes the write");
    let sql = "SELECT id, v FROM t ORDER BY id";
    let mut tables = Vec::new();
    for node in &nodes {
        tables.push(rows_at(node.addr, sql, written.token).await);
    }
    stop_all(nodes);
    assert!(tables[0].to_string().contains("written after the restart"), "{}", tables[0]);
    for (i, t) in tables.iter().enumerate().skip(1) {
        assert_eq!(t, &tables[0], "node {} differs from node 1", i + 1);
    }
}
