//! Derive each role's config file from a topology: the topology is the
//! single source of truth, so every host computes the same addresses.
use crate::secrets::{self, Hop};
use bulwark_config::topology::{Placed, RoleKind, Topology};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Files shared by every role of a topology, under its data directory.
#[derive(Debug, Clone)]
pub struct SharedFiles {
    pub data_dir: PathBuf,
    /// Admin token (dashboard, stats, metrics, control).
    pub admin_token: PathBuf,
    /// Web root with the site's static files.
    pub site: PathBuf,
    /// HTTPS certificate chain and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl SharedFiles {
    /// The file of one hop's secret (see [`crate::secrets`]).
    pub fn secret(&self, hop: Hop) -> PathBuf {
        secrets::path(&self.data_dir, hop)
    }

    pub fn under(data_dir: &Path, t: &Topology) -> SharedFiles {
        let (cert, key) = match &t.lb.certificate {
            Some(c) => (c.cert.clone(), c.key.clone()),
            None => (data_dir.join("tls/cert.pem"), data_dir.join("tls/key.pem")),
        };
        SharedFiles {
            data_dir: data_dir.to_path_buf(),
            admin_token: data_dir.join("admin.token"),
            site: data_dir.join("site"),
            cert,
            key,
        }
    }
}

/// Where app `app` keeps its releases (`bulwark deploy`): under the
/// topology's release root (see `AppSettings::release_root`), by name.
pub fn release_dir(t: &Topology, files: &SharedFiles, app: &str) -> PathBuf {
    t.app.release_root(&files.data_dir).join(app)
}

/// One role instance and its derived config.
#[derive(Debug, Clone)]
pub struct DerivedRole {
    pub placed: Placed,
    /// The role whose certificate (mutual TLS) this process uses: its own,
    /// or the lb's for the lb's extra processes.
    pub certificate_of: String,
    /// Database node id (db roles).
    pub node_id: Option<u64>,
    pub config_path: PathBuf,
    pub config: String,
}

fn q(p: &Path) -> String {
    toml_string(&p.display().to_string())
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `[[vrrp]]` entries of lb `lb`: one per `[[floating]]` group that
/// lists it, with the priority of its place in the list.
fn write_floating(c: &mut String, t: &Topology, lb: &str) {
    use bulwark_config::topology::Floating;
    let host_of =
        |name: &str| t.hosts.iter().find(|h| h.roles.iter().any(|r| r.name == name)).map(|h| h.address.to_string());
    for f in &t.floating {
        let Some(place) = f.lbs.iter().position(|l| l == lb) else { continue };
        let _ = writeln!(
            c,
            "[[vrrp]]\nname = {}\ninterface = {}\nvrid = {}\npriority = {}\ntrack_weight = {}\nadvert_interval = \"{}ms\"",
            toml_string(&f.name),
            toml_string(&f.interface),
            f.vrid,
            Floating::PRIORITIES[place],
            Floating::TRACK_WEIGHT,
            f.advert_interval.as_millis()
        );
        let addresses: Vec<String> = f.addresses.iter().map(|a| toml_string(&a.to_string())).collect();
        let _ = writeln!(c, "addresses = [{}]", addresses.join(", "));
        if f.unicast {
            let peers: Vec<String> =
                f.lbs.iter().filter(|l| *l != lb).filter_map(|l| host_of(l)).map(|a| toml_string(&a)).collect();
            let _ = writeln!(c, "unicast_peers = [{}]", peers.join(", "));
        }
    }
}

/// The app role's `[program]` table (last in its file: it may hold a
/// `[program.env]` table).
fn program_table(p: &bulwark_config::app::Program) -> String {
    #[derive(serde::Serialize)]
    struct Wrapper<'a> {
        program: &'a bulwark_config::app::Program,
    }
    toml::to_string(&Wrapper { program: p }).expect("a program serializes as TOML")
}

/// The mutual TLS keys of role `name` (its certificate from
/// `crate::pki`), when the topology's `internal_tls` is on.
fn tls_keys(t: &Topology, files: &SharedFiles, name: &str) -> String {
    if !t.internal_tls() {
        return String::new();
    }
    let dir = crate::pki::dir(&files.data_dir);
    format!(
        "tls_cert = {}\ntls_key = {}\ntls_ca = {}\n",
        q(&dir.join(format!("{name}.pem"))),
        q(&dir.join(format!("{name}.key"))),
        q(&dir.join("ca.pem"))
    )
}

