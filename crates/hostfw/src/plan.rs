//! The plan: every listener of every host (role, address, port, protocol)
//! and who may reach it, straight from the topology. [`listeners`] is the
//! one place that knows the site's flows; a host's inbound rules are its
//! own rows, its outbound rules the rows of other hosts that it may reach.
use bulwark_config::host_firewall::{Egress, HostFirewall, Transport};
use bulwark_config::topology::{Placed, RoleKind, Topology};
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// An lb's public plain-HTTP listener.
    Http,
    /// An lb's public HTTPS listener.
    Https,
    /// An lb's admin listener (dashboard, metrics, API).
    Admin,
    /// A web server (from the lbs).
    Web,
    /// An app server (from the web servers).
    App,
    /// A database node's client API: from the apps, and from the other db
    /// nodes, which forward writes, promote and membership changes to the
    /// primary over it.
    DbApi,
    /// Raft between the database nodes, on a listener of its own (from the
    /// other db nodes only).
    DbPeer,
    /// The lb's polling of app and db nodes for the dashboard.
    Monitoring,
    /// The scheduled backups' status listener (`[backup]`), polled by the
    /// lbs for the dashboard.
    BackupStatus,
    /// SSH, for the operator.
    Ssh,
    /// VRRP adverts between the lbs of a floating group.
    Vrrp,
    /// The operator's own service (`allow_in`).
    Operator,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Http => "http",
            Service::Https => "https",
            Service::Admin => "admin",
            Service::Web => "web",
            Service::App => "app",
            Service::DbApi => "db api",
            Service::DbPeer => "db peers",
            Service::Monitoring => "monitoring",
            Service::BackupStatus => "backup status",
            Service::Ssh => "ssh",
            Service::Vrrp => "vrrp",
            Service::Operator => "allow_in",
        }
    }
}

/// The transport of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    /// IP protocol 112.
    Vrrp,
}

/// One address that may reach a listener, with who it is (for the plan's
/// comments).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub who: String,
    pub net: IpNet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Every address (the lbs' public ports).
    Anyone,
    /// Only these; an empty list lets nobody in (only the host itself).
    Only(Vec<Peer>),
}

/// One listener of one host and who may reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The host (topology `[[host]] name`).
    pub host: String,
    /// The role instance (`db1`), or `ssh`, or the floating group.
    pub role: String,
    pub service: Service,
    /// Local addresses it answers on; empty = every address of the host
    /// (a listener bound to `0.0.0.0`).
    pub addresses: Vec<IpAddr>,
    /// Floating addresses that also reach it (shown in the plan; covered
    /// by `addresses` being empty, since the lbs then bind `0.0.0.0`).
    pub floating: Vec<IpAddr>,
    /// TCP port; `None` for VRRP.
    pub port: Option<u16>,
    pub protocol: Protocol,
    pub from: Allowed,
}

/// A destination this host may open connections to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub why: String,
    /// Empty = any destination address.
    pub to: Vec<IpNet>,
    pub protocol: OutProtocol,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutProtocol {
    Tcp,
    Udp,
    Vrrp,
}

/// Everything the ruleset of one host is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPlan {
    pub host: String,
    pub address: IpAddr,
    pub inbound: Vec<Listener>,
    /// `Some` when egress is restricted: what may go out besides replies.
    pub outbound: Option<Vec<Outbound>>,
    pub public_rate_limit: Option<(u32, u32)>,
    pub log_drops: bool,
}

/// Why there is no plan for a host; each names the topology key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("--host: no host `{name}` in the topology (hosts: {known})")]
    UnknownHost { name: String, known: String },
    #[error(
        "host[{index}].address: host `{host}` has no address of its own (it defaults to 127.0.0.1) while other hosts are on other machines: set the address its roles are reached at"
    )]
    NoAddress { index: usize, host: String },
    #[error(
        "host[{index}].role: {role} has no fixed {what} port (port_base = 0): the firewall needs fixed ports; set port_base or the role's ports"
    )]
    FreePort { index: usize, role: String, what: &'static str },
}

