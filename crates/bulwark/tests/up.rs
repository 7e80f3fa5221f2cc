//! `bulwark up`: the whole default topology as real processes on free
//! ports; the guestbook works through the lb (HTTPS with the generated
//! certificate); stopping app1 and the database primary leaves the site
//! working; shutdown leaves no child process behind.
use bulwark_testkit::{bulwark_bin, wait_until, Process};
use std::net::SocketAddr;
use std::process::Command;

fn curl(args: &[&str]) -> (u16, String) {
    let answer = bulwark_testkit::curl(args);
    (answer.status, answer.body)
}

struct Site {
    url: String,
    resolve: String,
    ca: String,
    jar: String,
}

impl Site {
    /// curl `path` of the site with `args` before the URL: the site's CA,
    /// its name resolved to the lb, the cookie jar read and written.
    fn curl(&self, args: &[&str], path: &str) -> (u16, String) {
        let site = ["--cacert", &self.ca, "--resolve", &self.resolve, "-b", &self.jar, "-c", &self.jar];
        let url = format!("{}{path}", self.url);
        curl(&[&site[..], args, &[&url]].concat())
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.curl(&[], path)
    }

    fn post(&self, author: &str, text: &str) -> (u16, String) {
        let body = serde_json::json!({ "author": author, "text": text }).to_string();
        self.curl(&["-H", "Content-Type: application/json", "--data", &body], "/api/messages")
    }
}

fn control(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(bulwark_bin()).args(args).arg("--data-dir").arg(dir).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false)
}

#[test]
fn default_topology_serves_the_guestbook_and_survives_failures() {
    let data = tempfile::tempdir().unwrap();
    let mut up = Process::up_built_in(data.path());
    let https: SocketAddr = up.addr("lb1.https");
    let site = Site {
        url: format!("https://localhost:{}", https.port()),
        resolve: format!("localhost:{}:127.0.0.1", https.port()),
        ca: data.path().join("tls/cert.pem").display().to_string(),
        jar: data.path().join("cookies.txt").display().to_string(),
    };
    // The page, over HTTPS with the generated certificate.
    let (code, page) = site.get("/");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("foobar guestbook"));
    // Plain HTTP redirects to HTTPS.
    let (code, _) = curl(&[&format!("http://{}/", up.addr("lb1.http"))]);
    assert_eq!(code, 308);
    // Post, then read it back (read-your-writes cookie).
    let (code, body) = site.post("ann", "first post");
    assert_eq!(code, 201, "{body}");
    let (code, body) = site.get("/api/messages");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("first post"), "{body}");

    // Inner tiers refuse requests that did not come through the tier in
    // front (no cluster secret): web, app and the db API.
    for (listener, path) in [("web1.http", "/"), ("app2.http", "/api/messages"), ("db1.api", "/v1/status")] {
        let r = bulwark_testkit::get(up.addr(listener), path).unwrap();
        assert_eq!(r.status, 401, "{listener}{path} answered without the secret: {}", r.text());
    }

    // app1 stopped: the site keeps working.
    let status = control(data.path(), &["stop", "app1"]);
    assert!(status.contains("app1: stopped"), "{status}");
    for i in 0..10 {
        let (code, body) = site.post("bob", &format!("without app1 {i}"));
        assert_eq!(code, 201, "{body}");
    }
    let (_, body) = site.get("/api/messages?limit=50");
    assert!(body.contains("without app1 9"), "{body}");
    assert!(!body.contains("\"served_by\":\"app1\""), "{body}");

    // The database primary stopped: a new one is elected, nothing is lost.
    let dbs = ["db1", "db2", "db3"];
    let primary = dbs
        .iter()
        .find(|d| {
            bulwark_testkit::get(up.addr(&format!("{d}.api")), "/primary").map(|r| r.status == 200).unwrap_or(false)
        })
        .expect("a primary");
    control(data.path(), &["stop", primary]);
    wait_until("writes accepted again", || site.post("cy", "after failover").0 == 201);
    let (_, body) = site.get("/api/messages?limit=100");
    for needle in ["first post", "without app1 0", "without app1 9", "after failover"] {
        assert!(body.contains(needle), "{needle} missing: {body}");
    }
    // `status` shows the new primary once the lb's once-a-second poll saw it.
    wait_until("status shows a primary", || control(data.path(), &["status"]).contains("primary"));
    control(data.path(), &["start", primary]);
    control(data.path(), &["start", "app1"]);

    // Shutdown: exit 0, every child gone.
    let children: Vec<i32> = std::fs::read_to_string(format!("/proc/{}/task/{}/children", up.pid(), up.pid()))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    // 8 roles, the lb with a second process on the public ports.
    assert_eq!(children.len(), 9, "9 role processes: {children:?}");
    // Each role leads its own process group: a terminal's Ctrl-C reaches
    // only the supervisor, which stops the roles in order.
    for &pid in &children {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let pgrp: i32 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert_eq!(pgrp, pid, "role {pid} shares a process group");
    }
    // Web and app servers count their traffic in Prometheus text (behind
    // the monitoring token as a bearer token, which the lb never adds).
    let monitor = std::fs::read_to_string(data.path().join("secrets/monitor")).unwrap();
    let scrape = |listener: &str| {
        let raw = format!(
            "GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            monitor.trim()
        );
        let r = bulwark_testkit::raw_request(up.addr(listener), raw.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{listener}: {}", r.text());
        r.text()
    };
    let web: f64 = ["web1.http", "web2.http"]
        .iter()
        .map(|w| {
            bulwark_testkit::metric_value(
                &scrape(w),
                "bulwark_web_responses_total",
                &[("kind", "proxy"), ("code", "2xx")],
            )
        })
        .sum();
    assert!(web >= 10.0, "web proxy responses counted: {web}");
    let posts = bulwark_testkit::metric_value(
        &scrape("app2.http"),
        "bulwark_app_requests_total",
        &[("route", "post_message"), ("code", "2xx")],
    );
    assert!(posts >= 1.0, "app2 posts counted: {posts}");
    assert_eq!(bulwark_testkit::get(up.addr("web1.http"), "/metrics").unwrap().status, 401);

    // No hop secret and not the admin token ever reach a log.
    let mut secrets = vec![std::fs::read_to_string(data.path().join("admin.token")).unwrap()];
    for hop in ["lb-web", "web-app", "app-db", "db-peer", "monitor"] {
        secrets.push(std::fs::read_to_string(data.path().join("secrets").join(hop)).unwrap());
    }
    for entry in std::fs::read_dir(data.path().join("logs")).unwrap() {
        let log = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(secrets.iter().all(|s| !log.contains(s.trim())), "a secret leaked into a log");
    }
    let exit = up.terminate();
    assert!(exit.success(), "{exit:?}\n{}", up.logs());
    for pid in children {
        assert!(!alive(pid), "child {pid} still alive after shutdown");
    }
}

