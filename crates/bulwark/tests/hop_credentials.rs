//! One credential per hop, on the real `bulwark up` topology: every tier
//! accepts only the secret of the hop in front of it, the database keeps
//! Raft, membership and promote for its peers, the monitoring token reads
//! status and metrics and nothing else, and the lb's config names no
//! database secret. With `internal_tls`, `up` issues the roles of its host
//! certificates from a cluster CA.
use bulwark_testkit::config::{RoleKind, TopologyConfig};
use bulwark_testkit::{bulwark_bin, request, wait_until, Process};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;

const HOPS: [&str; 5] = ["lb-web", "web-app", "app-db", "db-peer", "monitor"];

fn status(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let r = request(addr, method, path, headers, body.as_bytes()).unwrap_or_else(|e| panic!("{addr}{path}: {e}"));
    r.status
}

#[test]
fn each_hop_refuses_the_other_hops_secrets() {
    let data = tempfile::tempdir().unwrap();
    let up = Process::up_built_in(data.path());
    let secret: HashMap<&str, String> = HOPS
        .iter()
        .map(|h| (*h, std::fs::read_to_string(data.path().join("secrets").join(h)).unwrap().trim().to_string()))
        .collect();
    let bearer: HashMap<&str, String> = HOPS.iter().map(|h| (*h, format!("Bearer {}", secret[h]))).collect();
    let db = up.addr("db1.api");
    let (app, web) = (up.addr("app1.http"), up.addr("web1.http"));
    wait_until("the app answers through its secret", || {
        status(app, "GET", "/api/messages", &[("X-Bulwark-Cluster", &secret["web-app"])], "") == 200
    });

    // The database API: only app→db (and the peers) run SQL.
    let query = r#"{"sql":"SELECT 1"}"#;
    let execute = r#"{"statements":[{"sql":"CREATE TABLE IF NOT EXISTS hop_probe (n INTEGER)"}]}"#;
    for (hop, want) in [("app-db", 200), ("db-peer", 200), ("monitor", 403), ("lb-web", 401), ("web-app", 401)] {
        let auth = [("Authorization", bearer[hop].as_str())];
        assert_eq!(status(db, "POST", "/v1/query", &auth, query), want, "{hop} on /v1/query");
    }
    for (hop, want) in [("monitor", 403), ("lb-web", 401), ("web-app", 401)] {
        let auth = [("Authorization", bearer[hop].as_str())];
        assert_eq!(status(db, "POST", "/v1/execute", &auth, execute), want, "{hop} on /v1/execute");
    }
    // Raft, membership and promote: the peer secret only, Raft on its own
    // listener. With it, a body that is not an RPC is refused as a bad
    // request (past authorization); the API does not serve Raft at all.
    let raft = up.addr("db1.raft");
    for (listener, path) in [
        (raft, "/raft/append"),
        (raft, "/raft/vote"),
        (raft, "/raft/snapshot"),
        (raft, "/raft/elect"),
        (db, "/raft/vote"),
        (db, "/v1/members/add"),
        (db, "/v1/promote"),
    ] {
        for (hop, want) in [("app-db", 403), ("monitor", 403), ("lb-web", 401), ("web-app", 401)] {
            let auth = [("Authorization", bearer[hop].as_str())];
            assert_eq!(status(listener, "POST", path, &auth, "not json"), want, "{hop} on {listener}{path}");
        }
    }
    let peer = [("Authorization", bearer["db-peer"].as_str())];
    assert_eq!(status(raft, "POST", "/raft/vote", &peer, "not json"), 400);
    assert_eq!(status(db, "POST", "/raft/vote", &peer, "not json"), 404);
    assert_eq!(status(raft, "POST", "/v1/query", &peer, query), 404);
    // Status and metrics: the monitoring token reads them.
    let monitor = [("Authorization", bearer["monitor"].as_str())];
    assert_eq!(status(db, "GET", "/v1/status", &monitor, ""), 200);
    assert_eq!(status(db, "GET", "/metrics", &monitor, ""), 200);
    assert_eq!(status(db, "GET", "/v1/status", &[("Authorization", &bearer["lb-web"])], ""), 401);

    // The app tier: only the web tier's secret, whatever else is offered.
    for (hop, want) in [("web-app", 200), ("lb-web", 401), ("app-db", 401), ("db-peer", 401), ("monitor", 401)] {
        let h = [("X-Bulwark-Cluster", secret[hop].as_str())];
        assert_eq!(status(app, "GET", "/api/messages", &h, ""), want, "{hop} on the app");
    }
    assert_eq!(status(app, "GET", "/metrics", &monitor, ""), 200);
    for hop in ["web-app", "app-db", "lb-web"] {
        let auth = [("Authorization", bearer[hop].as_str()), ("X-Bulwark-Cluster", secret["web-app"].as_str())];
        assert_eq!(status(app, "GET", "/metrics", &auth, ""), 401, "{hop} on the app's /metrics");
    }

    // The web tier: only the lb's secret.
    for (hop, want) in [("lb-web", 200), ("web-app", 401), ("app-db", 401), ("monitor", 401)] {
        let h = [("X-Bulwark-Cluster", secret[hop].as_str())];
        assert_eq!(status(web, "GET", "/", &h, ""), want, "{hop} on the web tier");
    }
    assert_eq!(status(web, "GET", "/metrics", &monitor, ""), 200);
    assert_eq!(status(web, "GET", "/metrics", &[("Authorization", &bearer["lb-web"])], ""), 401);
    // Through the web tier, the app gets the web→app secret, not lb→web.
    let h = [("X-Bulwark-Cluster", secret["lb-web"].as_str())];
    assert_eq!(status(web, "GET", "/api/messages", &h, ""), 200);

    // The lb holds the lb→web secret and the monitoring token, nothing of
    // the database; the dashboard still sees the database's roles.
    let lb = std::fs::read_to_string(data.path().join("config/lb1.toml")).unwrap();
    assert!(lb.contains("secrets/lb-web") && lb.contains("secrets/monitor"), "{lb}");
    for hop in ["web-app", "app-db", "db-peer"] {
        assert!(!lb.contains(hop), "the lb's config names {hop}:\n{lb}");
    }
    // On localhost, no internal certificates unless asked for.
    assert!(!data.path().join("tls/internal").exists());
    let token = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    wait_until("the lb reads the database's roles with the monitoring token", || {
        let auth = format!("Bearer {}", token.trim());
        request(up.addr("lb1.admin"), "GET", "/api/overview", &[("Authorization", &auth)], b"")
            .is_ok_and(|r| r.status == 200 && r.text().contains("\"primary\""))
    });
}

