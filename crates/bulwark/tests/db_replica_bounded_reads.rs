//! `bounded` reads are bounded on a replica cut off from the primary: its
//! lag counts how long ago it last heard from the primary, so once the cut
//! has lasted longer than `max_lag_ms` it must not answer with the data it
//! has while the primary and the other replica commit new writes; it
//! redirects or refuses instead. The cut is iptables DROP inside a private
//! network namespace, so the host's network is never touched.
mod db_common;

use bulwark_testkit::netns::sh;
use bulwark_testkit::wait_until;
use db_common::*;
use std::time::Duration;

#[test]
fn a_replica_cut_off_from_the_primary_serves_no_stale_bounded_read() {
    if bulwark_testkit::netns::isolated("a_replica_cut_off_from_the_primary_serves_no_stale_bounded_read") {
        inside_netns();
    }
}

fn inside_netns() {
    sh("ip", &["link", "set", "lo", "up"]);
    let rt = rt();
    let ips = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];
    let c = Cluster::start(&rt, &ips[..2]);
    assert_eq!(c.wait_primary(), 1);
    // Replica 3 waits 10 s before it campaigns: the cut below stays a
    // replica cut off from a primary that goes on, and for a cut that
    // short the replica still counts the primary's last word as known
    // (within two leases, 24 s), so only the age of that word in its lag
    // stands between it and a stale answer.
    let replica = DbProc::start_tuned(3, ips[2], |c| {
        c.election_timeout(Duration::from_secs(10)).write_timeout(Duration::from_secs(10))
    });
    replica.join(&rt, &c.client, true);

    exec(&rt, &c.client, "CREATE TABLE t (v TEXT)", vec![]);
    let before = exec(&rt, &c.client, "INSERT INTO t VALUES ('before')", vec![]).token;
    wait_until("replica 3 serves a fresh bounded read", || {
        replica.status().is_some_and(|s| s.applied_index >= before.index)
            && bounded_read(&replica) == (200, vec!["before".to_string()])
    });
    let term = replica.status().unwrap().term;

    // Cut replica 3 off from both other nodes. The test itself talks from
    // 127.0.0.1 and still reaches every node.
    for other in &ips[..2] {
        sh("iptables", &["-A", "INPUT", "-s", ips[2], "-d", other, "-j", "DROP"]);
        sh("iptables", &["-A", "INPUT", "-s", other, "-d", ips[2], "-j", "DROP"]);
    }
    let cut = std::time::Instant::now();
    // The primary and replica 2 go on without it.
    exec(&rt, &c.client, "INSERT INTO t VALUES ('after')", vec![]);
    // The cut lasts a second, five times the 200 ms a read below allows.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(cut.elapsed()));
    let (status, rows) = bounded_read(&replica);
    assert!(status != 200 || rows.contains(&"after".to_string()), "stale bounded read: {status} {rows:?}");
    eprintln!("bounded read on the cut-off replica: {status}");
    let s = replica.status().unwrap();
    assert_eq!((s.role.as_str(), s.term), ("replica", term), "replica 3 stayed a replica of the same term");
    assert!(s.lag.seconds > 0.2, "its lag counts the silence: {:?}", s.lag);
    // A read without a bound is still served from what it has.
    let r = replica.post("/v1/query", r#"{"sql":"SELECT count(*) FROM t"}"#);
    assert_eq!(r.status, 200, "{}", r.text());

    // Healed, it catches up and serves bounded reads again.
    sh("iptables", &["-F", "INPUT"]);
    wait_until("the replica serves a fresh bounded read again", || {
        bounded_read(&replica) == (200, vec!["before".to_string(), "after".to_string()])
    });
}
