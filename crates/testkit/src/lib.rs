//! The shared test harness: real processes and real sockets, no mocks.
//!
//! Owns: starting `bulwark` role processes with a config on port 0 and
//! waiting for their ready line, signalling and killing them, capturing their
//! logs; small in-process HTTP backends that say who they are; plain HTTP/1.1
//! client helpers; typed builders of the lb and web configs tests write
//! ([`config`]). Waits are on readiness, never on sleeps.
//!
//! Must not touch: production code paths. Nothing in the product depends on
//! this crate.

pub mod browser;
pub mod config;
pub mod netns;
pub mod tls;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for anything a test waits on. Reaching it is a test failure,
/// not a timing assumption: waits return as soon as the condition holds.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Path of the `bulwark` binary built next to the running test executable.
pub fn bulwark_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BULWARK_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/bulwark
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("bulwark");
    assert!(bin.exists(), "{} not built; run `cargo build` first", bin.display());
    bin
}

/// A running `bulwark <role>` child process.
pub struct Process {
    child: Child,
    pub listeners: HashMap<String, SocketAddr>,
    logs: Arc<Mutex<String>>,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Process {
    /// Write `config` to a temp file and run `bulwark <role> -c <file>`;
    /// returns once the role printed its ready line.
    pub fn start(role: &str, config: &str) -> Process {
        Self::start_with(role, config, &[])
    }

    /// Like [`Process::start`] with extra command-line arguments.
    pub fn start_with(role: &str, config: &str, extra: &[&str]) -> Process {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join(format!("{role}.toml"));
        std::fs::write(&config_path, config).expect("write config");
        let mut cmd = Command::new(bulwark_bin());
        cmd.arg(role).arg("-c").arg(&config_path).args(extra);
        Self::spawn(cmd, dir, config_path)
    }

    /// Run `bulwark up` with `topology`, every port chosen by the system
    /// (`--port-base 0`), its state in `data_dir`; returns once every role
    /// is ready.
    pub fn up(topology: &Path, data_dir: &Path) -> Process {
        let mut cmd = Command::new(bulwark_bin());
        cmd.args(["up", "--port-base", "0", "-c"]).arg(topology).arg("--data-dir").arg(data_dir);
        Self::spawn(cmd, tempfile::tempdir().expect("tempdir"), topology.to_path_buf())
    }

    /// Like [`Process::up`] with the built-in topology (the classic
    /// two-server site, no `-c`).
    pub fn up_built_in(data_dir: &Path) -> Process {
        let mut cmd = Command::new(bulwark_bin());
        cmd.args(["up", "--port-base", "0", "--data-dir"]).arg(data_dir);
        Self::spawn(cmd, tempfile::tempdir().expect("tempdir"), data_dir.join("none"))
    }

    /// Run an arbitrary prepared command that prints a ready line.
    pub fn spawn(mut cmd: Command, dir: tempfile::TempDir, config_path: PathBuf) -> Process {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd.spawn().expect("spawn bulwark");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let l = logs.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if std::env::var_os("BULWARK_TEST_ECHO").is_some() {
                    eprint!("{line}");
                }
                l.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let sl = stdout_lines.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v.get("ready").is_some() {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(v);
                        }
                    }
                }
                sl.lock().unwrap().push(line);
            }
        });
        let mut p = Process { child, listeners: HashMap::new(), logs, stdout_lines, dir, config_path };
        match rx.recv_timeout(PATIENCE) {
            Ok(v) => {
                if let Some(map) = v["ready"]["listeners"].as_object() {
                    for (k, a) in map {
                        p.listeners.insert(k.clone(), a.as_str().unwrap().parse().unwrap());
                    }
                }
                p
            }
            Err(_) => {
                let status = p.child.try_wait().ok().flatten();
                let _ = p.child.kill();
                let _ = p.child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!("process never became ready (exit: {status:?}); logs:\n{}", p.logs());
            }
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self.listeners.get(listener).unwrap_or_else(|| panic!("no listener `{listener}` in {:?}", self.listeners))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), sig).expect("kill");
    }

    /// Everything the process wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines.lock().unwrap().clone()
    }

    /// Wait until the logs contain `needle` (bounded by [`PATIENCE`]).
    pub fn wait_for_log(&self, needle: &str) {
        wait_until(&format!("log line containing {needle:?}"), || self.logs().contains(needle));
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit (bounded by [`PATIENCE`]).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit()
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if start.elapsed() > PATIENCE {
                let _ = self.child.kill();
                panic!("process did not exit; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Poll `cond` every 20 ms until it holds; panic after [`PATIENCE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > PATIENCE {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real HTTP/1.1 server on 127.0.0.1:0 in its own thread and runtime that
/// answers every request with its name (`X-Server` header and body) and
/// counts requests. `/health` answers 200 while healthy and 503 otherwise;
/// `/echo` returns the request headers and body; `/sleep/<ms>` answers after
/// a delay; `/status/500` answers 500; `/reset` reads the request and closes
/// the connection without answering.
/// [`Backend::stop`] closes the listener and every connection, as a dying
/// process would.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The error a [`Backend`] gives hyper for `/reset`: hyper then closes the
/// connection without an answer.
#[derive(Debug, thiserror::Error)]
#[error("reset requested")]
struct ResetRequested;

impl Backend {
    pub fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap())
    }

    /// Start on a fixed address (e.g. to bring a backend back on its port).
    pub fn start_on(name: &str, addr: SocketAddr) -> Backend {
        let std_listener = bind_reuse(addr);
        let addr = std_listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (n, h, hl) = (name.to_string(), hits.clone(), healthy.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                std_listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        let (n, h, hl) = (n.clone(), h.clone(), hl.clone());
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                                let (n, h, hl) = (n.clone(), h.clone(), hl.clone());
                                async move {
                                    if req.uri().path() == "/reset" {
                                        // Read the request, then drop the connection unanswered.
                                        h.fetch_add(1, Ordering::SeqCst);
                                        let _ = req.into_body().collect().await;
                                        return Err(ResetRequested);
                                    }
                                    Ok(answer(&n, &h, &hl, req).await)
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime closes every socket it owns.
            drop(rt);
        });
        Backend { name: name.to_string(), addr, hits, healthy, stop: Some(stop_tx), thread: Some(thread) }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, ok: bool) {
        self.healthy.store(ok, Ordering::SeqCst);
    }

    /// Close the listener and all connections; returns once they are closed.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind_reuse(addr: SocketAddr) -> std::net::TcpListener {
    // SO_REUSEADDR so a stopped backend can come back on the same port.
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    sock.set_reuse_address(true).expect("SO_REUSEADDR");
    sock.bind(&addr.into()).expect("bind");
    sock.listen(1024).expect("listen");
    sock.into()
}

async fn answer(name: &str, hits: &AtomicU64, healthy: &AtomicBool, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        let ok = healthy.load(Ordering::SeqCst);
        return Response::builder()
            .status(if ok { 200 } else { 503 })
            .header("x-server", name)
            .body(Full::new(Bytes::from(if ok { "ok" } else { "unhealthy" })))
            .unwrap();
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let echo_headers = path.ends_with("/echo");
    let status = if path == "/status/500" { 500 } else { 200 };
    if let Some(ms) = path.strip_prefix("/sleep/").and_then(|s| s.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let headers: Vec<String> =
        req.headers().iter().map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("?"))).collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let text = if echo_headers {
        format!("{name}\n{}\n\n{}", headers.join("\n"), String::from_utf8_lossy(&body))
    } else {
        name.to_string()
    };
    Response::builder().status(status).header("x-server", name).body(Full::new(Bytes::from(text))).unwrap()
}

