//! The dashboard page end to end: a real `bulwark lb` with an admin
//! listener, real backends, watched app nodes, and a real headless Chromium
//! loading `/dashboard` and following health changes live.
use bulwark_testkit::browser::{Browser, Page};
use bulwark_testkit::config::{quick_http_check, AlertRules, BackendConfig, FrontendConfig, LbConfig, NodeKind};
use bulwark_testkit::{get, Backend, Process};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "dash-t0ken";

/// A stand-in for a database node's status endpoint (the lb polls
/// `/v1/status`): answers every request with `status` as JSON.
fn db_status(status: serde_json::Value) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let body = status.to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// `target/` of this build (the test exe is `target/<profile>/deps/<name>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

fn state_of(name: &str) -> String {
    format!("(document.querySelector('[data-node=\"{name}\"]') || {{dataset: {{}}}}).dataset.state")
}

fn wait_state(page: &Page, name: &str, state: &str, limit: Duration) {
    page.wait_for_within(&format!("{} === '{state}'", state_of(name)), limit);
}

#[test]
fn dashboard_follows_a_real_lb() {
    let web1 = Backend::start("web1");
    let mut web2 = Backend::start("web2");
    let app1 = Backend::start("app1");
    let app2 = Backend::start("app2");
    let db1 = db_status(
        serde_json::json!({"role": "leader", "term": 3, "applied_index": 1042, "lag": {"entries": 0, "seconds": 0.0}}),
    );
    let db2 = db_status(
        serde_json::json!({"role": "follower", "term": 3, "applied_index": 1039, "lag": {"entries": 3, "seconds": 0.4}}),
    );
    let cfg = LbConfig::new()
        .admin_str("token", TOKEN)
        .admin_str("site", "foobar")
        .admin_str("name", "lb1")
        .alerts(&AlertRules { for_duration: Duration::from_millis(200), ..AlertRules::default() })
        .watch("app1", NodeKind::App, "server1", app1.addr)
        .watch("db1", NodeKind::Db, "server1", db1)
        .watch("app2", NodeKind::App, "server2", app2.addr)
        .watch("db2", NodeKind::Db, "server2", db2)
        .frontend(FrontendConfig::http("www", "web"))
        .backend(
            BackendConfig::new("web")
                .health_check(&quick_http_check("/health"))
                .server("web1", web1.addr)
                .server("web2", web2.addr),
        );
    let mut lb = Process::start("lb", &cfg.to_toml());
    let admin = lb.addr("admin");
    let www = lb.addr("www");
    // The page itself is open; its data is behind the token.
    let page_resp = get(admin, "/dashboard").unwrap();
    assert_eq!(page_resp.status, 200);
    assert!(page_resp.header("content-type").unwrap_or("").starts_with("text/html"), "{page_resp:?}");
    assert_eq!(get(admin, "/api/overview").unwrap().status, 401);
    // Every admin answer is hardened for browsers; the page allows only its
    // own inline script and style, by hash.
    let csp = page_resp.header("content-security-policy").unwrap_or("").to_string();
    assert!(csp.contains("script-src 'sha256-") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    for path in ["/dashboard", "/api/overview", "/health", "/nowhere"] {
        let r = get(admin, path).unwrap();
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}: {r:?}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{path}: {r:?}");
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}: {r:?}");
        assert!(r.header("content-security-policy").is_some_and(|v| v.contains("default-src 'none'")), "{path}");
    }

    // Steady traffic through the lb, so rates and charts have something to show.
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop_traffic.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = get(www, "/");
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let browser = Browser::launch();
    let page = browser.open(&format!("http://{admin}/dashboard?token={TOKEN}"));
    // The token went into the Authorization header, not into the page's URL.
    page.wait_for("document.body.dataset.updates >= 1");
    let href = page.eval("location.href");
    assert!(!href.as_str().unwrap().contains(TOKEN), "{href}");
    assert_eq!(page.eval("getComputedStyle(document.getElementById('offline')).display"), "none");

    // Topology: both web servers up, grouped by host with their app and db.
    wait_state(&page, "web1", "up", Duration::from_secs(15));
    wait_state(&page, "web2", "up", Duration::from_secs(15));
    for (host, names) in [("server1", ["web1", "app1", "db1"]), ("server2", ["web2", "app2", "db2"])] {
        for n in names {
            page.wait_for(&format!("document.querySelector('[data-host=\"{host}\"] [data-node=\"{n}\"]') !== null"));
        }
    }
    wait_state(&page, "app1", "healthy", Duration::from_secs(15));
    page.wait_for("document.querySelector('[data-node=\"db1\"]').dataset.role === 'primary'");
    page.wait_for("document.querySelector('[data-node=\"db2\"]').dataset.role === 'replica'");
    assert!(page
        .eval("document.querySelector('[data-node=\"db2\"]').innerText")
        .as_str()
        .unwrap()
        .contains("3 entries"));
    assert_eq!(page.eval("document.title"), "foobar · Bulwark dashboard");
    // Rates reach the page: a chart line per server and a non-zero req/s.
    page.wait_for("document.querySelectorAll('#chart-rps path').length === 2");
    page.wait_for("+document.getElementById('k-rps').textContent.replace(/,/g, '') > 0");
    // The page works under its CSP: the script runs (above), the legend
    // colours are applied, and the browser does enforce the policy (a
    // script the policy does not name is not run).
    page.wait_for(
        "getComputedStyle(document.querySelector('#chart-rps .legend i')).backgroundColor !== 'rgba(0, 0, 0, 0)'",
    );
    let injected = page.eval(
        "(function () { var s = document.createElement('script'); s.textContent = 'window.injected = 1';
          document.head.appendChild(s); return window.injected === undefined; })()",
    );
    assert_eq!(injected, true, "an inline script outside the policy ran");

    // A backend dies: its box turns down within a few seconds, the other stays up.
    web2.stop();
    wait_state(&page, "web2", "down", Duration::from_secs(10));
    assert_eq!(page.eval(&state_of("web1")), "up");
    assert_eq!(page.eval("document.querySelector('[data-node=\"web2\"]').classList.contains('bad')"), true);
    page.wait_for("/web2 \\(web\\) is DOWN/.test(document.getElementById('events').innerText)");
    page.wait_for("document.querySelector('#alerts [data-alert=\"ServerDown\"]') !== null");
    // Let a couple more samples land so the charts show the drop.
    let seen = page.eval("+document.body.dataset.updates").as_u64().unwrap();
    page.wait_for(&format!("+document.body.dataset.updates >= {}", seen + 2));
    let shot = target_dir().join("dashboard-test.png");
    page.screenshot(&shot);
    eprintln!("dashboard screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // Without the token the page says what is missing instead of showing stale data.
    let tokenless = browser.open(&format!("http://{admin}/dashboard"));
    tokenless.wait_for("getComputedStyle(document.getElementById('offline')).display !== 'none'");
    let why = tokenless.eval("document.getElementById('offline').innerText");
    assert!(why.as_str().unwrap().contains("?token="), "{why}");
    assert_eq!(tokenless.eval("document.querySelectorAll('[data-node]').length"), 0);
    // ... and asks for it: a token typed into the form brings the data.
    tokenless.wait_for("getComputedStyle(document.getElementById('token-form')).display !== 'none'");
    tokenless.eval(&format!(
        "document.getElementById('token-input').value = '{TOKEN}'; document.getElementById('token-form').requestSubmit(); 1"
    ));
    tokenless.wait_for("document.querySelector('[data-node=\"web1\"]') !== null");
    assert!(!tokenless.eval("location.href").as_str().unwrap().contains(TOKEN));
    assert!(tokenless.errors().is_empty(), "JavaScript errors: {:?}", tokenless.errors());
    drop(tokenless);

    // The lb goes away: the page says so and keeps retrying.
    stop_traffic.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    lb.kill();
    page.wait_for_within(
        "getComputedStyle(document.getElementById('offline')).display !== 'none'",
        Duration::from_secs(10),
    );
    assert!(page
        .eval("document.getElementById('offline').innerText")
        .as_str()
        .unwrap()
        .contains("cannot reach the load balancer"));
    page.screenshot(&target_dir().join("dashboard-test-offline.png"));
    assert!(page.errors().is_empty(), "JavaScript errors on the dashboard: {:?}", page.errors());
}