fn host_address(t: &Topology, host: &str) -> IpAddr {
    t.hosts.iter().find(|h| h.name == host).map(|h| h.address).expect("a placed role's host exists")
}

fn peer(t: &Topology, p: &Placed) -> Peer {
    Peer { who: p.name.clone(), net: IpNet::from(host_address(t, &p.host)) }
}

fn peers<'a>(t: &Topology, of: impl IntoIterator<Item = &'a Placed>) -> Vec<Peer> {
    let mut v: Vec<Peer> = of.into_iter().map(|p| peer(t, p)).collect();
    v.sort();
    v.dedup();
    v
}

/// Every listener of every host of the topology, with who may reach it:
/// web from the lbs, app from the webs, the db API from the apps, db peer
/// traffic from the other db nodes, lb admin from `operator_from`, the
/// public ports from anyone, VRRP between the lbs of a floating group, SSH
/// from `ssh_from`, and (with `monitoring`) app and db from the lbs.
pub fn listeners(t: &Topology, fw: &HostFirewall) -> Vec<Listener> {
    let placed = t.placed();
    let of = |k: RoleKind| placed.iter().filter(move |p| p.kind == k);
    let lbs = peers(t, of(RoleKind::Lb));
    let webs = peers(t, of(RoleKind::Web));
    let apps = peers(t, of(RoleKind::App));
    let dbs = peers(t, of(RoleKind::Db));
    let operators: Vec<Peer> =
        fw.operator_sources().into_iter().map(|net| Peer { who: "operator".into(), net }).collect();
    let mut out = Vec::new();
    let tcp = |p: &Placed, service, addr: std::net::SocketAddr, from: Vec<Peer>| Listener {
        host: p.host.clone(),
        role: p.name.clone(),
        service,
        addresses: if addr.ip().is_unspecified() { Vec::new() } else { vec![addr.ip()] },
        floating: Vec::new(),
        port: Some(addr.port()),
        protocol: Protocol::Tcp,
        from: Allowed::Only(from),
    };
    for p in &placed {
        match p.kind {
            RoleKind::Lb => {
                let floating: Vec<IpAddr> = t
                    .floating
                    .iter()
                    .filter(|f| f.lbs.contains(&p.name))
                    .flat_map(|f| f.addresses.iter())
                    .map(|a| IpAddr::V4(a.addr()))
                    .collect();
                for (service, addr) in [(Service::Http, Some(p.addr)), (Service::Https, p.https)] {
                    if let Some(addr) = addr {
                        out.push(Listener {
                            floating: floating.clone(),
                            from: Allowed::Anyone,
                            ..tcp(p, service, addr, Vec::new())
                        });
                    }
                }
                if let Some(admin) = p.admin {
                    out.push(tcp(p, Service::Admin, admin, operators.clone()));
                }
            }
            RoleKind::Web => out.push(tcp(p, Service::Web, p.addr, lbs.clone())),
            RoleKind::App => {
                out.push(tcp(p, Service::App, p.addr, webs.clone()));
                if fw.monitoring {
                    out.push(tcp(p, Service::Monitoring, p.addr, lbs.clone()));
                }
            }
            RoleKind::Db => {
                let others: Vec<Peer> = dbs.iter().filter(|d| d.who != p.name).cloned().collect();
                let api_callers: Vec<Peer> = apps.iter().chain(&others).cloned().collect();
                out.push(tcp(p, Service::DbApi, p.addr, api_callers));
                if let Some(raft) = p.raft {
                    out.push(tcp(p, Service::DbPeer, raft, others));
                }
                if fw.monitoring {
                    out.push(tcp(p, Service::Monitoring, p.addr, lbs.clone()));
                }
            }
        }
    }
    // The backup schedule's status listener, on its db role's host: the
    // lbs poll it (whatever `monitoring` says: its alerts are the point).
    if let Some((node, addr)) = t.backup_placement() {
        if let Some(p) = placed.iter().find(|p| p.name == node) {
            out.push(tcp(p, Service::BackupStatus, addr, lbs.clone()));
        }
    }
    // VRRP: each lb host hears the other lbs of its groups.
    for f in &t.floating {
        let members: Vec<&Placed> = placed.iter().filter(|p| f.lbs.contains(&p.name)).collect();
        for m in &members {
            let others = peers(t, members.iter().copied().filter(|o| o.host != m.host));
            out.push(Listener {
                host: m.host.clone(),
                role: f.name.clone(),
                service: Service::Vrrp,
                addresses: Vec::new(),
                floating: Vec::new(),
                port: None,
                protocol: Protocol::Vrrp,
                from: Allowed::Only(others),
            });
        }
    }
    for (i, r) in fw.allow_in.iter().enumerate() {
        for h in t.hosts.iter().filter(|h| r.on(&h.name)) {
            out.push(Listener {
                host: h.name.clone(),
                role: format!("allow_in[{i}]"),
                service: Service::Operator,
                addresses: Vec::new(),
                floating: Vec::new(),
                port: Some(r.port),
                protocol: match r.protocol {
                    Transport::Tcp => Protocol::Tcp,
                    Transport::Udp => Protocol::Udp,
                },
                from: Allowed::Only(r.sources().into_iter().map(|net| Peer { who: "operator".into(), net }).collect()),
            });
        }
    }
    let ssh = fw.ssh_sources();
    if !ssh.is_empty() {
        for h in &t.hosts {
            out.push(Listener {
                host: h.name.clone(),
                role: "ssh".into(),
                service: Service::Ssh,
                addresses: Vec::new(),
                floating: Vec::new(),
                port: Some(fw.ssh_port),
                protocol: Protocol::Tcp,
                from: Allowed::Only(ssh.iter().map(|&net| Peer { who: "ssh_from".into(), net }).collect()),
            });
        }
    }
    out
}

