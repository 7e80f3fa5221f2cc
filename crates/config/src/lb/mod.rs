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
//! `internal_tls`) names the lb's certificate, key and the cluster CA:
//! `tls_cert`, `tls_key`, `tls_ca` (all three or none), in its
//! `[[backend]]` table. `[admin]` takes the same three keys for its polls
//! of the watched nodes.
use crate::util::{check_bind, check_host_port, check_name};
use crate::{Validate, Validator};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbConfig {
    /// Optional explicit role marker (`role = "lb"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Worker threads, each with its own event loop and SO_REUSEPORT socket.
    /// 0 means one per CPU core.
    #[serde(default = "default_threads")]
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

fn default_threads() -> usize {
    0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Listen address of the admin listener (stats, metrics, dashboard).
    pub bind: String,
    /// Bearer token required on `/api/*`, `/stats` and `/metrics` (the
    /// dashboard page passes `?token=`). `/health` stays open. Required
    /// when `bind` is not a loopback address: only a listener that nobody
    /// off this machine can reach may go without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<crate::Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<std::path::PathBuf>,
    /// Read-only monitoring token presented to watched nodes
    /// (`Authorization: Bearer`) to read their status. `cluster_secret` is
    /// its name in earlier versions and still accepted.
    #[serde(default, alias = "cluster_secret", skip_serializing_if = "Option::is_none")]
    pub monitor_token: Option<crate::Secret>,
    #[serde(default, alias = "cluster_secret_file", skip_serializing_if = "Option::is_none")]
    pub monitor_token_file: Option<std::path::PathBuf>,
    /// Site name shown on the dashboard.
    #[serde(default = "default_site")]
    pub site: String,
    /// This lb's name on the dashboard.
    #[serde(default = "default_lb_name")]
    pub name: String,
    /// Other nodes the dashboard shows and the alerts watch (apps, dbs).
    #[serde(default, rename = "node")]
    pub nodes: Vec<WatchedNode>,
    #[serde(default)]
    pub alerts: AlertRules,
    /// Mutual TLS for polling the watched nodes (see
    /// [`crate::internal_tls`]); the admin listener itself stays plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl Admin {
    /// The mutual TLS files, when `tls_cert`, `tls_key` and `tls_ca` are set.
    pub fn tls(&self) -> Option<crate::internal_tls::TlsFiles> {
        crate::internal_tls::files(self.tls_cert.as_ref(), self.tls_key.as_ref(), self.tls_ca.as_ref())
    }
}

fn default_site() -> String {
    "bulwark".into()
}
fn default_lb_name() -> String {
    "lb".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchedNode {
    pub name: String,
    /// `app`, `web`, `db` (db nodes report role, lag and free disk space)
    /// or `backup` (the scheduled backups' status listener of `bulwark up`,
    /// reporting the age of the newest good backup).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `host:port` of the node's HTTP listener.
    pub address: String,
}

/// Built-in alert rules: server down, backend without a healthy server,
/// 5xx rate, replication lag, no primary, node down, certificate expiry,
/// a db node's disk nearly full, the newest good backup too old.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRules {
    /// A condition must hold this long before its alert fires.
    #[serde(default = "d5s", with = "humantime_serde", rename = "for")]
    pub for_duration: Duration,
    /// 5xx responses above this percentage of a backend's requests over the
    /// last minute (with at least 20 requests).
    #[serde(default = "default_error_rate")]
    pub error_rate_percent: f64,
    #[serde(default = "default_lag_entries")]
    pub lag_entries: u64,
    #[serde(default = "default_lag_seconds")]
    pub lag_seconds: f64,
    /// Alert when a frontend certificate expires within this many days.
    #[serde(default = "default_cert_days")]
    pub certificate_days: u32,
    /// Alert when a watched db node has less free space than this on the
    /// file system of its data dir.
    #[serde(default = "default_disk_free_bytes")]
    pub disk_free_bytes: u64,
    /// `http://` URL that receives a JSON POST when an alert fires or
    /// resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

fn d5s() -> Duration {
    Duration::from_secs(5)
}
fn default_error_rate() -> f64 {
    5.0
}
fn default_lag_entries() -> u64 {
    1000
}
fn default_lag_seconds() -> f64 {
    10.0
}
fn default_cert_days() -> u32 {
    14
}
fn default_disk_free_bytes() -> u64 {
    1 << 30
}

impl Default for AlertRules {
    fn default() -> Self {
        AlertRules {
            for_duration: d5s(),
            error_rate_percent: default_error_rate(),
            lag_entries: default_lag_entries(),
            lag_seconds: default_lag_seconds(),
            certificate_days: default_cert_days(),
            disk_free_bytes: default_disk_free_bytes(),
            webhook: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Http,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    pub name: String,
    /// `ip:port`; port 0 picks a free port (reported on the ready line).
    pub bind: String,
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

fn yes() -> bool {
    true
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}

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
    #[serde(default = "default_pool")]
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
    pub cluster_secret: Option<crate::Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_secret_file: Option<std::path::PathBuf>,
    /// Mutual TLS to the servers (see [`crate::internal_tls`]): each
    /// connection presents `tls_cert` and accepts only a server whose
    /// certificate chains to `tls_ca` and names the server's IP address.
    /// HTTP frontends only: a tcp frontend passes bytes on as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<std::path::PathBuf>,
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
    pub sticky_secret: Option<crate::Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_secret_file: Option<std::path::PathBuf>,
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

pub fn default_sticky_cookie() -> String {
    "bulwark_server".into()
}

impl Backend {
    /// The mutual TLS files, when `tls_cert`, `tls_key` and `tls_ca` are set.
    pub fn tls(&self) -> Option<crate::internal_tls::TlsFiles> {
        crate::internal_tls::files(self.tls_cert.as_ref(), self.tls_key.as_ref(), self.tls_ca.as_ref())
    }
}

fn default_pool() -> usize {
    64
}

fn default_hash_balance_factor() -> f64 {
    1.25
}

pub fn default_panic_threshold() -> u8 {
    50
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub name: String,
    /// `host:port` of the server.
    pub address: String,
    #[serde(default = "one")]
    pub weight: u32,
    /// Active-passive: used only when every non-backup server is down.
    #[serde(default)]
    pub backup: bool,
    /// Administratively disabled (drain): takes no new requests.
    #[serde(default)]
    pub disabled: bool,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    #[default]
    Tcp,
    Http,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub kind: CheckKind,
    /// HTTP checks: path requested with GET.
    #[serde(default = "default_check_path")]
    pub path: String,
    /// HTTP checks: the status that means healthy.
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_check_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes to mark a down server up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures to mark an up server down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// What happens to requests still waiting for a response head from a
    /// server when its check marks it down: `shutdown-sessions` (default,
    /// HAProxy's `on-marked-down shutdown-sessions`) ends the wait at once,
    /// so a replayable request (bodiless idempotent, or with an
    /// `Idempotency-Key`) goes to another server and any other gets 502
    /// instead of hanging on a dead or cut-off server until `timeouts.server`;
    /// `keep` lets them wait.
    #[serde(default)]
    pub on_marked_down: OnMarkedDown,
}

/// See [`HealthCheck::on_marked_down`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMarkedDown {
    #[default]
    ShutdownSessions,
    Keep,
}

fn default_check_path() -> String {
    "/".into()
}
fn default_expect_status() -> u16 {
    200
}
fn default_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            kind: CheckKind::Tcp,
            path: default_check_path(),
            expect_status: default_expect_status(),
            interval: default_interval(),
            timeout: default_check_timeout(),
            rise: default_rise(),
            fall: default_fall(),
            on_marked_down: OnMarkedDown::default(),
        }
    }
}

/// Passive health: eject a server after consecutive failures seen on real
/// traffic, for `eject_for`, without waiting for the active check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealth {
    /// Consecutive connection errors (and 5xx if `on_5xx`) before ejection;
    /// 0 disables passive ejection.
    #[serde(default = "default_consecutive")]
    pub consecutive_errors: u32,
    #[serde(default = "yes")]
    pub on_5xx: bool,
    #[serde(default = "default_eject", with = "humantime_serde")]
    pub eject_for: Duration,
}

