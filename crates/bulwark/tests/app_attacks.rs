//! Attacks on the guestbook through `bulwark up` (real processes, HTTPS
//! through the lb), under a normal load of the home page and the API that
//! must keep answering 200 throughout:
//! - forged read-your-writes cookies (`1.18446744073709551615`, unsigned)
//!   are ignored by the app;
//! - a cookie signed with the cluster's key but naming a write far beyond
//!   the log is refused by the database at once (`bad_token`), and the
//!   read goes to the primary without it: no wait, no 503, no ejection.
//!
//! And the guestbook's answers carry security headers, its page a
//! Content-Security-Policy, its posts must be JSON from its own site, and
//! its cookie is `Secure` over HTTPS.
use bulwark_db_api::Token;
use bulwark_testkit::Process;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

struct Site {
    base: String,
    resolve: String,
    ca: String,
}

impl Site {
    /// GET every path in one curl (keep-alive, `parallel` at once when
    /// above 1); the status of each.
    fn get_all(&self, paths: &[&str], headers: &[String], parallel: usize) -> Vec<u16> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "60", "--cacert", &self.ca, "--resolve", &self.resolve, "-w", "%{http_code}\n"]);
        if parallel > 1 {
            cmd.args(["-Z", "--parallel-max", &parallel.to_string()]);
        }
        for h in headers {
            cmd.args(["-H", h]);
        }
        for p in paths {
            cmd.args(["-o", "/dev/null", &format!("{}{p}", self.base)]);
        }
        let out = cmd.output().expect("curl installed");
        let codes: Vec<u16> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().parse().unwrap_or(0)).collect();
        assert_eq!(codes.len(), paths.len(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        codes
    }

    /// One request; (status, lower-case headers, body).
    fn call(&self, args: &[&str], path: &str) -> (u16, String, String) {
        let out = Command::new("curl")
            .args(["-sS", "-i", "--max-time", "20", "--cacert", &self.ca, "--resolve", &self.resolve])
            .args(args)
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, head.to_ascii_lowercase(), body.to_string())
    }
}

fn up() -> (tempfile::TempDir, Process, Arc<Site>) {
    let data = tempfile::tempdir().unwrap();
    let up = Process::up_built_in(data.path());
    let https: SocketAddr = up.addr("lb1.https");
    let site = Arc::new(Site {
        base: format!("https://localhost:{}", https.port()),
        resolve: format!("localhost:{}:127.0.0.1", https.port()),
        ca: data.path().join("tls/cert.pem").display().to_string(),
    });
    bulwark_testkit::wait_until("the guestbook answers", || site.get_all(&["/api/messages"], &[], 1) == [200]);
    (data, up, site)
}

#[test]
fn guestbook_answers_are_locked_down_and_posts_come_only_from_its_page() {
    let (_data, mut up, site) = up();
    let (code, head, _) = site.call(&[], "/api/messages");
    assert_eq!(code, 200);
    for h in [
        "content-security-policy: default-src 'none'; frame-ancestors 'none'",
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
    ] {
        assert!(head.contains(h), "{h} missing: {head}");
    }
    // The page allows scripts and styles from the site only; they are there.
    let (code, _, page) = site.call(&[], "/");
    assert_eq!(code, 200);
    assert!(page.contains("Content-Security-Policy") && page.contains("script-src 'self'"), "{page}");
    assert!(!page.contains("<script>") && !page.contains("<style>"), "inline code in the page");
    for asset in ["/guestbook.js", "/guestbook.css"] {
        assert_eq!(site.call(&[], asset).0, 200, "{asset}");
    }
    // A cross-site form post (form encoding, or a browser saying so) is
    // refused; the page's own JSON post is stored, its cookie Secure.
    let form = ["-H", "Content-Type: application/x-www-form-urlencoded", "--data", "author=eve&text=csrf"];
    assert_eq!(site.call(&form, "/api/messages").0, 415);
    let json = r#"{"author":"ann","text":"hello"}"#;
    let cross = ["-H", "Content-Type: application/json", "-H", "Sec-Fetch-Site: cross-site", "--data", json];
    assert_eq!(site.call(&cross, "/api/messages").0, 403);
    let own = ["-H", "Content-Type: application/json", "-H", "Sec-Fetch-Site: same-origin", "--data", json];
    let (code, head, body) = site.call(&own, "/api/messages");
    assert_eq!(code, 201, "{body}");
    let cookie = head.lines().find(|l| l.starts_with("set-cookie: bulwark_rw=")).expect("cookie set");
    assert!(cookie.contains("; secure") && cookie.contains("; httponly"), "{cookie}");
    assert!(up.terminate().success());
}

#[test]
fn forged_read_your_writes_cookies_do_not_take_the_site_down() {
    let (data, mut up, site) = up();

    // The normal load: the home page and the API, until the attacks end.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (site, stop) = (site.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut answered, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                for code in site.get_all(&["/", "/api/messages", "/", "/api/messages?limit=5"], &[], 1) {
                    answered += 1;
                    if code != 200 {
                        failed.push(code);
                    }
                }
            }
            (answered, failed)
        })
    };

    let paths = vec!["/api/messages"; 120];
    // Unsigned, as in the attack found on the running site.
    let forged = site.get_all(&paths, &["Cookie: bulwark_rw=1.18446744073709551615".to_string()], 20);
    // Signed with the cluster's key (as a thief of the app→db secret
    // could), far beyond the log, and of a term the cluster never had.
    let secret = std::fs::read_to_string(data.path().join("secrets/app-db")).unwrap();
    let key = bulwark_app::CookieKey::from_secret(secret.trim());
    let beyond = key.sign(Token { term: 1, index: u64::MAX });
    let future = key.sign(Token { term: u64::MAX, index: 1 });
    let signed_beyond = site.get_all(&paths, &[format!("Cookie: bulwark_rw={beyond}")], 20);
    let signed_future = site.get_all(&paths, &[format!("Cookie: bulwark_rw={future}")], 20);
    // And the site is still whole afterwards.
    let after = site.get_all(&["/", "/api/messages"], &[], 1);
    stop.store(true, Ordering::SeqCst);
    let (answered, failed) = load.join().unwrap();

    let errors = |codes: &[u16]| codes.iter().filter(|c| **c != 200).count();
    assert_eq!(errors(&forged), 0, "unsigned forged cookie: {forged:?}\n{}", up.logs());
    assert_eq!(errors(&signed_beyond), 0, "signed cookie beyond the log: {signed_beyond:?}\n{}", up.logs());
    assert_eq!(errors(&signed_future), 0, "signed cookie of a future term: {signed_future:?}\n{}", up.logs());
    assert_eq!(after, [200, 200]);
    assert!(answered >= 4, "the load ran: {answered}");
    assert!(failed.is_empty(), "{} of {answered} normal requests failed: {failed:?}", failed.len());
    assert!(up.terminate().success());
}
