//! Schema of `bulwark web` (the nginx role): static files and reverse-proxy
//! routes to app upstreams.
//!
//! ```toml
//! listen = ["127.0.0.1:8081"]        # one or more ip:port (port 0 = any free port)
//! root = "/srv/www"                  # directory served as /
//! index = ["index.html"]             # tried in order for a directory URL ending in /
//! threads = 1                        # worker threads (0 = one per core)
//! access_log = true                  # one line per request, tracing target `access`
//! dotfiles = false                   # serve files and directories whose name starts with `.`
//! precompressed = true               # serve `x.br` / `x.gz` for `x` when the client accepts it
//!
//! [limits]
//! max_header_bytes = 16384           # request line + headers (→ 431)
//! max_body_bytes = 1048576           # request body (→ 413)
//!
//! [timeouts]
//! header = "10s"                     # to send a complete request head once it started
//! body = "30s"                       # to send the whole request body (→ 408)
//! keepalive = "75s"                  # idle keep-alive connection waiting for its next request
//! send = "60s"                       # a client accepting no response byte this long is disconnected
//! drain = "10s"                      # on SIGTERM, in-flight requests get this long
//!
//! [cache]
//! max_file_bytes = 262144            # files up to this size are kept in memory
//! max_bytes = 67108864               # memory for cached files, per worker thread
//! revalidate = "1s"                  # stat a cached file at most this often ("0s" = every request)
//!
//! [[cache_control]]                  # first match wins
//! match = "/assets/"                 # a path prefix, or a glob when it has * ? or [
//! value = "public, max-age=31536000, immutable"
//!
//! static_prefixes = ["/static/"]     # always static files from root, before any [[proxy]] route
//! # mutual TLS (see `internal_tls`): the listeners require a client certificate of `ca`,
//! # and the [[proxy]] servers are reached over mutual TLS
//! mutual_tls = { cert = "/var/lib/bulwark/tls/internal/web1.pem", key = "/var/lib/bulwark/tls/internal/web1.key", ca = "/var/lib/bulwark/tls/internal/ca.pem" }
//!
//! [[proxy]]
//! prefix = "/api/"                   # requests under this prefix go to the servers
//! servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
//! balance = "roundrobin"
//! health_check = { kind = "http", path = "/health", interval = "2s" }
//! tunnel_timeout = "1h"              # a WebSocket idle both ways this long is closed
//! ```
pub use crate::compression::Compression;
use crate::lb::{Backend, Balance, HealthCheck, PassiveHealth, Retries, Server};
use crate::util::yes;
use crate::{HostPort, Validate, Validator};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Optional explicit role marker (`role = "web"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::Role>,
    /// Listen addresses (`ip:port`, port 0 picks a free port). The ready
    /// line names them `http`, `http1`, `http2`, ... in this order.
    #[serde(with = "crate::address::ip_ports")]
    pub listen: Vec<SocketAddr>,
    /// Directory whose contents are served as `/`.
    pub root: PathBuf,
    /// File names tried, in order, for a URL that ends in `/`.
    #[serde(default = "default_index")]
    pub index: Vec<String>,
    /// Worker threads, each with its own event loop and SO_REUSEPORT socket
    /// per listen address. 0 means one per CPU core.
    #[serde(default)]
    pub threads: usize,
    /// Emit one access-log line per request (tracing target `access`).
    #[serde(default = "yes")]
    pub access_log: bool,
    /// The security-headers preset.
    #[serde(default, skip_serializing_if = "SecurityHeaders::is_off")]
    pub security_headers: SecurityHeaders,
    /// Compression of proxied (dynamic) responses.
    #[serde(default, skip_serializing_if = "Compression::is_default")]
    pub compression: Compression,
    /// The cache of proxied responses.
    #[serde(default, skip_serializing_if = "ResponseCache::is_default")]
    pub response_cache: ResponseCache,
    /// Format of the access lines (see [`crate::access_log`]).
    #[serde(default, skip_serializing_if = "crate::access_log::AccessLogFormat::is_text")]
    pub access_log_format: crate::access_log::AccessLogFormat,
    /// Write access lines to this file (reopened on SIGUSR1), not stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<PathBuf>,
    /// Serve paths with a component starting with `.` (hidden: 404 when false).
    #[serde(default)]
    pub dotfiles: bool,
    /// Serve a `.br` or `.gz` sibling of a file when the client accepts that
    /// encoding.
    #[serde(default = "yes")]
    pub precompressed: bool,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub cache: Cache,
    /// `Cache-Control` values by path; the first matching rule wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_control: Vec<CacheControl>,
    /// Reverse-proxy routes, matched by path prefix before static files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy: Vec<ProxyRoute>,
    /// Path prefixes always answered with static files from `root`, before
    /// any `[[proxy]]` route (`/static/` next to a `prefix = "/"` route
    /// that sends the rest of the site to the apps). Each starts and ends
    /// with `/` and is made of plain segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_prefixes: Vec<String>,
    /// Secret of the lb tier. When set, every request but `/health` and
    /// `/metrics` must carry it in `X-Bulwark-Cluster` (the lb adds it).
    /// Given alone, it is also sent on to the app servers and opens
    /// `/metrics` (the single-secret setup of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<crate::Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Secret sent to the `[[proxy]]` servers in `X-Bulwark-Cluster` (the
    /// web→app credential; incoming values of that header are never passed
    /// on). Default: `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_secret: Option<crate::Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_secret_file: Option<PathBuf>,
    /// Read-only monitoring token: opens `/metrics` as
    /// `Authorization: Bearer`. Default: `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_token: Option<crate::Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_token_file: Option<PathBuf>,
    #[serde(default)]
    pub firewall: crate::firewall::FirewallConfig,
    /// Mutual TLS (see [`crate::internal_tls`]): towards the lb (the
    /// listeners) and the `[[proxy]]` servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_tls: Option<crate::internal_tls::TlsFiles>,
}

