//! WebSockets over HTTP/2 (RFC 8441 extended CONNECT) through a real
//! `bulwark lb` TLS frontend, with a client nobody here wrote driving the
//! protocol by hand (Python's `h2` package, Debian's python3-h2:
//! `scripts/install-test-deps.sh`). The server behind is an HTTP/1.1
//! WebSocket echo server (in this test): it must see the classic
//! handshake (`GET` + `Upgrade: websocket` + a key), answer 101, and the
//! client's frames come back on its HTTP/2 stream.
use base64::Engine as _;
use bulwark_testkit::config::{BackendConfig, FrontendConfig, LbConfig};
use bulwark_testkit::{get, metric_value, wait_until, Process};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

/// An HTTP/1.1 WebSocket echo server: answers the handshake with 101 and
/// echoes each text frame; any other request gets an empty 200. Keeps the
/// handshake heads it saw.
struct EchoServer {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<String>>>,
}

impl EchoServer {
    fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &seen);
                });
            }
        });
        EchoServer { addr, handshakes }
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut out = stream;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    // Pages that are not WebSockets: a plain 200 (streamed) and a refusal.
    if head.starts_with("GET /page ") {
        return out.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        );
    }
    if head.starts_with("GET /forbidden ") {
        return out.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 3\r\nconnection: close\r\n\r\nno\n");
    }
    let key = header("sec-websocket-key");
    let Some(key) = key.filter(|_| header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"))) else {
        return out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    };
    seen.lock().unwrap().push(head.to_ascii_lowercase());
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    let accept = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    out.write_all(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-accept: {accept}\r\nsec-websocket-protocol: echo\r\n\r\n"
        )
        .as_bytes(),
    )?;
    // Frames: final text frames of fewer than 126 bytes, masked by the client.
    loop {
        let mut h = [0u8; 2];
        if reader.read_exact(&mut h).is_err() {
            return Ok(());
        }
        assert_eq!((h[0], h[1] & 0x80), (0x81, 0x80), "a masked text frame");
        let mut mask = [0u8; 4];
        reader.read_exact(&mut mask)?;
        let mut payload = vec![0u8; usize::from(h[1] & 0x7f)];
        reader.read_exact(&mut payload)?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        out.write_all(&[&[0x81, payload.len() as u8][..], &payload].concat())?;
    }
}

/// Run the HTTP/2 WebSocket client (h2_connect.py) against the lb's
/// `port`: `path`, then `count` echoed messages, `pause` apart.
fn run_h2_client(port: u16, cafile: &Path, path: &str, count: usize, pause: Duration) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/websocket/h2_connect.py");
    Command::new(PYTHON)
        .arg(script)
        .args([&port.to_string(), &cafile.display().to_string(), path, &count.to_string()])
        .arg(pause.as_millis().to_string())
        .output()
        .unwrap()
}

