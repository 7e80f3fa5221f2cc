//! Schema of `bulwark lb` (the HAProxy role).
//!
//! ```toml
//! threads = 1                      # worker threads (0 = one per core)
//!
//! [admin]
//! bind = "127.0.0.1:9100"
//!
//! [[frontend]]
//! name = "www"
//! bind = "127.0.0.1:8080"
//! mode = "http"                    # or "tcp"
//! backend = "web"
//!
//! [[backend]]
//! name = "web"
//! balance = "roundrobin"           # leastconn | source | random | first | ewma
//! health_check = { kind = "http", path = "/health", interval = "2s", rise = 2, fall = 3 }
//! [[backend.server]]
//! name = "web1"
//! address = "127.0.0.1:8081"
//! [[backend.server]]
//! name = "web2"
//! address = "127.0.0.1:8082"
//! backup = true                    # active-passive: only used when all others are down
//! ```
//!
//! A backend of http frontends reached over mutual TLS (see
//! `internal_tls`) names the lb's certificate, key and the cluster CA in
//! its `[[backend]]` table: `mutual_tls = { cert = "...", key = "...",
//! ca = "..." }`. `[admin]` takes the same key for its polls of the
//! watched nodes.
mod admin;
mod backend;
mod frontend;
mod health;
mod timeouts;

pub use admin::{Admin, AlertRules, NodeKind, WatchedNode};
pub use backend::{default_panic_threshold, Backend, Balance, Server, Sticky};
pub use frontend::{CertificateFiles, Frontend, Tls};
pub use health::{CheckKind, HealthCheck, OnMarkedDown, PassiveHealth, Retries};
pub use timeouts::Timeouts;

use crate::util::check_name;
use crate::{Validate, Validator};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbConfig {
    /// Optional explicit role marker (`role = "lb"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::Role>,
    /// Worker threads, each with its own event loop and SO_REUSEPORT socket.
    /// 0 means one per CPU core.
    #[serde(default)]
    pub threads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default, rename = "frontend")]
    pub frontends: Vec<Frontend>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<Backend>,
    /// Floating addresses held with VRRP (see [`crate::vrrp`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vrrp: Vec<crate::vrrp::VrrpInstance>,
    /// Format of the frontends' access lines (see [`crate::access_log`]).
    #[serde(default, skip_serializing_if = "crate::access_log::AccessLogFormat::is_text")]
    pub access_log_format: crate::access_log::AccessLogFormat,
    /// Write access lines to this file (reopened on SIGUSR1), not stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Http,
    Tcp,
}

