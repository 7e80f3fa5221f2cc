//! Schema of the topology's `[firewall]` table: the host firewall (nftables)
//! that `bulwark firewall` and `up --host` derive from the topology. Not to
//! be confused with [`crate::firewall`], the request filtering inside each
//! role (ACLs, rate limits): this one is the kernel's, per machine.
//!
//! ```toml
//! [firewall]
//! manage = true                     # `up --host NAME` installs it (as root)
//! ssh_from = ["192.0.2.0/24"]       # default: anyone; allow_ssh = false drops SSH
//! operator_from = ["192.0.2.0/24"]  # who reaches the lb admin listener
//! egress = "restrict"               # default "open"
//! egress_allow = [{ to = "192.0.2.53", protocol = "udp", port = 53 }]
//! public_rate_limit = { per_second = 50, burst = 100 }
//! remove_on_stop = false
//! ```
//!
//! Only the schema and its checks live here; the ruleset itself is built by
//! the `bulwark-hostfw` crate.
use crate::address::Networks;
use crate::topology::Topology;
use crate::Validator;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostFirewall {
    /// `up --host NAME` installs this host's ruleset when it runs as root
    /// (and says so when it does not).
    pub manage: bool,
    /// Whether SSH is allowed in at all. SSH stays open unless this is
    /// explicitly `false`: a firewall must not lock its operator out.
    pub allow_ssh: bool,
    /// Who may reach `ssh_port` (CIDRs, addresses or `all`).
    pub ssh_from: Vec<Networks>,
    pub ssh_port: u16,
    /// Who may reach the lb admin listener (dashboard, metrics) besides the
    /// lb host itself. Empty: only the lb host.
    pub operator_from: Vec<Networks>,
    /// The lbs' admin listener polls every app and db node for the
    /// dashboard (health, db role, lag): allow the lb hosts in to them.
    /// `false` keeps the lb hosts out of the app and db ports entirely
    /// (the dashboard then shows those nodes as unreachable).
    pub monitoring: bool,
    /// Outbound traffic: `open` (everything) or `restrict` (replies, the
    /// cluster's own flows and `egress_allow` only).
    pub egress: Egress,
    /// With `egress = "restrict"`: the other destinations this host may
    /// open connections to (DNS, NTP, package mirrors).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress_allow: Vec<EgressRule>,
    /// Your own inbound services (a monitoring exporter, a backup agent):
    /// let `from` reach `port` on `hosts` (every host when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_in: Vec<InboundRule>,
    /// Remove the ruleset when `up --host` stops cleanly. Default: keep it
    /// (a host that stops serving stays closed).
    pub remove_on_stop: bool,
    /// New connections per client address on the lbs' public ports,
    /// enforced by the kernel before the lb sees them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_rate_limit: Option<ConnectionRate>,
    /// Log dropped packets (prefix `bulwark drop in: ` or `bulwark drop out: `, at most 5 a minute).
    pub log_drops: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    #[default]
    Open,
    Restrict,
}

/// One allowed outbound destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    /// An address or CIDR.
    pub to: Networks,
    pub protocol: Transport,
    /// Destination port; every port when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// One inbound service of the operator's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundRule {
    /// Who may reach it: CIDRs, addresses or `all`.
    pub from: Vec<Networks>,
    pub protocol: Transport,
    pub port: u16,
    /// The hosts (topology `[[host]] name`) it runs on; every host when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

impl InboundRule {
    /// The source networks (valid after validation).
    pub fn sources(&self) -> Vec<IpNet> {
        networks(&self.from)
    }