/// A minimal blocking HTTP/1.1 response, enough for assertions.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send raw bytes on a fresh connection and read one response (the server
/// is expected to answer with Content-Length or close the connection).
pub fn raw_request(addr: SocketAddr, raw: &[u8]) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(PATIENCE))?;
    s.write_all(raw)?;
    read_response(&mut s)
}

/// Like [`raw_request`], from a chosen local address (e.g. 127.0.0.2, to
/// test address-based rules on loopback).
pub fn raw_request_from(source: std::net::IpAddr, addr: SocketAddr, raw: &[u8]) -> std::io::Result<HttpResponse> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(source, 0).into())?;
    sock.connect(&addr.into())?;
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(PATIENCE))?;
    s.write_all(raw)?;
    read_response(&mut s)
}

/// Connect to `addr` with a receive buffer of about `bytes` (set before
/// the connection, so the window the server sees stays small): a client
/// that reads slowly or not at all fills it at once.
pub fn connect_with_receive_buffer(addr: SocketAddr, bytes: usize) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    sock.set_recv_buffer_size(bytes)?;
    sock.connect(&addr.into())?;
    Ok(sock.into())
}

/// `GET path` with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    raw_request(addr, format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())
}

/// What `curl` got: the status (0 when no answer came, as when the
/// connection or the TLS handshake was refused), the body, and curl's own
/// messages.
#[derive(Debug)]
pub struct CurlAnswer {
    pub status: u16,
    pub body: String,
    pub stderr: String,
}

/// Run `curl -sS --max-time 20 ARGS` (the URL among them), reading the
/// status it writes after the body.
pub fn curl(args: &[&str]) -> CurlAnswer {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    CurlAnswer {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A raw HTTP/1.1 `POST path` (`Connection: close`) whose chunked body is
/// `chunks` chunks of `size` bytes of `y`.
pub fn chunked_post(path: &str, chunks: usize, size: usize) -> Vec<u8> {
    let mut raw = format!("POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
        .into_bytes();
    for _ in 0..chunks {
        raw.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        raw.extend(std::iter::repeat_n(b'y', size));
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

/// `GET path` with `Authorization: Bearer token`: the answer's body as
/// JSON (a panic, with the body, if it is not).
pub fn get_json(addr: SocketAddr, path: &str, token: &str) -> serde_json::Value {
    let bearer = format!("Bearer {token}");
    let r = request(addr, "GET", path, &[("Authorization", &bearer)], b"")
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}: {}", r.text()))
}

/// Request with method, path, extra header lines and a body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw_request(addr, &bytes)
}

/// Read one HTTP/1.1 response from a stream (Content-Length, chunked, or
/// until close).
pub fn read_response(s: &mut impl Read) -> std::io::Result<HttpResponse> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before response head"));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status line {status_line:?}"))
    })?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let find = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if status == 204 || status == 304 || (100..200).contains(&status) {
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().unwrap_or(0);
        body.resize(len, 0);
        s.read_exact(&mut body)?;
    } else if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                s.read_exact(&mut byte)?;
                line.push(byte[0]);
            }
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&line).trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
            let mut chunk = vec![0u8; size + 2];
            s.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        s.read_to_end(&mut body)?;
    }
    Ok(HttpResponse { status, headers, body })
}

/// Sum of the samples of metric `name` whose labels include `labels`, in
/// Prometheus text `text`; panics if the text does not parse.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}