/// The plan of host `name`: its listeners, and with `egress = "restrict"`
/// every flow of the topology it starts (the listeners of other hosts that
/// let it in), VRRP adverts to its group and `egress_allow`.
pub fn host_plan(t: &Topology, fw: &HostFirewall, name: &str) -> Result<HostPlan, PlanError> {
    let Some(host) = t.hosts.iter().find(|h| h.name == name) else {
        let known: Vec<&str> = t.hosts.iter().map(|h| h.name.as_str()).collect();
        return Err(PlanError::UnknownHost { name: name.into(), known: known.join(", ") });
    };
    // On one machine (every host on loopback) the firewall only guards
    // against the outside; across machines every host needs its address.
    if t.hosts.iter().any(|h| !h.address.is_loopback()) {
        if let Some((index, h)) = t.hosts.iter().enumerate().find(|(_, h)| h.address.is_loopback()) {
            return Err(PlanError::NoAddress { index, host: h.name.clone() });
        }
    }
    for (index, h) in t.hosts.iter().enumerate() {
        for p in t.placed().iter().filter(|p| p.host == h.name) {
            for (what, a) in [("main", Some(p.addr)), ("admin", p.admin), ("https", p.https)] {
                if a.is_some_and(|a| a.port() == 0) {
                    return Err(PlanError::FreePort { index, role: p.name.clone(), what });
                }
            }
        }
    }
    let all = listeners(t, fw);
    let inbound: Vec<Listener> = all.iter().filter(|l| l.host == name).cloned().collect();
    let outbound = (fw.egress == Egress::Restrict).then(|| {
        let mut out = Vec::new();
        for l in all.iter().filter(|l| l.host != name && !matches!(l.service, Service::Ssh | Service::Operator)) {
            let Allowed::Only(from) = &l.from else { continue };
            if !from.iter().any(|p| p.net.contains(&host.address)) {
                continue;
            }
            let to: Vec<IpNet> = if l.addresses.is_empty() {
                vec![IpNet::from(host_address(t, &l.host))]
            } else {
                l.addresses.iter().map(|&a| IpNet::from(a)).collect()
            };
            let protocol = match l.protocol {
                Protocol::Tcp => OutProtocol::Tcp,
                Protocol::Udp => OutProtocol::Udp,
                Protocol::Vrrp => OutProtocol::Vrrp,
            };
            // One rule per destination, however many flows share it (the
            // db API serves apps and db peers alike).
            match out.iter_mut().find(|o: &&mut Outbound| o.to == to && o.protocol == protocol && o.port == l.port) {
                Some(o) => o.why = format!("{}, {}", o.why, l.service.name()),
                None => {
                    out.push(Outbound { why: format!("{} {}", l.role, l.service.name()), to, protocol, port: l.port })
                }
            }
        }
        // Multicast adverts go to the VRRP group address.
        if inbound.iter().any(|l| l.service == Service::Vrrp) {
            let group: Vec<IpNet> = vec!["224.0.0.18/32".parse().expect("v4"), "ff02::12/128".parse().expect("v6")];
            out.push(Outbound { why: "vrrp adverts".into(), to: group, protocol: OutProtocol::Vrrp, port: None });
        }
        for (i, r) in fw.egress_allow.iter().enumerate() {
            let protocol = match r.protocol {
                Transport::Tcp => OutProtocol::Tcp,
                Transport::Udp => OutProtocol::Udp,
            };
            out.push(Outbound { why: format!("egress_allow[{i}]"), to: r.destinations(), protocol, port: r.port });
        }
        out
    });
    Ok(HostPlan {
        host: name.into(),
        address: host.address,
        inbound,
        outbound,
        public_rate_limit: fw.public_rate_limit.map(|r| (r.per_second, r.burst.unwrap_or(r.per_second))),
        log_drops: fw.log_drops,
    })
}

