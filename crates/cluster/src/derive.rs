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
        "mutual_tls = {{ cert = {}, key = {}, ca = {} }}\n",
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
                // Fewest requests in flight: a program with a few
                // synchronous workers (gunicorn's default) serves one
                // request per worker, and a request sent to an app whose
                // workers are all busy waits behind them while the other
                // app may be idle.
                let prefix = if program.is_some() { "/" } else { "/api/" };
                let _ = writeln!(
                    c,
                    "[[proxy]]\nprefix = \"{prefix}\"\nservers = [{}]\nbalance = \"leastconn\"",
                    servers.join(", ")
                );
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
mod tests;
