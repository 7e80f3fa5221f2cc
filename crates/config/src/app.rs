//! Schema of `bulwark app`: the application server, running the built-in
//! guestbook or, with a `[program]` table, the user's own program behind
//! the role (see [`Program`]).
//!
//! ```toml
//! name = "app1"                      # shown to users: which server answered
//! listen = "127.0.0.1:8100"
//! db_nodes = ["127.0.0.1:8110", "127.0.0.1:8111", "127.0.0.1:8112"]
//! secret_file = "/etc/bulwark/web-app.secret"      # required from the web tier (X-Bulwark-Cluster)
//! db_secret_file = "/etc/bulwark/app-db.secret"    # sent to the database (default: secret)
//! monitor_token_file = "/etc/bulwark/monitor.token" # opens /metrics as a bearer token (default: secret)
//!
//! [program]                          # optional: run this instead of the guestbook
//! exec = ["gunicorn", "site:app", "--bind", "{listen}"]
//! socket = "unix"                    # listen on a private Unix socket ("tcp": a loopback port)
//! workdir = "/srv/site"
//! env = { FLASK_ENV = "production" }
//! user = "www-data"                  # drop privileges to this user (when run as root)
//! health_path = "/health"            # probed on the program's private port
//! stop_grace = "10s"                 # SIGTERM, then SIGKILL after this long
//! start_timeout = "30s"              # to answer health_path after a start
//! # mutual TLS (see `internal_tls`): the listener requires a client certificate of `ca`,
//! # and the database is reached over mutual TLS
//! mutual_tls = { cert = "/var/lib/bulwark/tls/internal/app1.pem", key = "/var/lib/bulwark/tls/internal/app1.key", ca = "/var/lib/bulwark/tls/internal/ca.pem" }
//! deploy_token_file = "/etc/bulwark/deploy.token"    # opens the deploy endpoints (`bulwark deploy`)
//! release_dir = "/var/lib/bulwark/app1"               # releases/, current, previous (see `bulwark deploy`)
//! keep_releases = 5                                   # releases kept besides current and previous
//! ```
use crate::util::{check_name, yes};
use crate::{HostPort, Secret, Validate, Validator};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::Role>,
    /// This instance's name, returned with every answer.
    pub name: String,
    #[serde(with = "crate::address::ip_port")]
    pub listen: std::net::SocketAddr,
    /// Database nodes (`host:port`); the client finds the primary itself.
    pub db_nodes: Vec<HostPort>,
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
    /// Worker threads (0 = one per core; 1 runs the role on one thread,
    /// the lightest for a front that only proxies to a program).
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
    /// The user's program, run and supervised by the role instead of the
    /// built-in guestbook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<Program>,
    /// Mutual TLS (see [`crate::internal_tls`]): towards the web tier
    /// (the listener) and the database (the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_tls: Option<crate::internal_tls::TlsFiles>,
    /// Token of `bulwark deploy` (`Authorization: Bearer` on `/deploy/*`).
    /// Without it the deploy endpoints answer 404: this app cannot be
    /// deployed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_token_file: Option<PathBuf>,
    /// Where the program's releases are kept: `releases/<id>/` (copies
    /// made by `bulwark deploy`), and the links `current` (what runs) and
    /// `previous` (what `deploy --rollback` returns to). While `current`
    /// does not exist the program runs from `program.workdir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_dir: Option<PathBuf>,
    /// Releases kept under `release_dir` besides `current` and `previous`.
    #[serde(default = "default_keep_releases")]
    pub keep_releases: usize,
}

