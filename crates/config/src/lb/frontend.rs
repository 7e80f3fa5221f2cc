//! `[[frontend]]` of the lb: a public listener, its limits, and the TLS it
//! terminates.
use super::Mode;
use crate::util::{check_name, yes};
use crate::Validator;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    pub name: String,
    /// `ip:port`; port 0 picks a free port (reported on the ready line).
    #[serde(with = "crate::address::ip_port")]
    pub bind: SocketAddr,
    #[serde(default)]
    pub mode: Mode,
    /// Name of the backend that serves this frontend.
    pub backend: String,
    /// Set SO_REUSEPORT so several lb processes can share the port.
    #[serde(default = "yes")]
    pub reuse_port: bool,
    /// Add X-Forwarded-For / X-Forwarded-Proto / Forwarded headers (http mode).
    #[serde(default = "yes")]
    pub forwarded_headers: bool,
    /// Add a `Via` header (http mode).
    #[serde(default = "yes")]
    pub via: bool,
    /// Emit one access-log line per request (target `access`).
    #[serde(default = "yes")]
    pub access_log: bool,
    /// Set `X-Request-Id` on every request (http mode): a fresh id that
    /// the tiers behind pass on and log, also returned to the client.
    #[serde(default = "yes")]
    pub request_id: bool,
    /// Keep a valid incoming `X-Request-Id` instead of replacing it (only
    /// behind a proxy that sets it).
    #[serde(default)]
    pub trust_request_id: bool,
    /// Largest accepted request head (request line + headers), bytes.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest accepted request body, bytes (→ 413).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Terminate TLS on this frontend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Plain-HTTP frontend only: answer every request with a 308 redirect to
    /// `https://<host>:<port><path>` (port omitted when 443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_https_port: Option<u16>,
    #[serde(default)]
    pub firewall: crate::firewall::FirewallConfig,
    /// Headers removed, set and added on requests and responses (http
    /// mode; see [`crate::header_rules`]).
    #[serde(default, skip_serializing_if = "crate::header_rules::HeaderRules::is_empty")]
    pub headers: crate::header_rules::HeaderRules,
    /// Compression of the backend's responses (http mode; off by
    /// default), with the web tier's rules.
    #[serde(default, skip_serializing_if = "crate::compression::Compression::is_default")]
    pub compression: crate::compression::Compression,
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}

fn default_max_body_bytes() -> u64 {
    16 * 1024 * 1024
}

/// TLS termination (rustls; TLS 1.2 and 1.3 only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chains with their keys (PEM files). The one whose names
    /// match the client's SNI is used; the first is the default.
    #[serde(rename = "certificate")]
    pub certificates: Vec<CertificateFiles>,
    /// `Strict-Transport-Security` max-age; "0s" disables the header.
    #[serde(default = "default_hsts", with = "humantime_serde")]
    pub hsts: Duration,
    /// Offer HTTP/2 by ALPN (HTTP/1.1 is always offered).
    #[serde(default = "yes")]
    pub http2: bool,
    /// Streams one HTTP/2 connection may have open at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`; HAProxy's
    /// `tune.h2.max-concurrent-streams`).
    #[serde(default = "default_http2_max_streams")]
    pub http2_max_streams: u32,
}

fn default_http2_max_streams() -> u32 {
    100
}

fn default_hsts() -> Duration {
    Duration::from_secs(365 * 24 * 3600)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl Frontend {
    /// Check one frontend; `backends` are the names of every `[[backend]]`,
    /// `taken` the names and bound addresses of the frontends before it.
    pub(crate) fn validate_in<'a>(&'a self, v: &mut Validator, backends: &HashSet<&str>, taken: &mut Taken<'a>) {
        check_name(v, "name", &self.name);
        if !taken.names.insert(self.name.as_str()) {
            v.error("name", format!("duplicate frontend name `{}`", self.name));
        }
        if self.bind.port() != 0 && !taken.binds.insert(self.bind) {
            v.error("bind", format!("`{}` is already used by another frontend", self.bind));
        }
        if !backends.contains(self.backend.as_str()) {
            v.error("backend", format!("no [[backend]] named `{}`", self.backend));
        }
        if self.max_header_bytes < 1024 {
            v.error("max_header_bytes", "must be at least 1024");
        }
        v.scope("firewall", |v| self.firewall.validate_in(v));
        if let Some(tls) = &self.tls {
            v.scope("tls", |v| {
                if tls.certificates.is_empty() {
                    v.error("certificate", "at least one [[frontend.tls.certificate]] is required");
                }
                if !(1..=1000).contains(&tls.http2_max_streams) {
                    v.error("http2_max_streams", "must be between 1 and 1000");
                }
            });
            if self.mode == Mode::Tcp {
                v.error("tls", "tls is for http frontends (tcp mode passes bytes through)");
            }
            if self.redirect_https_port.is_some() {
                v.error("redirect_https_port", "a TLS frontend cannot redirect to HTTPS");
            }
        }
        v.scope("headers", |v| self.headers.validate_in(v));
        if self.tls.is_none() && self.headers.names_tls() {
            v.error("headers", "a value names a TLS fact ($tls_*) but the frontend has no tls");
        }
        if self.mode == Mode::Tcp && !self.headers.is_empty() {
            v.error("headers", "header rules are for http frontends");
        }
        v.scope("compression", |v| self.compression.validate_in(v));
        if self.mode == Mode::Tcp && self.compression.enabled {
            v.error("compression", "compression is for http frontends");
        }
    }
}

/// Names and addresses already used by the frontends checked so far.
#[derive(Default)]
pub(crate) struct Taken<'a> {
    names: HashSet<&'a str>,
    binds: HashSet<SocketAddr>,
}