/// The lb's extra processes (`lb.processes`): the same frontends and
/// backend on the same ports, shared with SO_REUSEPORT, so that a crashed
/// lb process leaves the site answering. They have no admin listener (the
/// dashboard, metrics and alerts are the first process's) and hold no
/// floating address (two VRRP instances of one host would fight). Only on
/// fixed ports: with port 0 each process would get a port of its own.
/// `config` is the first process's config so far, whose admin section
/// starts at `admin_from`.
fn extra_lb_processes(
    t: &Topology,
    files: &SharedFiles,
    p: &Placed,
    config: &str,
    admin_from: usize,
) -> Vec<DerivedRole> {
    if p.addr.port() == 0 || p.https.is_some_and(|a| a.port() == 0) {
        return Vec::new();
    }
    let serving = config.find("[[frontend]]").map(|i| &config[i..]).unwrap_or_default();
    (2..=t.lb.processes)
        .map(|k| {
            let name = format!("{}-{k}", p.name);
            DerivedRole {
                config_path: files.data_dir.join("config").join(format!("{name}.toml")),
                certificate_of: p.name.clone(),
                placed: Placed { name, admin: None, ..p.clone() },
                node_id: None,
                config: format!("{}{serving}", &config[..admin_from]),
            }
        })
        .collect()
}

/// A db role's Raft listener (every placed db role has one).
fn raft_addr(p: &Placed) -> std::net::SocketAddr {
    p.raft.unwrap_or_else(|| std::net::SocketAddr::new(p.addr.ip(), 0))
}

