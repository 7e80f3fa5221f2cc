//! Load balancer integration tests: a real `bulwark lb` process in front of
//! real HTTP backends on port 0.
use bulwark_testkit::config::{
    quick_http_check, BackendConfig, Balance, FrontendConfig, HealthCheck, LbConfig, PassiveHealth, Retries,
};
use bulwark_testkit::{get, raw_request, read_response, request, wait_until, Backend, Process};
use nix::sys::signal::Signal;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The backend `app`: `servers` (name, address, whether a backup)
/// balanced by `balance`.
fn app_backend(balance: Balance, servers: &[(&str, SocketAddr, bool)]) -> BackendConfig {
    servers.iter().fold(BackendConfig::new("app").balance(balance), |b, &(name, addr, backup)| {
        if backup {
            b.backup_server(name, addr)
        } else {
            b.server(name, addr)
        }
    })
}

/// An lb with two worker threads, its admin listener and one http
/// frontend on port 0 in front of `backend`.
fn lb_with(backend: BackendConfig) -> LbConfig {
    LbConfig::new().threads(2).admin().frontend(FrontendConfig::http("www", "app")).backend(backend)
}

fn lb_config(backend: BackendConfig) -> String {
    lb_with(backend).to_toml()
}

/// `GET /health` every 100 ms with a 500 ms timeout: up after one pass,
/// down after two failures.
fn fast_checks() -> HealthCheck {
    HealthCheck { timeout: Duration::from_millis(500), ..quick_http_check("/health") }
}

/// Passive ejection off: only the active check (if any) judges a server.
fn no_passive() -> PassiveHealth {
    PassiveHealth { consecutive_errors: 0, ..PassiveHealth::default() }
}

fn who(addr: SocketAddr) -> String {
    let r = get(addr, "/").expect("request through lb");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

fn server_state(lb: &Process, server: &str) -> String {
    let r = get(lb.addr("admin"), "/stats").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    for s in v["backends"][0]["servers"].as_array().unwrap() {
        if s["name"] == server {
            return s["state"].as_str().unwrap().to_string();
        }
    }
    panic!("no server {server} in {v}")
}

#[test]
fn roundrobin_splits_evenly() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let lb = Process::start(
        "lb",
        &lb_config(app_backend(Balance::Roundrobin, &[("a", a.addr, false), ("b", b.addr, false)])),
    );
    let www = lb.addr("www");
    for _ in 0..100 {
        who(www);
    }
    let (ha, hb) = (a.hits() as i64, b.hits() as i64);
    assert_eq!(ha + hb, 100);
    assert!((ha - hb).abs() <= 2, "a={ha} b={hb}: round robin must give 50/50 ± 1");
}

#[test]
fn every_algorithm_routes_and_has_its_shape() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let servers = [("a", a.addr, false), ("b", b.addr, false)];
    // source: one client IP sticks to one server.
    let lb = Process::start("lb", &lb_config(app_backend(Balance::Source, &servers)));
    let first = who(lb.addr("www"));
    for _ in 0..20 {
        assert_eq!(who(lb.addr("www")), first, "source hashing must be sticky");
    }
    drop(lb);
    // first: sequential requests never exceed the cap, so all go to `a`.
    let lb = Process::start("lb", &lb_config(app_backend(Balance::First, &servers).set("max_connections", "4")));
    for _ in 0..20 {
        assert_eq!(who(lb.addr("www")), "a");
    }
    drop(lb);
    // leastconn, random: sequential requests see equal loads, so both
    // servers get traffic. ewma may rightly prefer whichever answered
    // faster; it must route every request.
    for algo in [Balance::Leastconn, Balance::Random, Balance::Ewma] {
        let (ha, hb) = (a.hits(), b.hits());
        let lb = Process::start("lb", &lb_config(app_backend(algo, &servers)));
        for _ in 0..60 {
            who(lb.addr("www"));
        }
        let (da, db) = (a.hits() - ha, b.hits() - hb);
        assert_eq!(da + db, 60, "{algo:?}");
        if algo != Balance::Ewma {
            assert!(da >= 10 && db >= 10, "{algo:?}: a={da} b={db}");
        }
    }
}