/// The user's application as the app role runs it: the role binds the
/// public `listen` address itself, checks the web tier's credential, and
/// proxies to the program on a private address it picks for each start: a
/// loopback port, or a Unix socket with `socket = "unix"`. The program gets
/// that address as `{listen}` in `exec` and as `BULWARK_LISTEN` (and `PORT`
/// or `BULWARK_SOCKET`), the database nodes as `BULWARK_DB_NODES`, and
/// the path of a file holding the database credential as
/// `BULWARK_DB_SECRET_FILE` (never the credential itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    /// Program and arguments; `{listen}` becomes `127.0.0.1:PORT` and
    /// `{port}` the port, or with `socket = "unix"`, `unix:PATH` and
    /// `{socket}` the path. A program name without `/` is looked up on
    /// `PATH`.
    pub exec: Vec<String>,
    /// How the program listens: on a private loopback port (`tcp`) or on a
    /// Unix socket in a private directory (`unix`), which spares the role a
    /// TCP handshake and teardown for every request to a program that
    /// closes its connections (gunicorn's sync workers do).
    #[serde(default, skip_serializing_if = "ProgramSocket::is_tcp")]
    pub socket: ProgramSocket,
    /// Working directory (default: the role's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    /// Extra environment variables (the role's own environment is inherited).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Run the program as this user (and its primary group); needs the role
    /// to run as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Path probed with `GET` on the program's private port; any 2xx or 3xx
    /// answer is healthy.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// Time the program gets to exit after SIGTERM before SIGKILL.
    #[serde(default = "default_stop_grace", with = "humantime_serde")]
    pub stop_grace: Duration,
    /// Time a started program gets to answer `health_path` before it is
    /// stopped and counted as a failed start.
    #[serde(default = "default_start_timeout", with = "humantime_serde")]
    pub start_timeout: Duration,
}

/// How the program listens for the role's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgramSocket {
    /// A loopback port picked for each start.
    #[default]
    Tcp,
    /// A socket file in a directory private to the role and the program.
    Unix,
}

impl ProgramSocket {
    pub fn is_tcp(&self) -> bool {
        *self == ProgramSocket::Tcp
    }
}

/// Environment variables the role sets for the program itself.
pub const RESERVED_ENV: [&str; 10] = [
    "PORT",
    "BULWARK_LISTEN",
    "BULWARK_SOCKET",
    "BULWARK_DB_NODES",
    "BULWARK_DB_SECRET_FILE",
    "BULWARK_APP_NAME",
    "BULWARK_DB_CA",
    "BULWARK_DB_CERT",
    "BULWARK_DB_KEY",
    "BULWARK_RELEASE",
];

pub fn default_keep_releases() -> usize {
    5
}

