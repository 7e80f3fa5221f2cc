//! The guestbook's read-your-writes promise, through a lagging replica: a
//! message posted through app1 is listed by app2 — whose reads go to a
//! replica cut off from the primary, so it lags — as long as the poster's
//! cookie comes along (the replica waits for the write, or sends the read
//! to the primary); without the cookie the same replica shows the stale
//! list. Runs in a private network namespace (iptables stays inside it).
mod db_common;

use bulwark_db_api::DbRole;
use bulwark_testkit::config::AppConfig;
use bulwark_testkit::netns::sh;
use bulwark_testkit::{request, wait_until, HttpResponse, Process};
use db_common::*;
use std::time::Duration;

#[test]
fn a_poster_sees_their_message_on_another_app_through_a_lagging_replica() {
    if bulwark_testkit::netns::isolated("a_poster_sees_their_message_on_another_app_through_a_lagging_replica") {
        inside_netns();
    }
}

fn app(name: &str, nodes: &[&DbProc]) -> Process {
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    Process::start("app", &AppConfig::new(name, &addrs, SECRET).to_toml())
}

fn call(app: &Process, method: &str, path: &str, cookie: Option<&str>, body: &str) -> HttpResponse {
    let mut h = vec![("X-Bulwark-Cluster", SECRET), ("Content-Type", "application/json")];
    if let Some(c) = cookie {
        h.push(("Cookie", c));
    }
    request(app.addr("http"), method, path, &h, body.as_bytes()).unwrap()
}

fn inside_netns() {
    sh("ip", &["link", "set", "lo", "up"]);
    let rt = rt();
    // Node 3 has a long election timeout so that, cut off from the primary,
    // it stays a (lagging) replica instead of campaigning.
    let n1 = DbProc::start(1, "127.0.0.11", true);
    let boot = bulwark_db_api::Client::new([n1.addr.to_string()], SECRET);
    wait_until("node 1 primary", || n1.status().is_some_and(|s| s.role == DbRole::Primary));
    let n2 = DbProc::start(2, "127.0.0.12", false);
    n2.join(&rt, &boot, true);
    let n3 = DbProc::start_tuned(3, "127.0.0.13", |c| {
        c.read_wait(Duration::from_secs(1))
            .election_timeout(Duration::from_secs(20))
            .write_timeout(Duration::from_secs(30))
    });
    n3.join(&rt, &boot, true);
    let app1 = app("app1", &[&n1, &n2, &n3]);
    let app2 = app("app2", &[&n3]);
    assert_eq!(call(&app1, "GET", "/api/messages", None, "").status, 200);
    wait_until("node 3 caught up", || n3.status().unwrap().applied_index >= n1.status().unwrap().applied_index);
    // Cut node 3 off from the primary (it lags from now on), and keep the
    // apps (source 127.0.0.1) away from node 2 so app2 reads from node 3.
    sh("iptables", &["-A", "INPUT", "-s", "127.0.0.11", "-d", "127.0.0.13", "-j", "DROP"]);
    sh("iptables", &["-A", "INPUT", "-s", "127.0.0.13", "-d", "127.0.0.11", "-j", "DROP"]);
    sh("iptables", &["-A", "OUTPUT", "-s", "127.0.0.1", "-d", "127.0.0.12", "-j", "REJECT"]);

    for i in 0..3 {
        let text = format!("message {i}");
        let r =
            call(&app1, "POST", "/api/messages", None, &serde_json::json!({"author": "ann", "text": text}).to_string());
        assert_eq!(r.status, 201, "{}", r.text());
        let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
        // Without the cookie: the lagging replica answers, without it.
        let stale = call(&app2, "GET", "/api/messages?limit=100", None, "");
        assert_eq!(stale.status, 200, "{}", stale.text());
        let stale: serde_json::Value = serde_json::from_slice(&stale.body).unwrap();
        assert_eq!(stale["db_node"], 3, "{stale}");
        assert!(
            !stale["messages"].as_array().unwrap().iter().any(|m| m["text"] == text.as_str()),
            "node 3 should lag: {stale}"
        );
        // With the cookie: always there.
        let fresh = call(&app2, "GET", "/api/messages?limit=100", Some(&cookie), "");
        assert_eq!(fresh.status, 200, "{}", fresh.text());
        let fresh: serde_json::Value = serde_json::from_slice(&fresh.body).unwrap();
        assert!(
            fresh["messages"].as_array().unwrap().iter().any(|m| m["text"] == text.as_str()),
            "read-your-writes violated: {fresh}"
        );
        assert_eq!(fresh["served_by"], "app2");
        // The cookie is the token, signed.
        let token = fresh["read_your_writes"].as_str().unwrap();
        assert!(cookie.starts_with(&format!("bulwark_rw={token}.")), "{cookie} is not token {token}, signed");
    }
    // Healed: node 3 catches up and serves the messages itself.
    sh("iptables", &["-F", "INPUT"]);
    wait_until("node 3 caught up again", || {
        let r = call(&app2, "GET", "/api/messages?limit=100", None, "");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        v["db_node"] == 3 && v["messages"].as_array().is_some_and(|m| m.iter().any(|m| m["text"] == "message 2"))
    });
}