impl Validate for LbConfig {
    fn validate(&self, v: &mut Validator) {
        crate::util::check_role(v, self.role, crate::Role::Lb, "an lb config");
        if self.threads > 1024 {
            v.error("threads", "must be at most 1024 (0 = one per core)");
        }
        crate::access_log::check(v, &self.access_log_format, self.access_log_file.as_deref());
        if let Some(a) = &self.admin {
            v.scope("admin", |v| a.validate_in(v));
        }
        v.scope("timeouts", |v| self.timeouts.validate_in(v));
        if self.frontends.is_empty() {
            v.error("frontend", "at least one [[frontend]] is required");
        }
        let backends: HashSet<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        let mut taken = frontend::Taken::default();
        v.scope("frontend", |v| {
            for (i, f) in self.frontends.iter().enumerate() {
                v.index(i, |v| f.validate_in(v, &backends, &mut taken));
            }
        });
        crate::vrrp::validate_all(&self.vrrp, v);
        let mut seen = HashSet::new();
        v.scope("backend", |v| {
            for (i, b) in self.backends.iter().enumerate() {
                v.index(i, |v| {
                    check_name(v, "name", &b.name);
                    if !seen.insert(b.name.as_str()) {
                        v.error("name", format!("duplicate backend name `{}`", b.name));
                    }
                    b.validate(v);
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GOOD: &str = r#"
threads = 1
[[frontend]]
name = "www"
bind = "127.0.0.1:0"
backend = "web"

[[backend]]
name = "web"
balance = "leastconn"
health_check = { kind = "http", path = "/health", interval = "500ms" }
[[backend.server]]
name = "web1"
address = "127.0.0.1:8081"
[[backend.server]]
name = "web2"
address = "localhost:8082"
backup = true
"#;

    #[test]
    fn parses_a_good_config() {
        let c: LbConfig = crate::from_str(GOOD, "lb.toml").unwrap();
        assert_eq!(c.backends[0].balance, Balance::Leastconn);
        assert_eq!(c.backends[0].health_check.as_ref().unwrap().interval, Duration::from_millis(500));
        assert!(c.backends[0].servers[1].backup);
        assert_eq!(crate::Role::detect(GOOD), Some(crate::Role::Lb));
    }

    #[test]
    fn names_the_key_and_line_of_a_bad_value() {
        let bad = GOOD.replace("address = \"localhost:8082\"", "address = \"localhost:8082\"\nweight = 0");
        let err = crate::from_str::<LbConfig>(&bad, "lb.toml").unwrap_err();
        let text = err.to_string();
        assert_eq!(err.issues.len(), 1, "{text}");
        assert_eq!(err.issues[0].key, "backend[0].server[1].weight");
        assert_eq!(err.issues[0].line, Some(18), "{text}");
        assert!(text.starts_with("lb.toml:18: backend[0].server[1].weight: must be between"), "{text}");
    }

    #[test]
    fn reports_unknown_keys_with_line() {
        let bad = GOOD.replace("balance = \"leastconn\"", "balanse = \"leastconn\"");
        let err = crate::from_str::<LbConfig>(&bad, "lb.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown field `balanse`"), "{text}");
        assert_eq!(err.issues[0].line, Some(10), "{text}");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let bad = GOOD
            .replace("backend = \"web\"", "backend = \"nope\"")
            .replace("address = \"127.0.0.1:8081\"", "address = \"127.0.0.1:8081\"\nweight = 0");
        let err = crate::from_str::<LbConfig>(&bad, "lb.toml").unwrap_err();
        let keys: Vec<_> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["frontend[0].backend", "backend[0].server[0].weight"], "{err}");
    }

    /// Addresses are parsed at load: a listener's must be an IP literal, a
    /// server's may name a host; a bad one is named by its line and key.
    #[test]
    fn addresses_are_typed_and_a_bad_one_is_named() {
        let c: LbConfig = crate::from_str(GOOD, "lb.toml").unwrap();
        assert_eq!(c.frontends[0].bind, "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap());
        assert_eq!(c.backends[0].servers[0].address.ip(), Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!(
            (c.backends[0].servers[1].address.host(), c.backends[0].servers[1].address.port()),
            ("localhost", 8082)
        );
        for (from, to, expected) in [
            (
                "127.0.0.1:8081",
                "not an address",
                "lb.toml:14: backend[0].server[0].address: `not an address` is not a valid host:port",
            ),
            (
                "bind = \"127.0.0.1:0\"",
                "bind = \"localhost:80\"",
                "lb.toml:5: frontend[0].bind: `localhost:80` is not an ip:port listen address",
            ),
        ] {
            let err = crate::from_str::<LbConfig>(&GOOD.replace(from, to), "lb.toml").unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        let node = |kind: &str, address: &str| {
            format!("{GOOD}[admin]\nbind = \"127.0.0.1:0\"\n[[admin.node]]\nname = \"n\"\nkind = \"{kind}\"\naddress = \"{address}\"\n")
        };
        let c: LbConfig = crate::from_str(&node("db", "db1.internal:7001"), "lb.toml").unwrap();
        let n = &c.admin.unwrap().nodes[0];
        assert_eq!((n.kind, n.address.as_str()), (NodeKind::Db, "db1.internal:7001"));
        let err = crate::from_str::<LbConfig>(&node("dv", "127.0.0.1:1"), "lb.toml").unwrap_err().to_string();
        assert!(err.starts_with("lb.toml:23: admin.node[0].kind: unknown variant `dv`"), "{err}");
        let err = crate::from_str::<LbConfig>(&node("db", "127.0.0.1"), "lb.toml").unwrap_err().to_string();
        assert!(err.starts_with("lb.toml:24: admin.node[0].address: `127.0.0.1` is not a valid host:port"), "{err}");
    }

    #[test]
    fn rejects_all_backup_and_first_without_cap() {
        let bad = GOOD
            .replace("balance = \"leastconn\"", "balance = \"first\"")
            .replace("address = \"127.0.0.1:8081\"", "address = \"127.0.0.1:8081\"\nbackup = true");
        let err = crate::from_str::<LbConfig>(&bad, "lb.toml").unwrap_err();
        let keys: Vec<_> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["backend[0].max_connections", "backend[0].server"], "{err}");
    }

    #[test]
    fn replay_body_limit_defaults_to_64_kib_and_is_bounded() {
        let c: LbConfig = crate::from_str(GOOD, "lb.toml").unwrap();
        assert_eq!(c.backends[0].retries.max_replay_body_bytes, 64 * 1024);
        let set =
            GOOD.replace("balance = \"leastconn\"", "balance = \"leastconn\"\nretries = { max_replay_body_bytes = 0 }");
        let c: LbConfig = crate::from_str(&set, "lb.toml").unwrap();
        assert_eq!(c.backends[0].retries.max_replay_body_bytes, 0);
        let bad = GOOD.replace(
            "balance = \"leastconn\"",
            "balance = \"leastconn\"\nretries = { max_replay_body_bytes = 1073741824 }",
        );
        let err = crate::from_str::<LbConfig>(&bad, "lb.toml").unwrap_err();
        assert_eq!(err.issues[0].key, "backend[0].retries.max_replay_body_bytes", "{err}");
    }

    /// The defaults docs/configuration.md gives, for the tables whose
    /// every key has one.
    #[test]
    fn unset_tables_take_the_documented_defaults() {
        let c: LbConfig = crate::from_str(GOOD, "lb.toml").unwrap();
        let secs = Duration::from_secs;
        let t = &c.timeouts;
        assert_eq!(
            [t.connect, t.client_header, t.client_body, t.server, t.client_send, t.http2_idle],
            [secs(3), secs(10), secs(30), secs(30), secs(60), secs(60)]
        );
        assert_eq!(
            [t.http2_ping_interval, t.http2_ping_timeout, t.tunnel, t.drain],
            [secs(20), secs(10), secs(3600), secs(30)]
        );
        let b = &c.backends[0];
        assert_eq!((b.passive.consecutive_errors, b.passive.on_5xx, b.passive.eject_for), (5, true, secs(10)));
        assert_eq!((b.retries.attempts, b.retries.budget_ratio, b.retries.budget_min_per_sec), (2, 0.2, 10));
        assert_eq!((b.pool_max_idle, b.hash_balance_factor, b.panic_threshold_percent), (256, 1.25, 50));
        assert_eq!((b.sticky_cookie.as_str(), b.servers[0].weight), ("bulwark_server", 1));
        let h = b.health_check.as_ref().unwrap();
        assert_eq!((h.path.as_str(), h.expect_status, h.timeout, h.rise, h.fall), ("/health", 200, secs(1), 2, 3));
        let f = &c.frontends[0];
        assert!(f.reuse_port && f.forwarded_headers && f.via && f.access_log && f.request_id && !f.trust_request_id);
        assert_eq!((f.max_header_bytes, f.max_body_bytes), (64 * 1024, 16 * 1024 * 1024));
        let a = AlertRules::default();
        assert_eq!((a.for_duration, a.error_rate_percent, a.lag_entries, a.lag_seconds), (secs(5), 5.0, 1000, 10.0));
        assert_eq!((a.certificate_days, a.disk_free_bytes), (14, 1 << 30));
        // A table given with some keys keeps the defaults of the others.
        let partial = format!("{GOOD}\n[timeouts]\nconnect = \"1s\"\n");
        let c: LbConfig = crate::from_str(&partial, "lb.toml").unwrap();
        assert_eq!((c.timeouts.connect, c.timeouts.server), (secs(1), secs(30)));
        let unknown = format!("{GOOD}\n[timeouts]\nconect = \"1s\"\n");
        let err = crate::from_str::<LbConfig>(&unknown, "lb.toml").unwrap_err();
        assert!(err.to_string().contains("unknown field `conect`"), "{err}");
    }

    #[test]
    fn reports_syntax_errors_with_line() {
        let err = crate::from_str::<LbConfig>("threads = 1\n[[frontend]\n", "x.toml").unwrap_err();
        assert_eq!(err.issues[0].line, Some(2), "{err}");
    }
}
