//! The topology a test hands `bulwark up`: a site's hosts and the roles on
//! each, and the site-wide sections (`[lb]`, `[backup]`, ...).

use super::{str_value, toml_value, typed_value};
use bulwark_config::backup::BackupSettings;
use bulwark_config::topology::RoleKind;
use std::net::IpAddr;
use toml::{Table, Value};

/// lb1, web1, app1 and three db nodes: the roles of a whole site on one
/// machine (`.host("one", &ONE_MACHINE_ROLES)`).
pub const ONE_MACHINE_ROLES: [(&str, RoleKind); 6] = [
    ("lb1", RoleKind::Lb),
    ("web1", RoleKind::Web),
    ("app1", RoleKind::App),
    ("db1", RoleKind::Db),
    ("db2", RoleKind::Db),
    ("db3", RoleKind::Db),
];

/// A topology config (`bulwark up -c`). The default has no name (the
/// site gets the product's default one) and no host.
#[derive(Debug, Clone, Default)]
pub struct TopologyConfig {
    top: Table,
    hosts: Vec<Table>,
}

impl TopologyConfig {
    /// The site `name`, no host yet.
    pub fn new(name: &str) -> TopologyConfig {
        let mut top = Table::new();
        top.insert("name".into(), str_value(name));
        TopologyConfig { top, hosts: Vec::new() }
    }

    /// The lb serves plain HTTP only (`[lb] tls = false`).
    pub fn plain_http(mut self) -> TopologyConfig {
        let mut lb = Table::new();
        lb.insert("tls".into(), Value::Boolean(false));
        self.top.insert("lb".into(), Value::Table(lb));
        self
    }

    /// One more `[[host]]` named `name` running `roles` (name, kind).
    pub fn host(self, name: &str, roles: &[(&str, RoleKind)]) -> TopologyConfig {
        self.host_with(name, None, roles)
    }

    /// One more `[[host]]` at `address` (its machine's address on the
    /// site's network) running `roles`.
    pub fn host_at(self, name: &str, address: IpAddr, roles: &[(&str, RoleKind)]) -> TopologyConfig {
        self.host_with(name, Some(address), roles)
    }

    fn host_with(mut self, name: &str, address: Option<IpAddr>, roles: &[(&str, RoleKind)]) -> TopologyConfig {
        let roles = roles
            .iter()
            .map(|(role, kind)| {
                let mut r = Table::new();
                r.insert("name".into(), str_value(role));
                r.insert("kind".into(), typed_value("kind", kind));
                Value::Table(r)
            })
            .collect();
        let mut host = Table::new();
        host.insert("name".into(), str_value(name));
        if let Some(a) = address {
            host.insert("address".into(), str_value(a));
        }
        host.insert("role".into(), Value::Array(roles));
        self.hosts.push(host);
        self
    }

    /// Scheduled backups.
    pub fn backup(mut self, settings: &BackupSettings) -> TopologyConfig {
        self.top.insert("backup".into(), typed_value("backup", settings));
        self
    }

    /// Set a top-level `key` to a TOML value (`port_base`, `[firewall]`
    /// as an inline table, ...).
    pub fn set(mut self, key: &str, raw: &str) -> TopologyConfig {
        self.top.insert(key.into(), toml_value(key, raw));
        self
    }

    pub fn to_toml(&self) -> String {
        let mut t = self.top.clone();
        t.insert("host".into(), Value::Array(self.hosts.iter().cloned().map(Value::Table).collect()));
        toml::to_string(&t).expect("a TOML table renders")
    }
}
