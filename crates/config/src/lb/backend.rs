//! `[[backend]]` of the lb: its servers, how requests are balanced over
//! them, sticky sessions and the credentials towards them.
use super::health::{HealthCheck, PassiveHealth, Retries};
use crate::util::{check_name, check_secret_source};
use crate::{HostPort, Secret, Validate, Validator};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Smooth weighted round robin (nginx's algorithm).
    #[default]
    Roundrobin,
    /// Fewest in-flight requests, weighted.
    Leastconn,
    /// Consistent hash of the client IP with bounded load.
    Source,
    /// Power of two random choices by in-flight requests.
    Random,
    /// First server (by order) with spare capacity.
    First,
    /// Peak-EWMA of response latency × in-flight requests.
    Ewma,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub name: String,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default, rename = "server")]
    pub servers: Vec<Server>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub passive: PassiveHealth,
    /// After a server comes back, ramp its weight up over this period.
    #[serde(default, with = "humantime_serde")]
    pub slowstart: Option<Duration>,
    #[serde(default)]
    pub retries: Retries,
    /// Idle keep-alive connections kept per server per worker thread.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// `first` algorithm: in-flight requests a server takes before the next
    /// one is used. Also a hard cap per server for every algorithm when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Bounded-load factor for `source` hashing: a server takes at most
    /// `ceil(c × average load)` in-flight requests before the ring moves on.
    #[serde(default = "default_hash_balance_factor")]
    pub hash_balance_factor: f64,
    /// Envoy's healthy panic threshold: when fewer than this percentage of
    /// the enabled active servers are available (active check up, not
    /// passively ejected), requests are balanced over every enabled active
    /// server (and available backups) instead of only the healthy ones, so
    /// health verdicts can never take the last servers out. 0 turns it off.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold_percent: u8,
    /// Secret sent to the servers as `X-Bulwark-Cluster` (the lb→web
    /// credential: the web tier accepts only requests that carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Mutual TLS to the servers (see [`crate::internal_tls`]): each
    /// connection presents `cert` and accepts only a server whose
    /// certificate chains to `ca` and names the server's IP address.
    /// HTTP frontends only: a tcp frontend passes bytes on as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_tls: Option<crate::internal_tls::TlsFiles>,
    /// Sticky sessions: `"cookie"` pins a client to the server named in a
    /// signed cookie while that server is available.
    #[serde(default, skip_serializing_if = "Sticky::is_off")]
    pub sticky: Sticky,
    /// The sticky cookie's name.
    #[serde(default = "default_sticky_cookie")]
    pub sticky_cookie: String,
    /// Key the sticky cookie is signed with (HMAC-SHA256); default: derived
    /// from `cluster_secret`, else a random key per lb process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_secret_file: Option<PathBuf>,
}

fn default_pool_max_idle() -> usize {
    256
}

fn default_hash_balance_factor() -> f64 {
    1.25
}

/// Default of `panic_threshold_percent`, here and on web `[[proxy]]` routes.
pub fn default_panic_threshold() -> u8 {
    50
}

fn default_sticky_cookie() -> String {
    "bulwark_server".into()
}

impl Backend {
    /// A backend of `servers` with every other key at its default, as if
    /// the config named only these two.
    pub fn new(name: &str, servers: Vec<Server>) -> Backend {
        Backend {
            name: name.to_string(),
            balance: Balance::default(),
            servers,
            health_check: None,
            passive: PassiveHealth::default(),
            slowstart: None,
            retries: Retries::default(),
            pool_max_idle: default_pool_max_idle(),
            max_connections: None,
            hash_balance_factor: default_hash_balance_factor(),
            panic_threshold_percent: default_panic_threshold(),
            cluster_secret: None,
            cluster_secret_file: None,
            mutual_tls: None,
            sticky: Sticky::Off,
            sticky_cookie: default_sticky_cookie(),
            sticky_secret: None,
            sticky_secret_file: None,
        }
    }
}

/// Session persistence of a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sticky {
    /// Every request is balanced.
    #[default]
    Off,
    /// A signed cookie names the server (HAProxy's `cookie ... insert`).
    Cookie,
}

impl Sticky {
    pub fn is_off(&self) -> bool {
        *self == Sticky::Off
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub name: String,
    /// `host:port` of the server.
    pub address: HostPort,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Active-passive: used only when every non-backup server is down.
    #[serde(default)]
    pub backup: bool,
    /// Administratively disabled (drain): takes no new requests.
    #[serde(default)]
    pub disabled: bool,
}

fn default_weight() -> u32 {
    1
}

impl Server {
    /// An active server of weight 1.
    pub fn new(name: String, address: HostPort) -> Server {
        Server { name, address, weight: default_weight(), backup: false, disabled: false }
    }
}

impl Validate for Backend {
    fn validate(&self, v: &mut Validator) {
        check_name(v, "sticky_cookie", &self.sticky_cookie);
        check_secret_source(v, "sticky_secret", self.sticky_secret.as_ref(), self.sticky_secret_file.as_ref());
        crate::internal_tls::check(v, self.mutual_tls.as_ref());
        if self.servers.is_empty() {
            v.error("server", "at least one [[backend.server]] is required");
        }
        if self.balance == Balance::First && self.max_connections.is_none() {
            v.error(
                "max_connections",
                "balance = \"first\" needs max_connections (requests a server takes before the next is used)",
            );
        }
        if self.cluster_secret.is_some() && self.cluster_secret_file.is_some() {
            v.error("cluster_secret_file", "set cluster_secret or cluster_secret_file, not both");
        }
        if let Some(0) = self.max_connections {
            v.error("max_connections", "must be at least 1");
        }
        if !(self.hash_balance_factor >= 1.0 && self.hash_balance_factor <= 100.0) {
            v.error("hash_balance_factor", "must be between 1.0 and 100.0");
        }
        if self.panic_threshold_percent > 100 {
            v.error("panic_threshold_percent", "must be between 0 (off) and 100");
        }
        let mut names = HashSet::new();
        v.scope("server", |v| {
            for (i, s) in self.servers.iter().enumerate() {
                v.index(i, |v| {
                    check_name(v, "name", &s.name);
                    if !names.insert(s.name.as_str()) {
                        v.error("name", format!("duplicate server name `{}`", s.name));
                    }
                    if s.weight == 0 || s.weight > 256 {
                        v.error("weight", "must be between 1 and 256");
                    }
                });
            }
        });
        if !self.servers.is_empty() && self.servers.iter().all(|s| s.backup) {
            v.error("server", "every server is `backup = true`: at least one must be active");
        }
        if let Some(h) = &self.health_check {
            v.scope("health_check", |v| h.validate(v));
        }
        v.scope("retries", |v| self.retries.validate(v));
        if self.pool_max_idle > 100_000 {
            v.error("pool_max_idle", "must be at most 100000");
        }
    }
}
