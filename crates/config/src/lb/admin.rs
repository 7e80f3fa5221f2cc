//! `[admin]` of the lb: the admin listener (stats, metrics, dashboard), the
//! nodes it watches and the alerts it raises about them.
use crate::util::check_name;
use crate::{HostPort, Secret, Validator};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Listen address of the admin listener (stats, metrics, dashboard).
    #[serde(with = "crate::address::ip_port")]
    pub bind: SocketAddr,
    /// Bearer token required on `/api/*`, `/stats` and `/metrics` (the
    /// dashboard page passes `?token=`). `/health` stays open. Required
    /// when `bind` is not a loopback address: only a listener that nobody
    /// off this machine can reach may go without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Read-only monitoring token presented to watched nodes
    /// (`Authorization: Bearer`) to read their status. `cluster_secret` is
    /// its name in earlier versions and still accepted.
    #[serde(default, alias = "cluster_secret", skip_serializing_if = "Option::is_none")]
    pub monitor_token: Option<Secret>,
    #[serde(default, alias = "cluster_secret_file", skip_serializing_if = "Option::is_none")]
    pub monitor_token_file: Option<PathBuf>,
    /// Site name shown on the dashboard.
    #[serde(default = "default_site")]
    pub site: String,
    /// This lb's name on the dashboard.
    #[serde(default = "default_name")]
    pub name: String,
    /// Other nodes the dashboard shows and the alerts watch (apps, dbs).
    #[serde(default, rename = "node")]
    pub nodes: Vec<WatchedNode>,
    #[serde(default)]
    pub alerts: AlertRules,
    /// Mutual TLS for polling the watched nodes (see
    /// [`crate::internal_tls`]); the admin listener itself stays plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_tls: Option<crate::internal_tls::TlsFiles>,
}

fn default_site() -> String {
    "bulwark".into()
}

fn default_name() -> String {
    "lb".into()
}

impl Admin {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchedNode {
    pub name: String,
    pub kind: NodeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `host:port` of the node's HTTP listener.
    pub address: HostPort,
}

/// What a watched node is, which says what its status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    App,
    Web,
    /// Reports its role, lag and free disk space.
    Db,
    /// The scheduled backups' status listener of `bulwark up`, reporting
    /// the age of the newest good backup.
    Backup,
}

impl NodeKind {
    /// The name the config, the dashboard and the metrics use.
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::App => "app",
            NodeKind::Web => "web",
            NodeKind::Db => "db",
            NodeKind::Backup => "backup",
        }
    }
}

/// Built-in alert rules: server down, backend without a healthy server,
/// 5xx rate, replication lag, no primary, node down, certificate expiry,
/// a db node's disk nearly full, the newest good backup too old.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertRules {
    /// A condition must hold this long before its alert fires.
    #[serde(with = "humantime_serde", rename = "for")]
    pub for_duration: Duration,
    /// 5xx responses above this percentage of a backend's requests over the
    /// last minute (with at least 20 requests).
    pub error_rate_percent: f64,
    pub lag_entries: u64,
    pub lag_seconds: f64,
    /// Alert when a frontend certificate expires within this many days.
    pub certificate_days: u32,
    /// Alert when a watched db node has less free space than this on the
    /// file system of its data dir.
    pub disk_free_bytes: u64,
    /// `http://` URL that receives a JSON POST when an alert fires or
    /// resolves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

impl Default for AlertRules {
    fn default() -> Self {
        AlertRules {
            for_duration: Duration::from_secs(5),
            error_rate_percent: 5.0,
            lag_entries: 1000,
            lag_seconds: 10.0,
            certificate_days: 14,
            disk_free_bytes: 1 << 30,
            webhook: None,
        }
    }
}

impl Admin {
    pub(crate) fn validate_in(&self, v: &mut Validator) {
        crate::internal_tls::check(v, self.mutual_tls.as_ref());
        if self.token.is_some() && self.token_file.is_some() {
            v.error("token_file", "set token or token_file, not both");
        }
        if self.token.as_ref().is_some_and(|t| t.expose().trim().is_empty()) {
            v.error("token", "must not be empty");
        }
        if !self.bind.ip().is_loopback() && self.token.is_none() && self.token_file.is_none() {
            v.error(
                "token",
                format!(
                    "required when the admin listener binds a non-loopback address ({}): set token or token_file, or bind 127.0.0.1",
                    self.bind
                ),
            );
        }
        if self.monitor_token.is_some() && self.monitor_token_file.is_some() {
            v.error("monitor_token_file", "set monitor_token or monitor_token_file, not both");
        }
        let mut names = HashSet::new();
        v.scope("node", |v| {
            for (i, n) in self.nodes.iter().enumerate() {
                v.index(i, |v| {
                    check_name(v, "name", &n.name);
                    if !names.insert(n.name.as_str()) {
                        v.error("name", format!("duplicate node `{}`", n.name));
                    }
                });
            }
        });
        v.scope("alerts", |v| {
            if let Some(w) = &self.alerts.webhook {
                if !w.starts_with("http://") {
                    v.error("webhook", "must be an http:// URL");
                }
            }
            if !(0.0..=100.0).contains(&self.alerts.error_rate_percent) {
                v.error("error_rate_percent", "must be between 0 and 100");
            }
        });
    }
}
