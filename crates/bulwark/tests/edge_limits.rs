//! Connection limits that hold at the edge: refused clients are closed
//! before any TLS handshake, HTTP/2 connections get keep-alive pings and an
//! idle timeout, a client that stops reading its answer is disconnected
//! after the send timeout on the lb and on the web tier; and the smaller
//! edge rules: HTTP/2 requests reach servers with `Host`, the HTTPS
//! redirect echoes only a valid host and is not for shared caches, the web
//! tier's `/metrics` is not reachable through the lb, and the web proxy
//! route honours the configured body limit and timeout.
use bulwark_testkit::config::{BackendConfig, FrontendConfig, LbConfig, WebConfig};
use bulwark_testkit::tls::{tls_connect, tls_raw_request, TlsStream};
use bulwark_testkit::{get, raw_request, read_response, wait_until, Backend, Process};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn cert(dir: &Path) -> (PathBuf, PathBuf) {
    bulwark_lb::tls::ensure_self_signed(dir, &["localhost".to_string()]).unwrap()
}

/// An lb with one TLS frontend `https` (with `firewall`, a TOML table,
/// if given) in front of `server`.
fn tls_lb(dir: &Path, server: SocketAddr, timeouts: &[(&str, Duration)], firewall: Option<&str>) -> Process {
    let (c, k) = cert(dir);
    let mut https = FrontendConfig::http("https", "app").tls(&c, &k);
    if let Some(firewall) = firewall {
        https = https.set("firewall", firewall);
    }
    let mut cfg = LbConfig::new().frontend(https).backend(BackendConfig::new("app").server("a", server));
    for (key, d) in timeouts {
        cfg = cfg.timeout(key, *d);
    }
    Process::start("lb", &cfg.to_toml())
}

#[test]
fn refused_connections_are_closed_before_the_tls_handshake() {
    let a = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let lb = tls_lb(dir.path(), a.addr, &[], Some("{ max_connections = 1 }"));
    let https = lb.addr("https");
    let ca = dir.path().join("cert.pem");
    // The one allowed connection works.
    let mut first = tls_connect(https, "localhost", &ca, &[b"http/1.1"]).unwrap();
    first.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut first).unwrap().status, 200);
    // Over the limit: no handshake at all (no certificate, no 503 page).
    let err = tls_connect(https, "localhost", &ca, &[b"http/1.1"]).err();
    assert!(err.is_some(), "a refused client completed a TLS handshake");
    lb.wait_for_log("connection refused before TLS");
    drop(first);
    wait_until("the slot is free again", || {
        tls_raw_request(https, "localhost", &ca, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .is_ok_and(|r| r.status == 200)
    });
}

/// Read HTTP/2 frames until the connection closes; returns the frame types
/// seen. `answer_pings`: acknowledge the server's PINGs, as a live client
/// does.
fn h2_frames_until_close(tls: &mut TlsStream, answer_pings: bool) -> Vec<u8> {
    let mut types = Vec::new();
    loop {
        let mut head = [0u8; 9];
        if tls.read_exact(&mut head).is_err() {
            return types;
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        if tls.read_exact(&mut payload).is_err() {
            return types;
        }
        types.push(head[3]);
        if head[3] == 4 && head[4] & 1 == 0 {
            // Acknowledge the server's SETTINGS, as a client must.
            let _ = tls.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]);
        }
        if answer_pings && head[3] == PING && head[4] & 1 == 0 {
            let mut ack = vec![0, 0, 8, PING, 1, 0, 0, 0, 0];
            ack.extend_from_slice(&payload);
            let _ = tls.write_all(&ack);
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
const GOAWAY: u8 = 7;
const PING: u8 = 6;

#[test]
fn idle_http2_connections_are_closed_with_goaway() {
    let a = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let lb = tls_lb(dir.path(), a.addr, &[("http2_idle", Duration::from_millis(300))], None);
    let mut tls = tls_connect(lb.addr("https"), "localhost", &dir.path().join("cert.pem"), &[b"h2"]).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(H2_PREFACE).unwrap();
    // Nothing more is sent: the server must close the connection by itself.
    let frames = h2_frames_until_close(&mut tls, true);
    assert!(frames.contains(&GOAWAY), "closed without GOAWAY: frames {frames:?}");
}

#[test]
fn http2_clients_that_do_not_answer_pings_are_disconnected() {
    let a = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let timeouts = [
        ("http2_idle", Duration::from_secs(600)),
        ("http2_ping_interval", Duration::from_millis(200)),
        ("http2_ping_timeout", Duration::from_millis(200)),
    ];
    let lb = tls_lb(dir.path(), a.addr, &timeouts, None);
    let mut tls = tls_connect(lb.addr("https"), "localhost", &dir.path().join("cert.pem"), &[b"h2"]).unwrap();
    tls.write_all(H2_PREFACE).unwrap();
    let frames = h2_frames_until_close(&mut tls, false);
    assert!(frames.contains(&PING), "no keep-alive PING before the close: frames {frames:?}");
}

#[test]
fn http2_requests_reach_the_server_with_host() {
    let a = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let lb = tls_lb(dir.path(), a.addr, &[], None);
    let port = lb.addr("https").port();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--http2", "--cacert"])
        .arg(dir.path().join("cert.pem"))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}/echo"))
        .output()
        .expect("curl installed");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(body.lines().any(|l| l == format!("host: localhost:{port}")), "no Host from :authority:\n{body}");
}

/// A site root with one large file.
fn big_site(bytes: usize) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("big.bin"), vec![b'x'; bytes]).unwrap();
    std::fs::write(root.path().join("index.html"), "home\n").unwrap();
    root
}

