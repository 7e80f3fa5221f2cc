//! The topology each chaos stack runs: its hosts on the namespaces' bridge,
//! its roles, its floating addresses and the host firewall of every host
//! (`[firewall] manage = true`), written as the `topology.toml` that
//! `bulwark up --host H` reads.
use crate::net;
use std::net::{Ipv4Addr, SocketAddr};

/// Which tiers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// Only the three database nodes (db1 on server1, db2 on server2, db3
    /// on lb1); the workload uses `bulwark_db_api::Client` directly.
    Db,
    /// The default topology: lb1 (+db3), server1 and server2 (web, app,
    /// db each); the workload goes through the lb.
    Full,
    /// Two lb hosts (lb1, lb2) sharing the floating address 198.18.0.100
    /// (lb1 preferred; VRRP, 100 ms adverts), server1 and server2 (web,
    /// app, db each), and db3 on a host of its own (server3), so that
    /// losing an lb host never costs a database voter. The workload talks
    /// only to the floating address.
    Floating,
    /// [`Stack::Floating`] with a second floating address, 198.18.0.101,
    /// preferring lb2: each lb holds one (active-active). Half the clients
    /// use each address.
    FloatingActiveActive,
}

impl Stack {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Db => "db",
            Stack::Full => "full",
            Stack::Floating => "floating",
            Stack::FloatingActiveActive => "floating-aa",
        }
    }

    /// Whether the tiers behind the lb run (the workload uses the site).
    pub fn has_site(self) -> bool {
        self != Stack::Db
    }

    /// Whether the lbs share floating addresses.
    pub fn has_floating(self) -> bool {
        !self.floating().is_empty()
    }

    /// The floating addresses of this stack, most preferred lb host first.
    pub fn floating(self) -> Vec<FloatingGroup> {
        let group = |name: &str, vrid: u8, last: u8, hosts: [&str; 2]| FloatingGroup {
            name: name.into(),
            vrid,
            address: Ipv4Addr::new(198, 18, 0, last),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        };
        match self {
            Stack::Db | Stack::Full => Vec::new(),
            Stack::Floating => vec![group("www-a", 51, 100, ["lb1", "lb2"])],
            Stack::FloatingActiveActive => {
                vec![group("www-a", 51, 100, ["lb1", "lb2"]), group("www-b", 52, 101, ["lb2", "lb1"])]
            }
        }
    }
}

/// One floating address (a `[[floating]]` group of the topology). Each lb
/// role runs on the host of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingGroup {
    pub name: String,
    pub vrid: u8,
    pub address: Ipv4Addr,
    /// lb hosts, most preferred first.
    pub hosts: Vec<String>,
}

impl FloatingGroup {
    /// Where clients send their requests.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address.into(), LB.port())
    }
}

/// The floating groups' advertisement interval.
pub const ADVERT_INTERVAL_MS: u64 = 100;

/// The first lb's public address (the workload's target without a
/// floating address).
pub const LB: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)), 8080);

