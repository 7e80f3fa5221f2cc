//! Typed builders for the role configs (lb, web, app, db) and the
//! topologies that integration tests write,
//! so that a test states only what it is about ("one TLS frontend, a
//! 300 ms header timeout, one backend with server `a`") and the TOML
//! around it is written once, here.
//!
//! Each builder renders TOML text for [`Process::start`](crate::Process::start)
//! (the role reads and validates it as it would a file an operator wrote).
//! Addresses are `SocketAddr`, timeouts `Duration`, choices the product's
//! own enums and tables ([`Balance`], [`HealthCheck`], [`NodeKind`], ...,
//! re-exported here from `bulwark_config`). A setting the builders
//! do not name is given as a TOML value with `set`
//! (`set("firewall", "{ max_connections_per_ip = 2 }")`); a malformed one
//! panics at once, naming it.
//!
//! Defaults suit a test on a small machine: one worker thread, listeners on
//! `127.0.0.1:0`, no access log on the web tier.

mod app;
mod db;
mod topology;

pub use app::AppConfig;
pub use bulwark_config::backup::{BackupSettings, BackupSource};
pub use bulwark_config::lb::{
    AlertRules, Balance, CheckKind, HealthCheck, Mode, NodeKind, PassiveHealth, Retries, Sticky,
};
pub use bulwark_config::topology::RoleKind;
pub use db::DbConfig;
pub use topology::{TopologyConfig, ONE_MACHINE_ROLES};

use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use toml::{Table, Value};

/// An HTTP check of `GET path` every 100 ms: a server is up after one
/// pass, down after two failures (the timeout is the default, 1 s).
pub fn quick_http_check(path: &str) -> HealthCheck {
    HealthCheck {
        kind: CheckKind::Http,
        path: path.into(),
        interval: Duration::from_millis(100),
        rise: 1,
        fall: 2,
        ..HealthCheck::default()
    }
}

/// A TCP check every 100 ms with a 100 ms timeout: a server is up after
/// one connect, down after one failed one.
pub fn quick_tcp_check() -> HealthCheck {
    HealthCheck {
        kind: CheckKind::Tcp,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        rise: 1,
        fall: 1,
        ..HealthCheck::default()
    }
}

/// Parse one TOML value (`"text"`, `2`, `{ a = 1 }`, `["x"]`).
fn toml_value(key: &str, raw: &str) -> Value {
    let mut t: Table = toml::from_str(&format!("v = {raw}"))
        .unwrap_or_else(|e| panic!("test config: `{key} = {raw}` is not a TOML value: {e}"));
    t.remove("v").expect("parsed value")
}

/// A typed setting (an enum, a check table) as the TOML it reads from.
fn typed_value(key: &str, v: &impl Serialize) -> Value {
    Value::try_from(v).unwrap_or_else(|e| panic!("test config: `{key}` does not render as TOML: {e}"))
}

fn duration_value(d: Duration) -> Value {
    Value::String(humantime::format_duration(d).to_string())
}

fn str_value(s: impl ToString) -> Value {
    Value::String(s.to_string())
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn section<'t>(table: &'t mut Table, name: &str) -> &'t mut Table {
    table
        .entry(name)
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("test config: `{name}` is set but is not a table"))
}

/// A `bulwark lb` config.
#[derive(Debug, Clone)]
pub struct LbConfig {
    top: Table,
    frontends: Vec<FrontendConfig>,
    backends: Vec<BackendConfig>,
    /// `[[admin.node]]`, rendered into `[admin]`.
    watched: Vec<Value>,
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig::new()
    }
}

impl LbConfig {
    /// One worker thread, no frontend, no backend, no admin listener.
    pub fn new() -> LbConfig {
        let mut top = Table::new();
        top.insert("threads".into(), Value::Integer(1));
        LbConfig { top, frontends: Vec::new(), backends: Vec::new(), watched: Vec::new() }
    }

    pub fn threads(mut self, n: usize) -> LbConfig {
        self.top.insert("threads".into(), Value::Integer(n as i64));
        self
    }

    /// The admin listener (`/stats`, `/metrics`, dashboard) on port 0,
    /// reported as `admin` on the ready line. Any `[admin]` setting below
    /// opens it too, on port 0 unless `bind` is set.
    pub fn admin(self) -> LbConfig {
        self.admin_value("bind", str_value(any_port()))
    }