fn web(config: WebConfig) -> Process {
    Process::start("web", &config.to_toml())
}

/// Ask for `path` on a socket with a tiny receive buffer and read nothing,
/// until `process` logs that it gave up on the client; then read what
/// arrived: the answer must have been cut short.
fn slow_reader_is_cut_off(addr: SocketAddr, process: &Process, path: &str, full: usize) {
    let mut s = bulwark_testkit::connect_with_receive_buffer(addr, 4096).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    process.wait_for_log("accepted no data");
    s.set_read_timeout(Some(bulwark_testkit::PATIENCE)).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.len() < full, "the whole answer ({} bytes) was sent to a client that stopped reading", got.len());
}

const BIG: usize = 16 * 1024 * 1024;

#[test]
fn the_web_tier_disconnects_a_client_that_stops_reading() {
    let root = big_site(BIG);
    let w = web(WebConfig::new(root.path()).timeout("send", Duration::from_millis(300)));
    slow_reader_is_cut_off(w.addr("http"), &w, "/big.bin", BIG);
    // Other clients are served as usual.
    assert_eq!(get(w.addr("http"), "/").unwrap().status, 200);
}

#[test]
fn the_lb_disconnects_a_client_that_stops_reading() {
    let root = big_site(BIG);
    // The web server waits far longer than the lb: the lb is what gives up.
    let w = web(WebConfig::new(root.path()).timeout("send", Duration::from_secs(600)));
    let cfg = LbConfig::new()
        .timeout("client_send", Duration::from_millis(300))
        .frontend(FrontendConfig::http("www", "web"))
        .backend(BackendConfig::new("web").server("w", w.addr("http")));
    let lb = Process::start("lb", &cfg.to_toml());
    slow_reader_is_cut_off(lb.addr("www"), &lb, "/big.bin", BIG);
    assert_eq!(get(lb.addr("www"), "/").unwrap().status, 200);
}

#[test]
fn the_https_redirect_echoes_only_valid_hosts_and_is_private() {
    let a = Backend::start("a");
    let cfg = LbConfig::new()
        .frontend(FrontendConfig::http("http", "app").set("redirect_https_port", "8443"))
        .backend(BackendConfig::new("app").server("a", a.addr));
    let lb = Process::start("lb", &cfg.to_toml());
    let http = lb.addr("http");
    let ask = |host: &str| {
        raw_request(http, format!("GET /p?q=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
            .unwrap()
    };
    let r = ask("example.com:80");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://example.com:8443/p?q=1"));
    assert_eq!(r.header("cache-control"), Some("private, max-age=3600"));
    let r = ask("[::1]");
    assert_eq!(r.header("location"), Some("https://[::1]:8443/p?q=1"));
    for bad in ["evil.example@good.example", "evil.example/x", "evil.example:80:80", "a..b", "-x.example"] {
        let r = ask(bad);
        assert_eq!(r.status, 400, "Host {bad:?} → {} {:?}", r.status, r.header("location"));
        assert_eq!(r.header("location"), None);
    }
    let r = raw_request(http, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.status, 400, "no Host at all");
    assert_eq!(a.hits(), 0);
}

const SECRET: &str = "edge-secret-0123456789";

#[test]
fn web_metrics_are_not_reachable_through_the_lb() {
    let root = big_site(16);
    let w = web(WebConfig::new(root.path()).set_str("secret", SECRET));
    let cfg = LbConfig::new()
        .frontend(FrontendConfig::http("www", "web"))
        .backend(BackendConfig::new("web").set_str("cluster_secret", SECRET).server("w", w.addr("http")));
    let lb = Process::start("lb", &cfg.to_toml());
    // Through the lb (which adds X-Bulwark-Cluster): the site, not the metrics.
    assert_eq!(get(lb.addr("www"), "/").unwrap().status, 200);
    let r = get(lb.addr("www"), "/metrics").unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(!r.text().contains("bulwark_web_responses_total"), "{}", r.text());
    // The cluster header alone does not open them either...
    let cluster =
        format!("GET /metrics HTTP/1.1\r\nHost: t\r\nX-Bulwark-Cluster: {SECRET}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_request(w.addr("http"), cluster.as_bytes()).unwrap().status, 401);
    // ...the secret as a bearer token does.
    let bearer =
        format!("GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {SECRET}\r\nConnection: close\r\n\r\n");
    let r = raw_request(w.addr("http"), bearer.as_bytes()).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("bulwark_web_responses_total"), "{}", r.text());
}

#[test]
fn the_web_proxy_route_honours_the_body_limit_and_timeout() {
    let app = Backend::start("app");
    let root = big_site(16);
    let w = web(WebConfig::new(root.path())
        .limit("max_body_bytes", 1000)
        .timeout("body", Duration::from_millis(300))
        .proxy("/api/", &[app.addr]));
    let http = w.addr("http");
    // Chunked, growing past the limit: 413, and the app never sees it whole.
    let chunked = bulwark_testkit::chunked_post("/api/echo", 3, 500);
    let r = raw_request(http, &chunked).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    // A body that stops arriving: 408 after `timeouts.body`, not the
    // built-in 30 s (the read below gives up long before that).
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly-part").unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 408, "{}", r.text());
    // Small bodies pass.
    let r = bulwark_testkit::request(http, "POST", "/api/echo", &[], b"fine").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}
