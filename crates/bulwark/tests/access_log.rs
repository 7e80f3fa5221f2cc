//! Access log formats on real `bulwark lb` and `bulwark web` processes:
//! the combined format read by GoAccess (a log analyser nobody here
//! wrote), one JSON object a line with the timings, and a file reopened
//! on SIGUSR1 after logrotate renamed it.
use bulwark_testkit::config::{BackendConfig, Balance, FrontendConfig, LbConfig, WebConfig};
use bulwark_testkit::{request, wait_until, Backend, Process};
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

fn lb_config(format: &str, file: Option<&Path>, servers: &[(&str, SocketAddr)]) -> String {
    let app = servers
        .iter()
        .fold(BackendConfig::new("app").balance(Balance::First).set("max_connections", "100"), |b, &(name, addr)| {
            b.server(name, addr)
        });
    let lb = LbConfig::new().access_log_format(format).frontend(FrontendConfig::http("www", "app")).backend(app);
    match file {
        Some(f) => lb.access_log_file(f),
        None => lb,
    }
    .to_toml()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

/// An address nothing listens on.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[test]
fn goaccess_reads_the_combined_log_without_errors() {
    let app = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let lb = Process::start("lb", &lb_config("combined", Some(&log), &[("a", app.addr)]));
    let www = lb.addr("www");
    let agents = ["curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64) \"quoted\"", ""];
    for i in 0..30 {
        let agent = agents[i % agents.len()];
        let mut headers = vec![("Referer", "https://example.test/from")];
        if !agent.is_empty() {
            headers.push(("User-Agent", agent));
        }
        let r = request(www, "GET", &format!("/page/{i}?q=a%20b"), &headers, b"").unwrap();
        assert_eq!(r.status, 200);
    }
    wait_until("30 access lines", || lines(&log).len() >= 30);
    assert_eq!(lines(&log).len(), 30, "one line per request");

    let report = dir.path().join("report.json");
    let out = Command::new("goaccess")
        .arg(&log)
        .args(["--log-format=COMBINED", "--no-global-config", "-o"])
        .arg(&report)
        .output()
        .expect("goaccess installed (scripts/install-test-deps.sh)");
    assert!(out.status.success(), "goaccess: {}\n{}", String::from_utf8_lossy(&out.stderr), lines(&log).join("\n"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let general = &v["general"];
    assert_eq!(general["total_requests"], 30, "{general}");
    assert_eq!(general["valid_requests"], 30, "{general}");
    assert_eq!(general["failed_requests"], 0, "{general}");
}

#[test]
fn a_json_line_carries_the_server_retries_timings_and_request_id() {
    let app = Backend::start("a");
    // The first server refuses connections: the request moves on to `a`.
    let lb = Process::start("lb", &lb_config("json", None, &[("dead", closed_port()), ("a", app.addr)]));
    let r = request(lb.addr("www"), "GET", "/hello", &[("User-Agent", "test-agent")], b"").unwrap();
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").expect("the edge sets an id").to_string();
    let line = || lb.logs().lines().find(|l| l.starts_with('{') && l.contains(&id)).map(String::from);
    wait_until("the json access line", || line().is_some());
    let v: serde_json::Value = serde_json::from_str(&line().unwrap()).unwrap();
    assert_eq!(v["status"], 200);
    assert_eq!(v["request_method"], "GET");
    assert_eq!(v["request_uri"], "/hello");
    assert_eq!(v["upstream"], "a");
    assert_eq!(v["retries"], 1, "{v}");
    assert_eq!(v["request_id"], id.as_str());
    assert_eq!(v["http_user_agent"], "test-agent");
    assert_eq!(v["route"], "www");
    assert_eq!(v["body_bytes_sent"], r.body.len(), "{v}");
    for timing in ["queue_ms", "connect_ms", "upstream_header_ms", "request_time_ms"] {
        assert!(v[timing].as_f64().is_some_and(|t| t >= 0.0), "{timing}: {v}");
    }
    assert!(v["request_time_ms"].as_f64() >= v["upstream_header_ms"].as_f64(), "{v}");

    // A failure is logged too, naming the server that failed.
    let lb = Process::start("lb", &lb_config("json", None, &[("dead", closed_port())]));
    let r = request(lb.addr("www"), "GET", "/down", &[], b"").unwrap();
    assert_eq!(r.status, 502);
    let line = || lb.logs().lines().find(|l| l.starts_with('{') && l.contains("/down")).map(String::from);
    wait_until("the json line of a 502", || line().is_some());
    let v: serde_json::Value = serde_json::from_str(&line().unwrap()).unwrap();
    assert_eq!(v["status"], 502, "{v}");
}

#[test]
fn sigusr1_reopens_a_renamed_file() {
    let app = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let lb = Process::start("lb", &lb_config("$request_uri $status", Some(&log), &[("a", app.addr)]));
    let www = lb.addr("www");
    assert_eq!(request(www, "GET", "/before", &[], b"").unwrap().status, 200);
    wait_until("the first line", || lines(&log) == ["/before 200"]);

    std::fs::rename(&log, &rotated).unwrap();
    assert_eq!(request(www, "GET", "/renamed", &[], b"").unwrap().status, 200);
    wait_until("written to the renamed file until the signal", || lines(&rotated).len() == 2);
    lb.signal(Signal::SIGUSR1);
    lb.wait_for_log("access log reopened");
    assert_eq!(request(www, "GET", "/after", &[], b"").unwrap().status, 200);
    wait_until("a new file at the path", || lines(&log) == ["/after 200"]);
    assert_eq!(lines(&rotated), ["/before 200", "/renamed 200"]);
}

#[test]
fn the_web_tier_writes_the_same_formats() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index.html"), "<h1>hi</h1>\n").unwrap();
    let log = dir.path().join("web-access.log");
    let config = WebConfig::new(&root).access_log_file(&log, "combined");
    let mut web = Process::start("web", &config.to_toml());
    let http = web.addr("http");
    assert_eq!(request(http, "GET", "/index.html", &[("User-Agent", "ua")], b"").unwrap().status, 200);
    assert_eq!(request(http, "GET", "/missing", &[], b"").unwrap().status, 404);
    wait_until("two web access lines", || lines(&log).len() == 2);
    let got = lines(&log);
    assert!(got[0].starts_with("127.0.0.1 - - ["), "{got:?}");
    assert!(got[0].ends_with("\"GET /index.html HTTP/1.1\" 200 12 \"-\" \"ua\""), "{got:?}");
    assert!(got[1].contains("\"GET /missing HTTP/1.1\" 404 "), "{got:?}");
    let rotated = dir.path().join("web-access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    web.signal(Signal::SIGUSR1);
    web.wait_for_log("access log reopened");
    assert_eq!(request(http, "GET", "/index.html", &[], b"").unwrap().status, 200);
    wait_until("the web log reopened", || lines(&log).len() == 1);
    assert!(web.terminate().success());
}
