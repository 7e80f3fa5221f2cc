//! Attacks from the internet against `bulwark up` (lb → 2 web → 2 app →
//! 3 db, as real processes), under a normal GET load of the static page
//! and the API that must keep answering 200 throughout:
//! - 30 POSTs with `Transfer-Encoding: chunked` and the chunk size `zz`
//!   over HTTPS to the lb, and 30 straight to a web server: the attackers
//!   get 4xx, no server is blamed, nothing is ejected;
//! - `/metrics` asked through the lb does not answer with the web tier's
//!   metrics.
use bulwark_testkit::tls::tls_raw_request;
use bulwark_testkit::{raw_request, wait_until, Process};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

fn https_get(addr: SocketAddr, ca: &Path, path: &str) -> std::io::Result<bulwark_testkit::HttpResponse> {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls_raw_request(addr, "localhost", ca, raw.as_bytes())
}

/// GETs of the static page and the API, one after the other, from
/// `threads` clients until `stop`; counts answers by outcome.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, ca: PathBuf, threads: usize) -> Load {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let (ok, failed, stop, ca) = (ok.clone(), failed.clone(), stop.clone(), ca.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        for path in ["/", "/api/messages"] {
                            match https_get(addr, &ca, path) {
                                Ok(r) if r.status == 200 => {
                                    ok.fetch_add(1, Ordering::SeqCst);
                                }
                                Ok(r) => failed.lock().unwrap().push(format!("{path}: {} {}", r.status, r.text())),
                                Err(e) => failed.lock().unwrap().push(format!("{path}: {e}")),
                            }
                        }
                    }
                })
            })
            .collect();
        Load { ok, failed, stop, threads }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Stop and return the failures.
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.failed).unwrap().into_inner().unwrap()
    }
}

fn bad_chunk(extra_header: &str) -> Vec<u8> {
    format!(
        "POST /api/messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extra_header}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn malformed_chunked_bodies_are_the_attackers_problem_only() {
    let data = tempfile::tempdir().unwrap();
    let up = Process::up_built_in(data.path());
    let https = up.addr("lb1.https");
    let ca = data.path().join("tls/cert.pem");
    let secret = std::fs::read_to_string(data.path().join("secrets/lb-web")).unwrap().trim().to_string();
    let token = std::fs::read_to_string(data.path().join("admin.token")).unwrap().trim().to_string();
    for path in ["/", "/api/messages"] {
        wait_until(&format!("{path} answers"), || https_get(https, &ca, path).is_ok_and(|r| r.status == 200));
    }

    let load = Load::start(https, ca.clone(), 2);
    wait_until("the load is flowing", || load.ok() >= 20);

    // The attack: over HTTPS through the lb, and straight to a web server
    // (with the lb→web secret, as the lb's own requests carry it).
    let mut attacked = Vec::new();
    for _ in 0..30 {
        attacked.push(tls_raw_request(https, "localhost", &ca, &bad_chunk("")).map(|r| r.status));
        let to_web = bad_chunk(&format!("X-Bulwark-Cluster: {secret}\r\n"));
        attacked.push(raw_request(up.addr("web1.http"), &to_web).map(|r| r.status));
    }
    // The load goes on well past the attack: enough for ejections and
    // health checks (100s of ms) to have turned the site to 503s.
    let after = load.ok();
    wait_until("the load continued after the attack", || load.ok() >= after + 200);
    let failures = load.finish();

    let statuses: Vec<String> = attacked.iter().map(|r| format!("{r:?}")).collect();
    assert!(
        attacked.iter().all(|r| matches!(r, Ok(s) if (400..500).contains(s))),
        "every attacker gets a 4xx: {statuses:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of the normal requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    // No server was blamed for the clients' bodies.
    let stats = {
        let raw =
            format!("GET /stats HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
        raw_request(up.addr("lb1.admin"), raw.as_bytes()).unwrap().text()
    };
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap_or_else(|_| panic!("{stats}"));
    for s in v["backends"][0]["servers"].as_array().unwrap() {
        assert_eq!(s["state"], "up", "{s}");
    }

    // The web tier's metrics are not served through the lb.
    let r = https_get(https, &ca, "/metrics").unwrap();
    assert!(!r.text().contains("bulwark_web_"), "web metrics through the lb: {}", r.text());
}