#[test]
fn backup_takes_over_only_when_all_primaries_are_down_and_gives_back() {
    let mut a = Backend::start("a");
    let b = Backend::start("b");
    let spare = Backend::start("spare");
    let (a_addr, b_addr) = (a.addr, b.addr);
    let lb = Process::start(
        "lb",
        &lb_config(
            app_backend(
                Balance::Roundrobin,
                &[("a", a_addr, false), ("b", b_addr, false), ("spare", spare.addr, true)],
            )
            .health_check(&fast_checks()),
        ),
    );
    let www = lb.addr("www");
    for _ in 0..20 {
        assert_ne!(who(www), "spare");
    }
    a.stop();
    b.set_healthy(false);
    wait_until("a and b down", || server_state(&lb, "a") == "down" && server_state(&lb, "b") == "down");
    for _ in 0..10 {
        assert_eq!(who(www), "spare", "backup must serve when every primary is down");
    }
    b.set_healthy(true);
    wait_until("b up", || server_state(&lb, "b") == "up");
    for _ in 0..10 {
        assert_eq!(who(www), "b", "traffic must go back to the primary");
    }
    let _a = Backend::start_on("a", a_addr);
    wait_until("a up", || server_state(&lb, "a") == "up");
    let seen: std::collections::HashSet<String> = (0..10).map(|_| who(www)).collect();
    assert_eq!(seen, ["a".to_string(), "b".to_string()].into_iter().collect());
}

/// Keep-alive GET load from `n` client threads until `stop`; counts
/// successes and failures.
fn load(
    addr: SocketAddr,
    n: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicU64>, Arc<AtomicU64>, Vec<std::thread::JoinHandle<()>>) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for _ in 0..n {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        hs.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut conn: Option<TcpStream> = None;
            let mut count = 0;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && count < 200_000 {
                count += 1;
                let s = match conn.take() {
                    Some(s) => s,
                    None => TcpStream::connect(addr).expect("connect to lb"),
                };
                let mut s = s;
                let res = s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").and_then(|_| read_response(&mut s));
                match res {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        conn = Some(s);
                    }
                    Ok(r) => {
                        eprintln!("failed request: {} {}", r.status, r.text());
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("failed request: {e}");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    (ok, failed, hs)
}

#[test]
fn killed_backend_is_removed_without_failing_a_client_request() {
    let mut a = Backend::start("a");
    let b = Backend::start("b");
    let lb = Process::start(
        "lb",
        &lb_config(
            app_backend(Balance::Roundrobin, &[("a", a.addr, false), ("b", b.addr, false)])
                .health_check(&fast_checks()),
        ),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, hs) = load(lb.addr("www"), 4, stop.clone());
    wait_until("traffic on both", || a.hits() > 200 && b.hits() > 200);
    a.stop(); // listener and every open connection closed, as on process death
    let killed_at = ok.load(Ordering::SeqCst);
    wait_until("a marked down", || server_state(&lb, "a") == "down");
    let b_before = b.hits();
    wait_until("traffic continues on b", || b.hits() > b_before + 200 && ok.load(Ordering::SeqCst) > killed_at + 200);
    stop.store(true, Ordering::SeqCst);
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no client request may fail while a backend dies");
    assert!(ok.load(Ordering::SeqCst) > 400);
}

#[test]
fn reload_changes_servers_without_dropping_requests() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let lb = Process::start("lb", &lb_config(app_backend(Balance::Roundrobin, &[("a", a.addr, false)])));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, hs) = load(lb.addr("www"), 3, stop.clone());
    wait_until("traffic on a", || a.hits() > 100);
    // Swap a for b, reload.
    std::fs::write(&lb.config_path, lb_config(app_backend(Balance::Roundrobin, &[("b", b.addr, false)]))).unwrap();
    lb.signal(Signal::SIGHUP);
    lb.wait_for_log("reload: new config is live");
    let a_after = a.hits();
    wait_until("traffic on b", || b.hits() > 100);
    // A bad config is rejected and the running one stays.
    std::fs::write(&lb.config_path, "threads = 1\n[[frontend]]\nname = \"www\"\n").unwrap();
    lb.signal(Signal::SIGHUP);
    lb.wait_for_log("reload (SIGHUP) rejected");
    let b_before = b.hits();
    wait_until("still serving on b", || b.hits() > b_before + 100);
    stop.store(true, Ordering::SeqCst);
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "reload must not drop a request");
    assert!(a.hits() <= a_after + 3, "a got traffic after it was removed");
    assert!(ok.load(Ordering::SeqCst) > 300);
}

