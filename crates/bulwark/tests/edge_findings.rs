//! Attacks on the edge (the lb and the web tier), each a test of the
//! defence that stops it.
use bulwark_testkit::config::{BackendConfig, FrontendConfig, LbConfig, WebConfig};
use bulwark_testkit::tls::tls_connect;
use bulwark_testkit::{raw_request, read_response, Process};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

fn web(root: &Path) -> Process {
    Process::start("web", &WebConfig::new(root).to_toml())
}

fn small_site() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "home\n").unwrap();
    root
}

/// An lb with one TLS frontend `https` (HTTP/2 by ALPN) in front of `server`.
fn tls_lb(dir: &Path, server: SocketAddr, timeouts: &[(&str, Duration)]) -> Process {
    let (c, k) = bulwark_lb::tls::ensure_self_signed(dir, &["localhost".to_string()]).unwrap();
    let lb = LbConfig::new()
        .frontend(FrontendConfig::http("https", "web").tls(&c, &k))
        .backend(BackendConfig::new("web").server("w", server));
    let lb = timeouts.iter().fold(lb, |lb, &(key, d)| lb.timeout(key, d));
    Process::start("lb", &lb.to_toml())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET path` on stream 1 (HPACK: indexed `:method GET`, `:scheme https`,
/// literal `:path` and `:authority`), END_STREAM | END_HEADERS.
fn get_headers(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"localhost");
    frame(HEADERS, 0x05, 1, &block)
}

/// Attack: an HTTP/2 client opens a stream with a zero flow-control window
/// and answers the lb's PINGs, to hold the stream, and the answer the lb
/// already took from the web tier, for as long as it likes. Nothing is
/// written to the socket (the window, not the socket, is shut), so the
/// socket's send deadline never fires, and the idle close never fires,
/// because a stream is open; times `tls.http2_max_streams` streams per
/// connection, times every connection the firewall admits.
///
/// Defence: a stream whose window stays shut for `client_send` closes its
/// connection (or is reset), as for an HTTP/1.1 client that stops reading;
/// and the lb announces its stream limit in its SETTINGS.
#[test]
fn an_http2_stream_with_a_shut_window_is_cut_off_by_the_send_deadline() {
    let root = small_site();
    let w = web(root.path());
    let dir = tempfile::tempdir().unwrap();
    // The connection stays alive only by answering PINGs; the idle close
    // is far away, the send deadline is short.
    let timeouts = &[
        ("client_send", ms(300)),
        ("http2_idle", secs(600)),
        ("http2_ping_interval", ms(200)),
        ("http2_ping_timeout", secs(5)),
    ];
    let lb = tls_lb(dir.path(), w.addr("http"), timeouts);
    let mut tls = tls_connect(lb.addr("https"), "localhost", &dir.path().join("cert.pem"), &[b"h2"]).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));
    tls.sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0: the server may send no DATA.
    tls.write_all(&frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0])).unwrap();
    tls.write_all(&get_headers("/index.html")).unwrap();

    let mut seen = Vec::new();
    let mut answered = false;
    let mut max_streams = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    let cut_off = loop {
        if Instant::now() > deadline {
            break false;
        }
        let mut head = [0u8; 9];
        match tls.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => break true,
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        tls.sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if tls.read_exact(&mut payload).is_err() {
            break true;
        }
        tls.sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        seen.push(head[3]);
        match head[3] {
            SETTINGS if head[4] & 1 == 0 => {
                // SETTINGS_MAX_CONCURRENT_STREAMS (0x3).
                for s in payload.chunks_exact(6) {
                    if u16::from_be_bytes([s[0], s[1]]) == 3 {
                        max_streams = Some(u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
                    }
                }
                tls.write_all(&frame(SETTINGS, 1, 0, &[])).unwrap()
            }
            PING if head[4] & 1 == 0 => tls.write_all(&frame(PING, 1, 0, &payload)).unwrap(),
            HEADERS => answered = true,
            RST_STREAM | GOAWAY => break true,
            _ => {}
        }
    };
    assert!(answered, "the lb never answered the request: frames {seen:?}");
    assert_eq!(max_streams, Some(100), "the lb's SETTINGS announce tls.http2_max_streams");
    assert!(
        cut_off,
        "a stream with a shut window stayed open 20 s past client_send = 300ms (frames seen: {} PINGs, {seen:?})",
        seen.iter().filter(|&&t| t == PING).count()
    );
}

/// The web tier enforces `firewall.max_connections` and
/// `firewall.max_connections_per_ip` on every accepted connection, not only
/// in its config: an operator who caps its connections (against a
/// broken-into lb, or a flood that reaches it directly) gets that cap. The
/// second concurrent connection is refused (503 or closed).
#[test]
fn the_web_tier_enforces_its_connection_limit() {
    let root = small_site();
    let w = Process::start(
        "web",
        &WebConfig::new(root.path()).set("firewall", "{ max_connections = 1, max_connections_per_ip = 1 }").to_toml(),
    );
    let addr = w.addr("http");
    // Hold one keep-alive connection open.
    let mut first = TcpStream::connect(addr).unwrap();
    first.write_all(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut first).unwrap().status, 200);
    // A second one while the first is still open is over both limits.
    let second = raw_request(addr, b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let status = second.as_ref().map(|r| r.status).ok();
    assert!(
        status.is_none_or(|s| s == 503 || s == 429),
        "a second connection was served ({status:?}) with max_connections = 1"
    );
    drop(first);
}

/// The other side of the HTTP/2 send deadline: a client that reads a large
/// answer slowly but steadily (curl over HTTP/2, rate-limited so that the
/// download takes over twice `client_send`) is never cut off, because each
/// window update lets the lb hand over more data. (`client_send` is 3 s, not
/// shorter, so that a stall of the test machine itself is not taken for
/// the client's.)
#[test]
fn a_slow_but_steady_http2_download_is_not_cut_off() {
    let root = small_site();
    let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.path().join("big.bin"), &big).unwrap();
    let w = web(root.path());
    let dir = tempfile::tempdir().unwrap();
    let lb = tls_lb(dir.path(), w.addr("http"), &[("client_send", secs(3))]);
    let out = dir.path().join("big.out");
    let status = std::process::Command::new("curl")
        .args(["--http2", "--silent", "--show-error", "--fail", "--limit-rate", "512K", "--max-time", "60"])
        .arg("--cacert")
        .arg(dir.path().join("cert.pem"))
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", lb.addr("https").port()))
        .arg(format!("https://localhost:{}/big.bin", lb.addr("https").port()))
        .arg("--output")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "curl failed: {status}");
    assert_eq!(std::fs::read(&out).unwrap(), big, "the whole answer arrived");
}

const DATA: u8 = 0;
const WINDOW_UPDATE: u8 = 8;

/// One frame from the lb: `Ok(None)` when none came within the socket's
/// read timeout, `Err` when the connection is gone.
#[allow(clippy::type_complexity)]
fn next_frame(tls: &mut bulwark_testkit::tls::TlsStream) -> Result<Option<(u8, u8, u32, Vec<u8>)>, ()> {
    let mut head = [0u8; 9];
    match tls.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return Ok(None),
        Err(_) => return Err(()),
    }
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    let before = tls.sock.read_timeout().unwrap();
    tls.sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = tls.read_exact(&mut payload);
    tls.sock.set_read_timeout(before).unwrap();
    r.map_err(|_| ())?;
    Ok(Some((head[3], head[4], stream, payload)))
}

/// An HTTP/2 connection to `lb` with the preface and the client's
/// `settings` (id, value) sent.
fn h2_connect(lb: &Process, dir: &Path, settings: &[(u16, u32)]) -> bulwark_testkit::tls::TlsStream {
    let mut tls = tls_connect(lb.addr("https"), "localhost", &dir.join("cert.pem"), &[b"h2"]).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));
    tls.sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let mut p = Vec::new();
    for (id, v) in settings {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    tls.write_all(&frame(SETTINGS, 0, 0, &p)).unwrap();
    tls
}

/// What a test does with a frame of stream 1.
enum Step {
    /// Send these bytes and read on.
    Reply(Vec<u8>),
    Next,
    /// The exchange is complete.
    Done,
}

/// Read frames on `tls` as an HTTP/2 client until the exchange ends, and
/// say how: `"done"` when `on_stream` says so, else what ended it (a reset
/// of stream 1, a GOAWAY, a closed connection, or `limit` passed since
/// `start`). SETTINGS and PING are acknowledged; `on_stream` gets every
/// other frame of stream 1 (kind, flags, payload).
fn converse(
    tls: &mut bulwark_testkit::tls::TlsStream,
    start: Instant,
    limit: Duration,
    mut on_stream: impl FnMut(u8, u8, &[u8]) -> Step,
) -> String {
    loop {
        if start.elapsed() > limit {
            return format!("still running after {limit:?}");
        }
        let (kind, flags, stream, payload) = match next_frame(tls) {
            Err(()) => return "the connection was closed".into(),
            Ok(None) => continue,
            Ok(Some(f)) => f,
        };
        let reply = match kind {
            SETTINGS if flags & 1 == 0 => frame(SETTINGS, 1, 0, &[]),
            PING if flags & 1 == 0 => frame(PING, 1, 0, &payload),
            RST_STREAM if stream == 1 => return "the stream was reset".into(),
            GOAWAY => return "the lb sent GOAWAY".into(),
            _ if stream == 1 => match on_stream(kind, flags, &payload) {
                Step::Reply(bytes) => bytes,
                Step::Next => continue,
                Step::Done => return "done".into(),
            },
            _ => continue,
        };
        if tls.write_all(&reply).is_err() {
            return "the connection was closed".into();
        }
    }
}

fn window_update(stream: u32, n: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &n.to_be_bytes())
}

/// What [`hold_a_one_byte_window`] saw.
struct Held {
    data: usize,
    cut_off: bool,
    goaway: bool,
    pings: usize,
}

/// Opens a stream for `/index.html` with a stream window of one byte and
/// answers the lb's SETTINGS and PINGs for `hold`.
fn hold_a_one_byte_window(timeouts: &[(&str, Duration)], hold: Duration) -> Held {
    let root = small_site();
    let w = web(root.path());
    let dir = tempfile::tempdir().unwrap();
    let lb = tls_lb(dir.path(), w.addr("http"), timeouts);
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 1.
    let mut tls = h2_connect(&lb, dir.path(), &[(4, 1)]);
    tls.write_all(&get_headers("/index.html")).unwrap();
    let mut held = Held { data: 0, cut_off: false, goaway: false, pings: 0 };
    let deadline = Instant::now() + hold;
    while Instant::now() < deadline {
        match next_frame(&mut tls) {
            Err(()) => {
                held.cut_off = true;
                break;
            }
            Ok(None) => {}
            Ok(Some((kind, flags, stream, payload))) => match kind {
                SETTINGS if flags & 1 == 0 => tls.write_all(&frame(SETTINGS, 1, 0, &[])).unwrap(),
                PING if flags & 1 == 0 => {
                    held.pings += 1;
                    tls.write_all(&frame(PING, 1, 0, &payload)).unwrap()
                }
                DATA if stream == 1 => held.data += payload.len(),
                RST_STREAM if stream == 1 => {
                    held.cut_off = true;
                    break;
                }
                // A graceful GOAWAY leaves stream 1 open: keep holding it.
                GOAWAY => held.goaway = true,
                _ => {}
            },
        }
    }
    held
}

/// hyper hands a chunk to h2 as soon as the stream window has one byte of
/// room and asks the body for more at once. For a client whose window stays
/// at one byte, a small answer (or the last chunk of a large one) is queued
/// in h2 after the body has ended, and waits for a window the client never
/// opens while it answers PINGs. Watching only the response body would hold
/// the connection, its stream slot and the queued bytes (up to one upstream
/// read, ~400 KB, per stream) for ever: the stream must be reset or the
/// connection closed within a few `client_send`, as with a zero window.
#[test]
fn an_http2_answer_queued_behind_a_one_byte_window_is_cut_off() {
    let timeouts = &[
        ("client_send", ms(300)),
        ("http2_idle", secs(600)),
        ("http2_ping_interval", ms(200)),
        ("http2_ping_timeout", secs(5)),
    ];
    let held = hold_a_one_byte_window(timeouts, Duration::from_secs(15));
    assert_eq!(held.data, 1, "the lb sent the one byte the window allowed");
    assert!(
        held.cut_off,
        "a stream with 4 bytes queued behind a 1-byte window stayed open 15 s past client_send = 300ms \
         ({} PINGs answered)",
        held.pings
    );
}

/// The same stuck stream, on a connection that looks idle once the body has
/// ended: `http2_idle` sends a graceful GOAWAY, and a graceful close waits
/// for open streams, which this one never finishes. The connection must be
/// gone within a few seconds of the GOAWAY (at the latest when the stuck
/// stream passes `client_send`), not stay open while the client answers
/// PINGs.
#[test]
fn an_idle_http2_connection_with_a_stuck_stream_is_closed() {
    // The idle close comes first, the send deadline well after it.
    let timeouts = &[
        ("client_send", secs(2)),
        ("http2_idle", ms(500)),
        ("http2_ping_interval", ms(200)),
        ("http2_ping_timeout", secs(5)),
    ];
    let held = hold_a_one_byte_window(timeouts, Duration::from_secs(15));
    assert_eq!(held.data, 1, "the lb sent the one byte the window allowed");
    assert!(held.goaway, "the idle close sent its GOAWAY");
    assert!(held.cut_off, "the connection stayed open 14 s after its idle GOAWAY ({} PINGs answered)", held.pings);
}

/// The stall check must count progress as the client makes it, not per
/// upstream chunk: chunks are as large as one read of the lb's HTTP/1.1
/// client (up to ~400 KB), and a client that reads steadily with the
/// default 64 KB window (nghttp2, Python h2 and most libraries that do not
/// raise it) at 128 KB/s takes ~3 s to open the window for one such chunk
/// while accepting data every few milliseconds. Measured per chunk, it
/// would be cut off with `client_send = 500ms` (and, with the default 60 s,
/// any reader below ~6 KB/s, a rate at which HTTP/1.1 is never cut off:
/// every byte re-arms its deadline). The whole answer must arrive.
#[test]
fn a_steady_http2_reader_with_the_default_window_is_not_cut_off() {
    let root = small_site();
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.path().join("big.bin"), &big).unwrap();
    let w = web(root.path());
    let dir = tempfile::tempdir().unwrap();
    let lb = tls_lb(dir.path(), w.addr("http"), &[("client_send", ms(500))]);
    let mut tls = h2_connect(&lb, dir.path(), &[]);
    tls.write_all(&get_headers("/big.bin")).unwrap();
    let rate = 128.0 * 1024.0; // bytes per second
    let start = Instant::now();
    let mut got = 0usize;
    let outcome = converse(&mut tls, start, Duration::from_secs(40), |kind, flags, payload| {
        if kind != DATA {
            return Step::Next;
        }
        got += payload.len();
        if flags & 1 != 0 {
            return Step::Done;
        }
        // Consume at `rate`, then give the window back.
        let due = start + Duration::from_secs_f64(got as f64 / rate);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let n = payload.len() as u32;
        if n == 0 {
            return Step::Next;
        }
        Step::Reply([window_update(1, n), window_update(0, n)].concat())
    });
    assert_eq!(
        (outcome.as_str(), got),
        ("done", big.len()),
        "a client reading at 128 KB/s with a 64 KB window, after {:?}",
        start.elapsed()
    );
}

/// The other side again: a stream that waits on its server, first for the
/// answer's head and then, long-poll or event-stream style, for each piece
/// of its body, is not waiting on the client and is never cut off by
/// `client_send`, however long the server takes.
#[test]
fn an_http2_stream_waiting_on_a_slow_server_is_not_cut_off() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut c, _) = server.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap() == 1 {
            head.push(b[0]);
        }
        let pause = Duration::from_millis(1200);
        std::thread::sleep(pause);
        let _ =
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        std::thread::sleep(pause);
        let _ = c.write_all(b"6\r\nevent\n\r\n");
        std::thread::sleep(pause);
        let _ = c.write_all(b"0\r\n\r\n");
        std::thread::sleep(Duration::from_secs(2));
    });
    let dir = tempfile::tempdir().unwrap();
    let lb = tls_lb(dir.path(), addr, &[("client_send", ms(300)), ("http2_ping_interval", ms(200))]);
    let mut tls = h2_connect(&lb, dir.path(), &[]);
    tls.write_all(&get_headers("/events")).unwrap();
    let start = Instant::now();
    let mut body = Vec::new();
    let outcome = converse(&mut tls, start, Duration::from_secs(20), |kind, flags, payload| match kind {
        HEADERS | DATA if flags & 1 != 0 => {
            body.extend_from_slice(if kind == DATA { payload } else { &[] });
            Step::Done
        }
        DATA => {
            body.extend_from_slice(payload);
            Step::Next
        }
        _ => Step::Next,
    });
    assert_eq!((outcome.as_str(), &body[..]), ("done", &b"event\n"[..]), "after {:?}", start.elapsed());
    assert!(start.elapsed() >= Duration::from_secs(3), "the server's pauses were waited out");
}