fn default_consecutive() -> u32 {
    5
}
fn default_eject() -> Duration {
    Duration::from_secs(10)
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth { consecutive_errors: default_consecutive(), on_5xx: true, eject_for: default_eject() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Extra attempts after the first (each on another server when possible).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Retries may add at most this fraction of the request rate...
    #[serde(default = "default_budget_ratio")]
    pub budget_ratio: f64,
    /// ...plus this many retries per second, so low traffic can still retry.
    #[serde(default = "default_budget_min")]
    pub budget_min_per_sec: u32,
    /// A request carrying an `Idempotency-Key` header has its body read
    /// ahead into memory up to this many bytes, so that it can be replayed
    /// on another server when the first one fails before answering. A
    /// larger body is streamed and not replayed; 0 turns keyed replays of
    /// requests with a body off.
    #[serde(default = "default_max_replay_body_bytes")]
    pub max_replay_body_bytes: u64,
}

fn default_attempts() -> u32 {
    2
}
fn default_budget_ratio() -> f64 {
    0.2
}
fn default_budget_min() -> u32 {
    10
}
fn default_max_replay_body_bytes() -> u64 {
    64 * 1024
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: default_attempts(),
            budget_ratio: default_budget_ratio(),
            budget_min_per_sec: default_budget_min(),
            max_replay_body_bytes: default_max_replay_body_bytes(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Connecting to a server.
    #[serde(default = "d3s", with = "humantime_serde")]
    pub connect: Duration,
    /// Client must send the whole request body within this time (→ 408).
    #[serde(default = "d30s", with = "humantime_serde")]
    pub client_body: Duration,
    /// Client must send a complete request head within this time. The clock
    /// starts when the lb waits for a request, so it also closes keep-alive
    /// connections idle for this long (as HAProxy's `http-keep-alive`).
    #[serde(default = "d10s", with = "humantime_serde")]
    pub client_header: Duration,
    /// Server must start answering within this time (→ 504).
    #[serde(default = "d30s", with = "humantime_serde")]
    pub server: Duration,
    /// A client that accepts no byte of its response for this long is
    /// disconnected (nginx's `send_timeout`): a client reading a large
    /// answer very slowly cannot hold a connection forever.
    #[serde(default = "d60s", with = "humantime_serde")]
    pub client_send: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed
    /// (GOAWAY, then close).
    #[serde(default = "d60s", with = "humantime_serde")]
    pub http2_idle: Duration,
    /// HTTP/2 keep-alive: a PING is sent after this long without a frame
    /// from the client...
    #[serde(default = "d20s", with = "humantime_serde")]
    pub http2_ping_interval: Duration,
    /// ...and the connection is closed when its answer takes longer.
    #[serde(default = "d10s", with = "humantime_serde")]
    pub http2_ping_timeout: Duration,
    /// TCP mode: a tunnel idle in both directions is closed after this.
    #[serde(default = "d1h", with = "humantime_serde")]
    pub tunnel: Duration,
    /// On SIGTERM, wait at most this long for in-flight requests.
    #[serde(default = "d30s", with = "humantime_serde")]
    pub drain: Duration,
}

fn d3s() -> Duration {
    Duration::from_secs(3)
}
fn d10s() -> Duration {
    Duration::from_secs(10)
}
fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d20s() -> Duration {
    Duration::from_secs(20)
}
fn d60s() -> Duration {
    Duration::from_secs(60)
}
fn d1h() -> Duration {
    Duration::from_secs(3600)
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: d3s(),
            client_header: d10s(),
            client_body: d30s(),
            server: d30s(),
            client_send: d60s(),
            http2_idle: d60s(),
            http2_ping_interval: d20s(),
            http2_ping_timeout: d10s(),
            tunnel: d1h(),
            drain: d30s(),
        }
    }
}