#[test]
fn taken_ports_are_reported_with_the_role_that_needs_them() {
    let data = tempfile::tempdir().unwrap();
    // Hold a port, and ask `up` to use it as the lb's.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let out = Command::new(bulwark_bin())
        .args(["up", "--port-base", &port.to_string(), "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port} (lb1 listener)")), "{err}");
    assert!(err.contains("--port-base"), "{err}");
    // A bad topology file names the line and key.
    let topo = data.path().join("topo.toml");
    std::fs::write(
        &topo,
        "port_base = 9000\n[[host]]\nname = \"a\"\nrole = [{ name = \"lb1\", kind = \"balancer\" }]\n",
    )
    .unwrap();
    let out = Command::new(bulwark_bin()).args(["up", "-c"]).arg(&topo).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("topo.toml:4") && err.contains("balancer"), "{err}");
}

/// A port base whose derived ports (base .. base+40) are free now, below
/// the kernel's ephemeral range (32768 and up), so that the free ports
/// other tests get from port 0 can never fall in it.
fn free_port_base() -> u16 {
    let seed = std::process::id() as u16;
    for i in 0..200u16 {
        let base = 20_000 + (seed.wrapping_add(i.wrapping_mul(97)) % 12_000);
        let all_free =
            (base..=base + 40).all(|p| std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], p))).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free block of 41 ports");
}

/// With fixed ports the default topology runs two lb processes on the
/// public ports (SO_REUSEPORT): with the first one down, crashed or
/// stopped, the second answers every request.
#[test]
fn a_second_lb_process_answers_while_the_first_is_down() {
    let data = tempfile::tempdir().unwrap();
    let base = free_port_base();
    let mut cmd = Command::new(bulwark_bin());
    cmd.args(["up", "--port-base", &base.to_string(), "--data-dir"]).arg(data.path());
    let mut up = Process::spawn(cmd, tempfile::tempdir().unwrap(), data.path().join("none"));
    let http = up.addr("lb1.http");
    assert_eq!(up.addr("lb1-2.http"), http, "both processes on one port");
    let answers = |n: usize| (0..n).all(|_| bulwark_testkit::get(http, "/").map(|r| r.status == 308).unwrap_or(false));
    assert!(answers(5));

    // kill -9 of the first process: the site keeps answering, whether or
    // not the supervisor has restarted it yet.
    let children: Vec<i32> = std::fs::read_to_string(format!("/proc/{}/task/{}/children", up.pid(), up.pid()))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let lb1 = *children
        .iter()
        .find(|&&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().contains("config/lb1.toml")
        })
        .expect("lb1's process");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(lb1), nix::sys::signal::Signal::SIGKILL).unwrap();
    // Once it is gone its sockets are closed; a connection that raced into
    // its accept queue before that would be reset with it.
    wait_until("lb1 to be gone", || !alive(lb1));
    assert!(answers(20), "a request failed after lb1 was killed");
    wait_until("the supervisor to restart lb1", || {
        control(data.path(), &["status"]).lines().any(|l| l.starts_with("lb1 ") && l.contains(" ready "))
    });

    // With the first process stopped, only the second can answer.
    let stopped = control(data.path(), &["stop", "lb1"]);
    assert!(stopped.contains("lb1: stopped"), "{stopped}");
    assert!(answers(20), "a request failed with lb1 stopped");
    control(data.path(), &["start", "lb1"]);
    assert!(up.terminate().success(), "{}", up.logs());
}
