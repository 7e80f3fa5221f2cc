//! Monitoring on the load balancer: Prometheus metrics that parse and move
//! with traffic, the admin token, the overview document, events, alerts to
//! the log and to a webhook, and watched nodes.
use bulwark_testkit::config::{quick_http_check, AlertRules, BackendConfig, FrontendConfig, LbConfig, NodeKind};
use bulwark_testkit::{get, raw_request, wait_until, Backend, Process};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

fn authed_get(addr: std::net::SocketAddr, path: &str, token: &str) -> bulwark_testkit::HttpResponse {
    raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap()
}

use bulwark_testkit::metric_value as sample;

#[test]
fn metrics_parse_move_with_traffic_and_need_the_token() {
    let a = Backend::start("a");
    let cfg = LbConfig::new()
        .admin_str("token", "t0ken")
        .frontend(FrontendConfig::http("www", "app"))
        .backend(BackendConfig::new("app").server("a", a.addr));
    let lb = Process::start("lb", &cfg.to_toml());
    let admin = lb.addr("admin");
    assert_eq!(get(admin, "/metrics").unwrap().status, 401);
    assert_eq!(get(admin, "/api/overview").unwrap().status, 401);
    assert_eq!(get(admin, "/health").unwrap().status, 200);
    let before = authed_get(admin, "/metrics", "t0ken");
    assert_eq!(before.status, 200);
    assert_eq!(before.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    let m0 = sample(&before.text(), "bulwark_lb_requests_total", &[("server", "a"), ("code", "2xx")]);
    for _ in 0..25 {
        assert_eq!(get(lb.addr("www"), "/").unwrap().status, 200);
    }
    let after = authed_get(admin, "/metrics", "t0ken").text();
    let m1 = sample(&after, "bulwark_lb_requests_total", &[("server", "a"), ("code", "2xx")]);
    assert_eq!(m1 - m0, 25.0);
    assert_eq!(sample(&after, "bulwark_lb_server_up", &[("server", "a")]), 1.0);
    assert!(sample(&after, "process_resident_memory_bytes", &[]) > 0.0);
    // The latency histogram is exposed and counted every response.
    assert!(after.contains("# TYPE bulwark_lb_request_duration_seconds histogram"));
    assert!(after.contains("bulwark_lb_request_duration_seconds_count{backend=\"app\",server=\"a\"} 25"), "{after}");
    assert!(
        after.contains("bulwark_lb_request_duration_seconds_bucket{le=\"+Inf\",backend=\"app\",server=\"a\"} 25"),
        "{after}"
    );
    assert!(after.ends_with("# EOF\n"), "{after}");
    // The token never shows up in the logs.
    assert!(!lb.logs().contains("t0ken"));
}

/// A one-shot webhook receiver: returns the bodies of the POSTs it gets.
fn webhook() -> (std::net::SocketAddr, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    (addr, rx)
}

#[test]
fn overview_events_and_alerts_follow_failures() {
    let mut a = Backend::start("a");
    let b = Backend::start("b");
    let app = Backend::start("app1");
    let (hook, hooks) = webhook();
    let cfg = LbConfig::new()
        .admin_str("site", "foobar")
        .admin_str("name", "lb1")
        .alerts(&AlertRules {
            for_duration: Duration::from_millis(200),
            webhook: Some(format!("http://{hook}/alerts")),
            ..AlertRules::default()
        })
        .watch("app1", NodeKind::App, "server1", app.addr)
        .frontend(FrontendConfig::http("www", "web"))
        .backend(
            BackendConfig::new("web")
                .health_check(&quick_http_check("/health"))
                .server("a", a.addr)
                .server("b", b.addr),
        );
    let lb = Process::start("lb", &cfg.to_toml());
    let admin = lb.addr("admin");
    let overview =
        || -> serde_json::Value { serde_json::from_slice(&get(admin, "/api/overview").unwrap().body).unwrap() };
    wait_until("app1 seen healthy", || overview()["nodes"][0]["healthy"] == true);
    let o = overview();
    assert_eq!(o["site"], "foobar");
    assert_eq!(o["lb"]["name"], "lb1");
    assert_eq!(o["backends"][0]["servers"].as_array().unwrap().len(), 2);
    assert_eq!(o["nodes"][0]["host"], "server1");
    // Traffic shows up as a rate.
    let www = lb.addr("www");
    wait_until("rates", || {
        for _ in 0..20 {
            get(www, "/").unwrap();
        }
        overview()["backends"][0]["servers"][0]["req_per_s"].as_f64().unwrap_or(0.0) > 0.0
    });
    // A dead server: an event, then a firing alert, in the log and at the webhook.
    a.stop();
    wait_until("ServerDown alert", || {
        overview()["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "ServerDown" && x["summary"].as_str().unwrap().starts_with("a "))
    });
    let o = overview();
    assert!(
        o["events"].as_array().unwrap().iter().any(|e| e["text"].as_str().unwrap().contains("a (web) is DOWN")),
        "{o}"
    );
    lb.wait_for_log("ALERT firing: ServerDown");
    let posted = hooks.recv_timeout(bulwark_testkit::PATIENCE).expect("webhook called");
    let v: serde_json::Value = serde_json::from_str(&posted).unwrap();
    assert_eq!(v["status"], "firing");
    assert_eq!(v["alert"]["name"], "ServerDown");
    // An unhealthy watched node.
    app.set_healthy(false);
    wait_until("NodeDown alert", || overview()["alerts"].as_array().unwrap().iter().any(|x| x["name"] == "NodeDown"));
    app.set_healthy(true);
    wait_until("NodeDown resolved", || {
        !overview()["alerts"].as_array().unwrap().iter().any(|x| x["name"] == "NodeDown")
    });
    lb.wait_for_log("ALERT resolved: NodeDown");
}