impl HostPlan {
    /// The plan as a table for people: one line per listener.
    pub fn describe(&self) -> String {
        let mut s = format!("host {} ({})\n", self.host, self.address);
        for l in &self.inbound {
            let at = if l.addresses.is_empty() {
                "*".to_string()
            } else {
                l.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
            };
            let port = l.port.map(|p| format!(":{p}")).unwrap_or_default();
            let proto = match l.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Vrrp => "vrrp",
            };
            let from = match &l.from {
                Allowed::Anyone => "anyone".to_string(),
                Allowed::Only(v) if v.is_empty() => "this host only".to_string(),
                Allowed::Only(v) => {
                    let names: BTreeSet<String> = v
                        .iter()
                        .map(|p| match p.net.prefix_len() == p.net.max_prefix_len() {
                            true => format!("{} ({})", p.who, p.net.addr()),
                            false => format!("{} ({})", p.who, p.net),
                        })
                        .collect();
                    names.into_iter().collect::<Vec<_>>().join(", ")
                }
            };
            let floating = if l.floating.is_empty() {
                String::new()
            } else {
                format!(" [floating {}]", l.floating.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","))
            };
            s.push_str(&format!(
                "  {:<8} {:<10} {proto:<4} {at}{port}{floating} from {from}\n",
                l.role,
                l.service.name()
            ));
        }
        match &self.outbound {
            None => s.push_str("  outbound: open\n"),
            Some(v) => {
                s.push_str("  outbound: replies, and\n");
                for o in v {
                    let to = if o.to.is_empty() {
                        "*".to_string()
                    } else {
                        o.to.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
                    };
                    let port = o.port.map(|p| format!(":{p}")).unwrap_or_default();
                    s.push_str(&format!("    {:<20} {:?} {to}{port}\n", o.why, o.protocol));
                }
            }
        }
        s
    }
}