pub fn default_health_path() -> String {
    "/health".into()
}
pub fn default_stop_grace() -> Duration {
    Duration::from_secs(10)
}
pub fn default_start_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Program {
    /// Check what can be checked without touching the file system (the
    /// role checks the program and user themselves: see `bulwark check`).
    pub fn validate_in(&self, v: &mut Validator) {
        match self.exec.first() {
            None => v.error(
                "exec",
                "name the program to run, e.g. exec = [\"gunicorn\", \"site:app\", \"--bind\", \"{listen}\"]",
            ),
            Some(p) if p.trim().is_empty() => v.error("exec[0]", "the program name is empty"),
            _ => {}
        }
        if self.exec.iter().any(|a| a.contains('\0')) {
            v.error("exec", "arguments must not contain NUL characters");
        }
        let (unknown, instead) = match self.socket {
            ProgramSocket::Tcp => ("{socket}", "with socket = \"tcp\" the program gets a port: use {listen} or {port}"),
            ProgramSocket::Unix => (
                "{port}",
                "with socket = \"unix\" the program gets no port: use {listen} (unix:PATH) or {socket} (PATH)",
            ),
        };
        if self.exec.iter().any(|a| a.contains(unknown)) {
            v.error("exec", format!("{unknown} has no value here: {instead}"));
        }
        if self.workdir.as_ref().is_some_and(|w| w.as_os_str().is_empty()) {
            v.error("workdir", "must not be empty");
        }
        v.scope("env", |v| {
            for (k, val) in &self.env {
                if k.is_empty() || k.contains('=') || k.contains('\0') || val.contains('\0') {
                    v.error(k, "not a valid environment variable (no `=` or NUL in the name, no NUL in the value)");
                } else if RESERVED_ENV.contains(&k.as_str()) {
                    v.error(k, "set by the app role itself (the program's address, database nodes and credential)");
                }
            }
        });
        if let Some(u) = &self.user {
            if u.is_empty() || !u.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
                v.error("user", format!("`{u}` is not a valid user name"));
            }
        }
        if !self.health_path.starts_with('/') || self.health_path.chars().any(|c| c.is_control() || c == ' ') {
            v.error("health_path", "must be a path starting with `/`");
        }
        if self.stop_grace > Duration::from_secs(600) {
            v.error("stop_grace", "must be at most 10 minutes");
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&self.start_timeout) {
            v.error("start_timeout", "must be between 1 s and 10 minutes");
        }
    }
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
        crate::util::check_role(v, self.role, crate::Role::App, "an app config");
        check_name(v, "name", &self.name);
        crate::internal_tls::check(v, self.mutual_tls.as_ref());
        if self.db_nodes.is_empty() {
            v.error("db_nodes", "at least one database node is required");
        }
        match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => v.error("secret_file", "set secret or secret_file, not both"),
            (None, None) if self.require_secret => {
                v.error("secret", "a cluster secret is required (secret or secret_file), or set require_secret = false")
            }
            (Some(s), None) if s.expose().len() < 16 => v.error("secret", "must be at least 16 characters"),
            _ => {}
        }
        for (key, secret, file) in [
            ("db_secret", self.db_secret.as_ref(), self.db_secret_file.as_ref()),
            ("monitor_token", self.monitor_token.as_ref(), self.monitor_token_file.as_ref()),
            ("deploy_token", self.deploy_token.as_ref(), self.deploy_token_file.as_ref()),
        ] {
            crate::util::check_secret_source(v, key, secret, file);
        }
        if !(1..=100).contains(&self.keep_releases) {
            v.error("keep_releases", "must be between 1 and 100");
        }
        if self.release_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            v.error("release_dir", "must not be empty");
        }
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
        if let Some(p) = &self.program {
            v.scope("program", |v| p.validate_in(v));
        }
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
        let bad = ok.replace("[\"127.0.0.1:1\"]", "[]").replace("0123456789abcdef", "short");
        let err = crate::from_str::<AppConfig>(&bad, "app.toml").unwrap_err();
        let keys: Vec<_> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["db_nodes", "secret"], "{err}");
        let bad = ok.replace("[\"127.0.0.1:1\"]", "[\"127.0.0.1:1\", \"nope\"]");
        let err = crate::from_str::<AppConfig>(&bad, "app.toml").unwrap_err().to_string();
        assert!(err.starts_with("app.toml:3: db_nodes[1]: `nope` is not a valid host:port"), "{err}");
        let bad = ok.replace("listen = \"127.0.0.1:0\"", "listen = \"app1:80\"");
        let err = crate::from_str::<AppConfig>(&bad, "app.toml").unwrap_err().to_string();
        assert!(err.starts_with("app.toml:2: listen: `app1:80` is not an ip:port listen address"), "{err}");
        assert!(format!("{c:?}").contains("redacted"), "secrets never show in Debug");
    }

    #[test]
    fn a_program_table_runs_the_users_program() {
        let base = "name = \"app1\"\nlisten = \"127.0.0.1:0\"\ndb_nodes = [\"127.0.0.1:1\"]\nrequire_secret = false\n";
        let ok = format!(
            "{base}[program]\nexec = [\"gunicorn\", \"site:app\", \"--bind\", \"{{listen}}\"]\nenv = {{ A = \"b\" }}\n"
        );
        let c: AppConfig = crate::from_str(&ok, "app.toml").unwrap_or_else(|e| panic!("{e}"));
        let p = c.program.unwrap();
        assert_eq!(p.exec[0], "gunicorn");
        assert_eq!((p.health_path.as_str(), p.stop_grace), ("/health", Duration::from_secs(10)));
        let bad = format!(
            "{base}[program]\nexec = []\nenv = {{ PORT = \"1\" }}\nuser = \"a b\"\nhealth_path = \"health\"\nstart_timeout = \"0s\"\n"
        );
        let err = crate::from_str::<AppConfig>(&bad, "app.toml").unwrap_err();
        let keys: Vec<_> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["program.exec", "program.env.PORT", "program.user", "program.health_path", "program.start_timeout"],
            "{err}"
        );
        let unknown = format!("{base}[program]\nexec = [\"x\"]\ncommand = \"y\"\n");
        assert!(crate::from_str::<AppConfig>(&unknown, "app.toml").unwrap_err().to_string().contains("command"));
    }
}

