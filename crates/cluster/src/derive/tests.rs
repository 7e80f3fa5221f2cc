use super::*;
use bulwark_config::Validate;

/// Every derived file must pass its role's full validation.
#[test]
fn derived_configs_validate() {
    let t = Topology::default_localhost();
    let files = SharedFiles::under(Path::new("/var/lib/bulwark"), &t);
    let roles = derive(&t, &files, None);
    // 8 roles, and the lb's second process on the same public ports.
    assert_eq!(roles.len(), 9);
    let second = roles.iter().find(|r| r.placed.name == "lb1-2").expect("a second lb process");
    let first = roles.iter().find(|r| r.placed.name == "lb1").unwrap();
    let (a, b): (bulwark_config::lb::LbConfig, bulwark_config::lb::LbConfig) = (
        bulwark_config::from_str(&first.config, "lb1").unwrap(),
        bulwark_config::from_str(&second.config, "lb1-2").unwrap(),
    );
    assert!(b.admin.is_none() && b.vrrp.is_empty(), "{}", second.config);
    assert_eq!(a.frontends, b.frontends);
    assert!(a.frontends.iter().all(|f| f.reuse_port));
    assert_eq!(second.certificate_of, "lb1");
    // With free ports (port_base 0) one process per lb.
    let free = Topology { port_base: 0, ..t.clone() };
    assert_eq!(derive(&free, &files, None).len(), 8);
    for r in &roles {
        let origin = r.config_path.display().to_string();
        let res = match r.placed.kind {
            RoleKind::Lb => bulwark_config::from_str::<bulwark_config::lb::LbConfig>(&r.config, &origin).map(|_| ()),
            RoleKind::Web => bulwark_config::from_str::<bulwark_config::web::WebConfig>(&r.config, &origin).map(|_| ()),
            RoleKind::App => bulwark_config::from_str::<bulwark_config::app::AppConfig>(&r.config, &origin).map(|_| ()),
            RoleKind::Db => bulwark_config::from_str::<bulwark_config::db::DbConfig>(&r.config, &origin).map(|_| ()),
        };
        if let Err(e) = res {
            panic!("{}:\n{}\n{e}", r.placed.name, r.config);
        }
    }
    let lb = roles.iter().find(|r| r.placed.name == "lb1").unwrap();
    assert!(lb.config.contains("redirect_https_port = 8082"), "{}", lb.config);
    let db3 = roles.iter().find(|r| r.placed.name == "db3").unwrap();
    assert_eq!(db3.node_id, Some(3));
    // Raft on its own port (base+50+i), and every peer's two addresses.
    let db3: bulwark_config::db::DbConfig = bulwark_config::from_str(&db3.config, "db3").unwrap();
    assert_eq!(
        (db3.listen.to_string(), db3.raft_listen.to_string()),
        ("127.0.0.1:8112".into(), "127.0.0.1:8132".into())
    );
    let peers: Vec<(&str, &str)> = db3.peers.iter().map(|p| (p.address.as_str(), p.raft_address.as_str())).collect();
    assert_eq!(
        peers,
        [
            ("127.0.0.1:8110", "127.0.0.1:8130"),
            ("127.0.0.1:8111", "127.0.0.1:8131"),
            ("127.0.0.1:8112", "127.0.0.1:8132")
        ]
    );
    assert_eq!(derive(&t, &files, Some("server1")).len(), 3);
    // Each role names exactly the secrets of its hops: the lb never
    // the database's.
    for r in &roles {
        for hop in Hop::ALL {
            let named = r.config.contains(&q(&files.secret(hop)));
            // An lb's extra process has no admin listener: no monitor token.
            let extra_lb = r.placed.kind == RoleKind::Lb && r.placed.admin.is_none();
            // The built-in guestbook is not deployed: no deploy token.
            assert_eq!(
                named,
                Hop::held_by(r.placed.kind).contains(&hop) && !(extra_lb && hop == Hop::Monitor) && hop != Hop::Deploy,
                "{} {hop:?}:\n{}",
                r.placed.name,
                r.config
            );
        }
    }
    let mut v = bulwark_config::Validator::default();
    t.validate(&mut v);
    assert!(v.is_empty());
}

