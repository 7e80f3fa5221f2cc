//! The web tier's response cache on a real `bulwark web` in front of a real
//! HTTP application (a hyper server in this test, counting its requests):
//! 100 concurrent identical GETs make one upstream request, a stale page
//! answers while the app is stopped, PURGE empties it, /metrics counts;
//! within `stale-while-revalidate` a stale page answers at once while one
//! background request refreshes it.
use bulwark_testkit::config::WebConfig;
use bulwark_testkit::{get, request, Process};
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An app answering `/api/slow` after 300 ms (fresh for a minute),
/// `/api/stale` at once (stale at once, usable for an hour if the app
/// fails) and `/api/swr` (stale at once, usable for a minute while it is
/// refreshed; fresh for a minute once `fresh` is set; held until `gate`
/// gives a permit while `gated` is set; a request with `Range` gets a
/// 206 of its first bytes); stopped on drop.
struct App {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    fresh: Arc<AtomicBool>,
    gated: Arc<AtomicBool>,
    gate: Arc<tokio::sync::Semaphore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl App {
    fn start() -> App {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let fresh = Arc::new(AtomicBool::new(false));
        let gated = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let counted = hits.clone();
        let (app_fresh, app_gated, app_gate) = (fresh.clone(), gated.clone(), gate.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        let counted = counted.clone();
                        let (fresh, gated, gate) = (app_fresh.clone(), app_gated.clone(), app_gate.clone());
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                                let counted = counted.clone();
                                let (fresh, gated, gate) = (fresh.clone(), gated.clone(), gate.clone());
                                async move {
                                    counted.fetch_add(1, Ordering::SeqCst);
                                    if req.uri().path() == "/api/hang" && gated.load(Ordering::SeqCst) {
                                        // The head and a first chunk, then nothing.
                                        return Ok(Response::builder()
                                            .header("cache-control", "max-age=0, stale-while-revalidate=60")
                                            .header("content-type", "text/plain")
                                            .body(Either::Right(Hanging(Some(Bytes::from_static(b"page ")))))
                                            .unwrap());
                                    }
                                    let cc = match req.uri().path() {
                                        "/api/slow" => {
                                            tokio::time::sleep(Duration::from_millis(300)).await;
                                            "max-age=60"
                                        }
                                        "/api/swr" | "/api/hang" => {
                                            if gated.load(Ordering::SeqCst) {
                                                gate.acquire().await.unwrap().forget();
                                            }
                                            if fresh.load(Ordering::SeqCst) {
                                                "max-age=60"
                                            } else {
                                                "max-age=0, stale-while-revalidate=60"
                                            }
                                        }
                                        _ => "max-age=0, stale-if-error=3600",
                                    };
                                    let n = counted.load(Ordering::SeqCst);
                                    if req.uri().path() == "/api/swr" && req.headers().contains_key("range") {
                                        // What a server does with a range of a page: only that part.
                                        return Ok(Response::builder()
                                            .status(206)
                                            .header("cache-control", cc)
                                            .header("content-range", "bytes 0-3/*")
                                            .body(Either::Left(Full::new(Bytes::from_static(b"page"))))
                                            .unwrap());
                                    }
                                    Ok::<_, std::convert::Infallible>(
                                        Response::builder()
                                            .header("cache-control", cc)
                                            .header("content-type", "text/plain")
                                            .body(Either::Left(Full::new(Bytes::from(format!(
                                                "page {} #{n}\n",
                                                req.uri().path()
                                            )))))
                                            .unwrap(),
                                    )
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
                    _ = stopped => {}
                }
            });
        });
        App { addr, hits, fresh, gated, gate, stop: Some(stop), thread: Some(thread) }
    }

    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A body that sends its first bytes and then never ends.
struct Hanging(Option<Bytes>);