/// The client's output, whether or not it ended well.
fn h2_client_output(port: u16, cafile: &Path, path: &str, count: usize) -> String {
    let out = run_h2_client(port, cafile, path, count, Duration::ZERO);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn h2_client(port: u16, cafile: &Path, path: &str, count: usize) -> String {
    let out = run_h2_client(port, cafile, path, count, Duration::ZERO);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The echo server behind an lb whose HTTPS frontend (a self-signed
/// certificate for `localhost`, kept in the returned directory) offers
/// HTTP/2 and closes connections with no open stream after `http2_idle`;
/// checks first that Python's `h2` is there for the client.
fn lb_before_echo_server(http2_idle: Duration) -> (EchoServer, Process, std::path::PathBuf, tempfile::TempDir) {
    let installed = Command::new(PYTHON).args(["-c", "import h2"]).status().is_ok_and(|s| s.success());
    assert!(installed, "Debian's python3-h2 is not installed: run scripts/install-test-deps.sh");
    let server = EchoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = bulwark_lb::tls::ensure_self_signed(dir.path(), &["localhost".to_string()]).unwrap();
    let config = LbConfig::new()
        .admin()
        .timeout("http2_idle", http2_idle)
        .frontend(FrontendConfig::http("https", "app").tls(&cert, &key))
        .backend(BackendConfig::new("app").server("a", server.addr))
        .to_toml();
    let lb = Process::start("lb", &config);
    (server, lb, cert, dir)
}

/// The lb counted `total` tunnels to server `a`, and none stays open.
fn assert_tunnels(lb: &Process, total: f64) {
    let metric =
        |name: &str| metric_value(&get(lb.addr("admin"), "/metrics").unwrap().text(), name, &[("server", "a")]);
    assert_eq!(metric("bulwark_lb_tunnels_total"), total);
    wait_until("no tunnel open", || metric("bulwark_lb_tunnels_open") == 0.0);
}

#[test]
fn a_websocket_over_an_http2_stream_reaches_an_http1_server() {
    let (server, lb, cert, _dir) = lb_before_echo_server(Duration::from_secs(60));
    let port = lb.addr("https").port();

    let out = h2_client(port, &cert, "/chat?room=1", 200);
    assert_eq!(out, "status 200 protocol echo\nechoed 200\nclosed\n");
    let handshakes = server.handshakes.lock().unwrap().clone();
    assert_eq!(handshakes.len(), 1, "{handshakes:?}");
    let h = &handshakes[0];
    assert!(h.starts_with("get /chat?room=1 http/1.1\r\n"), "{h}");
    for line in ["\r\nupgrade: websocket\r\n", "\r\nconnection: upgrade\r\n", "\r\nsec-websocket-version: 13\r\n"] {
        assert!(h.contains(line), "{line:?} in {h}");
    }
    assert!(h.contains("\r\nsec-websocket-key: ") && h.contains("\r\nsec-websocket-protocol: echo\r\n"), "{h}");
    assert!(h.contains("\r\nhost: localhost:"), "{h}");

    // Counted as a tunnel of the server.
    assert_tunnels(&lb, 1.0);
}

/// A server that answers the handshake with a 2xx other than 101 did not
/// open a WebSocket: on an HTTP/2 stream a 2xx would tell the client it
/// did (RFC 8441 §5), so the lb answers 502; a refusal (403) is relayed.
#[test]
fn a_server_that_does_not_switch_is_no_websocket_over_http2() {
    let (_server, lb, cert, _dir) = lb_before_echo_server(Duration::from_secs(60));
    let port = lb.addr("https").port();

    let out = h2_client_output(port, &cert, "/page", 0);
    assert!(out.starts_with("status 502 protocol -\n"), "{out}");
    let out = h2_client_output(port, &cert, "/forbidden", 0);
    assert_eq!(out, "status 403 protocol -\n");
    assert_tunnels(&lb, 0.0);
}

/// A plain CONNECT (no `:protocol`) asks for a tunnel to the host it
/// names: the lb is no forward proxy, so it answers 405 itself; relayed,
/// a server's 200 (this one answers anything but a handshake 200) would
/// tell the client its tunnel was open.
#[test]
fn a_plain_connect_is_refused_not_relayed() {
    let (_server, lb, cert, _dir) = lb_before_echo_server(Duration::from_secs(60));
    let out = h2_client_output(lb.addr("https").port(), &cert, "-", 0);
    assert_eq!(out, "status 405 protocol -\n");
}

/// A WebSocket over HTTP/2 keeps its stream open after the 200: the
/// connection is not idle while the tunnel lasts, however long nobody
/// speaks on it (the lb closes connections idle for `http2_idle` with a
/// GOAWAY, which the client would report).
#[test]
fn a_websocket_keeps_its_http2_connection_from_idling() {
    let (_server, lb, cert, _dir) = lb_before_echo_server(Duration::from_secs(1));
    let out = run_h2_client(lb.addr("https").port(), &cert, "/chat", 2, Duration::from_millis(2500));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "status 200 protocol echo\nechoed 2\nclosed\n", "{}", String::from_utf8_lossy(&out.stderr));
    assert_tunnels(&lb, 1.0);
}