/// Every role of `t` (or only those on `host`) with its config text.
pub fn derive(t: &Topology, files: &SharedFiles, host: Option<&str>) -> Vec<DerivedRole> {
    let dbs = t.of_kind(RoleKind::Db);
    let apps = t.of_kind(RoleKind::App);
    let webs = t.of_kind(RoleKind::Web);
    let db_id = |name: &str| dbs.iter().position(|d| d.name == name).map(|i| i as u64 + 1);
    // A check that has not answered within its interval has failed: a
    // cut-off server is marked down after `fall` intervals, not `fall`
    // seconds (the default check timeout).
    let check_timeout = t.lb.check_interval.min(std::time::Duration::from_secs(1));
    let program = t.app.program();
    let mut out = Vec::new();
    for p in t.placed() {
        if host.is_some_and(|h| h != p.host) {
            continue;
        }
        let mut c = String::new();
        let mut extras = Vec::new();
        let node_id = db_id(&p.name).filter(|_| p.kind == RoleKind::Db);
        match p.kind {
            RoleKind::Db => {
                let _ = writeln!(c, "role = \"db\"\nnode_id = {}", node_id.unwrap_or(1));
                let _ = writeln!(c, "listen = \"{}\"", p.addr);
                let _ = writeln!(c, "raft_listen = \"{}\"", raft_addr(&p));
                let _ = writeln!(c, "data_dir = {}", q(&files.data_dir.join(&p.name)));
                let _ = writeln!(c, "secret_file = {}", q(&files.secret(Hop::AppDb)));
                let _ = writeln!(c, "peer_secret_file = {}", q(&files.secret(Hop::DbPeer)));
                let _ = writeln!(c, "monitor_token_file = {}", q(&files.secret(Hop::Monitor)));
                c.push_str(&tls_keys(t, files, &p.name));
                // Every initial voter may bootstrap: the cluster forms once.
                let _ = writeln!(c, "bootstrap = true");
                for (i, d) in dbs.iter().enumerate() {
                    let _ = writeln!(
                        c,
                        "[[peer]]\nid = {}\naddress = \"{}\"\nraft_address = \"{}\"",
                        i + 1,
                        d.addr,
                        raft_addr(d)
                    );
                }
            }
            RoleKind::App => {
                // In front of the user's program the role only proxies: one
                // thread, with no hand-offs between threads per request. The
                // built-in guestbook does its own work on two.
                let threads = if program.is_some() { 1 } else { 2 };
                let _ =
                    writeln!(c, "role = \"app\"\nname = \"{}\"\nlisten = \"{}\"\nthreads = {threads}", p.name, p.addr);
                let nodes: Vec<String> = dbs.iter().map(|d| format!("\"{}\"", d.addr)).collect();
                let _ = writeln!(c, "db_nodes = [{}]", nodes.join(", "));
                let _ = writeln!(c, "secret_file = {}", q(&files.secret(Hop::WebApp)));
                let _ = writeln!(c, "db_secret_file = {}", q(&files.secret(Hop::AppDb)));
                let _ = writeln!(c, "monitor_token_file = {}", q(&files.secret(Hop::Monitor)));
                c.push_str(&tls_keys(t, files, &p.name));
                if program.is_some() {
                    // `bulwark deploy`: its token, and where this app keeps
                    // its releases (by name, see `release_dir`).
                    let _ = writeln!(c, "deploy_token_file = {}", q(&files.secret(Hop::Deploy)));
                    let _ = writeln!(c, "release_dir = {}", q(&release_dir(t, files, &p.name)));
                    if let Some(n) = t.app.keep_releases {
                        let _ = writeln!(c, "keep_releases = {n}");
                    }
                }
                if let Some(p) = &program {
                    c.push_str(&program_table(p));
                }
            }
            RoleKind::Web => {
                // The static files of the user's site are served from its
                // directory, under their own path only (the rest of that
                // directory is the program's code, never served): the
                // release the app of this host runs (its `current` link, so
                // they follow `bulwark deploy`), or `[app] workdir` on a
                // host without an app (no release reaches it).
                let local_app = apps.iter().find(|a| a.host == p.host);
                let (root, static_prefix) = match (t.app.static_prefix(), &t.app.workdir, local_app) {
                    (Some(prefix), Some(_), Some(app)) => {
                        (release_dir(t, files, &app.name).join("current"), Some(prefix))
                    }
                    (Some(prefix), Some(w), None) => (w.clone(), Some(prefix)),
                    _ => (files.site.clone(), None),
                };
                let _ = writeln!(c, "role = \"web\"\nlisten = [\"{}\"]\nroot = {}\nthreads = 1", p.addr, q(&root));
                if let Some(prefix) = static_prefix {
                    let _ = writeln!(c, "static_prefixes = [{}]", toml_string(&prefix));
                }
                let _ = writeln!(c, "secret_file = {}", q(&files.secret(Hop::LbWeb)));
                let _ = writeln!(c, "upstream_secret_file = {}", q(&files.secret(Hop::WebApp)));
                let _ = writeln!(c, "monitor_token_file = {}", q(&files.secret(Hop::Monitor)));
                c.push_str(&tls_keys(t, files, &p.name));
                let servers: Vec<String> = apps.iter().map(|a| format!("\"{}\"", a.addr)).collect();
                // The guestbook's page is static (the web root) and its API
                // under /api/; a program of the user's answers everything.
                let prefix = if program.is_some() { "/" } else { "/api/" };
                let _ = writeln!(c, "[[proxy]]\nprefix = \"{prefix}\"\nservers = [{}]", servers.join(", "));
                let _ = writeln!(
                    c,
                    "health_check = {{ kind = \"http\", path = \"/api/health\", interval = \"{}ms\", timeout = \"{}ms\", rise = 1, fall = 2 }}",
                    t.lb.check_interval.as_millis(),
                    check_timeout.as_millis()
                );
            }
            RoleKind::Lb => {
                let _ = writeln!(c, "role = \"lb\"\nthreads = {}", t.lb.threads);
                let serving_from = c.len();
                let _ = writeln!(c, "[admin]\nbind = \"{}\"", p.admin.expect("lb has an admin address"));
                let _ = writeln!(
                    c,
                    "token_file = {}\nmonitor_token_file = {}",
                    q(&files.admin_token),
                    q(&files.secret(Hop::Monitor))
                );
                let _ = writeln!(c, "site = {}\nname = \"{}\"", toml_string(&t.name), p.name);
                if let Some(bytes) = t.backup.as_ref().and_then(|b| b.disk_free_alert_bytes) {
                    let _ = writeln!(c, "alerts = {{ disk_free_bytes = {bytes} }}");
                }
                c.push_str(&tls_keys(t, files, &p.name));
                for n in apps.iter().chain(dbs.iter()) {
                    let _ = writeln!(
                        c,
                        "[[admin.node]]\nname = \"{}\"\nkind = \"{}\"\nhost = \"{}\"\naddress = \"{}\"",
                        n.name,
                        n.kind.name(),
                        n.host,
                        n.addr
                    );
                }
                // The scheduled backups' status listener (`[backup]`).
                if let Some((node, addr)) = t.backup_placement() {
                    let host = dbs.iter().find(|d| d.name == node).map(|d| d.host.as_str()).unwrap_or_default();
                    let _ = writeln!(
                        c,
                        "[[admin.node]]\nname = \"backup\"\nkind = \"backup\"\nhost = \"{host}\"\naddress = \"{addr}\""
                    );
                }
                let _ = writeln!(c, "[[frontend]]\nname = \"http\"\nbind = \"{}\"\nbackend = \"web\"", p.addr);
                if let Some(https) = p.https {
                    let _ = writeln!(c, "redirect_https_port = {}", https.port());
                    let _ = writeln!(c, "[[frontend]]\nname = \"https\"\nbind = \"{https}\"\nbackend = \"web\"");
                    let _ = writeln!(
                        c,
                        "tls = {{ certificate = [{{ cert = {}, key = {} }}] }}",
                        q(&files.cert),
                        q(&files.key)
                    );
                }
                let _ = writeln!(
                    c,
                    "[[backend]]\nname = \"web\"\nbalance = \"{}\"",
                    format!("{:?}", t.lb.balance).to_lowercase()
                );
                let _ = writeln!(c, "cluster_secret_file = {}", q(&files.secret(Hop::LbWeb)));
                c.push_str(&tls_keys(t, files, &p.name));
                let _ = writeln!(
                    c,
                    "health_check = {{ kind = \"http\", path = \"/health\", interval = \"{}ms\", timeout = \"{}ms\", rise = 1, fall = 2 }}",
                    t.lb.check_interval.as_millis(),
                    check_timeout.as_millis()
                );
                for w in &webs {
                    let _ = writeln!(c, "[[backend.server]]\nname = \"{}\"\naddress = \"{}\"", w.name, w.addr);
                }
                extras = extra_lb_processes(t, files, &p, &c, serving_from);
                write_floating(&mut c, t, &p.name);
            }
        }
        out.push(DerivedRole {
            config_path: files.data_dir.join("config").join(format!("{}.toml", p.name)),
            certificate_of: p.name.clone(),
            placed: p,
            node_id,
            config: c,
        });
        out.append(&mut extras);
    }
    out
}

