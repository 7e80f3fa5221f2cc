//! `bulwark web` as a static file server: the real process on a temp root,
//! real sockets, raw HTTP/1.1.
use bulwark_testkit::config::{quick_tcp_check, WebConfig};
use bulwark_testkit::{get, raw_request, read_response, request, HttpResponse, Process, PATIENCE};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

const STYLE: &str = "body { color: #333; }\n";
const BIG_LEN: usize = 200_000;

/// A site: index page, a stylesheet, a docs directory, a precompressed
/// script, a large file, a dotfile, a symlink out of the root.
struct Site {
    root: tempfile::TempDir,
    _outside: tempfile::TempDir,
}

fn site() -> Site {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::write(r.join("index.html"), "<h1>home</h1>\n").unwrap();
    std::fs::write(r.join("style.css"), STYLE).unwrap();
    std::fs::create_dir_all(r.join("docs")).unwrap();
    std::fs::write(r.join("docs/index.html"), "<h1>docs</h1>\n").unwrap();
    std::fs::create_dir_all(r.join("assets")).unwrap();
    std::fs::write(r.join("assets/app.js"), "console.log('identity');\n".repeat(20)).unwrap();
    std::fs::write(r.join("assets/app.js.br"), "BROTLI-BYTES").unwrap();
    std::fs::write(r.join("assets/app.js.gz"), "GZIP-BYTES").unwrap();
    let big: Vec<u8> = (0..BIG_LEN).map(|i| (i % 251) as u8).collect();
    std::fs::write(r.join("big.bin"), &big).unwrap();
    std::fs::write(r.join(".env"), "SECRET=1\n").unwrap();
    std::fs::write(outside.path().join("secret.txt"), "root:x:0:0:outside\n").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), r.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path(), r.join("leakdir")).unwrap();
    Site { root, _outside: outside }
}

/// The site's web config: small limits, a file cache, `/assets/`
/// cacheable for an hour, the access log on (a caller adds the `/api/`
/// route).
fn config(root: &Path) -> WebConfig {
    WebConfig::new(root)
        .access_log(true)
        .limit("max_body_bytes", 1024)
        .limit("max_header_bytes", 4096)
        .set("cache", r#"{ max_file_bytes = 65536, revalidate = "0s" }"#)
        .set("cache_control", r#"[{ match = "/assets/", value = "public, max-age=3600" }]"#)
}

/// An address no app listens on.
fn no_app() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

fn start(site: &Site) -> Process {
    Process::start("web", &config(site.root.path()).proxy("/api/", &[no_app()]).to_toml())
}

/// Send raw bytes, read one response head (no body: for HEAD and 304).
fn head_only(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed before the end of the head: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head)
}

fn with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    raw_request(addr, raw.as_bytes()).unwrap()
}

#[test]
fn serves_files_with_type_validators_and_head() {
    let site = site();
    let p = start(&site);
    let addr = p.addr("http");
    let r = get(addr, "/style.css").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), STYLE);
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some(&*STYLE.len().to_string()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").is_some_and(|e| e.starts_with('"')), "{:?}", r.headers);
    assert!(r.header("last-modified").is_some_and(|d| d.ends_with("GMT")));
    assert!(r.header("date").is_some());
    assert_eq!(r.header("cache-control"), None);

    let (status, head) = head_only(addr, "HEAD /style.css HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains(&format!("content-length: {}\r\n", STYLE.len())), "{head}");
    assert!(lower.contains("content-type: text/css; charset=utf-8"), "{head}");

    let r = get(addr, "/nope.html").unwrap();
    assert_eq!(r.status, 404);

    let r = request(addr, "POST", "/style.css", &[], b"x=1").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    // Cache-Control by prefix.
    let r = get(addr, "/assets/app.js").unwrap();
    assert_eq!(r.header("cache-control"), Some("public, max-age=3600"));
    assert_eq!(r.header("content-type"), Some("text/javascript; charset=utf-8"));
    p.wait_for_log("\"GET /style.css HTTP/1.1\" 200");
}

#[test]
fn index_files_and_directory_redirect() {
    let site = site();
    let p = start(&site);
    let addr = p.addr("http");
    let r = get(addr, "/").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>\n"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = get(addr, "/docs").unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/"));
    let r = get(addr, "/docs?x=1").unwrap();
    assert_eq!(r.header("location"), Some("/docs/?x=1"));
    let r = get(addr, "/docs/").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>docs</h1>\n"));
    // A protocol-relative spelling cannot turn the redirect into another host.
    let r = get(addr, "//docs").unwrap();
    assert_eq!(r.header("location"), Some("/docs/"));
}

