//! Typed builders for the lb and web configs that integration tests write,
//! so that a test states only what it is about ("one TLS frontend, a
//! 300 ms header timeout, one backend with server `a`") and the TOML
//! around it is written once, here.
//!
//! Each builder renders TOML text for [`Process::start`](crate::Process::start)
//! (the role reads and validates it as it would a file an operator wrote).
//! Addresses are `SocketAddr`, timeouts `Duration`. A setting the builders
//! do not name is given as a TOML value with `set`
//! (`set("firewall", "{ max_connections_per_ip = 2 }")`); a malformed one
//! panics at once, naming it.
//!
//! Defaults suit a test on a small machine: one worker thread, listeners on
//! `127.0.0.1:0`, no access log on the web tier.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use toml::{Table, Value};

/// Parse one TOML value (`"text"`, `2`, `{ a = 1 }`, `["x"]`).
fn toml_value(key: &str, raw: &str) -> Value {
    let mut t: Table = toml::from_str(&format!("v = {raw}"))
        .unwrap_or_else(|e| panic!("test config: `{key} = {raw}` is not a TOML value: {e}"));
    t.remove("v").expect("parsed value")
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
        LbConfig { top, frontends: Vec::new(), backends: Vec::new() }
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

    /// Set `key` of this backend to a TOML value (`balance`,
    /// `health_check`, `cluster_secret`, ...).
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
    pub fn proxy(mut self, prefix: &str, servers: &[SocketAddr]) -> WebConfig {
        let mut p = Table::new();
        p.insert("prefix".into(), str_value(prefix));
        p.insert("servers".into(), Value::Array(servers.iter().map(str_value).collect()));
        self.proxies.push(p);
        self
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
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn lb(c: &LbConfig) -> bulwark_config::lb::LbConfig {
        let text = c.to_toml();
        bulwark_config::from_str(&text, "lb.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn web(c: &WebConfig) -> bulwark_config::web::WebConfig {
        let text = c.to_toml();
        bulwark_config::from_str(&text, "web.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn an_lb_config_says_what_the_builder_was_told() {
        let a: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:8002".parse().unwrap();
        let c = LbConfig::new()
            .threads(2)
            .admin_str("token", "t0ken")
            .timeout("client_header", Duration::from_millis(300))
            .frontend(
                FrontendConfig::http("www", "app")
                    .tls(Path::new("/c.pem"), Path::new("/k.pem"))
                    .set("firewall", "{ max_connections_per_ip = 2 }"),
            )
            .frontend(FrontendConfig::http("http", "app").set("redirect_https_port", "8443"))
            .backend(BackendConfig::new("app").set("balance", "\"leastconn\"").server("a", a).server_with(
                "b",
                b,
                &[("backup", "true")],
            ));
        let parsed = lb(&c);
        assert_eq!(parsed.threads, 2);
        let admin = parsed.admin.as_ref().expect("[admin]");
        assert_eq!(admin.bind.to_string(), "127.0.0.1:0");
        assert_eq!(admin.token.as_ref().map(|t| t.expose()), Some("t0ken"));
        assert_eq!(parsed.timeouts.client_header, Duration::from_millis(300));
        assert_eq!(parsed.frontends.len(), 2);
        assert_eq!(parsed.frontends[0].name, "www");
        assert_eq!(parsed.frontends[0].bind.to_string(), "127.0.0.1:0");
        assert!(parsed.frontends[0].tls.is_some());
        assert_eq!(parsed.frontends[0].firewall.max_connections_per_ip, Some(2));
        assert_eq!(parsed.frontends[1].redirect_https_port, Some(8443));
        let backend = &parsed.backends[0];
        assert_eq!(backend.servers.len(), 2);
        assert_eq!(backend.servers[0].address, "127.0.0.1:8001");
        assert!(!backend.servers[0].backup);
        assert!(backend.servers[1].backup);
    }

    #[test]
    fn a_web_config_says_what_the_builder_was_told() {
        let app: SocketAddr = "127.0.0.1:8100".parse().unwrap();
        let root = PathBuf::from("/srv/site");
        let c = WebConfig::new(&root)
            .timeout("send", Duration::from_secs(600))
            .limit("max_body_bytes", 1000)
            .proxy("/api/", &[app])
            .set_str("secret", "edge-secret-0123456789");
        let parsed = web(&c);
        assert_eq!(parsed.listen, ["127.0.0.1:0".parse::<SocketAddr>().unwrap()]);
        assert_eq!(parsed.root, root);
        assert_eq!(parsed.threads, 1);
        assert!(!parsed.access_log);
        assert_eq!(parsed.timeouts.send, Duration::from_secs(600));
        assert_eq!(parsed.limits.max_body_bytes, 1000);
        assert_eq!(parsed.proxy[0].prefix, "/api/");
        assert_eq!(parsed.proxy[0].servers, ["127.0.0.1:8100"]);
        assert!(parsed.secret.is_some());
    }

    #[test]
    #[should_panic(expected = "`firewall = { oops` is not a TOML value")]
    fn a_malformed_value_names_itself() {
        let _ = FrontendConfig::http("www", "app").set("firewall", "{ oops");
    }
}