/// An app running the user's program gets the deploy token, its own
/// release directory and the topology's `keep_releases`.
#[test]
fn a_program_app_can_be_deployed_to() {
    let mut t = Topology::default_localhost();
    t.app.exec = vec!["gunicorn".into(), "site:app".into()];
    t.app.keep_releases = Some(3);
    let files = SharedFiles::under(Path::new("/var/lib/bulwark"), &t);
    let roles = derive(&t, &files, None);
    let app2 = roles.iter().find(|r| r.placed.name == "app2").unwrap();
    let c: bulwark_config::app::AppConfig = bulwark_config::from_str(&app2.config, "app2").unwrap();
    assert_eq!(c.deploy_token_file, Some(files.secret(Hop::Deploy)));
    assert_eq!(c.release_dir.as_deref(), Some(Path::new("/var/lib/bulwark/app2")));
    assert_eq!(c.keep_releases, 3);
    assert!(c.program.is_some());
    // A program run as another user keeps its releases beside the data
    // directory, which that user cannot enter; or where configured.
    t.app.user = Some("www-data".into());
    let app_config = |t: &Topology| -> bulwark_config::app::AppConfig {
        let roles = derive(t, &files, None);
        let app2 = roles.iter().find(|r| r.placed.name == "app2").unwrap();
        bulwark_config::from_str(&app2.config, "app2").unwrap()
    };
    assert_eq!(app_config(&t).release_dir.as_deref(), Some(Path::new("/var/lib/bulwark-releases/app2")));
    t.app.release_root = Some("/srv/releases".into());
    assert_eq!(app_config(&t).release_dir.as_deref(), Some(Path::new("/srv/releases/app2")));
}