#[test]
fn conditional_requests_answer_304() {
    let site = site();
    let p = start(&site);
    let addr = p.addr("http");
    let first = get(addr, "/style.css").unwrap();
    let etag = first.header("etag").unwrap().to_string();
    let date = first.header("last-modified").unwrap().to_string();

    let raw = |extra: &str| format!("GET /style.css HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n");
    let (status, head) = head_only(addr, &raw(&format!("If-None-Match: {etag}\r\n")));
    assert_eq!(status, 304, "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("etag: {}", etag.to_ascii_lowercase())), "{head}");
    let (status, _) = head_only(addr, &raw(&format!("If-None-Match: W/{etag}, \"other\"\r\n")));
    assert_eq!(status, 304);
    let (status, _) = head_only(addr, &raw(&format!("If-Modified-Since: {date}\r\n")));
    assert_eq!(status, 304);

    // A different tag, or an older date, gets the file.
    let r = with(addr, "/style.css", &[("If-None-Match", "\"nope\"")]);
    assert_eq!((r.status, r.text().as_str()), (200, STYLE));
    let r = with(addr, "/style.css", &[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:10 GMT")]);
    assert_eq!(r.status, 200);
    // If-None-Match takes precedence over If-Modified-Since.
    let r = with(addr, "/style.css", &[("If-None-Match", "\"nope\""), ("If-Modified-Since", &date)]);
    assert_eq!(r.status, 200);
    let r = with(addr, "/style.css", &[("If-Match", "\"nope\"")]);
    assert_eq!(r.status, 412);
}

#[test]
fn byte_ranges() {
    let site = site();
    let p = start(&site);
    let addr = p.addr("http");
    let r = with(addr, "/style.css", &[("Range", "bytes=0-3")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), &STYLE[..4]);
    assert_eq!(r.header("content-range"), Some(&*format!("bytes 0-3/{}", STYLE.len())));
    let r = with(addr, "/style.css", &[("Range", "bytes=-5")]);
    assert_eq!((r.status, r.text().as_str()), (206, &STYLE[STYLE.len() - 5..]));

    let r = with(addr, "/style.css", &[("Range", "bytes=9999-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some(&*format!("bytes */{}", STYLE.len())));

    // If-Range with a current tag honours the range; a stale one gets 200.
    let etag = get(addr, "/style.css").unwrap().header("etag").unwrap().to_string();
    let r = with(addr, "/style.css", &[("Range", "bytes=0-3"), ("If-Range", &etag)]);
    assert_eq!(r.status, 206);
    let r = with(addr, "/style.css", &[("Range", "bytes=0-3"), ("If-Range", "\"stale\"")]);
    assert_eq!((r.status, r.text().as_str()), (200, STYLE));

    // Multiple ranges: the whole file.
    let r = with(addr, "/style.css", &[("Range", "bytes=0-1,4-5")]);
    assert_eq!((r.status, r.text().as_str()), (200, STYLE));

    // A file larger than the cache limit is streamed from disk, ranges too.
    let big: Vec<u8> = (0..BIG_LEN).map(|i| (i % 251) as u8).collect();
    let r = get(addr, "/big.bin").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), BIG_LEN);
    assert!(r.body == big, "streamed body differs");
    let r = with(addr, "/big.bin", &[("Range", "bytes=100000-100099")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, big[100_000..100_100]);
    assert_eq!(r.header("content-range"), Some(&*format!("bytes 100000-100099/{BIG_LEN}")));
}

#[test]
fn traversal_symlinks_and_dotfiles_are_refused() {
    let site = site();
    let p = start(&site);
    let addr = p.addr("http");
    for path in [
        "/../etc/passwd",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/docs/..%2f..%2fetc/passwd",
        "/docs/%2E%2E/%2E%2E/etc/passwd",
        "/..%5c..%5cetc%5cpasswd",
        "/style.css%00.html",
        "/leak.txt",
        "/leakdir/secret.txt",
        "/.env",
    ] {
        let r = raw_request(addr, format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
            .unwrap();
        assert!([400, 403, 404].contains(&r.status), "{path}: {} {}", r.status, r.text());
        assert!(!r.text().contains("root:"), "{path} leaked: {}", r.text());
        assert!(!r.text().contains("SECRET"), "{path} leaked: {}", r.text());
    }
    assert_eq!(get(addr, "/leak.txt").unwrap().status, 403);
    assert_eq!(get(addr, "/.env").unwrap().status, 404);
    assert_eq!(get(addr, "/%2e%2e/etc/passwd").unwrap().status, 403);
}

#[test]
fn precompressed_siblings_follow_accept_encoding() {
    let site = site();
    let p = start(&site);
    let addr = p.addr("http");
    let br = with(addr, "/assets/app.js", &[("Accept-Encoding", "gzip, deflate, br")]);
    assert_eq!((br.status, br.text().as_str()), (200, "BROTLI-BYTES"));
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(br.header("vary"), Some("Accept-Encoding"));
    assert_eq!(br.header("content-type"), Some("text/javascript; charset=utf-8"));
    let gz = with(addr, "/assets/app.js", &[("Accept-Encoding", "gzip")]);
    assert_eq!((gz.text().as_str(), gz.header("content-encoding")), ("GZIP-BYTES", Some("gzip")));
    let plain = with(addr, "/assets/app.js", &[]);
    assert!(plain.text().starts_with("console.log"));
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    let tags = [br.header("etag"), gz.header("etag"), plain.header("etag")];
    assert!(tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2], "{tags:?}");
    // A client's br tag revalidates the br representation only.
    let (status, _) = head_only(
        addr,
        &format!(
            "GET /assets/app.js HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAccept-Encoding: br\r\nIf-None-Match: {}\r\n\r\n",
            tags[0].unwrap()
        ),
    );
    assert_eq!(status, 304);
    let r = with(addr, "/assets/app.js", &[("Accept-Encoding", "gzip"), ("If-None-Match", tags[0].unwrap())]);
    assert_eq!(r.status, 200);
}

#[test]
fn changed_files_are_served_fresh() {
    let site = site();
    let p = start(&site);
    let addr = p.addr("http");
    assert_eq!(get(addr, "/style.css").unwrap().text(), STYLE);
    std::fs::write(site.root.path().join("style.css"), "p { margin: 0 }\n").unwrap();
    // revalidate = "0s": the next request sees the new content.
    assert_eq!(get(addr, "/style.css").unwrap().text(), "p { margin: 0 }\n");
    std::fs::remove_file(site.root.path().join("style.css")).unwrap();
    assert_eq!(get(addr, "/style.css").unwrap().status, 404);
}

#[test]
fn limits_answer_413_431_400() {
    let site = site();
    let p = start(&site);
    let addr = p.addr("http");
    let r = request(addr, "POST", "/style.css", &[], &[b'x'; 4096]).unwrap();
    assert_eq!(r.status, 413);
    // A chunked body over the limit on a GET is refused while reading.
    let mut raw = b"GET /style.css HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(format!("{:x}\r\n", 2048).as_bytes());
    raw.extend_from_slice(&[b'y'; 2048]);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(raw_request(addr, &raw).unwrap().status, 413);
    // A small body on a GET is read and ignored.
    let r = request(addr, "GET", "/style.css", &[], b"tiny").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, STYLE));

    let big = "a".repeat(6000);
    let r = raw_request(addr, format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(r.status, 431);

    for garbage in [&b"NOT HTTP AT ALL\r\n\r\n"[..], b"GET / HTTP/1.1\r\nHost t\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n"] {
        let r = raw_request(addr, garbage).unwrap();
        assert!(r.status == 400 || r.status == 505, "{}: {}", String::from_utf8_lossy(garbage), r.status);
    }
    // Still serving after all that.
    assert_eq!(get(addr, "/style.css").unwrap().status, 200);
}

#[test]
fn proxy_prefix_goes_to_the_proxy_route() {
    let site = site();
    // Nothing listens on the configured server: a clear 502.
    let p = start(&site);
    let r = get(p.addr("http"), "/api/guestbook").unwrap();
    assert_eq!(r.status, 502);
    assert!(r.text().contains("could not connect"), "{}", r.text());
    assert_eq!(get(p.addr("http"), "/apiary").unwrap().status, 404);
    drop(p);
    // Two real app servers: balanced, forwarded headers added, a dead one skipped.
    let a = bulwark_testkit::Backend::start("app-a");
    let mut b = bulwark_testkit::Backend::start("app-b");
    let cfg = config(site.root.path()).proxy("/api/", &[a.addr, b.addr]);
    let p = Process::start("web", &cfg.to_toml());
    let seen: std::collections::HashSet<String> =
        (0..6).map(|_| get(p.addr("http"), "/api/x").unwrap().text()).collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let echo = get(p.addr("http"), "/api/echo").unwrap().text().to_lowercase();
    assert!(echo.contains("x-forwarded-for: 127.0.0.1"), "{echo}");
    b.stop();
    for _ in 0..6 {
        let r = get(p.addr("http"), "/api/x").unwrap();
        assert_eq!((r.status, r.text()), (200, "app-a".to_string()), "a stopped app server is retried around");
    }
}

#[test]
fn slow_and_idle_clients_are_disconnected() {
    let site = site();
    let cfg = config(site.root.path())
        .proxy("/api/", &[no_app()])
        .timeout("header", Duration::from_millis(300))
        .timeout("keepalive", Duration::from_millis(300));
    let p = Process::start("web", &cfg.to_toml());
    let addr = p.addr("http");

    // Slowloris: a head that never ends is cut off, unanswered.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"GET /style.css HTTP/1.1\r\nHost: t\r\nX-Slow: ").unwrap();
    let start = Instant::now();
    let mut rest = Vec::new();
    let closed = s.read_to_end(&mut rest);
    assert!(start.elapsed() < PATIENCE, "not disconnected");
    assert!(closed.is_ok() || closed.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset));
    assert!(!String::from_utf8_lossy(&rest).contains(" 200 "), "answered a partial head: {rest:?}");

    // Dribbling bytes does not extend the header deadline.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let start = Instant::now();
    let mut writes = 0;
    while s.write_all(b"X").is_ok() && start.elapsed() < PATIENCE {
        writes += 1;
        let mut probe = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        if let Ok(0) = s.read(&mut probe) {
            break;
        }
    }
    assert!(start.elapsed() < PATIENCE, "dribbling client never cut off after {writes} writes");

    // Idle keep-alive: one answered request, then silence → closed.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"GET /style.css HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");

    // The server is fine.
    assert_eq!(get(addr, "/style.css").unwrap().status, 200);
}

#[test]
fn keep_alive_and_pipelining_serve_in_order() {
    let site = site();
    let p = start(&site);
    let mut s = TcpStream::connect(p.addr("http")).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"GET /style.css HTTP/1.1\r\nHost: t\r\n\r\nGET /docs/ HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let a = read_response(&mut s).unwrap();
    let b = read_response(&mut s).unwrap();
    let c = read_response(&mut s).unwrap();
    assert_eq!((a.status, a.text().as_str()), (200, STYLE));
    assert_eq!((b.status, b.text().as_str()), (200, "<h1>docs</h1>\n"));
    assert_eq!(c.status, 404);
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let site = site();
    let mut p = start(&site);
    assert_eq!(get(p.addr("http"), "/").unwrap().status, 200);
    // An idle keep-alive connection must not hold the shutdown up.
    let mut idle = TcpStream::connect(p.addr("http")).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    idle.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(read_response(&mut idle).unwrap().status, 200);
    let start = Instant::now();
    let status = p.terminate();
    assert!(status.success(), "{status:?}\n{}", p.logs());
    assert!(start.elapsed() < Duration::from_secs(10), "idle connection held the drain for {:?}", start.elapsed());
}

#[test]
fn access_log_can_be_switched_off() {
    let site = site();
    let mut on = start(&site);
    let mut off =
        Process::start("web", &config(site.root.path()).proxy("/api/", &[no_app()]).access_log(false).to_toml());
    for p in [&on, &off] {
        assert_eq!(get(p.addr("http"), "/style.css").unwrap().status, 200);
    }
    // stderr is read in order: once the shutdown line is in, so is every
    // line written before it.
    for p in [&mut on, &mut off] {
        assert!(p.terminate().success());
        p.wait_for_log("web server stopped");
    }
    assert!(on.logs().contains("\"GET /style.css HTTP/1.1\" 200"), "{}", on.logs());
    assert!(!off.logs().contains("\"GET /style.css"), "{}", off.logs());
}

#[test]
fn bad_root_fails_to_start_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir.path().join("missing")).proxy("/api/", &[no_app()]).to_toml();
    let path = dir.path().join("web.toml");
    std::fs::write(&path, cfg).unwrap();
    let out =
        std::process::Command::new(bulwark_testkit::bulwark_bin()).args(["web", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("root") && err.contains("missing"), "{err}");
}

#[test]
fn health_is_degraded_not_down_while_a_proxy_route_has_no_server() {
    let site = site();
    let mut app = bulwark_testkit::Backend::start("app");
    let cfg = config(site.root.path()).proxy_checked("/api/", &[app.addr], &quick_tcp_check());
    let p = Process::start("web", &cfg.to_toml());
    bulwark_testkit::wait_until("/health ok", || get(p.addr("http"), "/health").is_ok_and(|r| r.text() == "ok\n"));
    app.stop();
    // Static files still work, so the server stays in the lb's rotation
    // (200); the body names the route that has no server.
    bulwark_testkit::wait_until("/health degraded", || {
        get(p.addr("http"), "/health").is_ok_and(|r| r.text().starts_with("degraded"))
    });
    let r = get(p.addr("http"), "/health").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "degraded: no server available for /api/\n");
    assert_eq!(get(p.addr("http"), "/").unwrap().status, 200);
}

#[test]
fn pages_cannot_be_framed_by_other_sites_and_types_are_never_sniffed() {
    let s = site();
    let web = start(&s);
    let page = get(web.addr("http"), "/").unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(page.header("referrer-policy"), Some("strict-origin-when-cross-origin"));
    let css = get(web.addr("http"), "/style.css").unwrap();
    assert_eq!(css.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(css.header("x-frame-options"), None, "only pages need framing rules");
}
