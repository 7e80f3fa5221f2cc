//! The Python example's site through the lb over HTTPS (curl), and a
//! steady load of GETs and keyed POSTs that keeps every failure.
#![allow(dead_code)]
use bulwark_testkit::wait_until;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-guestbook")
}

/// Copy the tree `from` to `to` (plain files and directories).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            if e.file_name() != "__pycache__" {
                copy_dir(&e.path(), &target);
            }
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[derive(Clone)]
pub struct Site {
    pub url: String,
    pub resolve: String,
    pub ca: String,
}

impl Site {
    /// The site of `up`'s HTTPS listener `https` (its self-signed certificate under `data`).
    pub fn new(https: std::net::SocketAddr, data: &Path) -> Site {
        Site {
            url: format!("https://localhost:{}", https.port()),
            resolve: format!("localhost:{}:127.0.0.1", https.port()),
            ca: data.join("tls/cert.pem").display().to_string(),
        }
    }

    pub fn curl(&self, jar: &Path, extra: &[&str], path: &str) -> (u16, String) {
        let jar = jar.to_str().expect("a UTF-8 path");
        let site = ["--cacert", &self.ca, "--resolve", &self.resolve, "-b", jar, "-c", jar];
        let url = format!("{}{path}", self.url);
        let answer = bulwark_testkit::curl(&[&site[..], extra, &[&url]].concat());
        (answer.status, format!("{}{}", answer.body, answer.stderr))
    }

    pub fn get(&self, jar: &Path, path: &str) -> (u16, String) {
        self.curl(jar, &[], path)
    }

    pub fn post(&self, jar: &Path, key: &str, author: &str, text: &str) -> (u16, String) {
        let body = serde_json::json!({ "author": author, "text": text }).to_string();
        let key = format!("Idempotency-Key: {key}");
        self.curl(jar, &["-H", "Content-Type: application/json", "-H", &key, "--data", &body], "/api/messages")
    }
}

/// GETs and keyed POSTs through the lb until stopped; every failure is kept.
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(site: &Site, dir: &Path) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for kind in ["get", "post"] {
            let (site, stop, done, failures) = (site.clone(), stop.clone(), done.clone(), failures.clone());
            let jar = dir.join(format!("load-{kind}.txt"));
            threads.push(std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let (code, body) = if kind == "get" {
                        site.get(&jar, "/api/messages?limit=5")
                    } else {
                        site.post(&jar, &format!("load-{i}"), "load", &format!("under load {i}"))
                    };
                    let want = if kind == "get" { 200 } else { 201 };
                    if code != want {
                        failures.lock().unwrap().push(format!("{kind} {i}: {code} {body}"));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        Load { stop, done, failures, threads }
    }

    /// Wait until `n` more requests were answered (or failed).
    pub fn wait_requests(&self, n: u64) {
        let target = self.done.load(Ordering::Relaxed) + n;
        wait_until("requests under load", || self.done.load(Ordering::Relaxed) >= target);
    }

    pub fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let f = self.failures.lock().unwrap().clone();
        f
    }
}
