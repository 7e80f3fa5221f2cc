//! Database monitoring: `/metrics` is OpenMetrics text (Prometheus-text
//! parsers read it), needs the cluster secret, reports role and lag and
//! counts requests; `/primary` and `/replica` answer per role for
//! external balancers.
mod db_common;

use bulwark_testkit::{get, raw_request};
use db_common::*;
use std::time::Duration;

fn metrics(addr: std::net::SocketAddr) -> String {
    let r = raw_request(
        addr,
        format!("GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {SECRET}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some(bulwark_telemetry::metrics::CONTENT_TYPE));
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text
}

use bulwark_testkit::metric_value as value;

#[test]
fn metrics_and_role_endpoints_follow_the_cluster() {
    let rt = rt();
    let c = Cluster::start(&rt, &["127.0.0.1", "127.0.0.1", "127.0.0.1"]);
    let p = c.wait_primary();
    let primary = c.node(p).addr;
    let replica = c.nodes.iter().find(|n| n.id != p).unwrap().addr;
    assert_eq!(get(primary, "/metrics").unwrap().status, 401, "metrics need the secret");

    let before = metrics(primary);
    assert_eq!(value(&before, "bulwark_db_is_primary", &[]), 1.0);
    assert_eq!(value(&before, "bulwark_db_role", &[("role", "primary")]), 1.0);
    let w0 = value(&before, "bulwark_db_requests_total", &[("kind", "execute"), ("result", "ok")]);
    exec(&rt, &c.client, "CREATE TABLE IF NOT EXISTS m (v INTEGER)", vec![]);
    for i in 0..5 {
        exec(&rt, &c.client, "INSERT INTO m VALUES (?)", vec![bulwark_db_api::Value::Integer(i)]);
    }
    let after = metrics(primary);
    assert_eq!(value(&after, "bulwark_db_requests_total", &[("kind", "execute"), ("result", "ok")]) - w0, 6.0);
    assert!(after.contains("# TYPE bulwark_db_request_duration_seconds histogram"));
    let node = p.to_string();
    let executes = format!("\nbulwark_db_request_duration_seconds_count{{node=\"{node}\",kind=\"execute\"}} ");
    let count = after.split(&executes).nth(1).and_then(|v| v.lines().next()).map(|v| v.parse::<u64>());
    assert!(matches!(count, Some(Ok(n)) if n >= 6), "{after}");
    assert!(after.contains("# TYPE bulwark_db_requests counter\n"), "{after}");
    assert!(!after.contains("_total_total"), "{after}");
    assert!(value(&after, "bulwark_db_disk_free_bytes", &[("node", &node)]) > 0.0, "{after}");
    assert_eq!(value(&after, "bulwark_db_role", &[("node", &node)]), 1.0, "one role at a time:\n{after}");
    assert!(value(&after, "bulwark_db_applied_index", &[]) >= 6.0);
    assert!(after.contains("process_resident_memory_bytes"));
    // New entries reach the replicas ahead of openraft's own requests.
    assert!(
        value(&after, "bulwark_db_replication_sent_ahead_total", &[("result", "accepted")]) >= 1.0,
        "no append-entries sent ahead was accepted:\n{after}"
    );
    // An answer from entries sent ahead needs the replica's own answer to be
    // at most a few milliseconds old when openraft asks: a busy machine
    // whose disk syncs slowly may miss it for a while, so write on (a
    // bounded number of times) until one is covered.
    let mut covered = value(&after, "bulwark_db_replication_covered_total", &[]);
    for i in 0..200 {
        if covered >= 1.0 {
            break;
        }
        exec(&rt, &c.client, "INSERT INTO m VALUES (?)", vec![bulwark_db_api::Value::Integer(100 + i)]);
        covered = value(&metrics(primary), "bulwark_db_replication_covered_total", &[]);
    }
    assert!(covered >= 1.0, "openraft's requests were never answered from entries sent ahead:\n{}", metrics(primary));

    let r = metrics(replica);
    assert_eq!(value(&r, "bulwark_db_is_primary", &[]), 0.0);
    assert_eq!(value(&r, "bulwark_db_role", &[("role", "replica")]), 1.0);
    assert!(r.contains("bulwark_db_replication_lag_entries"));

    // Patroni-style role checks, no secret needed.
    assert_eq!(get(primary, "/primary").unwrap().status, 200);
    assert_eq!(get(replica, "/primary").unwrap().status, 503);
    assert_eq!(get(primary, "/replica").unwrap().status, 503);
    bulwark_testkit::wait_until("replica within lag", || get(replica, "/replica?max_lag=5").unwrap().status == 200);
}

#[test]
fn the_db_listener_has_a_firewall_and_a_header_timeout() {
    let n = DbProc::start_tuned(1, "127.0.0.1", |c| {
        c.bootstrap(true)
            .header_timeout(Duration::from_millis(300))
            .set("firewall", r#"{ acl = ["deny 127.0.0.2", "allow all"] }"#)
    });
    let health = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_eq!(bulwark_testkit::raw_request_from("127.0.0.3".parse().unwrap(), n.addr, health).unwrap().status, 200);
    // A denied address gets its connection closed, unanswered.
    assert!(bulwark_testkit::raw_request_from("127.0.0.2".parse().unwrap(), n.addr, health).is_err());
    // A client that never finishes its request head is cut off.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(n.addr).unwrap();
    s.set_read_timeout(Some(bulwark_testkit::PATIENCE)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: ").unwrap();
    let mut rest = Vec::new();
    let closed = s.read_to_end(&mut rest);
    assert!(closed.is_ok() || closed.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset));
    assert!(!String::from_utf8_lossy(&rest).contains(" 200 "));
}