/// The topology's `[app]` table: what every app role instance runs. No
/// `exec` (the default) is the built-in guestbook; with `exec`, the user's
/// program (see [`Program`]). A relative `workdir` is relative to the
/// topology file's directory.
///
/// ```toml
/// [app]
/// exec = ["gunicorn", "guestbook:app", "--bind", "{listen}"]
/// workdir = "."
/// user = "www-data"                       # optional: run it as this user
/// release_root = "/srv/bulwark/releases"  # optional: where `bulwark deploy` keeps releases
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSettings {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
    /// How the program listens (see [`Program::socket`]).
    #[serde(skip_serializing_if = "ProgramSocket::is_tcp")]
    pub socket: ProgramSocket,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    pub stop_grace: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    pub start_timeout: Option<Duration>,
    /// The site's static files: a directory under `workdir` that the web
    /// tier serves itself at the same path (`static` → `/static/...`), with
    /// its caching and compression. Default: `static` when `workdir` has
    /// that directory.
    #[serde(rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<String>,
    /// Releases each app keeps besides the current and the previous one
    /// (`bulwark deploy`). Default 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_releases: Option<usize>,
    /// Where each app keeps its releases: `<release_root>/<app name>/`
    /// (see [`AppSettings::release_root`]). A relative path is relative to
    /// the topology file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_root: Option<PathBuf>,
}

impl AppSettings {
    pub fn is_default(&self) -> bool {
        self == &AppSettings::default()
    }

    /// The program every app instance runs, or `None` for the guestbook.
    pub fn program(&self) -> Option<Program> {
        if self.exec.is_empty() {
            return None;
        }
        Some(Program {
            exec: self.exec.clone(),
            socket: self.socket,
            workdir: self.workdir.clone(),
            env: self.env.clone(),
            user: self.user.clone(),
            health_path: self.health_path.clone().unwrap_or_else(default_health_path),
            stop_grace: self.stop_grace.unwrap_or_else(default_stop_grace),
            start_timeout: self.start_timeout.unwrap_or_else(default_start_timeout),
        })
    }

    /// The directory under which each app keeps its releases: `release_root`
    /// when set; else the data directory itself, or, when the program runs
    /// as another `user`, `<data_dir>-releases` beside it: that user must
    /// reach its releases, and the data directory (the database, secrets,
    /// keys) stays for Bulwark alone.
    pub fn release_root(&self, data_dir: &std::path::Path) -> PathBuf {
        if let Some(r) = &self.release_root {
            return r.clone();
        }
        if self.user.is_none() {
            return data_dir.to_path_buf();
        }
        match data_dir.file_name() {
            Some(name) => {
                let mut sibling = name.to_os_string();
                sibling.push("-releases");
                data_dir.with_file_name(sibling)
            }
            None => data_dir.join("releases"),
        }
    }

    /// The URL prefix of the static files (`/static/`), when there are any.
    pub fn static_prefix(&self) -> Option<String> {
        self.static_dir.as_ref().filter(|_| self.program().is_some()).map(|d| format!("/{}/", d.trim_matches('/')))
    }

    pub fn validate_in(&self, v: &mut Validator) {
        if let Some(d) = &self.static_dir {
            if !crate::util::is_plain_path(d.trim_end_matches('/')) {
                v.error("static", format!("`{d}` must be a directory under workdir, like `static` or `assets/public` (plain names, no `..`)"));
            } else if self.workdir.is_none() {
                v.error("static", "set workdir: the static directory is under it");
            }
        }
        if self.release_root.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            v.error("release_root", "must not be empty");
        }
        if self.keep_releases.is_some_and(|n| !(1..=100).contains(&n)) {
            v.error("keep_releases", "must be between 1 and 100");
        }
        match self.program() {
            Some(p) => p.validate_in(v),
            None => {
                let set = self.workdir.is_some()
                    || !self.socket.is_tcp()
                    || !self.env.is_empty()
                    || self.user.is_some()
                    || self.health_path.is_some()
                    || self.stop_grace.is_some()
                    || self.start_timeout.is_some()
                    || self.static_dir.is_some()
                    || self.keep_releases.is_some()
                    || self.release_root.is_some();
                if set {
                    v.error("exec", "these settings are for a program: set exec too (without it the apps run the built-in guestbook)");
                }
            }
        }
    }
}
