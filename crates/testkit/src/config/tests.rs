//! The builders render TOML that `bulwark_config` reads back as the values
//! they were given.

use super::*;
use std::path::PathBuf;

fn lb(c: &LbConfig) -> bulwark_config::lb::LbConfig {
    let text = c.to_toml();
    bulwark_config::from_str(&text, "lb.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn web(c: &WebConfig) -> bulwark_config::web::WebConfig {
    let text = c.to_toml();
    bulwark_config::from_str(&text, "web.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn an_lb_config_says_what_the_builder_was_told() {
    let a: SocketAddr = "127.0.0.1:8001".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:8002".parse().unwrap();
    let c = LbConfig::new()
        .threads(2)
        .admin_str("token", "t0ken")
        .timeout("client_header", Duration::from_millis(300))
        .frontend(
            FrontendConfig::http("www", "app")
                .tls(Path::new("/c.pem"), Path::new("/k.pem"))
                .set("firewall", "{ max_connections_per_ip = 2 }"),
        )
        .frontend(FrontendConfig::http("http", "app").set("redirect_https_port", "8443"))
        .backend(BackendConfig::new("app").set("balance", "\"leastconn\"").server("a", a).server_with(
            "b",
            b,
            &[("backup", "true")],
        ));
    let parsed = lb(&c);
    assert_eq!(parsed.threads, 2);
    let admin = parsed.admin.as_ref().expect("[admin]");
    assert_eq!(admin.bind.to_string(), "127.0.0.1:0");
    assert_eq!(admin.token.as_ref().map(|t| t.expose()), Some("t0ken"));
    assert_eq!(parsed.timeouts.client_header, Duration::from_millis(300));
    assert_eq!(parsed.frontends.len(), 2);
    assert_eq!(parsed.frontends[0].name, "www");
    assert_eq!(parsed.frontends[0].bind.to_string(), "127.0.0.1:0");
    assert!(parsed.frontends[0].tls.is_some());
    assert_eq!(parsed.frontends[0].firewall.max_connections_per_ip, Some(2));
    assert_eq!(parsed.frontends[1].redirect_https_port, Some(8443));
    let backend = &parsed.backends[0];
    assert_eq!(backend.servers.len(), 2);
    assert_eq!(backend.servers[0].address, "127.0.0.1:8001");
    assert!(!backend.servers[0].backup);
    assert!(backend.servers[1].backup);
}

#[test]
fn a_web_config_says_what_the_builder_was_told() {
    let app: SocketAddr = "127.0.0.1:8100".parse().unwrap();
    let root = PathBuf::from("/srv/site");
    let c = WebConfig::new(&root)
        .timeout("send", Duration::from_secs(600))
        .limit("max_body_bytes", 1000)
        .proxy("/api/", &[app])
        .set_str("secret", "edge-secret-0123456789");
    let parsed = web(&c);
    assert_eq!(parsed.listen, ["127.0.0.1:0".parse::<SocketAddr>().unwrap()]);
    assert_eq!(parsed.root, root);
    assert_eq!(parsed.threads, 1);
    assert!(!parsed.access_log);
    assert_eq!(parsed.timeouts.send, Duration::from_secs(600));
    assert_eq!(parsed.limits.max_body_bytes, 1000);
    assert_eq!(parsed.proxy[0].prefix, "/api/");
    assert_eq!(parsed.proxy[0].servers, ["127.0.0.1:8100"]);
    assert!(parsed.secret.is_some());
}

#[test]
fn typed_lb_settings_read_back_as_the_same_values() {
    let a: SocketAddr = "127.0.0.1:8001".parse().unwrap();
    let check = HealthCheck {
        kind: CheckKind::Http,
        path: "/health".into(),
        interval: Duration::from_millis(100),
        rise: 1,
        ..HealthCheck::default()
    };
    let passive = PassiveHealth { consecutive_errors: 0, ..PassiveHealth::default() };
    let rules = AlertRules { for_duration: Duration::from_millis(200), ..AlertRules::default() };
    let c = LbConfig::new()
        .alerts(&rules)
        .watch("app1", NodeKind::App, "server1", a)
        .watch("db1", NodeKind::Db, "server2", a)
        .access_log_format("json")
        .frontend(FrontendConfig::tcp("raw", "app"))
        .backend(
            BackendConfig::new("app")
                .balance(Balance::First)
                .set("max_connections", "4")
                .health_check(&check)
                .passive(&passive)
                .server("a", a),
        );
    let parsed = lb(&c);
    let admin = parsed.admin.as_ref().expect("[admin]");
    assert_eq!(admin.alerts, rules);
    assert_eq!(admin.nodes.len(), 2);
    assert_eq!((admin.nodes[1].name.as_str(), admin.nodes[1].kind), ("db1", NodeKind::Db));
    assert_eq!(parsed.frontends[0].mode, Mode::Tcp);
    assert_eq!(parsed.backends[0].balance, Balance::First);
    assert_eq!(parsed.backends[0].health_check.as_ref(), Some(&check));
    assert_eq!(parsed.backends[0].passive, passive);
}

#[test]
fn an_app_config_says_what_the_builder_was_told() {
    let db: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    let c = AppConfig::new("app1", &[db], "web-app-secret-0123456789")
        .db_secret("app-db-secret-0123456789")
        .program(&["python3", "site.py", "{listen}"], Some(Path::new("/srv/site")))
        .program_set("stop_grace", "\"2s\"");
    let text = c.to_toml();
    let parsed: bulwark_config::app::AppConfig =
        bulwark_config::from_str(&text, "app.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed.name, "app1");
    assert_eq!(parsed.listen.to_string(), "127.0.0.1:0");
    assert_eq!(parsed.db_nodes.len(), 1);
    assert!(parsed.secret.is_some() && parsed.db_secret.is_some());
    let program = parsed.program.expect("[program]");
    assert_eq!(program.exec, ["python3", "site.py", "{listen}"]);
    assert_eq!(program.workdir.as_deref(), Some(Path::new("/srv/site")));
}

#[test]
fn a_db_config_says_what_the_builder_was_told() {
    let api: SocketAddr = "127.0.0.5:7001".parse().unwrap();
    let c = DbConfig::new(3, Path::new("/var/lib/db3"), "db-secret-0123456789")
        .listen(api)
        .bootstrap(true)
        .election_timeout(Duration::from_millis(400))
        .read_wait(Duration::from_secs(1))
        .snapshot_every(20)
        .peer_secret("peer-secret-0123456789");
    let text = c.to_toml();
    let parsed: bulwark_config::db::DbConfig =
        bulwark_config::from_str(&text, "db.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed.node_id, 3);
    assert_eq!(parsed.listen, api);
    assert_eq!(parsed.raft_listen.to_string(), "127.0.0.1:0");
    assert_eq!(parsed.data_dir, Path::new("/var/lib/db3"));
    assert!(parsed.bootstrap);
    assert_eq!(parsed.election_timeout, Duration::from_millis(400));
    assert_eq!(parsed.read_wait, Duration::from_secs(1));
    assert_eq!(parsed.snapshot_every, Some(20));
    assert!(parsed.peer_secret.is_some());
    assert_eq!(c.in_dir(Path::new("/elsewhere")).data_dir(), Path::new("/elsewhere"));
}

#[test]
fn a_topology_says_what_the_builder_was_told() {
    let backup = BackupSettings { every: Duration::from_secs(1), keep: 2, ..BackupSettings::default() };
    let c = TopologyConfig::new("site")
        .plain_http()
        .host("one", &[("lb1", RoleKind::Lb), ("web1", RoleKind::Web), ("app1", RoleKind::App)])
        .host_at("two", "10.0.0.2".parse().unwrap(), &[("db1", RoleKind::Db)])
        .backup(&backup);
    let text = c.to_toml();
    let parsed: bulwark_config::topology::Topology =
        bulwark_config::from_str(&text, "topology.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed.name, "site");
    assert!(!parsed.lb.tls);
    assert_eq!(parsed.hosts.len(), 2);
    assert_eq!(parsed.hosts[0].roles.len(), 3);
    assert_eq!(parsed.hosts[1].roles[0].kind, RoleKind::Db);
    assert_eq!(parsed.hosts[0].address.to_string(), "127.0.0.1");
    assert_eq!(parsed.hosts[1].address.to_string(), "10.0.0.2");
    assert_eq!(parsed.backup.as_ref(), Some(&backup));
}

#[test]
#[should_panic(expected = "`firewall = { oops` is not a TOML value")]
fn a_malformed_value_names_itself() {
    let _ = FrontendConfig::http("www", "app").set("firewall", "{ oops");
}
