//! `bulwark deploy` on the Python example under a real `bulwark up` with
//! mutual TLS on every inner hop (`internal_tls = true`: the program
//! reaches the database with the client certificate the role gives it).
//! Under continuous GETs and keyed POSTs through the lb: a new release
//! (a new version string) rolls through both app servers, then
//! `--rollback` brings the old one back, then a release that exits at
//! start is rolled back by itself with a clear message; no request fails.
//!
//! Needs Debian's gunicorn (`scripts/install-test-deps.sh`).
mod python_site;

use bulwark_testkit::{bulwark_bin, wait_until, Process};
use python_site::{copy_dir, example_dir, Load, Site};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// `bulwark deploy ARGS --data-dir DATA`: (success, stdout + stderr).
fn deploy(data: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bulwark_bin()).arg("deploy").args(args).arg("--data-dir").arg(data).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The version each app server answers with, from GETs through the lb
/// until both app servers answered; panics on a failed GET.
fn versions(site: &Site, jar: &Path) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut seen: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    wait_until("answers from both app servers", || {
        let (code, body) = site.get(jar, "/api/messages?limit=1");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let app = v["served_by"].as_str().unwrap().to_string();
        seen.entry(app).or_default().insert(v["version"].as_str().unwrap().to_string());
        seen.len() == 2
    });
    seen
}

fn all_on(seen: &BTreeMap<String, std::collections::BTreeSet<String>>, version: &str) -> bool {
    seen.values().all(|v| v.len() == 1 && v.contains(version))
}

/// A release of the example: its files with `VERSION` set.
fn release(work: &Path, name: &str, version: &str) -> std::path::PathBuf {
    let dir = work.join(name);
    copy_dir(&example_dir(), &dir);
    std::fs::write(dir.join("VERSION"), format!("{version}\n")).unwrap();
    dir
}

#[test]
fn a_release_rolls_through_the_app_servers_under_load_and_back() {
    assert!(
        Path::new("/usr/bin/gunicorn").exists(),
        "Debian's gunicorn is not installed: run scripts/install-test-deps.sh"
    );
    let work = tempfile::tempdir().unwrap();
    release(work.path(), "site-v1", "1");
    let v2 = release(work.path(), "site-v2", "2");
    let broken = release(work.path(), "site-broken", "3");
    let code = std::fs::read_to_string(broken.join("guestbook.py")).unwrap();
    std::fs::write(broken.join("guestbook.py"), format!("raise SystemExit('this release cannot start')\n{code}"))
        .unwrap();
    let example = std::fs::read_to_string(example_dir().join("topology.toml")).unwrap();
    let topology = example
        .replacen("name = \"python-guestbook\"\n", "name = \"python-guestbook\"\ninternal_tls = true\n", 1)
        .replace("workdir = \".\"", "workdir = \"site-v1\"");
    assert!(topology.contains("internal_tls = true") && topology.contains("site-v1"), "{topology}");
    let topo = work.path().join("topology.toml");
    std::fs::write(&topo, topology).unwrap();

    let data = tempfile::tempdir().unwrap();
    let mut up = Process::up(&topo, data.path());
    let site = Site::new(up.addr("lb1.https"), data.path());
    let jar = data.path().join("cookies.txt");

    // Writes and reads through the lb: the program reached the database
    // over mutual TLS with the role's client certificate.
    let (code, body) = site.post(&jar, "before-deploy", "ann", "written over mutual TLS");
    assert_eq!(code, 201, "{body}\n{}", up.logs());
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["version"], "1");
    let (code, body) = site.get(&jar, "/api/messages");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("written over mutual TLS"), "{body}");
    let env = std::fs::read_to_string(data.path().join("logs/app1.log")).unwrap();
    assert!(!env.contains("BEGIN PRIVATE KEY"), "a key in the log");
    assert!(all_on(&versions(&site, &jar), "1"));

    let load = Load::start(&site, data.path());
    load.wait_requests(10);

    // A new release, one app server at a time.
    let (ok, out) = deploy(data.path(), &["--release", v2.to_str().unwrap()]);
    assert!(ok, "{out}\n{}", up.logs());
    assert!(out.contains("app1: out of rotation") && out.contains("app2: out of rotation"), "{out}");
    assert!(out.contains("every app server runs release site-v2-"), "{out}");
    load.wait_requests(10);
    let seen = versions(&site, &jar);
    assert!(all_on(&seen, "2"), "{seen:?}");
    // Each app keeps its releases under the data directory.
    let current = std::fs::read_link(data.path().join("app1/current")).unwrap();
    assert!(current.starts_with(data.path().join("app1/releases")), "{}", current.display());

    // Back to the release of before, the same way.
    let (ok, out) = deploy(data.path(), &["--rollback"]);
    assert!(ok, "{out}\n{}", up.logs());
    assert!(out.contains("every app server runs release initial"), "{out}");
    load.wait_requests(10);
    let seen = versions(&site, &jar);
    assert!(all_on(&seen, "1"), "{seen:?}");

    // A release that exits at start: rolled back by itself, with why.
    let (ok, out) = deploy(data.path(), &["--release", broken.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("never became healthy on app1"), "{out}");
    assert!(out.contains("app1 is back on release initial") && out.contains("was rolled back"), "{out}");
    load.wait_requests(10);
    let seen = versions(&site, &jar);
    assert!(all_on(&seen, "1"), "{seen:?}");
    let log = std::fs::read_to_string(data.path().join("logs/app1.log")).unwrap();
    assert!(log.contains("this release cannot start"), "the program's own words are in the log");

    let failures = load.finish();
    assert!(failures.is_empty(), "failed requests: {failures:#?}\n{}", up.logs());
    let exit = up.terminate();
    assert!(exit.success(), "{exit:?}\n{}", up.logs());
}