#[cfg(test)]
mod tests {
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
                RoleKind::Lb => {
                    bulwark_config::from_str::<bulwark_config::lb::LbConfig>(&r.config, &origin).map(|_| ())
                }
                RoleKind::Web => {
                    bulwark_config::from_str::<bulwark_config::web::WebConfig>(&r.config, &origin).map(|_| ())
                }
                RoleKind::App => {
                    bulwark_config::from_str::<bulwark_config::app::AppConfig>(&r.config, &origin).map(|_| ())
                }
                RoleKind::Db => {
                    bulwark_config::from_str::<bulwark_config::db::DbConfig>(&r.config, &origin).map(|_| ())
                }
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
        let peers: Vec<(&str, &str)> =
            db3.peers.iter().map(|p| (p.address.as_str(), p.raft_address.as_str())).collect();
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
                    Hop::held_by(r.placed.kind).contains(&hop)
                        && !(extra_lb && hop == Hop::Monitor)
                        && hop != Hop::Deploy,
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
                    vec![bulwark_config::from_str::<bulwark_config::db::DbConfig>(&r.config, &origin).unwrap().tls()]
                }
                RoleKind::App => {
                    vec![bulwark_config::from_str::<bulwark_config::app::AppConfig>(&r.config, &origin).unwrap().tls()]
                }
                RoleKind::Web => {
                    vec![bulwark_config::from_str::<bulwark_config::web::WebConfig>(&r.config, &origin).unwrap().tls()]
                }
                RoleKind::Lb => {
                    // Towards the webs, and for polling the apps and dbs.
                    let lb = bulwark_config::from_str::<bulwark_config::lb::LbConfig>(&r.config, &origin).unwrap();
                    let mut v = vec![lb.backends[0].tls()];
                    v.extend(lb.admin.as_ref().map(|a| a.tls()));
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
        assert!(derive(&t, &files, None).iter().all(|r| !r.config.contains("tls_ca")));
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
}
