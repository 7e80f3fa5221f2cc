//! Requests whose framing breaks RFC 9112 are refused by the lb itself
//! (400, connection closed, no server touched) or framed as it says, on a forwarding frontend
//! and on a plain-HTTP frontend that redirects to HTTPS; and a connection
//! that sends nothing is closed once `client_header` has passed.
use bulwark_testkit::config::{BackendConfig, FrontendConfig, LbConfig};
use bulwark_testkit::{read_response, Backend, Process};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// An lb with a forwarding frontend `www` and a frontend `redirect` that
/// sends plain HTTP to HTTPS, both before server `a`.
fn lb(backend: SocketAddr, client_header: Option<Duration>) -> Process {
    let mut cfg = LbConfig::new()
        .frontend(FrontendConfig::http("www", "app"))
        .frontend(FrontendConfig::http("redirect", "app").set("redirect_https_port", "8443"))
        .backend(BackendConfig::new("app").server("a", backend));
    if let Some(d) = client_header {
        cfg = cfg.timeout("client_header", d);
    }
    Process::start("lb", &cfg.to_toml())
}

/// Sends `raw`, reads one response, then whether the lb closed the
/// connection after it.
fn answer_and_closed(addr: SocketAddr, raw: &[u8]) -> (u16, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let resp = read_response(&mut s).unwrap();
    let mut rest = Vec::new();
    // EOF or a reset: closed; a read timeout: still open.
    let closed = match s.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    };
    (resp.status, closed)
}

#[test]
fn requests_with_broken_framing_get_400_from_the_lb() {
    let a = Backend::start("a");
    let lb = lb(a.addr, None);
    let cases: [(&str, &[u8]); 3] = [
        ("no Host", b"GET / HTTP/1.1\r\n\r\n"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("a bad chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    ];
    for frontend in ["www", "redirect"] {
        for (what, raw) in cases {
            let (status, closed) = answer_and_closed(lb.addr(frontend), raw);
            assert_eq!(status, 400, "{frontend}: {what}");
            assert!(closed, "{frontend}: the connection stays open after {what}");
        }
    }
    assert_eq!(a.hits(), 0, "no server saw a malformed request");

    // Both Content-Length and Transfer-Encoding (RFC 9112 §6.1): the
    // chunked framing wins, Content-Length is dropped, the connection is
    // closed after the answer; the 5 bytes "SMUGG" after the last chunk are
    // never read as a next request.
    for (frontend, want) in [("www", 200), ("redirect", 308)] {
        let (status, closed) = answer_and_closed(
            lb.addr(frontend),
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGG",
        );
        assert_eq!(status, want, "{frontend}: Content-Length with Transfer-Encoding");
        assert!(closed, "{frontend}: the connection stays open after Content-Length with Transfer-Encoding");
    }
    assert_eq!(a.hits(), 1, "one request reached the server, not two");
    // HTTP/1.0 may omit Host.
    let (status, _) = answer_and_closed(lb.addr("www"), b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
}

#[test]
fn a_redirecting_frontend_reads_bodies_and_stays_in_step() {
    let a = Backend::start("a");
    let lb = lb(a.addr, None);
    // A POST with a body, then a GET on the same connection: the body is
    // not taken for the next request.
    let mut s = TcpStream::connect(lb.addr("redirect")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /form HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nhello=worldGET /x HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .unwrap();
    let first = read_response(&mut s).unwrap();
    assert_eq!(first.status, 308);
    assert_eq!(first.header("location"), Some("https://example.com:8443/form"));
    let second = read_response(&mut s).unwrap();
    assert_eq!(second.header("location"), Some("https://example.com:8443/x"));
    // A body larger than the lb reads for a redirect: the 308, then close.
    let mut raw = b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 200000\r\n\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b'x', 200_000));
    let mut s = TcpStream::connect(lb.addr("redirect")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The lb may close before taking every byte: a failed write is fine.
    let _ = s.write_all(&raw);
    let resp = read_response(&mut s).unwrap();
    assert_eq!(resp.status, 308);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(a.hits(), 0);
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let a = Backend::start("a");
    let lb = lb(a.addr, Some(Duration::from_millis(300)));
    let mut silent = TcpStream::connect(lb.addr("www")).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf);
    assert!(matches!(n, Ok(0)) || n.is_err(), "a silent connection got {n:?}");
    assert!(start.elapsed() < Duration::from_secs(15), "closed only after {:?}", start.elapsed());
    // A client that sends its request a little later is served.
    let mut late = TcpStream::connect(lb.addr("www")).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    late.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut late).unwrap().status, 200);
}