    /// Set `key` of `[admin]` to a TOML value (`alerts`, `node`, ...).
    pub fn admin_with(self, key: &str, raw: &str) -> LbConfig {
        let value = toml_value(key, raw);
        self.admin_value(key, value)
    }

    /// Set `key` of `[admin]` to the string `value` (`token`, `site`, ...).
    pub fn admin_str(self, key: &str, value: &str) -> LbConfig {
        self.admin_value(key, str_value(value))
    }

    fn admin_value(mut self, key: &str, value: Value) -> LbConfig {
        let admin = section(&mut self.top, "admin");
        admin.entry("bind").or_insert_with(|| str_value(any_port()));
        admin.insert(key.into(), value);
        self
    }

    /// `[admin] alerts`: the alert rules (`for`, `webhook`, ...).
    pub fn alerts(self, rules: &AlertRules) -> LbConfig {
        self.admin_value("alerts", typed_value("alerts", rules))
    }

    /// One more `[[admin.node]]` the lb watches: `name` of `kind` on
    /// `host`, its HTTP listener at `address`.
    pub fn watch(mut self, name: &str, kind: NodeKind, host: &str, address: SocketAddr) -> LbConfig {
        let mut node = Table::new();
        node.insert("name".into(), str_value(name));
        node.insert("kind".into(), typed_value("kind", &kind));
        node.insert("host".into(), str_value(host));
        node.insert("address".into(), str_value(address));
        self.watched.push(Value::Table(node));
        self.admin_value("node", Value::Array(Vec::new()))
    }

    /// The access log's format (`combined`, `json` or a template).
    pub fn access_log_format(mut self, format: &str) -> LbConfig {
        self.top.insert("access_log_format".into(), str_value(format));
        self
    }

    /// Write the access log to `file` instead of standard output.
    pub fn access_log_file(mut self, file: &Path) -> LbConfig {
        self.top.insert("access_log_file".into(), str_value(file.display()));
        self
    }

    /// `[timeouts] key = d` (`client_header`, `client_send`, `server`, ...).
    pub fn timeout(mut self, key: &str, d: Duration) -> LbConfig {
        section(&mut self.top, "timeouts").insert(key.into(), duration_value(d));
        self
    }

    pub fn frontend(mut self, f: FrontendConfig) -> LbConfig {
        self.frontends.push(f);
        self
    }

    pub fn backend(mut self, b: BackendConfig) -> LbConfig {
        self.backends.push(b);
        self
    }

    /// Set a top-level `key` to a TOML value.
    pub fn set(mut self, key: &str, raw: &str) -> LbConfig {
        self.top.insert(key.into(), toml_value(key, raw));
        self
    }

    pub fn to_toml(&self) -> String {
        let mut t = self.top.clone();
        if !self.watched.is_empty() {
            section(&mut t, "admin").insert("node".into(), Value::Array(self.watched.clone()));
        }
        let frontends = self.frontends.iter().map(|f| Value::Table(f.0.clone())).collect();
        let backends = self.backends.iter().map(BackendConfig::to_table).map(Value::Table).collect();
        t.insert("frontend".into(), Value::Array(frontends));
        t.insert("backend".into(), Value::Array(backends));
        toml::to_string(&t).expect("a TOML table renders")
    }
}

/// One `[[frontend]]` of an lb config.
#[derive(Debug, Clone)]
pub struct FrontendConfig(Table);

impl FrontendConfig {
    /// An HTTP frontend `name` on `127.0.0.1:0` that sends to `backend`.
    pub fn http(name: &str, backend: &str) -> FrontendConfig {
        let mut t = Table::new();
        t.insert("name".into(), str_value(name));
        t.insert("bind".into(), str_value(any_port()));
        t.insert("backend".into(), str_value(backend));
        FrontendConfig(t)
    }

    /// A TCP frontend `name` (bytes passed through, `mode = "tcp"`).
    pub fn tcp(name: &str, backend: &str) -> FrontendConfig {
        let mut f = FrontendConfig::http(name, backend);
        f.0.insert("mode".into(), typed_value("mode", &Mode::Tcp));
        f
    }