/// With `internal_tls` (on for hosts off loopback), every tier behind
/// the lb gets its role's certificate, key and the cluster CA.
#[test]
fn internal_tls_gives_each_role_its_certificate() {
    let mut t = Topology::default_localhost();
    for (i, h) in t.hosts.iter_mut().enumerate() {
        h.address = format!("10.0.0.{}", 10 + i).parse().unwrap();
    }
    assert!(t.internal_tls());
    let files = SharedFiles::under(Path::new("/var/lib/bulwark"), &t);
    let dir = Path::new("/var/lib/bulwark/tls/internal");
    for r in derive(&t, &files, None) {
        let name = &r.certificate_of;
        let origin = r.config_path.display().to_string();
        let tls = match r.placed.kind {
            RoleKind::Db => {
                vec![bulwark_config::from_str::<bulwark_config::db::DbConfig>(&r.config, &origin).unwrap().mutual_tls]
            }
            RoleKind::App => {
                vec![bulwark_config::from_str::<bulwark_config::app::AppConfig>(&r.config, &origin).unwrap().mutual_tls]
            }
            RoleKind::Web => {
                vec![bulwark_config::from_str::<bulwark_config::web::WebConfig>(&r.config, &origin).unwrap().mutual_tls]
            }
            RoleKind::Lb => {
                // Towards the webs, and for polling the apps and dbs.
                let lb = bulwark_config::from_str::<bulwark_config::lb::LbConfig>(&r.config, &origin).unwrap();
                let mut v = vec![lb.backends[0].mutual_tls.clone()];
                v.extend(lb.admin.as_ref().map(|a| a.mutual_tls.clone()));
                v
            }
        };
        for tls in tls {
            let tls = tls.unwrap_or_else(|| panic!("{name} has no TLS keys:\n{}", r.config));
            assert_eq!((tls.cert, tls.key), (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key"))));
            assert_eq!(tls.ca, dir.join("ca.pem"));
        }
    }
    t.internal_tls = Some(false);
    assert!(derive(&t, &files, None).iter().all(|r| !r.config.contains("mutual_tls")));
}

/// Two lb hosts with two floating groups in opposite orders
/// (active-active): each lb gets both, with mirrored priorities.
#[test]
fn floating_groups_become_vrrp_entries_of_their_lbs() {
    let text = r#"
[lb]
public_address = "0.0.0.0"
[[host]]
name = "lb1"
address = "10.0.0.10"
role = [{ name = "lb1", kind = "lb" }, { name = "db3", kind = "db" }]
[[host]]
name = "lb2"
address = "10.0.0.11"
role = [{ name = "lb2", kind = "lb" }]
[[host]]
name = "server1"
address = "10.0.0.12"
role = [{ name = "web1", kind = "web" }, { name = "app1", kind = "app" }, { name = "db1", kind = "db" }, { name = "db2", kind = "db" }]
[[floating]]
name = "www-a"
addresses = ["192.0.2.10/24"]
interface = "eth0"
vrid = 51
lbs = ["lb1", "lb2"]
[[floating]]
name = "www-b"
addresses = ["192.0.2.11/24"]
interface = "eth0"
vrid = 52
lbs = ["lb2", "lb1"]
unicast = true
"#;
    let t: Topology = bulwark_config::from_str(text, "topology.toml").unwrap_or_else(|e| panic!("{e}"));
    let files = SharedFiles::under(Path::new("/var/lib/bulwark"), &t);
    let roles = derive(&t, &files, None);
    let lb = |name: &str| -> bulwark_config::lb::LbConfig {
        let r = roles.iter().find(|r| r.placed.name == name).unwrap();
        bulwark_config::from_str(&r.config, name).unwrap_or_else(|e| panic!("{}\n{e}", r.config))
    };
    let (lb1, lb2) = (lb("lb1"), lb("lb2"));
    // lbs on different machines listen on the same ports, so the
    // floating address answers on one port whichever holds it.
    let port = |n: &str| t.placed().into_iter().find(|p| p.name == n).unwrap().addr;
    assert_eq!(port("lb1"), port("lb2"));
    let prio = |c: &bulwark_config::lb::LbConfig, n: &str| c.vrrp.iter().find(|v| v.name == n).unwrap().priority;
    assert_eq!((prio(&lb1, "www-a"), prio(&lb1, "www-b")), (200, 140));
    assert_eq!((prio(&lb2, "www-a"), prio(&lb2, "www-b")), (140, 200));
    let b1 = lb1.vrrp.iter().find(|v| v.name == "www-b").unwrap();
    assert_eq!(b1.unicast_peers, [std::net::Ipv4Addr::new(10, 0, 0, 11)]);
    assert!(lb1.vrrp[0].unicast_peers.is_empty());

    let bad = text.replace("lbs = [\"lb2\", \"lb1\"]", "lbs = [\"lb2\", \"web1\"]");
    let err = bulwark_config::from_str::<Topology>(&bad, "topology.toml").unwrap_err().to_string();
    assert!(err.contains("floating[1].lbs") && err.contains("web1"), "{err}");
    let bad = text.replace("public_address = \"0.0.0.0\"", "");
    let err = bulwark_config::from_str::<Topology>(&bad, "topology.toml").unwrap_err().to_string();
    assert!(err.contains("lb.public_address"), "{err}");
}

/// `[app] exec`: every app role runs the program (with its settings),
/// and the web tier sends it every path, not only /api/.
#[test]
fn an_app_program_reaches_every_app_and_the_web_tier_proxies_all_paths() {
    let mut t = Topology::default_localhost();
    t.app.exec = vec!["gunicorn".into(), "site:app".into(), "--bind".into(), "{listen}".into()];
    t.app.workdir = Some("/srv/site".into());
    t.app.env.insert("GREETING".into(), "hello \"world\"".into());
    t.app.stop_grace = Some(std::time::Duration::from_secs(3));
    let files = SharedFiles::under(Path::new("/var/lib/bulwark"), &t);
    let roles = derive(&t, &files, None);
    for r in roles.iter().filter(|r| r.placed.kind == RoleKind::App) {
        let c: bulwark_config::app::AppConfig =
            bulwark_config::from_str(&r.config, "app.toml").unwrap_or_else(|e| panic!("{}\n{e}", r.config));
        let p = c.program.unwrap();
        assert_eq!(p.exec, t.app.exec);
        assert_eq!(p.env["GREETING"], "hello \"world\"");
        assert_eq!(c.threads, 1, "the front of a program runs on one thread");
        assert_eq!(p.stop_grace, std::time::Duration::from_secs(3));
        assert_eq!(p.workdir.as_deref(), Some(Path::new("/srv/site")));
    }
    for r in roles.iter().filter(|r| r.placed.kind == RoleKind::Web) {
        let c: bulwark_config::web::WebConfig =
            bulwark_config::from_str(&r.config, "web.toml").unwrap_or_else(|e| panic!("{}\n{e}", r.config));
        assert_eq!(c.proxy[0].prefix, "/");
        // A few synchronous workers per app: the app with the fewest requests in flight.
        assert_eq!(c.proxy[0].balance, bulwark_config::lb::Balance::Leastconn);
        assert!(c.static_prefixes.is_empty());
        assert_eq!(c.root, files.site);
    }
    // Static files from the release the app of the web's host runs,
    // under their own path.
    t.app.static_dir = Some("assets/public".into());
    for r in derive(&t, &files, None).iter().filter(|r| r.placed.kind == RoleKind::Web) {
        let c: bulwark_config::web::WebConfig = bulwark_config::from_str(&r.config, "web.toml").unwrap();
        assert_eq!(c.static_prefixes, ["/assets/public/"]);
        let app = r.placed.name.replace("web", "app");
        assert_eq!(c.root, Path::new("/var/lib/bulwark").join(app).join("current"));
    }
    // A web host without an app serves the initial release.
    let web2 = t.hosts.iter_mut().flat_map(|h| h.roles.iter_mut()).find(|r| r.name == "app2").unwrap();
    web2.kind = RoleKind::Db;
    web2.name = "db9".into();
    let roles = derive(&t, &files, None);
    let web2 = roles.iter().find(|r| r.placed.name == "web2").unwrap();
    let c: bulwark_config::web::WebConfig = bulwark_config::from_str(&web2.config, "web.toml").unwrap();
    assert_eq!(c.root, Path::new("/srv/site"));
}