    /// Whether it applies to host `name`.
    pub fn on(&self, name: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRate {
    pub per_second: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl Default for HostFirewall {
    fn default() -> Self {
        HostFirewall {
            manage: false,
            allow_ssh: true,
            ssh_from: vec!["all".parse().expect("`all` is a network list")],
            ssh_port: 22,
            operator_from: Vec::new(),
            monitoring: true,
            egress: Egress::Open,
            egress_allow: Vec::new(),
            allow_in: Vec::new(),
            remove_on_stop: false,
            public_rate_limit: None,
            log_drops: true,
        }
    }
}

/// Every network of `list`.
fn networks(list: &[Networks]) -> Vec<IpNet> {
    list.iter().flat_map(|n| n.nets().iter().copied()).collect()
}

impl HostFirewall {
    /// Who may reach SSH; empty when `allow_ssh = false`.
    pub fn ssh_sources(&self) -> Vec<IpNet> {
        if self.allow_ssh {
            networks(&self.ssh_from)
        } else {
            Vec::new()
        }
    }

    /// Who may reach the lb admin listener from outside the lb host.
    pub fn operator_sources(&self) -> Vec<IpNet> {
        networks(&self.operator_from)
    }

    /// Checks of the `[firewall]` table against the topology it is part of.
    pub fn validate_in(&self, t: &Topology, v: &mut Validator) {
        if self.allow_ssh && self.ssh_from.is_empty() {
            v.error(
                "ssh_from",
                "an empty list would lock the operator out; set allow_ssh = false to drop SSH on purpose",
            );
        }
        if self.ssh_port == 0 {
            v.error("ssh_port", "must be a port between 1 and 65535");
        }
        if self.allow_ssh && self.ssh_port != 0 {
            for p in t.placed() {
                for (_, a) in p.listeners() {
                    if a.port() == self.ssh_port {
                        v.error(
                            "ssh_port",
                            format!("port {} is also {}'s listener on host {}", self.ssh_port, p.name, p.host),
                        );
                    }
                }
            }
        }
        if self.egress == Egress::Open && !self.egress_allow.is_empty() {
            v.error("egress_allow", "only used with egress = \"restrict\" (with \"open\" everything may go out)");
        }
        v.scope("egress_allow", |v| {
            for (i, r) in self.egress_allow.iter().enumerate() {
                v.index(i, |v| {
                    if r.port == Some(0) {
                        v.error("port", "must be a port between 1 and 65535 (leave it out for every port)");
                    }
                });
            }
        });
        v.scope("allow_in", |v| {
            for (i, r) in self.allow_in.iter().enumerate() {
                v.index(i, |v| {
                    if r.from.is_empty() {
                        v.error("from", "list who may reach it (CIDRs, addresses or `all`)");
                    }
                    if r.port == 0 {
                        v.error("port", "must be a port between 1 and 65535");
                    }
                    for (j, h) in r.hosts.iter().enumerate() {
                        if !t.hosts.iter().any(|x| &x.name == h) {
                            v.scope("hosts", |v| v.index(j, |v| v.error("", format!("no host `{h}` in the topology"))));
                        }
                    }
                });
            }
        });
        if let Some(r) = &self.public_rate_limit {
            v.scope("public_rate_limit", |v| {
                if r.per_second == 0 {
                    v.error("per_second", "must be at least 1");
                }
                if r.burst == Some(0) {
                    v.error("burst", "must be at least 1");
                }
            });
        }
    }
}

impl EgressRule {
    /// The destination networks (valid after validation).
    pub fn destinations(&self) -> Vec<IpNet> {
        self.to.nets().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use crate::topology::Topology;

    use crate::topology::tests::ONE_HOST;

    fn load(firewall: &str) -> Result<Topology, crate::ConfigError> {
        crate::from_str::<Topology>(&format!("{firewall}\n{ONE_HOST}"), "t.toml")
    }

    #[test]
    fn defaults_keep_ssh_open_and_egress_open() {
        let t = load("").unwrap();
        assert!(t.firewall.is_none());
        let t = load("[firewall]\nmanage = true").unwrap();
        let f = t.firewall.unwrap();
        assert!(f.manage && f.allow_ssh && f.monitoring && f.log_drops && !f.remove_on_stop);
        assert_eq!(f.ssh_port, 22);
        let all: Vec<String> = f.ssh_sources().iter().map(|n| n.to_string()).collect();
        assert_eq!(all, ["0.0.0.0/0", "::/0"]);
        assert_eq!(f.egress, super::Egress::Open);
        assert!(f.operator_sources().is_empty());
    }

    #[test]
    fn bad_keys_are_named_with_their_line() {
        // A list entry that is no network stops the load at once.
        let e = load("[firewall]\nssh_from = [\"10.0.0.0/33\"]\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:2: firewall.ssh_from[0]: `10.0.0.0/33` is not a CIDR"), "{e}");
        let e = load("[firewall]\noperator_from = [\"all\", \"nope\"]\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:2: firewall.operator_from[1]: `nope` is not a CIDR"), "{e}");
        let e = load("[firewall]\negress_allow = [{ to = \"192.0.2.1\", protocol = \"udp\", port = 53 }]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:2: firewall.egress_allow: only used with egress = \"restrict\""), "{e}");

        let e = load("[firewall]\nssh_from = []\n").unwrap_err().to_string();
        assert!(e.contains("firewall.ssh_from: an empty list would lock the operator out"), "{e}");
        assert!(load("[firewall]\nssh_from = []\nallow_ssh = false\n").is_ok());

        let e = load("[firewall]\nssh_port = 8080\n").unwrap_err().to_string();
        assert!(e.contains("t.toml:2: firewall.ssh_port: port 8080 is also lb1's listener on host a"), "{e}");

        let e = load("[firewall]\negress_allow = [{ to = \"x\", protocol = \"udp\" }]\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:2: firewall.egress_allow[0].to: `x` is not a CIDR"), "{e}");
        let text =
            "[firewall]\negress = \"restrict\"\negress_allow = [{ to = \"::1\", protocol = \"udp\", port = 0 }]\n\
                    public_rate_limit = { per_second = 0 }\n";
        let e = load(text).unwrap_err().to_string();
        assert!(e.contains("firewall.egress_allow[0].port: must be a port"), "{e}");
        assert!(e.contains("firewall.public_rate_limit.per_second: must be at least 1"), "{e}");

        let text = "[firewall]\nallow_in = [{ from = [\"10.0.0.0/8\"], protocol = \"tcp\", port = 9100, hosts = [\"a\", \"b\"] }]\n";
        let e = load(text).unwrap_err().to_string();
        assert!(e.contains("t.toml:2: firewall.allow_in[0].hosts[1]: no host `b` in the topology"), "{e}");
        assert!(load(&text.replace(", \"b\"", "")).is_ok());

        let e = load("[firewall]\negress = \"closed\"\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:2:"), "{e}");
        let e = load("[firewall]\nmanaged = true\n").unwrap_err().to_string();
        assert!(e.contains("managed"), "{e}");
    }
}