    /// Terminate TLS with this certificate chain and key (PEM files).
    pub fn tls(self, cert: &Path, key: &Path) -> FrontendConfig {
        self.tls_certificates(&[(cert, key)])
    }

    /// Terminate TLS with several certificates, chosen by SNI.
    pub fn tls_certificates(mut self, pairs: &[(&Path, &Path)]) -> FrontendConfig {
        let certificates = pairs
            .iter()
            .map(|(cert, key)| {
                let mut c = Table::new();
                c.insert("cert".into(), str_value(cert.display()));
                c.insert("key".into(), str_value(key.display()));
                Value::Table(c)
            })
            .collect();
        let mut tls = Table::new();
        tls.insert("certificate".into(), Value::Array(certificates));
        self.0.insert("tls".into(), Value::Table(tls));
        self
    }

    /// Set `key` of this frontend to a TOML value (`firewall`,
    /// `redirect_https_port`, `max_body_bytes`, ...).
    pub fn set(mut self, key: &str, raw: &str) -> FrontendConfig {
        self.0.insert(key.into(), toml_value(key, raw));
        self
    }

    /// Set `key` of this frontend to the string `value` (`bind`, ...).
    pub fn set_str(mut self, key: &str, value: &str) -> FrontendConfig {
        self.0.insert(key.into(), str_value(value));
        self
    }
}

/// One `[[backend]]` of an lb config, with its servers.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    table: Table,
    servers: Vec<Table>,
}

impl BackendConfig {
    /// A backend `name` with no server yet (balancing and checks default).
    pub fn new(name: &str) -> BackendConfig {
        let mut table = Table::new();
        table.insert("name".into(), str_value(name));
        BackendConfig { table, servers: Vec::new() }
    }

    /// Add a server `name` at `address`.
    pub fn server(self, name: &str, address: SocketAddr) -> BackendConfig {
        self.server_with(name, address, &[])
    }

    /// Add a backup server `name` at `address`: used only when no other
    /// server is up.
    pub fn backup_server(self, name: &str, address: SocketAddr) -> BackendConfig {
        self.server_with(name, address, &[("backup", "true")])
    }

    /// Add a server with more of its keys as TOML values
    /// (`&[("backup", "true"), ("weight", "3")]`).
    pub fn server_with(mut self, name: &str, address: SocketAddr, keys: &[(&str, &str)]) -> BackendConfig {
        let mut s = Table::new();
        s.insert("name".into(), str_value(name));
        s.insert("address".into(), str_value(address));
        for (k, raw) in keys {
            s.insert((*k).into(), toml_value(k, raw));
        }
        self.servers.push(s);
        self
    }

    pub fn balance(mut self, balance: Balance) -> BackendConfig {
        self.table.insert("balance".into(), typed_value("balance", &balance));
        self
    }

    /// The active check of every server.
    pub fn health_check(mut self, check: &HealthCheck) -> BackendConfig {
        self.table.insert("health_check".into(), typed_value("health_check", check));
        self
    }

    /// Retries on other servers, and their budget.
    pub fn retries(mut self, retries: &Retries) -> BackendConfig {
        self.table.insert("retries".into(), typed_value("retries", retries));
        self
    }

    /// Keep a client on one server with a cookie `cookie` signed with
    /// `secret`.
    pub fn sticky_cookie(mut self, cookie: &str, secret: &str) -> BackendConfig {
        self.table.insert("sticky".into(), typed_value("sticky", &Sticky::Cookie));
        self.table.insert("sticky_cookie".into(), str_value(cookie));
        self.table.insert("sticky_secret".into(), str_value(secret));
        self
    }

    /// Passive ejection on real traffic.
    pub fn passive(mut self, passive: &PassiveHealth) -> BackendConfig {
        self.table.insert("passive".into(), typed_value("passive", passive));
        self
    }

    /// Set `key` of this backend to a TOML value (`max_connections`,
    /// `retries`, `cluster_secret`, ...).
    pub fn set(mut self, key: &str, raw: &str) -> BackendConfig {
        self.table.insert(key.into(), toml_value(key, raw));
        self
    }

    /// Set `key` of this backend to the string `value`.
    pub fn set_str(mut self, key: &str, value: &str) -> BackendConfig {
        self.table.insert(key.into(), str_value(value));
        self
    }