#[test]
fn malformed_requests_get_400_and_bad_gateway_cases_are_clear() {
    let a = Backend::start("a");
    let lb = Process::start("lb", &lb_config(app_backend(Balance::Roundrobin, &[("a", a.addr, false)])));
    let www = lb.addr("www");
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: t\r\nBad Header Without Colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ] {
        let r = raw_request(www, raw).expect("an answer, not a dropped connection");
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(raw));
    }
    // Oversized head → 431.
    let big = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "x".repeat(200_000));
    let r = raw_request(www, big.as_bytes()).unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(a.hits(), 0, "no malformed request may reach a server");
    // The lb is still healthy.
    assert_eq!(who(www), "a");
}

#[test]
fn no_server_gives_503_and_refused_connections_give_502() {
    let mut a = Backend::start("a");
    let dead = a.addr;
    a.stop();
    let lb = Process::start("lb", &lb_config(app_backend(Balance::Roundrobin, &[("a", dead, false)])));
    let r = get(lb.addr("www"), "/").unwrap();
    assert_eq!(r.status, 502);
    assert!(r.text().contains("could not connect"), "{}", r.text());
    drop(lb);
    // With the panic threshold off, health decides alone: no server → 503.
    let checks = app_backend(Balance::Roundrobin, &[("a", dead, false)])
        .health_check(&fast_checks())
        .set("panic_threshold_percent", "0");
    let lb = Process::start("lb", &lb_config(checks));
    wait_until("a down", || server_state(&lb, "a") == "down");
    let r = get(lb.addr("www"), "/").unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("no server available"), "{}", r.text());
    drop(lb);
    // By default (panic below 50 % available) a backend whose checks all
    // fail is still tried: here the server is really gone → 502.
    let lb = Process::start(
        "lb",
        &lb_config(app_backend(Balance::Roundrobin, &[("a", dead, false)]).health_check(&fast_checks())),
    );
    wait_until("a down", || server_state(&lb, "a") == "down");
    let r = get(lb.addr("www"), "/").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
}

#[test]
fn forwarded_headers_are_added_and_hop_by_hop_removed() {
    let a = Backend::start("a");
    let lb = Process::start("lb", &lb_config(app_backend(Balance::Roundrobin, &[("a", a.addr, false)])));
    let r = request(
        lb.addr("www"),
        "POST",
        "/echo",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("Connection", "close, X-Hop"),
            ("X-Hop", "secret"),
            ("Keep-Alive", "timeout=5"),
        ],
        b"hello",
    )
    .unwrap();
    let t = r.text().to_lowercase();
    assert!(t.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1"), "{t}");
    assert!(t.contains("x-forwarded-proto: http"), "{t}");
    assert!(t.contains("forwarded: for=127.0.0.1;proto=http"), "{t}");
    assert!(t.contains("via: 1.1 bulwark"), "{t}");
    assert!(!t.contains("x-hop"), "{t}");
    assert!(!t.contains("keep-alive"), "{t}");
    assert!(t.ends_with("hello"), "{t}");
    assert_eq!(r.header("via"), Some("1.1 bulwark"));
}

