//! Schema of a whole topology (`bulwark up`): hosts, the role instances on
//! each, and the settings every instance of a role shares. One file is the
//! single source of truth: each role's own config is derived from it
//! (`Topology::instances`), so `bulwark up --host server1 -c topo.toml`
//! on each machine starts only that machine's roles with consistent
//! addresses everywhere.
//!
//! With no file, [`Topology::default_localhost`] is the classic two-server site:
//! `lb1` (the load balancer, plus `db3` as the third database voter),
//! `server1` = web1 + app1 + db1, `server2` = web2 + app2 + db2.
use crate::util::check_name;
use crate::{Validate, Validator};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topology {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::Role>,
    /// Site name, shown on the dashboard.
    pub name: String,
    /// Where every role keeps its state, logs and derived configs.
    pub data_dir: PathBuf,
    /// Ports of instances without an explicit `port` are derived from this:
    /// the i-th lb of a machine: base+3i (http), +1 (admin), +2 (https); web base+10+i, app
    /// base+20+i, db base+30+i (API) and base+50+i (Raft); the backup status
    /// listener base+40. `0` picks free ports.
    pub port_base: u16,
    pub restart: RestartSettings,
    pub lb: LbSettings,
    #[serde(rename = "host")]
    pub hosts: Vec<Host>,
    /// Floating addresses the lb instances share (VRRP): `[[floating]]`.
    #[serde(rename = "floating", skip_serializing_if = "Vec::is_empty")]
    pub floating: Vec<Floating>,
    /// Issue every role a certificate from a cluster CA that `up` creates
    /// (`DATA/tls/internal/`) and set every role's `mutual_tls`: every hop
    /// behind the lb is then mutual TLS (see [`crate::internal_tls`]).
    /// Default: on when a host's address is not loopback (the topology
    /// spans machines), off on localhost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_tls: Option<bool>,
    /// What the app roles run: the built-in guestbook, or the user's
    /// program (`[app] exec = [...]`).
    #[serde(skip_serializing_if = "crate::app::AppSettings::is_default")]
    pub app: crate::app::AppSettings,
    /// The host firewall (nftables) of every host: `[firewall]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewall: Option<crate::host_firewall::HostFirewall>,
    /// Scheduled backups (`[backup]`, see [`crate::backup`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::backup::BackupSettings>,
}

/// A topology without hosts: what a file that sets nothing means.
impl Default for Topology {
    fn default() -> Self {
        Topology {
            role: None,
            name: "foobar".into(),
            data_dir: PathBuf::from("./bulwark-data"),
            port_base: 8080,
            restart: RestartSettings::default(),
            lb: LbSettings::default(),
            hosts: Vec::new(),
            floating: Vec::new(),
            internal_tls: None,
            app: crate::app::AppSettings::default(),
            firewall: None,
            backup: None,
        }
    }
}

/// One floating address group: the lbs that share it, in order of
/// preference (the first holds it while it can serve). Two groups with the
/// lbs in opposite orders make active-active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Floating {
    pub name: String,
    /// Floating addresses with prefix length (`192.0.2.10/24`).
    #[serde(with = "crate::address::ipv4_nets")]
    pub addresses: Vec<ipnet::Ipv4Net>,
    /// The interface of every lb host the addresses go on.
    pub interface: String,
    pub vrid: u8,
    /// lb role instances, most preferred first (at most 3).
    pub lbs: Vec<String>,
    #[serde(default = "default_advert_interval", with = "humantime_serde")]
    pub advert_interval: Duration,
    /// Advertise to the other lbs' host addresses instead of multicast.
    #[serde(default)]
    pub unicast: bool,
}

fn default_advert_interval() -> Duration {
    Duration::from_secs(1)
}

impl Floating {
    /// Priority of the lb at `position` in `lbs`, and the weight taken off
    /// while it cannot serve: an lb that cannot serve falls below the next
    /// one that can (200 - 70 < 140, 140 - 70 < 80), and when none can, the
    /// order stays.
    pub const PRIORITIES: [u8; 3] = [200, 140, 80];
    pub const TRACK_WEIGHT: u8 = 70;
}

