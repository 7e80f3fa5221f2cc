//! The classic site's security gaps, closed on the load balancer: HTTPS (with
//! redirect, HSTS, SNI, HTTP/2, certificate reload), the firewall (CIDR
//! ACL, rate limit, connection limits), slowloris and body limits.
use bulwark_testkit::config::{BackendConfig, FrontendConfig, LbConfig};
use bulwark_testkit::tls::{tls_connect, tls_request_with_finished};
use bulwark_testkit::{get, raw_request, raw_request_from, read_response, request, wait_until, Backend, Process};
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn cert(dir: &Path, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let (c, k) = bulwark_lb::tls::ensure_self_signed(dir, &names).unwrap();
    (c.display().to_string(), k.display().to_string())
}

/// An lb with `frontend` in front of backend `app`, whose one server is `a`.
fn lb_before(a: SocketAddr, frontend: FrontendConfig) -> LbConfig {
    LbConfig::new().frontend(frontend).backend(BackendConfig::new("app").server("a", a))
}

/// An lb whose frontend `https` (a self-signed certificate for localhost,
/// written into `dir`) is in front of backend `app`, whose one server is
/// `a`; and the certificate's path, for clients to trust.
fn https_before(a: SocketAddr, dir: &Path) -> (LbConfig, PathBuf) {
    let (c, k) = cert(dir, &["localhost"]);
    (lb_before(a, FrontendConfig::http("https", "app").tls(Path::new(&c), Path::new(&k))), PathBuf::from(c))
}

/// `curl` with the given args; returns (exit ok, stdout, stderr).
fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "20"]).args(args).output().expect("curl installed");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn https_works_plain_http_redirects_and_hsts_is_sent() {
    let a = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = cert(dir.path(), &["localhost"]);
    let cfg = lb_before(a.addr, FrontendConfig::http("https", "app").tls(Path::new(&c), Path::new(&k)))
        .frontend(FrontendConfig::http("http", "app").set("redirect_https_port", "443"));
    let lb = Process::start("lb", &cfg.to_toml());
    let https = lb.addr("https");
    let url = format!("https://localhost:{}/echo", https.port());
    let resolve = format!("localhost:{}:127.0.0.1", https.port());
    // Verified against the self-signed certificate as the trusted root.
    let (ok, body, err) = curl(&["--cacert", &c, "--resolve", &resolve, "-D", "-", &url]);
    assert!(ok, "{err}");
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
    assert!(body.to_lowercase().contains("strict-transport-security: max-age=31536000"), "{body}");
    // HTTP/2 by ALPN.
    let (ok, out, err) =
        curl(&["--cacert", &c, "--resolve", &resolve, "--http2", "-o", "/dev/null", "-w", "%{http_version}", &url]);
    assert!(ok, "{err}");
    assert_eq!(out, "2");
    // TLS 1.1 is refused.
    let (ok, _, _) = curl(&["--cacert", &c, "--resolve", &resolve, "--tlsv1.1", "--tls-max", "1.1", &url]);
    assert!(!ok, "TLS 1.1 must be refused");
    // Plain HTTP → 308 to https.
    let r = raw_request(lb.addr("http"), b"GET /x?y=1 HTTP/1.1\r\nHost: example.com:8080\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://example.com/x?y=1"));
    assert_eq!(a.hits(), 2, "redirects never reach a server");
}

#[test]
fn sni_picks_the_certificate_and_reload_swaps_it() {
    let a = Backend::start("a");
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (c1, k1) = cert(d1.path(), &["one.test"]);
    let (c2, k2) = cert(d2.path(), &["two.test"]);
    let https = FrontendConfig::http("https", "app")
        .tls_certificates(&[(Path::new(&c1), Path::new(&k1)), (Path::new(&c2), Path::new(&k2))]);
    let lb = Process::start("lb", &lb_before(a.addr, https).to_toml());
    let port = lb.addr("https").port();
    for (name, ca) in [("one.test", &c1), ("two.test", &c2)] {
        let resolve = format!("{name}:{port}:127.0.0.1");
        let (ok, body, err) = curl(&["--cacert", ca, "--resolve", &resolve, &format!("https://{name}:{port}/")]);
        assert!(ok, "{name}: {err}");
        assert_eq!(body, "a");
    }
    // Replace one.test's certificate files in place: picked up without a
    // signal (file watch), the new one is served.
    let d3 = tempfile::tempdir().unwrap();
    let (c3, k3) = cert(d3.path(), &["one.test"]);
    std::fs::copy(&k3, &k1).unwrap();
    std::fs::copy(&c3, &c1).unwrap();
    lb.wait_for_log("certificate files changed");
    let resolve = format!("one.test:{port}:127.0.0.1");
    wait_until("new certificate served", || {
        curl(&["--cacert", &c3, "--resolve", &resolve, &format!("https://one.test:{port}/")]).0
    });
    // A broken certificate file is refused and the running one stays.
    std::fs::write(&c1, "not a certificate").unwrap();
    lb.wait_for_log("rejected, keeping the running config");
    let (ok, _, err) = curl(&["--cacert", &c3, "--resolve", &resolve, &format!("https://one.test:{port}/")]);
    assert!(ok, "{err}");
}