    fn to_table(&self) -> Table {
        let mut t = self.table.clone();
        t.insert("server".into(), Value::Array(self.servers.iter().cloned().map(Value::Table).collect()));
        t
    }
}

/// A `bulwark web` config.
#[derive(Debug, Clone)]
pub struct WebConfig {
    top: Table,
    proxies: Vec<Table>,
}

impl WebConfig {
    /// One listener `http` on `127.0.0.1:0` serving `root`, one worker
    /// thread, no access log.
    pub fn new(root: &Path) -> WebConfig {
        let mut top = Table::new();
        top.insert("listen".into(), Value::Array(vec![str_value(any_port())]));
        top.insert("root".into(), str_value(root.display()));
        top.insert("threads".into(), Value::Integer(1));
        top.insert("access_log".into(), Value::Boolean(false));
        WebConfig { top, proxies: Vec::new() }
    }

    pub fn threads(mut self, n: usize) -> WebConfig {
        self.top.insert("threads".into(), Value::Integer(n as i64));
        self
    }

    /// Log every request (to standard output unless `access_log_file`).
    pub fn access_log(mut self, on: bool) -> WebConfig {
        self.top.insert("access_log".into(), Value::Boolean(on));
        self
    }

    /// Log every request to `file` in `format` (`combined`, `json`, ...).
    pub fn access_log_file(mut self, file: &Path, format: &str) -> WebConfig {
        self.top.insert("access_log".into(), Value::Boolean(true));
        self.top.insert("access_log_file".into(), str_value(file.display()));
        self.top.insert("access_log_format".into(), str_value(format));
        self
    }

    /// `[timeouts] key = d` (`header`, `send`, `body`, `drain`, ...).
    pub fn timeout(mut self, key: &str, d: Duration) -> WebConfig {
        section(&mut self.top, "timeouts").insert(key.into(), duration_value(d));
        self
    }

    /// `[limits] key = n` (`max_body_bytes`, `max_header_bytes`, ...).
    pub fn limit(mut self, key: &str, n: u64) -> WebConfig {
        section(&mut self.top, "limits").insert(key.into(), Value::Integer(n as i64));
        self
    }

    /// A `[[proxy]]` route: requests under `prefix` go to `servers`.
    pub fn proxy(self, prefix: &str, servers: &[SocketAddr]) -> WebConfig {
        self.proxy_with(prefix, servers, &[])
    }

    /// A `[[proxy]]` route with more of its keys as TOML values
    /// (`&[("cache", "{ ttl = \"1s\" }")]`).
    pub fn proxy_with(mut self, prefix: &str, servers: &[SocketAddr], keys: &[(&str, &str)]) -> WebConfig {
        let mut p = Table::new();
        p.insert("prefix".into(), str_value(prefix));
        p.insert("servers".into(), Value::Array(servers.iter().map(str_value).collect()));
        for (k, raw) in keys {
            p.insert((*k).into(), toml_value(k, raw));
        }
        self.proxies.push(p);
        self
    }

    /// A `[[proxy]]` route whose servers are checked as `check` says.
    pub fn proxy_checked(self, prefix: &str, servers: &[SocketAddr], check: &HealthCheck) -> WebConfig {
        let mut web = self.proxy(prefix, servers);
        let route = web.proxies.last_mut().expect("the route just added");
        route.insert("health_check".into(), typed_value("health_check", check));
        web
    }

    /// Set a top-level `key` to a TOML value (`secret`, `dotfiles`, ...).
    pub fn set(mut self, key: &str, raw: &str) -> WebConfig {
        self.top.insert(key.into(), toml_value(key, raw));
        self
    }

    /// Set a top-level `key` to the string `value`.
    pub fn set_str(mut self, key: &str, value: &str) -> WebConfig {
        self.top.insert(key.into(), str_value(value));
        self
    }

    pub fn to_toml(&self) -> String {
        let mut t = self.top.clone();
        if !self.proxies.is_empty() {
            t.insert("proxy".into(), Value::Array(self.proxies.iter().cloned().map(Value::Table).collect()));
        }
        toml::to_string(&t).expect("a TOML table renders")
    }
}

#[cfg(test)]
mod tests;