impl Topology {
    /// Whether `up` issues internal certificates (see `internal_tls`).
    pub fn internal_tls(&self) -> bool {
        self.internal_tls.unwrap_or_else(|| self.hosts.iter().any(|h| !h.address.is_loopback()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartSettings {
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RestartSettings {
    fn default() -> Self {
        RestartSettings { initial_backoff: Duration::from_millis(200), max_backoff: Duration::from_secs(10) }
    }
}

/// Settings shared by every lb instance of the topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LbSettings {
    pub balance: crate::lb::Balance,
    /// Worker threads per lb (0 = one per core).
    pub threads: usize,
    /// lb processes per lb instance, sharing its public ports with
    /// SO_REUSEPORT so that one crashed process leaves the site answering
    /// (the first one alone has the admin listener and the floating
    /// addresses). Only with fixed ports (`port_base` or explicit ports).
    pub processes: u8,
    /// Address the public listener binds (default: the host's address).
    /// Set `0.0.0.0` to serve other machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_address: Option<IpAddr>,
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Serve HTTPS (a self-signed certificate for localhost is generated
    /// when `certificate` is not set), redirect plain HTTP to it, send HSTS.
    pub tls: bool,
    /// Certificate chain and key files for HTTPS (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<crate::lb::CertificateFiles>,
}

impl Default for LbSettings {
    fn default() -> Self {
        LbSettings {
            balance: Default::default(),
            threads: 0,
            processes: 1,
            public_address: None,
            check_interval: Duration::from_secs(1),
            tls: true,
            certificate: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: String,
    /// The address this host's roles listen on and are reached at.
    #[serde(default = "localhost")]
    pub address: IpAddr,
    #[serde(default, rename = "role")]
    pub roles: Vec<RoleInstance>,
}

fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleKind {
    Db,
    App,
    Web,
    Lb,
}

impl RoleKind {
    pub fn name(self) -> &'static str {
        match self {
            RoleKind::Db => "db",
            RoleKind::App => "app",
            RoleKind::Web => "web",
            RoleKind::Lb => "lb",
        }
    }

    /// Start order: databases first, load balancers last.
    pub fn stage(self) -> u8 {
        match self {
            RoleKind::Db => 0,
            RoleKind::App => 1,
            RoleKind::Web => 2,
            RoleKind::Lb => 3,
        }
    }

    /// Offset of the i-th instance's main port from `port_base`.
    fn port_offset(self) -> u16 {
        match self {
            RoleKind::Lb => 0,
            RoleKind::Web => 10,
            RoleKind::App => 20,
            RoleKind::Db => 30,
        }
    }
}

/// Offset of the i-th db instance's Raft port from `port_base`.
const RAFT_PORT_OFFSET: u16 = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleInstance {
    /// Unique in the topology (`web1`).
    pub name: String,
    pub kind: RoleKind,
    /// Main listen port; derived from `port_base` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// lb only: the admin/dashboard port (default: port + 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_port: Option<u16>,
    /// lb only: the HTTPS port (default: port + 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_port: Option<u16>,
    /// db only: the Raft port (default: derived from `port_base`,
    /// base+50+i).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_port: Option<u16>,
}

/// A role instance with its resolved addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub name: String,
    pub kind: RoleKind,
    pub host: String,
    /// Main listener (public for lb).
    pub addr: SocketAddr,
    /// lb admin listener.
    pub admin: Option<SocketAddr>,
    /// lb HTTPS listener (when `lb.tls`).
    pub https: Option<SocketAddr>,
    /// db Raft listener (the other db nodes only).
    pub raft: Option<SocketAddr>,
}

impl Placed {
    /// Every listener of the instance with what it is: the main one, then
    /// the admin, HTTPS or Raft listener it has.
    pub fn listeners(&self) -> impl Iterator<Item = (&'static str, SocketAddr)> {
        [
            ("listener", Some(self.addr)),
            ("admin listener", self.admin),
            ("https listener", self.https),
            ("raft listener", self.raft),
        ]
        .into_iter()
        .filter_map(|(what, a)| Some((what, a?)))
    }
}

impl Topology {
    /// The classic two-server site on one machine.
    pub fn default_localhost() -> Topology {
        let r = |name: &str, kind| RoleInstance {
            name: name.into(),
            kind,
            port: None,
            admin_port: None,
            https_port: None,
            raft_port: None,
        };
        Topology {
            // Two lb processes on the public ports: an lb crash costs only
            // the requests in flight on it.
            lb: LbSettings { processes: 2, ..LbSettings::default() },
            hosts: vec![
                Host {
                    name: "lb1".into(),
                    address: localhost(),
                    roles: vec![r("lb1", RoleKind::Lb), r("db3", RoleKind::Db)],
                },
                Host {
                    name: "server1".into(),
                    address: localhost(),
                    roles: vec![r("web1", RoleKind::Web), r("app1", RoleKind::App), r("db1", RoleKind::Db)],
                },
                Host {
                    name: "server2".into(),
                    address: localhost(),
                    roles: vec![r("web2", RoleKind::Web), r("app2", RoleKind::App), r("db2", RoleKind::Db)],
                },
            ],
            ..Topology::default()
        }
    }

    /// Every instance with its addresses, in config order. The index of an
    /// instance among those of its kind, ordered by name, picks its derived
    /// port (so `db3` on the first host still gets base+32).
    pub fn placed(&self) -> Vec<Placed> {
        let mut out = Vec::new();
        for kind in [RoleKind::Lb, RoleKind::Web, RoleKind::App, RoleKind::Db] {
            let mut of_kind: Vec<(&Host, &RoleInstance)> = self
                .hosts
                .iter()
                .flat_map(|h| h.roles.iter().filter(move |r| r.kind == kind).map(move |r| (h, r)))
                .collect();
            of_kind.sort_by_key(|a| natural_key(&a.1.name));
            let mut lbs_at: std::collections::HashMap<IpAddr, usize> = std::collections::HashMap::new();
            for (i, (h, r)) in of_kind.into_iter().enumerate() {
                // lbs count per machine (host address): lbs on different
                // machines take the same ports, so a floating address
                // answers on one port whichever lb holds it.
                let step = if kind == RoleKind::Lb {
                    let n = lbs_at.entry(h.address).or_insert(0);
                    *n += 1;
                    ((*n - 1) * 3) as u16
                } else {
                    i as u16
                };
                let derived = self.port_base.saturating_add(kind.port_offset()).saturating_add(step);
                let port = r.port.unwrap_or(if self.port_base == 0 { 0 } else { derived });
                let ip = if kind == RoleKind::Lb { self.lb.public_address.unwrap_or(h.address) } else { h.address };
                let plus = |n: u16| if port == 0 { 0 } else { port + n };
                let admin = (kind == RoleKind::Lb).then(|| SocketAddr::new(h.address, r.admin_port.unwrap_or(plus(1))));
                let https =
                    (kind == RoleKind::Lb && self.lb.tls).then(|| SocketAddr::new(ip, r.https_port.unwrap_or(plus(2))));
                let raft = (kind == RoleKind::Db).then(|| {
                    let derived = self.port_base.saturating_add(RAFT_PORT_OFFSET).saturating_add(step);
                    SocketAddr::new(ip, r.raft_port.unwrap_or(if self.port_base == 0 { 0 } else { derived }))
                });
                out.push(Placed {
                    name: r.name.clone(),
                    kind,
                    host: h.name.clone(),
                    addr: SocketAddr::new(ip, port),
                    admin,
                    https,
                    raft,
                });
            }
        }
        out
    }

    pub fn of_kind(&self, kind: RoleKind) -> Vec<Placed> {
        let mut v: Vec<Placed> = self.placed().into_iter().filter(|p| p.kind == kind).collect();
        v.sort_by_key(|a| natural_key(&a.name));
        v
    }
}

/// `web10` sorts after `web2`.
fn natural_key(s: &str) -> (String, u64) {
    let digits: String =
        s.chars().rev().take_while(|c| c.is_ascii_digit()).collect::<Vec<_>>().into_iter().rev().collect();
    let prefix = s[..s.len() - digits.len()].to_string();
    (prefix, digits.parse().unwrap_or(0))
}

impl Validate for Topology {
    fn validate(&self, v: &mut Validator) {
        crate::util::check_role(v, self.role, crate::Role::Topology, "a topology");
        v.scope("app", |v| self.app.validate_in(v));
        if let Some(f) = &self.firewall {
            v.scope("firewall", |v| f.validate_in(self, v));
        }
        if let Some(b) = &self.backup {
            let dbs: Vec<&str> = self
                .hosts
                .iter()
                .flat_map(|h| &h.roles)
                .filter(|r| r.kind == RoleKind::Db)
                .map(|r| r.name.as_str())
                .collect();
            v.scope("backup", |v| b.validate_in(v, &dbs));
        }
        if self.hosts.is_empty() {
            v.error("host", "at least one [[host]] is required");
        }
        if !(1..=8).contains(&self.lb.processes) {
            v.scope("lb", |v| v.error("processes", "must be between 1 and 8"));
        }
        if self.port_base > 65000 {
            v.error("port_base", "must be at most 65000 (derived ports go up to base+50 and more)");
        }
        let mut hosts = HashSet::new();
        let mut names = HashSet::new();
        v.scope("host", |v| {
            for (i, h) in self.hosts.iter().enumerate() {
                v.index(i, |v| {
                    check_name(v, "name", &h.name);
                    if !hosts.insert(h.name.as_str()) {
                        v.error("name", format!("duplicate host `{}`", h.name));
                    }
                    v.scope("role", |v| {
                        for (j, r) in h.roles.iter().enumerate() {
                            v.index(j, |v| {
                                check_name(v, "name", &r.name);
                                if !names.insert(r.name.as_str()) {
                                    v.error("name", format!("duplicate role instance `{}`", r.name));
                                }
                                if r.admin_port.is_some() && r.kind != RoleKind::Lb {
                                    v.error("admin_port", "only lb instances have an admin port");
                                }
                                if r.https_port.is_some() && r.kind != RoleKind::Lb {
                                    v.error("https_port", "only lb instances have an HTTPS port");
                                }
                                if r.raft_port.is_some() && r.kind != RoleKind::Db {
                                    v.error("raft_port", "only db instances have a Raft port");
                                }
                            });
                        }
                    });
                });
            }
        });
        let count = |k| self.hosts.iter().flat_map(|h| &h.roles).filter(|r| r.kind == k).count();
        if !self.hosts.is_empty() {
            for (k, what) in
                [(RoleKind::Lb, "lb"), (RoleKind::Web, "web"), (RoleKind::App, "app"), (RoleKind::Db, "db")]
            {
                if count(k) == 0 {
                    v.error("host", format!("the topology needs at least one {what} role"));
                }
            }
            if count(RoleKind::Db) % 2 == 0 && count(RoleKind::Db) > 0 {
                v.error(
                    "host",
                    format!(
                        "{} db roles: use an odd number of database voters so a majority survives a split",
                        count(RoleKind::Db)
                    ),
                );
            }
        }
        let lbs: HashSet<&str> = self
            .hosts
            .iter()
            .flat_map(|h| &h.roles)
            .filter(|r| r.kind == RoleKind::Lb)
            .map(|r| r.name.as_str())
            .collect();
        let mut groups = HashSet::new();
        if !self.floating.is_empty() && !self.lb.public_address.is_some_and(|a| a.is_unspecified()) {
            v.scope("lb", |v| {
                v.error(
                    "public_address",
                    "floating addresses need public_address = \"0.0.0.0\": the lbs must accept connections to them",
                )
            });
        }
        v.scope("floating", |v| {
            for (i, f) in self.floating.iter().enumerate() {
                v.index(i, |v| {
                    check_name(v, "name", &f.name);
                    if !groups.insert(f.name.as_str()) {
                        v.error("name", format!("duplicate floating group `{}`", f.name));
                    }
                    if f.lbs.is_empty() || f.lbs.len() > Floating::PRIORITIES.len() {
                        v.error("lbs", "list 1 to 3 lb role instances, most preferred first");
                    }
                    for l in &f.lbs {
                        if !lbs.contains(l.as_str()) {
                            v.error("lbs", format!("`{l}` is not an lb role instance of this topology"));
                        }
                    }
                    if f.lbs.iter().collect::<HashSet<_>>().len() != f.lbs.len() {
                        v.error("lbs", "an lb is listed twice");
                    }
                    // The rest is the lb's own [[vrrp]] schema.
                    let as_lb = crate::vrrp::VrrpInstance {
                        name: f.name.clone(),
                        interface: f.interface.clone(),
                        vrid: f.vrid,
                        priority: Floating::PRIORITIES[0],
                        advert_interval: f.advert_interval,
                        preempt: true,
                        preempt_delay: Duration::ZERO,
                        addresses: f.addresses.clone(),
                        unicast_peers: Vec::new(),
                        source: None,
                        track_weight: Floating::TRACK_WEIGHT,
                    };
                    as_lb.validate(v);
                });
            }
        });
        // Listeners collide only on one machine (one host address).
        let machine = |host: &str| self.hosts.iter().find(|h| h.name == host).map(|h| h.address);
        let mut seen = HashSet::new();
        for p in self.placed() {
            for (_, a) in p.listeners() {
                if a.port() != 0 && !seen.insert((machine(&p.host), a)) {
                    v.error("host", format!("{} listens on {a}, which another role already uses", p.name));
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One host `a` running lb1, web1, app1 and db1: the hosts of a
    /// topology whose other sections a test is about.
    pub(crate) const ONE_HOST: &str = r#"
[[host]]
name = "a"
[[host.role]]
name = "lb1"
kind = "lb"
[[host.role]]
name = "web1"
kind = "web"
[[host.role]]
name = "app1"
kind = "app"
[[host.role]]
name = "db1"
kind = "db"
"#;

    #[test]
    fn default_is_the_classic_two_server_site() {
        let t = Topology::default_localhost();
        let mut v = Validator::default();
        t.validate(&mut v);
        assert!(v.is_empty(), "{v:?}");
        let p = t.placed();
        let find = |n: &str| p.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(find("lb1").addr.port(), 8080);
        assert_eq!(find("lb1").admin.unwrap().port(), 8081);
        assert_eq!(find("lb1").https.unwrap().port(), 8082);
        assert_eq!(find("web2").addr.port(), 8091);
        assert_eq!(find("app1").addr.port(), 8100);
        assert_eq!(find("db1").addr.port(), 8110);
        assert_eq!(find("db3").addr.port(), 8112);
        assert_eq!(find("db1").raft.unwrap().port(), 8130);
        assert_eq!(find("db3").raft.unwrap().port(), 8132);
        assert_eq!(find("app1").raft, None);
        assert_eq!(find("db3").host, "lb1");
        assert_eq!(t.of_kind(RoleKind::Db).iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["db1", "db2", "db3"]);
    }

    #[test]
    fn file_round_trips_and_reports_conflicts() {
        let text = r#"
port_base = 9000
[[host]]
name = "a"
[[host.role]]
name = "lb1"
kind = "lb"
[[host.role]]
name = "web1"
kind = "web"
port = 9000
[[host.role]]
name = "app1"
kind = "app"
[[host.role]]
name = "db1"
kind = "db"
[[host.role]]
name = "db2"
kind = "db"
"#;
        let err = crate::from_str::<Topology>(text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("2 db roles"), "{err}");
        assert!(err.contains("web1 listens on 127.0.0.1:9000, which another role already uses"), "{err}");
        assert_eq!(crate::Role::detect(text), Some(crate::Role::Topology));
    }
}
