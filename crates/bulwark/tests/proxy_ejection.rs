//! Passive and active health never take the site down by themselves: a
//! client's broken body is the client's failure (400, no ejection, no
//! retry), the panic threshold keeps every server in rotation when too few
//! pass their checks, and a web server whose apps are all down keeps
//! serving its static files (its `/health` says degraded, not down).
use bulwark_testkit::config::{
    quick_http_check, quick_tcp_check, BackendConfig, FrontendConfig, HealthCheck, LbConfig, PassiveHealth, WebConfig,
};
use bulwark_testkit::{get, raw_request, wait_until, Backend, Process};
use std::net::SocketAddr;
use std::time::Duration;

/// An lb (with an admin listener) in front of `servers`, its backend
/// changed by `tune`.
fn lb(servers: &[(&str, SocketAddr)], tune: impl FnOnce(BackendConfig) -> BackendConfig) -> Process {
    let app = servers.iter().fold(BackendConfig::new("app"), |b, &(name, addr)| b.server(name, addr));
    let c = LbConfig::new().admin().frontend(FrontendConfig::http("www", "app")).backend(tune(app));
    Process::start("lb", &c.to_toml())
}

/// `(state, response_errors, retries)` of `server`, from the admin
/// listener's `/stats` and `/metrics`.
fn server_stats(lb: &Process, server: &str) -> (String, u64, u64) {
    let r = get(lb.addr("admin"), "/stats").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let s = v["backends"][0]["servers"].as_array().unwrap().iter().find(|s| s["name"] == server).unwrap().clone();
    let metrics = get(lb.addr("admin"), "/metrics").unwrap().text();
    let labels = [("backend", "app"), ("server", server)];
    let errors = bulwark_testkit::metric_value(&metrics, "bulwark_lb_response_errors_total", &labels);
    (s["state"].as_str().unwrap().to_string(), errors as u64, s["retries"].as_u64().unwrap())
}

const BAD_CHUNK: &[u8] =
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";

#[test]
fn a_broken_request_body_is_the_clients_failure() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    // One error would eject a server; the retry budget allows retries.
    let lb = lb(&[("a", a.addr), ("b", b.addr)], |b| {
        b.passive(&PassiveHealth {
            consecutive_errors: 1,
            eject_for: Duration::from_secs(600),
            ..PassiveHealth::default()
        })
    });
    let www = lb.addr("www");
    for _ in 0..10 {
        let r = raw_request(www, BAD_CHUNK).expect("an answer");
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("request body could not be read"), "{}", r.text());
    }
    // A short body (the client closes before sending what it announced)
    // is the client's too.
    for _ in 0..4 {
        let mut s = std::net::TcpStream::connect(www).unwrap();
        use std::io::Write;
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nshort").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let r = bulwark_testkit::read_response(&mut s).expect("an answer");
        assert_eq!(r.status, 400, "{}", r.text());
    }
    for server in ["a", "b"] {
        assert_eq!(server_stats(&lb, server), ("up".to_string(), 0, 0), "server {server}: no failure, no retry");
    }
    let seen: std::collections::HashSet<String> = (0..4).map(|_| get(www, "/").unwrap().text()).collect();
    assert_eq!(seen.len(), 2, "both servers still take traffic: {seen:?}");
}

/// `GET /health` every 100 ms with a 500 ms timeout: up after one pass,
/// down after one failure.
fn fast_checks() -> HealthCheck {
    HealthCheck { timeout: Duration::from_millis(500), fall: 1, ..quick_http_check("/health") }
}

#[test]
fn below_the_panic_threshold_every_server_stays_in_rotation() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let lb = lb(&[("a", a.addr), ("b", b.addr)], |b| b.health_check(&fast_checks()));
    let www = lb.addr("www");
    // Both health checks fail (a wrong check, or an overloaded dependency):
    // the servers still answer, so the site must too.
    a.set_healthy(false);
    b.set_healthy(false);
    wait_until("both down", || server_stats(&lb, "a").0 == "down" && server_stats(&lb, "b").0 == "down");
    let seen: std::collections::HashSet<String> = (0..10)
        .map(|_| {
            let r = get(www, "/").unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            r.text()
        })
        .collect();
    assert_eq!(seen.len(), 2, "balanced over all servers in panic: {seen:?}");
    // One back: 1 of 2 available is not below 50 %: health decides again.
    a.set_healthy(true);
    wait_until("a up", || server_state_is(&lb, "a", "up"));
    for _ in 0..10 {
        assert_eq!(get(www, "/").unwrap().text(), "a");
    }
}

fn server_state_is(lb: &Process, server: &str, state: &str) -> bool {
    server_stats(lb, server).0 == state
}

#[test]
fn static_files_keep_answering_when_every_app_is_down() {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "home\n").unwrap();
    let mut app = Backend::start("app");
    // The access log on: it shows the lb's checks of the web server.
    let web = WebConfig::new(site.path()).access_log(true).proxy_checked("/api/", &[app.addr], &quick_tcp_check());
    let web = Process::start("web", &web.to_toml());
    // The lb judges the web server by its /health alone (no panic routing).
    let lb = lb(&[("web1", web.addr("http"))], |b| b.health_check(&fast_checks()).set("panic_threshold_percent", "0"));
    let www = lb.addr("www");
    wait_until("api through lb", || get(www, "/api/x").is_ok_and(|r| r.status == 200));
    app.stop();
    wait_until("the web server sees its app down", || {
        get(web.addr("http"), "/health").is_ok_and(|r| r.text().starts_with("degraded"))
    });
    // Several of the lb's checks later the lb still has the web server...
    let checks = |w: &Process| w.logs().matches("\"GET /health HTTP/1.1\" 200").count();
    let before = checks(&web);
    wait_until("three more checks of the web server", || checks(&web) >= before + 3);
    assert_eq!(server_stats(&lb, "web1").0, "up");
    // ...so the static site answers, and only the API fails.
    let r = get(www, "/").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "home\n");
    assert!(get(www, "/api/x").unwrap().status >= 500);
}