#[test]
fn non_idempotent_requests_are_never_replayed_but_gets_are() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let lb = Process::start(
        "lb",
        &lb_config(
            app_backend(Balance::Roundrobin, &[("a", a.addr, false), ("b", b.addr, false)]).passive(&no_passive()),
        ),
    );
    let r = request(lb.addr("www"), "POST", "/reset", &[], b"x").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(a.hits() + b.hits(), 1, "a POST that reached a server must not be sent again");
    let r = get(lb.addr("www"), "/reset").unwrap();
    assert_eq!(r.status, 502);
    // GET without body: replayed on the other server (then the retry budget/attempts stop it).
    assert!(a.hits() + b.hits() >= 3, "GET should have been retried: {}", a.hits() + b.hits());
}

/// A server that reads each request to the end of its body, then closes
/// the connection without answering, as a server killed mid-request would.
struct DropsRequests {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
}

impl DropsRequests {
    fn start() -> DropsRequests {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let count = count.clone();
                std::thread::spawn(move || {
                    if read_whole_request(&mut stream).is_ok() {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    // Dropping the stream closes it unanswered.
                });
            }
        });
        DropsRequests { addr, requests }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Read one HTTP/1.1 request: the head, then a Content-Length or chunked
/// body.
fn read_whole_request(stream: &mut TcpStream) -> std::io::Result<()> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    loop {
        let body = &buf[head_end..];
        let complete = match length {
            Some(len) => body.len() >= len,
            None => !head.contains("transfer-encoding: chunked") || body.ends_with(b"0\r\n\r\n"),
        };
        if complete {
            return Ok(());
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `first` sends every first attempt to the server that drops requests;
/// passive ejection is off so it stays first.
fn dropping_then_answering(dropper: &DropsRequests, answering: &Backend, retries: Retries) -> Process {
    let backend =
        app_backend(Balance::First, &[("dropper", dropper.addr, false), ("answering", answering.addr, false)])
            .set("max_connections", "100")
            .passive(&no_passive())
            .retries(&retries);
    Process::start("lb", &lb_config(backend))
}

fn retries_of(lb: &Process, server: &str) -> u64 {
    let r = get(lb.addr("admin"), "/stats").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let servers = v["backends"][0]["servers"].as_array().unwrap();
    let s = servers.iter().find(|s| s["name"] == server).unwrap_or_else(|| panic!("no server {server} in {v}"));
    s["retries"].as_u64().unwrap_or_else(|| panic!("no retries counter in {s}"))
}

#[test]
fn a_post_with_an_idempotency_key_is_replayed_on_another_server() {
    let dropper = DropsRequests::start();
    let answering = Backend::start("b");
    let lb = dropping_then_answering(&dropper, &answering, Retries::default());
    let body = br#"{"author":"ann","text":"hello"}"#;
    let r = request(lb.addr("www"), "POST", "/echo", &[("Idempotency-Key", "k-1")], body).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(dropper.requests(), 1, "the first attempt went to the server that dropped it");
    assert_eq!(answering.hits(), 1);
    let echoed = r.text().to_lowercase();
    assert!(echoed.contains("idempotency-key: k-1"), "the key goes to the server: {echoed}");
    assert!(
        r.text().ends_with(r#"{"author":"ann","text":"hello"}"#),
        "the replay carries the whole body: {}",
        r.text()
    );
    assert_eq!(retries_of(&lb, "answering"), 1, "the replay counts as a retry");

    // A chunked body (no Content-Length) within the limit is replayed too.
    let chunked = b"POST /echo HTTP/1.1\r\nHost: test\r\nConnection: close\r\nIdempotency-Key: k-2\r\n\
        Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = raw_request(lb.addr("www"), chunked).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().ends_with("hello world"), "{}", r.text());
    assert_eq!((dropper.requests(), answering.hits()), (2, 2));
}

#[test]
fn a_post_without_an_idempotency_key_is_not_replayed() {
    let dropper = DropsRequests::start();
    let answering = Backend::start("b");
    let lb = dropping_then_answering(&dropper, &answering, Retries::default());
    let r = request(lb.addr("www"), "POST", "/echo", &[], b"hello").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(dropper.requests(), 1);
    assert_eq!(answering.hits(), 0, "a POST without a key that reached a server must not be sent again");
}

#[test]
fn a_keyed_body_over_the_replay_limit_is_streamed_and_not_replayed() {
    let dropper = DropsRequests::start();
    let answering = Backend::start("b");
    let lb = dropping_then_answering(&dropper, &answering, Retries { max_replay_body_bytes: 16, ..Retries::default() });
    let big = [b'x'; 100];
    let r = request(lb.addr("www"), "POST", "/echo", &[("Idempotency-Key", "k-big")], &big).unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!((dropper.requests(), answering.hits()), (1, 0));
    // Without Content-Length the limit is found while reading ahead; the
    // part read and the rest still reach the server, once.
    let mut chunked = b"POST /echo HTTP/1.1\r\nHost: test\r\nConnection: close\r\nIdempotency-Key: k-big-2\r\n\
        Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for _ in 0..10 {
        chunked.extend_from_slice(b"a\r\n0123456789\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = raw_request(lb.addr("www"), &chunked).unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!((dropper.requests(), answering.hits()), (2, 0));
    // Within the limit, the same backend replays it.
    let r = request(lb.addr("www"), "POST", "/echo", &[("Idempotency-Key", "k-small")], b"small").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().ends_with("small"), "{}", r.text());
}

#[test]
fn tcp_mode_tunnels_bytes() {
    let a = Backend::start("a");
    let cfg = LbConfig::new()
        .frontend(FrontendConfig::tcp("db", "raw"))
        .backend(BackendConfig::new("raw").server("a", a.addr));
    let lb = Process::start("lb", &cfg.to_toml());
    let r = get(lb.addr("db"), "/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a");
    assert_eq!(r.header("via"), None, "tcp mode must not touch the bytes");
}

#[test]
fn sigterm_drains_in_flight_requests() {
    let a = Backend::start("a");
    let mut lb = Process::start("lb", &lb_config(app_backend(Balance::Roundrobin, &[("a", a.addr, false)])));
    let www = lb.addr("www");
    let slow = std::thread::spawn(move || get(www, "/sleep/700"));
    wait_until("request in flight", || a.hits() == 1);
    lb.signal(Signal::SIGTERM);
    let r = slow.join().unwrap().expect("in-flight request completes");
    assert_eq!(r.status, 200);
    let status = lb.wait_exit();
    assert!(status.success(), "{status:?}");
}

/// A keep-alive client that sends its next request just as the lb stops
/// is answered (with `Connection: close`), not reset: the idle connection
/// waits a moment for it before it closes.
#[test]
fn a_stopping_lb_answers_the_next_request_of_an_idle_connection() {
    let a = Backend::start("a");
    let mut lb = Process::start("lb", &lb_config(app_backend(Balance::Roundrobin, &[("a", a.addr, false)])));
    let www = lb.addr("www");
    let mut conn = TcpStream::connect(www).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {www}\r\n\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    let first = read_response(&mut conn).unwrap();
    assert_eq!((first.status, first.header("connection")), (200, None));
    lb.signal(Signal::SIGTERM);
    wait_until("the lb stopped accepting", || TcpStream::connect(www).is_err());
    conn.write_all(req.as_bytes()).unwrap();
    let second = read_response(&mut conn).expect("the request on the idle connection is answered");
    assert_eq!((second.status, second.header("connection")), (200, Some("close")));
    let status = lb.wait_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn check_reports_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    // The text itself, not a builder's: the error must name its line.
    let text = "threads = 2\n[admin]\nbind = \"127.0.0.1:0\"\n\n[[frontend]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\n\
                backend = \"app\"\n\n[[backend]]\nname = \"app\"\nbalance = \"roundrobin\"\n\n[[backend.server]]\n\
                name = \"a\"\naddress = \"127.0.0.1:1\"\nbackup = false\n";
    let good = dir.path().join("lb.toml");
    std::fs::write(&good, text).unwrap();
    let out =
        std::process::Command::new(bulwark_testkit::bulwark_bin()).args(["check", "-c"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (lb config)"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text.replace("backup = false", "weight = 0")).unwrap();
    let out =
        std::process::Command::new(bulwark_testkit::bulwark_bin()).args(["check", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:17: backend[0].server[0].weight: must be between 1 and 256"), "{err}");
}

#[test]
fn a_passively_ejected_server_returns_when_health_checks_pass() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let lb = Process::start(
        "lb",
        &lb_config(
            app_backend(Balance::Roundrobin, &[("a", a.addr, false), ("b", b.addr, false)])
                .health_check(&fast_checks())
                .passive(&PassiveHealth {
                    consecutive_errors: 2,
                    eject_for: Duration::from_secs(120),
                    ..PassiveHealth::default()
                })
                .retries(&Retries { attempts: 0, ..Retries::default() }),
        ),
    );
    // 5xx from both (the health endpoint stays fine): both get ejected…
    for _ in 0..6 {
        let _ = get(lb.addr("www"), "/status/500");
    }
    wait_until("a ejected", || server_state(&lb, "a") == "ejected");
    // …and come back after `rise` passing checks, not after 120 s.
    wait_until("a back", || server_state(&lb, "a") == "up");
    wait_until("b back", || server_state(&lb, "b") == "up");
    lb.wait_for_log("server is back");
    assert_eq!(who(lb.addr("www")).len(), 1);
}

/// A server that answers its health check (`GET /health`: 200 while
/// `healthy`, else 503) and holds every other request unanswered, as a
/// server cut off by a partition mid-request would.
struct HoldsRequests {
    addr: SocketAddr,
    held: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
}

impl HoldsRequests {
    fn start() -> HoldsRequests {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(AtomicU64::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let (count, ok) = (held.clone(), healthy.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (count, ok) = (count.clone(), ok.clone());
                std::thread::spawn(move || {
                    let mut head = [0u8; 16];
                    if stream.peek(&mut head).is_ok() && head.starts_with(b"GET /health") {
                        let _ = read_whole_request(&mut stream);
                        let status = if ok.load(Ordering::SeqCst) { "200 OK" } else { "503 Down" };
                        let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    }
                    if read_whole_request(&mut stream).is_ok() {
                        count.fetch_add(1, Ordering::SeqCst);
                        // Hold the connection until the lb gives up on it.
                        let _ = stream.read(&mut [0u8; 1]);
                    }
                });
            }
        });
        HoldsRequests { addr, held, healthy }
    }
}

#[test]
fn requests_waiting_on_a_server_marked_down_move_on_or_fail_at_once() {
    let holder = HoldsRequests::start();
    let answering = Backend::start("b");
    // `first`: every first attempt goes to the holder while it is up. The
    // server timeout is far longer than the test may wait for an answer.
    let backend = app_backend(Balance::First, &[("holder", holder.addr, false), ("answering", answering.addr, false)])
        .set("max_connections", "100")
        .passive(&no_passive())
        .health_check(&fast_checks());
    let lb = Process::start("lb", &lb_with(backend).timeout("server", Duration::from_secs(120)).to_toml());
    wait_until("holder is up", || server_state(&lb, "holder") == "up");
    let www = lb.addr("www");

    // A keyed POST held by the server goes to the other server once the
    // health check marks the holder down.
    let keyed = std::thread::spawn(move || {
        request(www, "POST", "/echo", &[("Idempotency-Key", "k-held")], b"held then replayed").unwrap()
    });
    wait_until("the holder has the request", || holder.held.load(Ordering::SeqCst) == 1);
    holder.healthy.store(false, Ordering::SeqCst);
    let r = keyed.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().ends_with("held then replayed"), "{}", r.text());
    assert_eq!(answering.hits(), 1);

    // A POST without a key cannot be replayed: it fails with 502 when the
    // holder is marked down, instead of waiting for the server timeout.
    holder.healthy.store(true, Ordering::SeqCst);
    wait_until("holder is up again", || server_state(&lb, "holder") == "up");
    let plain = std::thread::spawn(move || request(www, "POST", "/echo", &[], b"not replayable").unwrap());
    wait_until("the holder has the second request", || holder.held.load(Ordering::SeqCst) == 2);
    holder.healthy.store(false, Ordering::SeqCst);
    let r = plain.join().unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(answering.hits(), 1, "a request without a key is never replayed");
}