impl Validate for LbConfig {
    fn validate(&self, v: &mut Validator) {
        if let Some(r) = &self.role {
            if r != "lb" {
                v.error("role", format!("this is an lb config, but role = \"{r}\""));
            }
        }
        if self.threads > 1024 {
            v.error("threads", "must be at most 1024 (0 = one per core)");
        }
        crate::access_log::check(v, &self.access_log_format, self.access_log_file.as_deref());
        if let Some(a) = &self.admin {
            v.scope("admin", |v| {
                check_bind(v, "bind", &a.bind);
                crate::internal_tls::check(v, a.tls_cert.as_ref(), a.tls_key.as_ref(), a.tls_ca.as_ref());
                if a.token.is_some() && a.token_file.is_some() {
                    v.error("token_file", "set token or token_file, not both");
                }
                if a.token.as_ref().is_some_and(|t| t.expose().trim().is_empty()) {
                    v.error("token", "must not be empty");
                }
                let public = a.bind.parse::<std::net::SocketAddr>().is_ok_and(|b| !b.ip().is_loopback());
                if public && a.token.is_none() && a.token_file.is_none() {
                    v.error(
                        "token",
                        format!(
                            "required when the admin listener binds a non-loopback address ({}): set token or token_file, or bind 127.0.0.1",
                            a.bind
                        ),
                    );
                }
                if a.monitor_token.is_some() && a.monitor_token_file.is_some() {
                    v.error("monitor_token_file", "set monitor_token or monitor_token_file, not both");
                }
                let mut names = HashSet::new();
                v.scope("node", |v| {
                    for (i, n) in a.nodes.iter().enumerate() {
                        v.index(i, |v| {
                            check_name(v, "name", &n.name);
                            if !names.insert(n.name.as_str()) {
                                v.error("name", format!("duplicate node `{}`", n.name));
                            }
                            if !["app", "web", "db", "backup"].contains(&n.kind.as_str()) {
                                v.error("kind", format!("`{}`: expected app, web, db or backup", n.kind));
                            }
                            check_host_port(v, "address", &n.address);
                        });
                    }
                });
                v.scope("alerts", |v| {
                    if let Some(w) = &a.alerts.webhook {
                        if !w.starts_with("http://") {
                            v.error("webhook", "must be an http:// URL");
                        }
                    }
                    if !(0.0..=100.0).contains(&a.alerts.error_rate_percent) {
                        v.error("error_rate_percent", "must be between 0 and 100");
                    }
                });
            });
        }
        v.scope("timeouts", |v| {
            let t = &self.timeouts;
            for (k, d) in [
                ("connect", t.connect),
                ("client_header", t.client_header),
                ("server", t.server),
                ("client_send", t.client_send),
                ("http2_idle", t.http2_idle),
                ("http2_ping_interval", t.http2_ping_interval),
                ("http2_ping_timeout", t.http2_ping_timeout),
                ("tunnel", t.tunnel),
            ] {
                if d.is_zero() {
                    v.error(k, "must be greater than 0");
                }
            }
        });
        if self.frontends.is_empty() {
            v.error("frontend", "at least one [[frontend]] is required");
        }
        let backends: HashSet<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        let mut seen = HashSet::new();
        let mut binds = HashSet::new();
        v.scope("frontend", |v| {
            for (i, f) in self.frontends.iter().enumerate() {
                v.index(i, |v| {
                    check_name(v, "name", &f.name);
                    if !seen.insert(f.name.as_str()) {
                        v.error("name", format!("duplicate frontend name `{}`", f.name));
                    }
                    check_bind(v, "bind", &f.bind);
                    if !f.bind.ends_with(":0") && !binds.insert(f.bind.as_str()) {
                        v.error("bind", format!("`{}` is already used by another frontend", f.bind));
                    }
                    if !backends.contains(f.backend.as_str()) {
                        v.error("backend", format!("no [[backend]] named `{}`", f.backend));
                    }
                    if f.max_header_bytes < 1024 {
                        v.error("max_header_bytes", "must be at least 1024");
                    }
                    v.scope("firewall", |v| f.firewall.validate_in(v));
                    if let Some(tls) = &f.tls {
                        v.scope("tls", |v| {
                            if tls.certificates.is_empty() {
                                v.error("certificate", "at least one [[frontend.tls.certificate]] is required");
                            }
                            if !(1..=1000).contains(&tls.http2_max_streams) {
                                v.error("http2_max_streams", "must be between 1 and 1000");
                            }
                        });
                        if f.mode == Mode::Tcp {
                            v.error("tls", "tls is for http frontends (tcp mode passes bytes through)");
                        }
                        if f.redirect_https_port.is_some() {
                            v.error("redirect_https_port", "a TLS frontend cannot redirect to HTTPS");
                        }
                    }
                    v.scope("headers", |v| f.headers.validate_in(v));
                    if f.tls.is_none() && f.headers.names_tls() {
                        v.error("headers", "a value names a TLS fact ($tls_*) but the frontend has no tls");
                    }
                    if f.mode == Mode::Tcp && !f.headers.is_empty() {
                        v.error("headers", "header rules are for http frontends");
                    }
                });
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

impl Validate for Backend {
    fn validate(&self, v: &mut Validator) {
        check_name(v, "sticky_cookie", &self.sticky_cookie);
        crate::util::check_secret_source(
            v,
            "sticky_secret",
            self.sticky_secret.as_ref(),
            self.sticky_secret_file.as_ref(),
        );
        crate::internal_tls::check(v, self.tls_cert.as_ref(), self.tls_key.as_ref(), self.tls_ca.as_ref());
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
                    check_host_port(v, "address", &s.address);
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

impl Validate for HealthCheck {
    fn validate(&self, v: &mut Validator) {
        if self.interval < Duration::from_millis(10) {
            v.error("interval", "must be at least 10ms");
        }
        if self.timeout.is_zero() {
            v.error("timeout", "must be greater than 0");
        }
        if self.rise == 0 {
            v.error("rise", "must be at least 1");
        }
        if self.fall == 0 {
            v.error("fall", "must be at least 1");
        }
        if !(100..=599).contains(&self.expect_status) {
            v.error("expect_status", "must be an HTTP status between 100 and 599");
        }
        if !self.path.starts_with('/') {
            v.error("path", "must start with /");
        }
    }
}

/// Upper bound of `retries.max_replay_body_bytes`: every keyed request in
/// flight may hold this much memory.
const MAX_REPLAY_BODY_BYTES: u64 = 16 * 1024 * 1024;

impl Validate for Retries {
    fn validate(&self, v: &mut Validator) {
        if self.attempts > 10 {
            v.error("attempts", "must be at most 10");
        }
        if !(0.0..=1.0).contains(&self.budget_ratio) {
            v.error("budget_ratio", "must be between 0.0 and 1.0");
        }
        if self.max_replay_body_bytes > MAX_REPLAY_BODY_BYTES {
            v.error("max_replay_body_bytes", format!("must be at most {MAX_REPLAY_BODY_BYTES} (it is held in memory)"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let bad = GOOD.replace("backend = \"web\"", "backend = \"nope\"").replace("127.0.0.1:8081", "not an address");
        let err = crate::from_str::<LbConfig>(&bad, "lb.toml").unwrap_err();
        let keys: Vec<_> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["frontend[0].backend", "backend[0].server[0].address"], "{err}");
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

    #[test]
    fn reports_syntax_errors_with_line() {
        let err = crate::from_str::<LbConfig>("threads = 1\n[[frontend]\n", "x.toml").unwrap_err();
        assert_eq!(err.issues[0].line, Some(2), "{err}");
    }
}
