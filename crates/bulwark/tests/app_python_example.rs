//! The Python example (`examples/python-guestbook`, gunicorn) under a real
//! `bulwark up`: posts and reads through the lb over HTTPS, its static
//! files served by the web tier; a `kill -9` of
//! one app's program (on a Unix socket) is noticed and the program restarted while requests
//! go to the other app server; stopping one app server fails no request.
//!
//! Needs Debian's gunicorn (`scripts/install-test-deps.sh`).
mod python_site;

use bulwark_testkit::{bulwark_bin, wait_until, Process};
use python_site::{example_dir, Load, Site};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

fn control(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(bulwark_bin()).args(args).arg("--data-dir").arg(dir).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The app role's view of its program: (status code, pid).
fn program(addr: SocketAddr) -> (u16, Option<i64>) {
    match bulwark_testkit::get(addr, "/health") {
        Ok(r) => {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            (r.status, v["program"]["pid"].as_i64())
        }
        Err(_) => (0, None),
    }
}

#[test]
fn the_python_guestbook_runs_under_up_and_survives_a_killed_program_and_a_stopped_app() {
    assert!(
        Path::new("/usr/bin/gunicorn").exists(),
        "Debian's gunicorn is not installed: run scripts/install-test-deps.sh"
    );
    let data = tempfile::tempdir().unwrap();
    let mut up = Process::up(&example_dir().join("topology.toml"), data.path());
    let https = up.addr("lb1.https");
    let site = Site::new(https, data.path());
    let jar = data.path().join("cookies.txt");

    // Post, then read it back at once (read-your-writes cookie); the page.
    let (code, body) = site.post(&jar, "first-post", "ann", "hello from python");
    assert_eq!(code, 201, "{body}");
    let posted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(posted["version"], "1");
    let (code, body) = site.get(&jar, "/api/messages");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello from python"), "{body}");
    // The same key again: stored once, the first message answered.
    let (code, again) = site.post(&jar, "first-post", "ann", "hello from python");
    assert_eq!(code, 201, "{again}");
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["message"]["id"], posted["message"]["id"]);
    let (code, page) = site.get(&jar, "/");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Python guestbook") && page.contains("hello from python"), "{page}");
    // Its style sheet comes from the example's static/ directory, served by
    // the web tier (the file's bytes, with a validator), not by gunicorn.
    let (code, css) = site.curl(&jar, &["-D", "-"], "/static/style.css");
    assert_eq!(code, 200, "{css}");
    let on_disk = std::fs::read_to_string(example_dir().join("static/style.css")).unwrap();
    assert!(css.to_lowercase().contains("etag:") && css.ends_with(&on_disk), "{css}");
    let (code, source) = site.get(&jar, "/guestbook.py");
    assert_eq!(code, 404, "the program's code is not a static file: {source}");
    // The app servers accept only the web tier.
    let r = bulwark_testkit::get(up.addr("app1.http"), "/api/messages").unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    // gunicorn listens on the private Unix socket the topology asks for.
    let r = bulwark_testkit::get(up.addr("app1.http"), "/health").unwrap();
    let h: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(h["program"]["listen"].as_str().is_some_and(|l| l.starts_with("unix:/")), "{h}");

    // kill -9 of app1's program under load: restarted; nothing fails.
    let load = Load::start(&site, data.path());
    load.wait_requests(10);
    let app1 = up.addr("app1.http");
    let (_, pid) = program(app1);
    let pid = pid.expect("app1 runs its program") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("app1's program restarted and healthy", || {
        let (code, new) = program(app1);
        code == 200 && new.is_some_and(|p| p != pid as i64)
    });
    load.wait_requests(20);
    // Both web servers send to app1 again (their health checks saw it
    // healthy): round robin over two servers reaches it within 4 requests.
    let lb_web = std::fs::read_to_string(data.path().join("secrets/lb-web")).unwrap();
    for web in ["web1.http", "web2.http"] {
        wait_until(&format!("{web} sends requests to app1 again"), || {
            (0..4).any(|_| {
                bulwark_testkit::request(
                    up.addr(web),
                    "GET",
                    "/api/messages?limit=1",
                    &[("X-Bulwark-Cluster", lb_web.trim())],
                    b"",
                )
                .is_ok_and(|r| r.status == 200 && r.text().contains("\"served_by\": \"app1\""))
            })
        });
    }

    // app2 stopped under load: nothing fails.
    let status = control(data.path(), &["stop", "app2"]);
    assert!(status.contains("app2: stopped"), "{status}");
    load.wait_requests(20);
    let failures = load.finish();
    assert!(failures.is_empty(), "failed requests: {failures:#?}\n{}", up.logs());
    let (code, body) = site.get(&jar, "/api/messages?limit=100");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"served_by\": \"app1\""), "{body}");

    // The program's own output is in its role's log, prefixed.
    let log = std::fs::read_to_string(data.path().join("logs/app1.log")).unwrap();
    assert!(log.contains("stderr | ") && log.contains("Booting worker"), "{log}");
    assert!(log.contains("killed by SIGKILL"), "{log}");
    control(data.path(), &["start", "app2"]);
    let exit = up.terminate();
    assert!(exit.success(), "{exit:?}\n{}", up.logs());
}
