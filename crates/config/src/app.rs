//! Schema of `bulwark app` (the application server running the guestbook).
//!
//! ```toml
//! name = "app1"                      # shown to users: which server answered
//! listen = "127.0.0.1:8100"
//! db_nodes = ["127.0.0.1:8110", "127.0.0.1:8111", "127.0.0.1:8112"]
//! secret_file = "/etc/bulwark/web-app.secret"      # required from the web tier (X-Bulwark-Cluster)
//! db_secret_file = "/etc/bulwark/app-db.secret"    # sent to the database (default: secret)
//! monitor_token_file = "/etc/bulwark/monitor.token" # opens /metrics as a bearer token (default: secret)
//! tls_cert = "/var/lib/bulwark/tls/internal/app1.pem" # mutual TLS (all three or none, see `internal_tls`):
//! tls_key = "/var/lib/bulwark/tls/internal/app1.key"  #  the listener requires a client certificate of tls_ca,
//! tls_ca = "/var/lib/bulwark/tls/internal/ca.pem"     #  the database is reached over mutual TLS
//! ```
use crate::util::{check_bind, check_host_port, check_name};
use crate::{Secret, Validate, Validator};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// This instance's name, returned with every answer.
    pub name: String,
    pub listen: String,
    /// Database nodes (`host:port`); the client finds the primary itself.
    pub db_nodes: Vec<String>,
    /// Secret of the web tier: required on every request but the health
    /// checks (header `X-Bulwark-Cluster`) unless `require_secret = false`.
    /// Given alone, it is also the database and monitoring credential (the
    /// single-secret setup of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Secret sent to the database (`Authorization: Bearer`); also the key
    /// that signs read-your-writes cookies. Default: `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_secret_file: Option<PathBuf>,
    /// Read-only monitoring token: opens `/metrics` as
    /// `Authorization: Bearer`. Default: `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_token_file: Option<PathBuf>,
    #[serde(default = "yes")]
    pub require_secret: bool,
    /// Worker threads (0 = one per core).
    #[serde(default)]
    pub threads: usize,
    #[serde(default = "default_author")]
    pub max_author_chars: usize,
    #[serde(default = "default_text")]
    pub max_text_chars: usize,
    #[serde(default = "default_page")]
    pub max_page_size: usize,
    /// Longest a request waits for the database before answering 503.
    #[serde(default = "default_db_deadline", with = "humantime_serde")]
    pub db_deadline: Duration,
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    #[serde(default)]
    pub firewall: crate::firewall::FirewallConfig,
    /// Mutual TLS (see [`crate::internal_tls`]): towards the web tier
    /// (the listener) and the database (the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
}

impl AppConfig {
    /// The mutual TLS files, when `tls_cert`, `tls_key` and `tls_ca` are set.
    pub fn tls(&self) -> Option<crate::internal_tls::TlsFiles> {
        crate::internal_tls::files(self.tls_cert.as_ref(), self.tls_key.as_ref(), self.tls_ca.as_ref())
    }
}

fn yes() -> bool {
    true
}
fn default_author() -> usize {
    64
}
fn default_text() -> usize {
    1000
}
fn default_page() -> usize {
    100
}
fn default_db_deadline() -> Duration {
    Duration::from_secs(5)
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Validate for AppConfig {
    fn validate(&self, v: &mut Validator) {
        if let Some(r) = &self.role {
            if r != "app" {
                v.error("role", format!("this is an app config, but role = \"{r}\""));
            }
        }
        check_name(v, "name", &self.name);
        check_bind(v, "listen", &self.listen);
        crate::internal_tls::check(v, self.tls_cert.as_ref(), self.tls_key.as_ref(), self.tls_ca.as_ref());
        if self.db_nodes.is_empty() {
            v.error("db_nodes", "at least one database node is required");
        }
        v.scope("db_nodes", |v| {
            for (i, n) in self.db_nodes.iter().enumerate() {
                v.index(i, |v| check_host_port(v, "", n));
            }
        });
        match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => v.error("secret_file", "set secret or secret_file, not both"),
            (None, None) if self.require_secret => {
                v.error("secret", "a cluster secret is required (secret or secret_file), or set require_secret = false")
            }
            (Some(s), None) if s.expose().len() < 16 => v.error("secret", "must be at least 16 characters"),
            _ => {}
        }
        crate::util::check_secret_source(v, "db_secret", self.db_secret.as_ref(), self.db_secret_file.as_ref());
        crate::util::check_secret_source(
            v,
            "monitor_token",
            self.monitor_token.as_ref(),
            self.monitor_token_file.as_ref(),
        );
        for (k, n, lo, hi) in [
            ("max_author_chars", self.max_author_chars, 1, 1000),
            ("max_text_chars", self.max_text_chars, 1, 100_000),
            ("max_page_size", self.max_page_size, 1, 10_000),
        ] {
            if !(lo..=hi).contains(&n) {
                v.error(k, format!("must be between {lo} and {hi}"));
            }
        }
        v.scope("firewall", |v| self.firewall.validate_in(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let ok =
            "name = \"app1\"\nlisten = \"127.0.0.1:0\"\ndb_nodes = [\"127.0.0.1:1\"]\nsecret = \"0123456789abcdef\"\n";
        let c: AppConfig = crate::from_str(ok, "app.toml").unwrap();
        assert_eq!(c.max_text_chars, 1000);
        assert_eq!(crate::Role::detect(ok), Some(crate::Role::App));
        let bad = ok.replace("[\"127.0.0.1:1\"]", "[\"nope\"]").replace("0123456789abcdef", "short");
        let err = crate::from_str::<AppConfig>(&bad, "app.toml").unwrap_err();
        let keys: Vec<_> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["db_nodes[0]", "secret"], "{err}");
        assert!(format!("{c:?}").contains("redacted"), "secrets never show in Debug");
    }
}