#[test]
fn denied_cidr_gets_403_and_allowed_passes() {
    let a = Backend::start("a");
    let www = FrontendConfig::http("www", "app")
        .set("firewall", r#"{ acl = ["deny 127.0.0.2", "allow 127.0.0.0/8", "deny all"] }"#);
    let lb = Process::start("lb", &lb_before(a.addr, www).to_toml());
    let req = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let r = raw_request_from("127.0.0.2".parse().unwrap(), lb.addr("www"), req).unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(a.hits(), 0);
    let r = raw_request_from("127.0.0.3".parse().unwrap(), lb.addr("www"), req).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn rate_limit_returns_429_with_retry_after_and_recovers() {
    let a = Backend::start("a");
    let www = FrontendConfig::http("www", "app").set("firewall", "{ rate_limit = { per_second = 2, burst = 5 } }");
    let lb = Process::start("lb", &lb_before(a.addr, www).to_toml());
    let www = lb.addr("www");
    let responses: Vec<_> = (0..8).map(|_| get(www, "/").unwrap()).collect();
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert!(statuses[..5].iter().all(|&s| s == 200), "burst of 5 allowed: {statuses:?}");
    let limited: Vec<_> = responses.iter().filter(|r| r.status == 429).collect();
    assert!(limited.len() >= 2, "past the quota: {statuses:?}");
    assert!(limited.iter().all(|r| r.header("retry-after") == Some("1")));
    // Recovers as the bucket refills (2 per second).
    wait_until("quota back", || get(www, "/").unwrap().status == 200);
    // Another client address has its own quota.
    let r =
        raw_request_from("127.0.0.9".parse().unwrap(), www, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn connection_limit_per_ip() {
    let a = Backend::start("a");
    let www = FrontendConfig::http("www", "app").set("firewall", "{ max_connections_per_ip = 2 }");
    let lb = Process::start("lb", &lb_before(a.addr, www).to_toml());
    let www = lb.addr("www");
    let _c1 = TcpStream::connect(www).unwrap();
    let _c2 = TcpStream::connect(www).unwrap();
    wait_until("third connection refused", || get(www, "/").map(|r| r.status == 429).unwrap_or(false));
    drop(_c1);
    wait_until("slot freed", || get(www, "/").map(|r| r.status == 200).unwrap_or(false));
}

#[test]
fn slowloris_is_cut_off_after_the_header_timeout() {
    let a = Backend::start("a");
    let cfg =
        lb_before(a.addr, FrontendConfig::http("www", "app")).timeout("client_header", Duration::from_millis(300));
    let lb = Process::start("lb", &cfg.to_toml());
    let mut s = TcpStream::connect(lb.addr("www")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ").unwrap();
    // Keep trickling bytes; the server must close anyway.
    let mut closed = false;
    for _ in 0..100 {
        if s.write_all(b"a").is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {
                closed = true; // an error response, then close
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "slow client still connected after {:?}", start.elapsed());
    assert!(start.elapsed() >= Duration::from_millis(250), "closed before the header timeout: {:?}", start.elapsed());
    assert_eq!(a.hits(), 0);
}

/// Over TLS too, the lb builds a connection's HTTP state only once the
/// client sends its first request bytes: a client silent after its
/// handshake is closed when `client_header` runs out (counted from the
/// accept), one that speaks after the handshake is served, and so is one
/// whose request came with its handshake's last message (nothing more
/// arrives on the socket for the lb to wait on).
#[test]
fn tls_clients_are_served_whenever_their_first_request_comes() {
    let a = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let (cfg, c) = https_before(a.addr, dir.path());
    let header = Duration::from_secs(2);
    let cfg = cfg.timeout("client_header", header);
    let lb = Process::start("lb", &cfg.to_toml());
    let https = lb.addr("https");
    let request = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

    let r = tls_request_with_finished(https, "localhost", &c, request).unwrap();
    assert_eq!(r.status, 200, "a request sent with the client's Finished");

    let mut late = tls_connect(https, "localhost", &c, &[b"http/1.1"]).unwrap();
    late.write_all(request).unwrap();
    late.flush().unwrap();
    assert_eq!(read_response(&mut late).unwrap().status, 200, "a request sent after the handshake");

    let start = Instant::now();
    let mut silent = tls_connect(https, "localhost", &c, &[b"http/1.1"]).unwrap();
    let mut buf = [0u8; 64];
    // The client takes the server's session tickets in; the read returns
    // at the end of the connection, not at the read timeout.
    let end = silent.read(&mut buf);
    let closed = match &end {
        Ok(n) => *n == 0,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    };
    assert!(closed, "{end:?} after {:?}", start.elapsed());
    assert!(start.elapsed() >= header - Duration::from_millis(100), "closed after {:?}", start.elapsed());
    assert_eq!(a.hits(), 2);
}

/// A client that connected just before the lb stops, and sends its first
/// request just after, is answered (with `Connection: close`), plain or
/// over TLS, not met by a close.
#[test]
fn a_stopping_lb_answers_the_first_request_of_a_silent_connection() {
    let a = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let (cfg, c) = https_before(a.addr, dir.path());
    let cfg = cfg.frontend(FrontendConfig::http("http", "app")).threads(1);
    let mut lb = Process::start("lb", &cfg.to_toml());
    let (https, http) = (lb.addr("https"), lb.addr("http"));
    let request = b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut tls = tls_connect(https, "localhost", &c, &[b"http/1.1"]).unwrap();
    let mut plain = TcpStream::connect(http).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The plain connection is accepted (the lb waits on its first bytes)
    // before the stop: one worker, and a connection made after it served.
    assert_eq!(get(http, "/").unwrap().status, 200);
    lb.signal(Signal::SIGTERM);
    wait_until("the lb stopped accepting", || TcpStream::connect(http).is_err());
    tls.write_all(request).unwrap();
    tls.flush().unwrap();
    plain.write_all(request).unwrap();
    for (name, r) in [("tls", read_response(&mut tls)), ("plain", read_response(&mut plain))] {
        let r = r.unwrap_or_else(|e| panic!("{name}: the first request is not answered: {e}"));
        assert_eq!((r.status, r.header("connection")), (200, Some("close")), "{name}");
    }
    let status = lb.wait_exit();
    assert!(status.success(), "{status:?}");
}

/// An HTTP/2 client that starts its preface and never ends it is not held
/// forever: the connection is closed once idle for `http2_idle`, and
/// dropped a further `http2_idle` after its GOAWAY.
#[test]
fn an_unfinished_http2_preface_is_dropped() {
    let a = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let (cfg, c) = https_before(a.addr, dir.path());
    let cfg = cfg.timeout("client_header", Duration::from_secs(2)).timeout("http2_idle", Duration::from_secs(1));
    let lb = Process::start("lb", &cfg.to_toml());
    let mut h2 = tls_connect(lb.addr("https"), "localhost", &c, &[b"h2"]).unwrap();
    assert_eq!(h2.conn.alpn_protocol(), Some(&b"h2"[..]));
    h2.sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    h2.write_all(b"P").unwrap();
    h2.flush().unwrap();
    let start = Instant::now();
    // The server's SETTINGS (and, at the close, a GOAWAY) come first.
    let mut buf = [0u8; 256];
    let end = loop {
        match h2.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(_) => continue,
            Err(e) => break Err(e),
        }
    };
    if let Err(e) = &end {
        assert!(
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "still open after {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn oversized_and_slow_bodies_get_413_and_408() {
    let a = Backend::start("a");
    let cfg = lb_before(a.addr, FrontendConfig::http("www", "app").set("max_body_bytes", "1000"))
        .timeout("client_body", Duration::from_millis(300));
    let lb = Process::start("lb", &cfg.to_toml());
    let www = lb.addr("www");
    let r = request(www, "POST", "/echo", &[], &[b'x'; 2000]).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(a.hits(), 0, "a declared oversized body never reaches a server");
    // Chunked, growing past the limit.
    let chunked = bulwark_testkit::chunked_post("/echo", 3, 500);
    assert_eq!(raw_request(www, &chunked).unwrap().status, 413);
    // A body that never finishes.
    let mut s = TcpStream::connect(www).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly-part").unwrap();
    let r = bulwark_testkit::read_response(&mut s).unwrap();
    assert_eq!(r.status, 408);
    // Small bodies pass.
    assert_eq!(request(www, "POST", "/echo", &[], b"fine").unwrap().status, 200);
}