impl hyper::body::Body for Hanging {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(b) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
            None => std::task::Poll::Pending,
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The app, and a web server in front of it caching its answers (`route`:
/// more keys of the `[[proxy]]` route, as TOML values), with its root.
fn cached_site(route: &[(&str, &str)]) -> (App, Process, tempfile::TempDir) {
    let app = App::start();
    let root = tempfile::tempdir().unwrap();
    let config = WebConfig::new(root.path())
        .threads(2)
        .set("response_cache", r#"{ enabled = true, purge_token = "purge-token-0123456789" }"#)
        .proxy_with("/api/", &[app.addr], route);
    let web = Process::start("web", &config.to_toml());
    (app, web, root)
}

#[test]
fn one_upstream_request_for_100_concurrent_gets() {
    let (app, web, _root) = cached_site(&[]);
    let http = web.addr("http");
    let answers: Vec<_> = (0..100)
        .map(|_| std::thread::spawn(move || get(http, "/api/slow").unwrap()))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(app.hits.load(Ordering::SeqCst), 1, "one upstream request");
    for a in &answers {
        assert_eq!(a.status, 200);
        assert_eq!(a.text(), "page /api/slow #1\n");
    }
    let outcomes: Vec<_> = answers.iter().map(|a| a.header("x-cache").unwrap_or("-").to_string()).collect();
    assert_eq!(outcomes.iter().filter(|o| *o == "MISS").count(), 1, "{outcomes:?}");

    // PURGE needs the token, then the next request goes to the app again.
    let denied = request(http, "PURGE", "/api/slow", &[], b"").unwrap();
    assert_eq!(denied.status, 401);
    let purged =
        request(http, "PURGE", "/api/slow", &[("Authorization", "Bearer purge-token-0123456789")], b"").unwrap();
    assert_eq!((purged.status, purged.text()), (200, "{\"purged\":1}\n".to_string()));
    assert_eq!(get(http, "/api/slow").unwrap().header("x-cache"), Some("MISS"));
    assert_eq!(app.hits.load(Ordering::SeqCst), 2);

    let metrics = get(http, "/metrics").unwrap().text();
    let hits = bulwark_testkit::metric_value(&metrics, "bulwark_web_cache_requests_total", &[("outcome", "hit")])
        + bulwark_testkit::metric_value(&metrics, "bulwark_web_cache_requests_total", &[("outcome", "collapsed")]);
    assert!(hits >= 99.0, "{metrics}");
    assert_eq!(
        bulwark_testkit::metric_value(&metrics, "bulwark_web_cache_requests_total", &[("outcome", "miss")]),
        2.0
    );
}

#[test]
fn stale_pages_answer_while_the_app_is_stopped() {
    let (mut app, web, _root) = cached_site(&[]);
    let http = web.addr("http");
    let first = get(http, "/api/stale").unwrap();
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
    // Stale at once: the next request asks the app again.
    assert_eq!(get(http, "/api/stale").unwrap().text(), "page /api/stale #2\n");
    app.stop();
    for _ in 0..5 {
        let r = get(http, "/api/stale").unwrap();
        assert_eq!((r.status, r.header("x-cache")), (200, Some("STALE")), "{}", r.text());
        assert_eq!(r.text(), "page /api/stale #2\n");
    }
    // Never cached: the app's absence shows.
    assert_eq!(get(http, "/api/other").unwrap().status, 502);
}

/// Wait (bounded) until `/metrics` shows `value` for the metric.
fn wait_for_metric(http: SocketAddr, name: &str, labels: &[(&str, &str)], value: f64) {
    for _ in 0..500 {
        let metrics = get(http, "/metrics").unwrap().text();
        if bulwark_testkit::metric_value(&metrics, name, labels) >= value {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{name}{labels:?} never reached {value}");
}

#[test]
fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let (app, web, _root) = cached_site(&[]);
    let http = web.addr("http");
    let first = get(http, "/api/swr").unwrap();
    assert_eq!((first.header("x-cache"), first.text()), (Some("MISS"), "page /api/swr #1\n".to_string()));

    // The app now holds every request until the test lets it go: the
    // stale page must come back without waiting for it.
    app.gated.store(true, Ordering::SeqCst);
    app.fresh.store(true, Ordering::SeqCst);
    let stale = get(http, "/api/swr").unwrap();
    assert_eq!((stale.header("x-cache"), stale.text()), (Some("STALE"), "page /api/swr #1\n".to_string()));
    for _ in 0..500 {
        if app.hits.load(Ordering::SeqCst) == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(app.hits.load(Ordering::SeqCst), 2, "one background request");
    // While it is held, more requests get the stale page and send nothing.
    for _ in 0..5 {
        let r = get(http, "/api/swr").unwrap();
        assert_eq!((r.header("x-cache"), r.text()), (Some("STALE"), "page /api/swr #1\n".to_string()));
    }
    assert_eq!(app.hits.load(Ordering::SeqCst), 2, "the refresh is collapsed");

    app.gate.add_permits(1);
    wait_for_metric(http, "bulwark_web_cache_refreshes_total", &[("result", "done")], 1.0);
    let hit = get(http, "/api/swr").unwrap();
    assert_eq!((hit.header("x-cache"), hit.text()), (Some("HIT"), "page /api/swr #2\n".to_string()));
    assert_eq!(app.hits.load(Ordering::SeqCst), 2, "exactly one upstream request for the refresh");
}

#[test]
fn a_failed_background_refresh_keeps_the_stale_page() {
    let (mut app, web, _root) = cached_site(&[]);
    let http = web.addr("http");
    assert_eq!(get(http, "/api/swr").unwrap().header("x-cache"), Some("MISS"));
    app.stop();
    // Each request gets the stale page at once; refreshes fail behind it.
    for _ in 0..500 {
        let r = get(http, "/api/swr").unwrap();
        assert_eq!((r.status, r.header("x-cache")), (200, Some("STALE")), "{}", r.text());
        assert_eq!(r.text(), "page /api/swr #1\n");
        let metrics = get(http, "/metrics").unwrap().text();
        if bulwark_testkit::metric_value(&metrics, "bulwark_web_cache_refreshes_total", &[("result", "failed")]) >= 2.0
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no background refresh failed");
}

#[test]
fn a_head_miss_stores_the_whole_page() {
    let (app, web, _root) = cached_site(&[]);
    let http = web.addr("http");
    // Read to the end: a HEAD answer has no body whatever its length says.
    let mut conn = std::net::TcpStream::connect(http).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    conn.write_all(b"HEAD /api/slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut head = String::new();
    conn.read_to_string(&mut head).unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200") && head.ends_with("\r\n\r\n"), "{head}");
    assert!(head.contains("\r\nx-cache: miss\r\n") && head.contains("\r\ncontent-length: 18\r\n"), "{head}");
    let page = get(http, "/api/slow").unwrap();
    assert_eq!((page.header("x-cache"), page.text()), (Some("HIT"), "page /api/slow #1\n".to_string()));
    assert_eq!(app.hits.load(Ordering::SeqCst), 1);
}

/// Background refreshes are bounded (64 at once, the cache's bound): a
/// client that finds many stale keys quickly cannot make the web tier
/// hold a request (and up to `max_object_bytes`) per key on the app at
/// once. Past the bound, the request that finds a stale page refreshes
/// it itself and waits, as past the stale-while-revalidate window.
#[test]
fn background_refreshes_are_bounded() {
    const BOUND: u64 = 64;
    let (app, web, _root) = cached_site(&[]);
    let http = web.addr("http");
    for n in 0..=BOUND {
        assert_eq!(get(http, &format!("/api/swr?n={n}")).unwrap().header("x-cache"), Some("MISS"));
    }
    app.gated.store(true, Ordering::SeqCst);
    for n in 0..BOUND {
        let r = get(http, &format!("/api/swr?n={n}")).unwrap();
        assert_eq!(r.header("x-cache"), Some("STALE"), "{n}");
    }
    let wait_for_hits = |hits: u64| {
        for _ in 0..1000 {
            if app.hits.load(Ordering::SeqCst) >= hits {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the app never had {hits} requests");
    };
    wait_for_hits(2 * BOUND + 1);
    // One more stale key: its request goes to the app and waits.
    let last = std::thread::spawn(move || get(http, &format!("/api/swr?n={BOUND}")).unwrap());
    wait_for_hits(2 * BOUND + 2);
    app.gate.add_permits(BOUND as usize + 1);
    let last = last.join().unwrap();
    assert_eq!(
        (last.header("x-cache"), last.text()),
        (Some("MISS"), format!("page /api/swr #{}\n", 2 * BOUND + 2)),
        "refreshed in the foreground"
    );
    wait_for_metric(http, "bulwark_web_cache_refreshes_total", &[("result", "done")], BOUND as f64);
}

/// A background refresh whose answer never ends (the app sends its head,
/// then nothing) has no client to give up on it: it is abandoned after the
/// route's `server_timeout`, counted as failed, and the key's next request
/// may refresh it again; until then the stale page answers.
#[test]
fn a_background_refresh_that_never_ends_is_abandoned() {
    let (app, web, _root) = cached_site(&[("server_timeout", "\"1s\"")]);
    let http = web.addr("http");
    assert_eq!(get(http, "/api/hang").unwrap().header("x-cache"), Some("MISS"));
    app.gated.store(true, Ordering::SeqCst);
    let stale = get(http, "/api/hang").unwrap();
    assert_eq!((stale.header("x-cache"), stale.text()), (Some("STALE"), "page /api/hang #1\n".to_string()));
    wait_for_metric(http, "bulwark_web_cache_refreshes_total", &[("result", "failed")], 1.0);
    assert_eq!(get(http, "/api/hang").unwrap().header("x-cache"), Some("STALE"));
    for _ in 0..500 {
        if app.hits.load(Ordering::SeqCst) == 3 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no second refresh: {} requests", app.hits.load(Ordering::SeqCst));
}

/// A stale page found by a request with `Range` (or a condition) is
/// refreshed for the cache, not for that client: the background request
/// asks for the whole page, and the next request is a hit on it.
#[test]
fn a_range_request_refreshes_the_whole_page_in_the_background() {
    let (app, web, _root) = cached_site(&[]);
    let http = web.addr("http");
    let first = get(http, "/api/swr").unwrap();
    assert_eq!((first.header("x-cache"), first.text()), (Some("MISS"), "page /api/swr #1\n".to_string()));

    app.fresh.store(true, Ordering::SeqCst);
    let conditional = [("Range", "bytes=0-3"), ("If-None-Match", "\"v1\"")];
    let stale = request(http, "GET", "/api/swr", &conditional, b"").unwrap();
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    wait_for_metric(http, "bulwark_web_cache_refreshes_total", &[("result", "done")], 1.0);
    let hit = get(http, "/api/swr").unwrap();
    assert_eq!((hit.header("x-cache"), hit.text()), (Some("HIT"), "page /api/swr #2\n".to_string()));
    assert_eq!(app.hits.load(Ordering::SeqCst), 2);
}