impl WebConfig {}

fn default_index() -> Vec<String> {
    vec!["index.html".into()]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request head (request line and headers), bytes (→ 431).
    pub max_header_bytes: usize,
    /// Largest request body, bytes (→ 413).
    pub max_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_header_bytes: 16 * 1024, max_body_bytes: 1024 * 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// A client that started a request must finish its head within this
    /// time; a new connection must send a complete head within it too.
    #[serde(with = "humantime_serde")]
    pub header: Duration,
    /// Time allowed to receive a whole request body (→ 408).
    #[serde(with = "humantime_serde")]
    pub body: Duration,
    /// An idle keep-alive connection is closed after this long without the
    /// first byte of a next request.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// A client that accepts no byte of its response for this long is
    /// disconnected (nginx's `send_timeout`).
    #[serde(with = "humantime_serde")]
    pub send: Duration,
    /// On SIGTERM, wait at most this long for in-flight requests.
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let secs = Duration::from_secs;
        Timeouts { header: secs(10), body: secs(30), keepalive: secs(75), send: secs(60), drain: secs(10) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cache {
    /// Files up to this size have their bytes kept in memory; larger files
    /// are streamed from disk (their metadata is still cached).
    pub max_file_bytes: u64,
    /// Memory for cached file bytes, per worker thread.
    pub max_bytes: u64,
    /// A cached file is checked against the disk (stat: inode, size, mtime)
    /// at most this often; `0s` checks on every request.
    #[serde(with = "humantime_serde")]
    pub revalidate: Duration,
}

impl Default for Cache {
    fn default() -> Self {
        Cache { max_file_bytes: 256 * 1024, max_bytes: 64 * 1024 * 1024, revalidate: Duration::from_secs(1) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheControl {
    /// A path prefix (`/assets/`), or a glob over the whole path when it
    /// contains `*`, `?` or `[` (`/**/*.css`; `*` stays within one segment).
    #[serde(rename = "match")]
    pub pattern: String,
    /// The `Cache-Control` header value sent for matching files.
    pub value: String,
}

impl CacheControl {
    /// True when [`CacheControl::pattern`] is a glob rather than a prefix.
    pub fn is_glob(&self) -> bool {
        self.pattern.contains(['*', '?', '['])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRoute {
    /// Requests whose path starts with this prefix are forwarded.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// App servers, `host:port`.
    pub servers: Vec<HostPort>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub passive: PassiveHealth,
    #[serde(default)]
    pub retries: Retries,
    /// Connecting to a server.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Server must start answering within this time (→ 504).
    #[serde(default = "default_server_timeout", with = "humantime_serde")]
    pub server_timeout: Duration,
    /// A tunnel (a WebSocket or other upgraded connection) with no byte
    /// moving either way for this long is closed.
    #[serde(default = "default_tunnel_timeout", with = "humantime_serde")]
    pub tunnel_timeout: Duration,
    /// Add X-Forwarded-For / X-Forwarded-Proto / Forwarded headers.
    #[serde(default = "yes")]
    pub forwarded_headers: bool,
    /// Below this percentage of available servers, balance over all of
    /// them (as the lb's `panic_threshold_percent`); 0 turns it off.
    #[serde(default = "crate::lb::default_panic_threshold")]
    pub panic_threshold_percent: u8,
    /// Headers removed, set and added on the route's requests and
    /// responses (see [`crate::header_rules`]; no TLS facts here).
    #[serde(default, skip_serializing_if = "crate::header_rules::HeaderRules::is_empty")]
    pub headers: crate::header_rules::HeaderRules,
}

/// The in-memory cache of proxied responses (`[response_cache]`, nginx's
/// `proxy_cache`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseCache {
    pub enabled: bool,
    /// Bytes of cached responses (bodies and heads) kept; least recently
    /// used first out.
    pub max_bytes: u64,
    /// Larger responses are passed through, not stored.
    pub max_object_bytes: u64,
    /// Bearer token of `PURGE` requests; without it purging is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge_token: Option<crate::Secret>,
}

impl Default for ResponseCache {
    fn default() -> Self {
        ResponseCache { enabled: false, max_bytes: 64 << 20, max_object_bytes: 1 << 20, purge_token: None }
    }
}

impl ResponseCache {
    pub fn is_default(&self) -> bool {
        self == &ResponseCache::default()
    }
}

impl SecurityHeaders {
    pub fn is_off(&self) -> bool {
        self == &SecurityHeaders::default()
    }
}

/// The security-headers preset (`[security_headers]`): set on every
/// response (static and proxied) that does not carry its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityHeaders {
    /// `X-Content-Type-Options: nosniff`, `Referrer-Policy:
    /// strict-origin-when-cross-origin`, `X-Frame-Options: SAMEORIGIN`.
    pub enabled: bool,
    /// `Content-Security-Policy` value (e.g. `default-src 'self'`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_security_policy: Option<String>,
}

fn default_prefix() -> String {
    "/api/".into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_server_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_tunnel_timeout() -> Duration {
    Duration::from_secs(3600)
}

impl ProxyRoute {
    /// The route as an lb-style backend named `name` (servers `name-0`,
    /// `name-1`, ...), so `bulwark-proxy` can build its upstream pool from
    /// it; over mutual TLS with `tls` (the web role's files).
    pub fn to_backend(&self, name: &str, tls: Option<&crate::internal_tls::TlsFiles>) -> Backend {
        let servers =
            self.servers.iter().enumerate().map(|(i, a)| Server::new(format!("{name}-{i}"), a.clone())).collect();
        Backend {
            balance: self.balance,
            health_check: self.health_check.clone(),
            passive: self.passive.clone(),
            retries: self.retries.clone(),
            panic_threshold_percent: self.panic_threshold_percent,
            mutual_tls: tls.cloned(),
            ..Backend::new(name, servers)
        }
    }
}

/// Valid characters of a header value: visible ASCII, space and tab.
fn is_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

impl Validate for WebConfig {
    fn validate(&self, v: &mut Validator) {
        crate::internal_tls::check(v, self.mutual_tls.as_ref());
        crate::util::check_role(v, self.role, crate::Role::Web, "a web config");
        if self.listen.is_empty() {
            v.error("listen", "at least one listen address is required");
        }
        crate::access_log::check(v, &self.access_log_format, self.access_log_file.as_deref());
        v.scope("compression", |v| self.compression.validate_in(v));
        if let Some(csp) = &self.security_headers.content_security_policy {
            if csp.is_empty() || csp.bytes().any(|b| b != b'\t' && !(0x20..0x7f).contains(&b)) {
                v.error("security_headers.content_security_policy", "a header value of visible ASCII and spaces");
            }
        }
        if self.secret.is_some() && self.secret_file.is_some() {
            v.error("secret_file", "set secret or secret_file, not both");
        }
        for (key, secret, file) in [
            ("upstream_secret", self.upstream_secret.as_ref(), self.upstream_secret_file.as_ref()),
            ("monitor_token", self.monitor_token.as_ref(), self.monitor_token_file.as_ref()),
        ] {
            crate::util::check_secret_source(v, key, secret, file);
        }
        v.scope("firewall", |v| self.firewall.validate_in(v));
        let mut binds = HashSet::new();
        v.scope("listen", |v| {
            for (i, l) in self.listen.iter().enumerate() {
                if l.port() != 0 && !binds.insert(l) {
                    v.index(i, |v| v.error("", format!("`{l}` is listed twice")));
                }
            }
        });
        if self.root.as_os_str().is_empty() {
            v.error("root", "must name the directory to serve");
        }
        v.scope("index", |v| {
            for (i, name) in self.index.iter().enumerate() {
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    v.index(i, |v| v.error("", format!("`{name}` is not a file name")));
                }
            }
        });
        if self.threads > 1024 {
            v.error("threads", "must be at most 1024 (0 = one per core)");
        }
        v.scope("limits", |v| {
            if self.limits.max_header_bytes < 1024 {
                v.error("max_header_bytes", "must be at least 1024");
            }
            if self.limits.max_header_bytes > 1024 * 1024 {
                v.error("max_header_bytes", "must be at most 1048576");
            }
        });
        v.scope("timeouts", |v| {
            let t = &self.timeouts;
            for (k, d) in [("header", t.header), ("body", t.body), ("keepalive", t.keepalive), ("send", t.send)] {
                if d.is_zero() {
                    v.error(k, "must be greater than 0");
                }
            }
        });
        v.scope("cache", |v| {
            if self.cache.max_file_bytes > self.cache.max_bytes {
                v.error("max_file_bytes", "must not exceed cache.max_bytes");
            }
        });
        v.scope("cache_control", |v| {
            for (i, c) in self.cache_control.iter().enumerate() {
                v.index(i, |v| {
                    if !c.pattern.starts_with('/') && !c.pattern.starts_with('*') {
                        v.error("match", format!("`{}` must start with / (or a glob *)", c.pattern));
                    }
                    if c.is_glob() && c.pattern.matches('[').count() != c.pattern.matches(']').count() {
                        v.error("match", format!("`{}`: unbalanced [ ] in glob", c.pattern));
                    }
                    if c.value.trim().is_empty() || !is_header_value(&c.value) {
                        v.error("value", "must be a non-empty header value (visible ASCII)");
                    }
                });
            }
        });
        v.scope("static_prefixes", |v| {
            for (i, p) in self.static_prefixes.iter().enumerate() {
                let inner = p.strip_prefix('/').and_then(|p| p.strip_suffix('/')).unwrap_or("");
                if !crate::util::is_plain_path(inner) {
                    v.index(i, |v| {
                        v.error("", format!("`{p}` must look like /static/: start and end with /, plain segments (letters, digits, - _ .)"))
                    });
                }
            }
        });
        let mut prefixes = HashSet::new();
        v.scope("proxy", |v| {
            for (i, p) in self.proxy.iter().enumerate() {
                v.index(i, |v| {
                    if !p.prefix.starts_with('/') {
                        v.error("prefix", format!("`{}` must start with /", p.prefix));
                    }
                    if !prefixes.insert(p.prefix.as_str()) {
                        v.error("prefix", format!("`{}` is used by another [[proxy]] route", p.prefix));
                    }
                    v.scope("headers", |v| p.headers.validate_in(v));
                    if p.headers.names_tls() {
                        v.error("headers", "TLS facts ($tls_*) are known at the lb, not on a web route");
                    }
                    if p.servers.is_empty() {
                        v.error("servers", "at least one server (host:port) is required");
                    }
                    if p.connect_timeout.is_zero() {
                        v.error("connect_timeout", "must be greater than 0");
                    }
                    if p.server_timeout.is_zero() {
                        v.error("server_timeout", "must be greater than 0");
                    }
                    if p.tunnel_timeout.is_zero() {
                        v.error("tunnel_timeout", "must be greater than 0");
                    }
                    if p.panic_threshold_percent > 100 {
                        v.error("panic_threshold_percent", "must be between 0 (off) and 100");
                    }
                    if let Some(h) = &p.health_check {
                        v.scope("health_check", |v| h.validate(v));
                    }
                    v.scope("retries", |v| p.retries.validate(v));
                });
            }
        });
    }
}

#[cfg(test)]
mod tests;
