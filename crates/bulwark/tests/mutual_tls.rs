//! `bulwark up` with `internal_tls = true`: every hop behind the lb (lb →
//! web, web → app, app → db, db ↔ db, and the lb's polls of the apps and
//! databases) is mutual TLS with the certificates of the cluster CA, and
//! the guestbook works through the lb; the web, app and database listeners
//! answer nobody without a certificate of that CA, whatever secret is sent.
use bulwark_testkit::config::{TopologyConfig, ONE_MACHINE_ROLES};
use bulwark_testkit::{bulwark_bin, request, wait_until, Process};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

/// `curl` over HTTPS to `addr` with `args` (certificates): the status, 0
/// when no answer came (a refused handshake).
fn curl(addr: SocketAddr, path: &str, args: &[&str]) -> (u16, String) {
    let url = format!("https://{addr}{path}");
    let answer = bulwark_testkit::curl(&[args, &[&url]].concat());
    (answer.status, format!("{}{}", answer.body, answer.stderr))
}

fn with_cert<'a>(dir: &'a Path, name: &str, ca: &'a str) -> Vec<String> {
    let f = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    vec!["--cacert".into(), ca.into(), "--cert".into(), f("pem"), "--key".into(), f("key")]
}

#[test]
fn every_inner_hop_is_mutual_tls_and_the_site_works() {
    let topo_dir = tempfile::tempdir().unwrap();
    let topo = topo_dir.path().join("topology.toml");
    let config = TopologyConfig::default().set("internal_tls", "true").plain_http().host("one", &ONE_MACHINE_ROLES);
    std::fs::write(&topo, config.to_toml()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let up = Process::up(&topo, data.path());
    let lb = up.addr("lb1.http");
    let (web, app, db) = (up.addr("web1.http"), up.addr("app1.http"), up.addr("db1.api"));

    // The guestbook through the lb: lb → web → app → db over mutual TLS.
    let post = br#"{"author":"tls","text":"over mutual TLS"}"#;
    let json = [("Content-Type", "application/json")];
    let r = request(lb, "POST", "/api/messages", &json, post).unwrap();
    assert!(r.status == 200 || r.status == 201, "{} {}", r.status, r.text());
    // Read back with the read-your-writes cookie: without it, a replica
    // that has not applied the post yet may answer.
    let cookie = r.header("set-cookie").and_then(|c| c.split(';').next()).expect("read-your-writes cookie").to_string();
    let r = request(lb, "GET", "/api/messages", &[("Cookie", &cookie)], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("over mutual TLS"), "{}", r.text());
    assert_eq!(request(lb, "GET", "/", &[], b"").unwrap().status, 200);

    // Plain HTTP to the inner tiers gets no answer, even with the secret.
    let secret = |hop: &str| std::fs::read_to_string(data.path().join("secrets").join(hop)).unwrap().trim().to_string();
    let (lb_web, app_db) = (secret("lb-web"), secret("app-db"));
    let bearer = format!("Bearer {app_db}");
    for (addr, path, h) in [
        (web, "/", ("X-Bulwark-Cluster", lb_web.as_str())),
        (app, "/api/health", ("X-Bulwark-Cluster", "")),
        (db, "/v1/status", ("Authorization", bearer.as_str())),
    ] {
        let r = request(addr, "GET", path, &[h], b"");
        assert!(
            !r.as_ref().is_ok_and(|r| r.status != 0),
            "{addr}{path} answered plain HTTP: {:?}",
            r.map(|r| r.status)
        );
    }
    // TLS with a role's certificate: answered; without a certificate, or
    // with one of another CA: refused at the handshake.
    let dir = data.path().join("tls/internal");
    let ca = dir.join("ca.pem").display().to_string();
    let other = tempfile::tempdir().unwrap();
    let stranger = bulwark_cluster::pki::ClusterCa::ensure(other.path(), "other").unwrap();
    stranger.ensure_role("lb9", "127.0.0.1".parse().unwrap()).unwrap();
    let stranger_dir = bulwark_cluster::pki::dir(other.path());
    for (addr, path) in [(web, "/health"), (app, "/api/health"), (db, "/health")] {
        let (code, text) =
            curl(addr, path, &with_cert(&dir, "lb1", &ca).iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 200, "{addr}{path} with the lb's certificate: {text}");
        let (code, text) = curl(addr, path, &["--cacert", &ca]);
        assert_eq!(code, 0, "{addr}{path} answered without a certificate: {text}");
        let foreign = with_cert(&stranger_dir, "lb9", &ca);
        let (code, text) = curl(addr, path, &foreign.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "{addr}{path} answered a certificate of another CA: {text}");
    }

    // The lb's dashboard reads the database's roles over mutual TLS.
    let token = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    wait_until("the lb reads the database's roles over mutual TLS", || {
        let auth = format!("Bearer {}", token.trim());
        request(up.addr("lb1.admin"), "GET", "/api/overview", &[("Authorization", &auth)], b"")
            .is_ok_and(|r| r.status == 200 && r.text().contains("\"primary\""))
    });
    // Connections to the web tier are reused: a TLS handshake per
    // connection, not per request.
    let opened = || {
        let auth = format!("Bearer {}", token.trim());
        let m = request(up.addr("lb1.admin"), "GET", "/metrics", &[("Authorization", &auth)], b"").unwrap().text();
        m.lines()
            .filter(|l| l.starts_with("bulwark_lb_upstream_connections_opened_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let before = opened();
    for _ in 0..40 {
        assert_eq!(request(lb, "GET", "/", &[], b"").unwrap().status, 200);
    }
    let new = opened() - before;
    assert!(new < 10, "{new} connections opened to the web tier for 40 requests");
    // The db CLI with a node's config talks to the cluster over it too.
    let out = Command::new(bulwark_bin())
        .args(["db", "-c"])
        .arg(data.path().join("config/db1.toml"))
        .arg("status")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("primary"), "{text}");
}
