//! The black-box checker (`db-nemesis`) must see what it is there to see:
//! a real three-node cluster, real writers; then one replica's database
//! loses an acknowledged row behind the cluster's back (the node stopped,
//! the row deleted from its `data.db`, the node started again). The end
//! checks, unchanged, must name that row as lost on that node and the
//! nodes as diverged, and must pass on the same cluster before the damage.
//!
//! Needs the binary: `cargo build -p bulwark` first (or `BULWARK_BIN`).
use bulwark_chaos::blackbox::check::{self, NodeTable};
use bulwark_chaos::blackbox::writer::{History, Outcome, WriterSetup, Writers};
use bulwark_chaos::blackbox::{read_table, settle, start_cluster};
use std::time::{Duration, Instant};

#[test]
fn the_checker_reports_an_acknowledged_row_missing_on_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let hist = History::create(&dir.path().join("history.jsonl")).unwrap();
    let (mut c, api) = start_cluster(&bulwark_testkit::bulwark_bin(), dir.path(), 23400, &hist).unwrap();
    let setup = WriterSetup {
        api: api.clone(),
        nodes: c.addrs(),
        run: "selftest".into(),
        write_deadline: Duration::from_secs(30),
        read_deadline: Duration::from_secs(15),
    };
    let writers = Writers::start(2, setup, hist.clone());
    let acked = || hist.writes.lock().unwrap().iter().filter(|w| matches!(w.outcome, Outcome::Acked { .. })).count();
    let t = Instant::now();
    while acked() < 40 {
        assert!(t.elapsed() < Duration::from_secs(60), "the writers made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    writers.stop();
    settle(&c, &hist).unwrap();
    let writes = hist.writes.lock().unwrap().clone();
    let verdict = |c: &bulwark_chaos::blackbox::faults::Cluster| {
        let tables: Vec<NodeTable> =
            c.nodes.iter().map(|n| NodeTable { node: n.id, rows: read_table(&api, n.addr) }).collect();
        check::check(&writes, &tables, &hist.read_violations.lock().unwrap())
    };
    let before = verdict(&c);
    assert!(before.passed(), "the undamaged cluster must pass:\n{}", before.render());

    // Damage a replica: delete the 20th acknowledged row from its database.
    let (p, _) = c.wait_primary(Duration::from_secs(30)).expect("a primary");
    let r = (0..3).find(|i| *i != p).unwrap();
    let victim = writes.iter().filter(|w| matches!(w.outcome, Outcome::Acked { .. })).nth(20).unwrap().clone();
    let Outcome::Acked { id, .. } = victim.outcome else { unreachable!() };
    c.nodes[r].kill();
    let db = rusqlite::Connection::open(c.nodes[r].dir.join("data").join("data.db")).unwrap();
    assert_eq!(db.execute("DELETE FROM nemesis_writes WHERE id = ?1", [id]).unwrap(), 1);
    drop(db);
    c.start(r).unwrap();
    settle(&c, &hist).unwrap();

    let after = verdict(&c);
    let text = after.render();
    let node = c.nodes[r].id;
    assert!(!after.passed(), "{text}");
    let lost = &after.violations["lost (acknowledged, missing)"];
    assert_eq!(lost.0, 1, "{text}");
    assert!(
        lost.1[0].starts_with(&format!("node {node}: write {} acknowledged as id {id}", victim.request_id)),
        "{text}"
    );
    let diverged = &after.violations["diverged (nodes differ)"];
    assert_eq!(diverged.0, 1, "{text}");
    assert!(
        diverged.1[0].contains(&format!("row id {id}:"))
            && diverged.1[0].contains(&format!("nodes [{node}] have no row")),
        "{text}"
    );
    assert_eq!(after.violations.len(), 2, "{text}");
}
