//! `bounded` reads are bounded on an old primary: cut off from the
//! majority (iptables DROP inside a private network namespace), it must
//! not answer a `max_lag_ms = 200` read with data older than that once the
//! majority has elected a new primary and written there.
mod db_common;

use bulwark_db_api::DbRole;
use bulwark_testkit::netns::sh;
use bulwark_testkit::wait_until;
use db_common::*;
use std::time::Duration;

#[test]
fn an_isolated_old_primary_serves_no_stale_bounded_read() {
    if bulwark_testkit::netns::isolated("an_isolated_old_primary_serves_no_stale_bounded_read") {
        inside_netns();
    }
}

fn inside_netns() {
    let rt = rt();
    let (c, ips) = three_node_cluster_with_a_row(&rt);
    assert_eq!(bounded_read(c.node(1)), (200, vec!["before".to_string()]));

    for other in &ips[1..] {
        sh("iptables", &["-A", "INPUT", "-s", ips[0], "-d", other, "-j", "DROP"]);
        sh("iptables", &["-A", "INPUT", "-s", other, "-d", ips[0], "-j", "DROP"]);
    }
    wait_short("a new primary on the majority side", Duration::from_secs(30), || {
        [2, 3].into_iter().any(|id| c.node(id).status().is_some_and(|s| s.role == DbRole::Primary && s.quorum))
    });
    let client = bulwark_db_api::Client::new([c.node(2).addr.to_string(), c.node(3).addr.to_string()], SECRET);
    exec(&rt, &client, "INSERT INTO t VALUES ('after')", vec![]);

    // The old primary still believes it leads (it heard no higher term),
    // but its last majority ack is older than 200 ms: no stale answer.
    for _ in 0..3 {
        let (status, rows) = bounded_read(c.node(1));
        assert!(status != 200 || rows.contains(&"after".to_string()), "stale bounded read: {status} {rows:?}");
        eprintln!("bounded read on the isolated old primary: {status}");
    }
    // Healed, it serves bounded reads again (as a replica, fresh enough).
    sh("iptables", &["-F", "INPUT"]);
    wait_until("the old primary serves a fresh bounded read", || {
        bounded_read(c.node(1)) == (200, vec!["before".to_string(), "after".to_string()])
    });
}