pub(crate) fn topology_text(stack: Stack) -> String {
    let mut t = String::from(
        r#"# The chaos suite's topology: the default picture on three namespaces.
name = "chaos"
port_base = 8080

[restart]
initial_backoff = "200ms"
max_backoff = "1s"

[lb]
tls = false
check_interval = "250ms"
"#,
    );
    let groups = stack.floating();
    if !groups.is_empty() {
        t.push_str("public_address = \"0.0.0.0\"\n");
    }
    // Each host: name, address, roles (name and kind).
    type Host = (&'static str, &'static str, &'static [(&'static str, &'static str)]);
    let hosts: &[Host] = match stack {
        Stack::Floating | Stack::FloatingActiveActive => &[
            ("lb1", "198.18.0.10", &[("lb1", "lb")]),
            ("lb2", "198.18.0.13", &[("lb2", "lb")]),
            ("server1", "198.18.0.11", &[("web1", "web"), ("app1", "app"), ("db1", "db")]),
            ("server2", "198.18.0.12", &[("web2", "web"), ("app2", "app"), ("db2", "db")]),
            ("server3", "198.18.0.14", &[("db3", "db")]),
        ],
        Stack::Full => &[
            ("lb1", "198.18.0.10", &[("lb1", "lb"), ("db3", "db")]),
            ("server1", "198.18.0.11", &[("web1", "web"), ("app1", "app"), ("db1", "db")]),
            ("server2", "198.18.0.12", &[("web2", "web"), ("app2", "app"), ("db2", "db")]),
        ],
        // "front" is never started in the database-only scenarios (a
        // topology needs every tier).
        Stack::Db => &[
            ("lb1", "198.18.0.10", &[("db3", "db")]),
            ("server1", "198.18.0.11", &[("db1", "db")]),
            ("server2", "198.18.0.12", &[("db2", "db")]),
            ("front", "198.18.0.20", &[("lb1", "lb"), ("web1", "web"), ("app1", "app")]),
        ],
    };
    for (name, address, roles) in hosts {
        let roles: Vec<String> =
            roles.iter().map(|(r, kind)| format!("{{ name = \"{r}\", kind = \"{kind}\" }}")).collect();
        t.push_str(&format!("\n[[host]]\nname = \"{name}\"\naddress = \"{address}\"\nrole = [{}]\n", roles.join(", ")));
    }
    t.push_str(&firewall_text(stack));
    for g in groups {
        let lbs: Vec<String> = g.hosts.iter().map(|h| format!("\"{h}\"")).collect();
        t.push_str(&format!(
            "\n[[floating]]\nname = \"{}\"\naddresses = [\"{}/24\"]\ninterface = \"eth0\"\nvrid = {}\nlbs = [{}]\nadvert_interval = \"{ADVERT_INTERVAL_MS}ms\"\n",
            g.name,
            g.address,
            g.vrid,
            lbs.join(", ")
        ));
    }
    t
}

/// The host firewall, on every host: each `up --host` installs its host's
/// nftables ruleset (it runs as root in the host's namespace) before its
/// roles start, so every scenario runs with only the topology's flows
/// open. The observer (the workload client and the monitors, on the
/// bridge) is the operator: it reaches the lb admin listeners and, as a
/// monitoring network would, each database node's API.
fn firewall_text(stack: Stack) -> String {
    let db3_host = if stack.has_floating() { "server3" } else { "lb1" };
    let mut t = format!("\n[firewall]\nmanage = true\noperator_from = [\"{}/32\"]\nallow_in = [\n", net::OBSERVER);
    for (port, host) in [(8110, "server1"), (8111, "server2"), (8112, db3_host)] {
        t.push_str(&format!(
            "  {{ from = [\"{}\"], protocol = \"tcp\", port = {port}, hosts = [\"{host}\"] }},\n",
            net::OBSERVER
        ));
    }
    t.push_str("]\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_config::topology::Topology;

    /// Every stack's topology manages its host firewall, and each started
    /// host's plan lets the observer reach what the harness uses: the lb's
    /// public and admin ports, each database node's API.
    #[test]
    fn every_host_runs_a_firewall_that_lets_the_observer_in() {
        for stack in [Stack::Db, Stack::Full, Stack::Floating, Stack::FloatingActiveActive] {
            let t: Topology = bulwark_config::from_str(&topology_text(stack), "chaos.toml")
                .unwrap_or_else(|e| panic!("{stack:?}: {e}"));
            let fw = t.firewall.clone().expect("a [firewall] table");
            assert!(fw.manage, "{stack:?}");
            let observer = std::net::IpAddr::V4(net::OBSERVER);
            let reaches = |host: &str, port: u16| {
                let plan = bulwark_hostfw::host_plan(&t, &fw, host).unwrap_or_else(|e| panic!("{stack:?} {host}: {e}"));
                plan.inbound.iter().any(|l| {
                    l.port == Some(port)
                        && match &l.from {
                            bulwark_hostfw::plan::Allowed::Anyone => true,
                            bulwark_hostfw::plan::Allowed::Only(peers) => {
                                peers.iter().any(|p| p.net.contains(&observer))
                            }
                        }
                })
            };
            let db3 = if stack.has_floating() { "server3" } else { "lb1" };
            for (host, port) in [("server1", 8110), ("server2", 8111), (db3, 8112)] {
                assert!(reaches(host, port), "{stack:?}: the observer cannot reach {host}:{port}");
            }
            // Only the database API: not another host's node, not the apps.
            assert!(!reaches("server1", 8111) && !reaches("server1", 8100), "{stack:?}");
            if stack.has_site() {
                let lbs: Vec<&str> = if stack.has_floating() { vec!["lb1", "lb2"] } else { vec!["lb1"] };
                for lb in lbs {
                    assert!(reaches(lb, LB.port()), "{stack:?}: public port of {lb}");
                }
                assert!(reaches("lb1", 8081), "{stack:?}: lb1's admin listener");
            }
        }
    }
}