/// `up --host edge` of a topology with `internal_tls = true`: a cluster CA
/// (key 0600) and a certificate for each role of that host only; the hop
/// secrets of that host only.
#[test]
fn up_issues_its_hosts_roles_certificates_from_a_cluster_ca() {
    use std::os::unix::fs::MetadataExt;
    let topo_dir = tempfile::tempdir().unwrap();
    let topo = topo_dir.path().join("topology.toml");
    let config = TopologyConfig::default()
        .set("internal_tls", "true")
        .host("edge", &[("lb1", RoleKind::Lb)])
        .host("inner", &[("web1", RoleKind::Web), ("app1", RoleKind::App), ("db1", RoleKind::Db)]);
    std::fs::write(&topo, config.to_toml()).unwrap();
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    let mut cmd = Command::new(bulwark_bin());
    cmd.args(["up", "--host", "edge", "--port-base", "0", "-c"]).arg(&topo).arg("--data-dir").arg(&data);
    let _up = Process::spawn(cmd, tempfile::tempdir().unwrap(), topo.clone());
    let mode = |p: &str| std::fs::metadata(data.join(p)).unwrap().mode() & 0o777;
    assert_eq!(mode("tls/internal"), 0o700);
    assert_eq!(mode("tls/internal/ca.key"), 0o600);
    assert_eq!(mode("tls/internal/lb1.key"), 0o600);
    assert!(data.join("tls/internal/ca.pem").exists() && data.join("tls/internal/lb1.pem").exists());
    for other in ["web1", "app1", "db1"] {
        assert!(!data.join(format!("tls/internal/{other}.pem")).exists(), "{other} issued on the lb's host");
    }
    let held: Vec<String> = std::fs::read_dir(data.join("secrets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut held = held;
    held.sort();
    assert_eq!(held, ["lb-web", "monitor"], "the lb's host holds only its hops' secrets");
}
