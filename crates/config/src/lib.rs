//! Configuration for every Bulwark role and for a whole topology.
//!
//! Owns: the TOML schema of each role (`lb`, `web`, `app`, `db`) and of a
//! topology, full validation at load time, and error messages that name the
//! file, line and key (`backend[0].server[1].weight: must be at least 1`).
//! Values are read into their types at load: addresses (see [`address`]),
//! kinds and algorithms are never strings that a role parses again. A
//! table whose every key has a default takes them from its `Default` impl
//! (`#[serde(default)]` on the struct).
//!
//! Must not touch: sockets, files other than the config file being read, or
//! any runtime state. Roles receive an already validated value from here.

pub mod access_log;
pub mod address;
pub mod app;
pub mod backup;
pub mod compression;
pub mod db;
mod error;
pub mod firewall;
pub mod header_rules;
pub mod host_firewall;
pub mod internal_tls;
pub mod lb;
pub mod topology;
pub mod vrrp;
pub mod web;

pub use address::{AddressError, HostPort};
pub use error::{ConfigError, Issue, Validator};

use serde::de::DeserializeOwned;
use std::path::Path;

/// A configuration value that can check itself beyond what serde checks.
pub trait Validate {
    /// Report every problem through `v`; paths are relative to the value.
    fn validate(&self, v: &mut Validator);
}

/// Parse and fully validate a config from TOML text. `origin` names the
/// source (usually the file path) in error messages.
pub fn from_str<T: DeserializeOwned + Validate>(text: &str, origin: &str) -> Result<T, ConfigError> {
    let value: T = toml::from_str(text).map_err(|e| ConfigError::from_toml(origin, text, &e))?;
    let mut v = Validator::default();
    value.validate(&mut v);
    v.into_result(origin, text)?;
    Ok(value)
}

/// Read, parse and fully validate a config file.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    from_str(&text, &path.display().to_string())
}

/// Which role a config file is for, guessed from its distinctive top-level
/// keys (or the explicit `role = "..."` key every schema accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Lb,
    Web,
    App,
    Db,
    Topology,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Lb => "lb",
            Role::Web => "web",
            Role::App => "app",
            Role::Db => "db",
            Role::Topology => "topology",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "lb" => Role::Lb,
            "web" => Role::Web,
            "app" => Role::App,
            "db" => Role::Db,
            "topology" => Role::Topology,
            _ => return None,
        })
    }

    /// Detect the role of a TOML document. The explicit `role` key wins;
    /// otherwise the first distinctive table name decides.
    pub fn detect(text: &str) -> Option<Role> {
        let table: toml::Table = toml::from_str(text).ok()?;
        if let Some(toml::Value::String(r)) = table.get("role") {
            return Role::parse(r);
        }
        let has = |k: &str| table.contains_key(k);
        if has("host") || has("topology") {
            Some(Role::Topology)
        } else if has("frontend") || has("backend") {
            Some(Role::Lb)
        } else if has("raft") || has("node_id") {
            Some(Role::Db)
        } else if has("root") || has("static") || has("proxy") {
            Some(Role::Web)
        } else if has("database") || has("db_nodes") {
            Some(Role::App)
        } else {
            None
        }
    }
}

/// Validate a file for whichever role it is for; returns the role.
pub fn check_file(path: &Path, role: Option<Role>) -> Result<Role, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    let origin = path.display().to_string();
    let role = match role.or_else(|| Role::detect(&text)) {
        Some(r) => r,
        None => {
            // Surface TOML syntax errors before the detection failure.
            if let Err(e) = toml::from_str::<toml::Table>(&text) {
                return Err(ConfigError::from_toml(&origin, &text, &e));
            }
            return Err(ConfigError::message(
                &origin,
                "cannot tell which role this file is for: add `role = \"lb\"` (or web, app, db, topology) at the top, or pass --role",
            ));
        }
    };
    match role {
        Role::Lb => from_str::<lb::LbConfig>(&text, &origin).map(|_| ()),
        Role::Web => from_str::<web::WebConfig>(&text, &origin).map(|_| ()),
        Role::App => from_str::<app::AppConfig>(&text, &origin).map(|_| ()),
        Role::Db => from_str::<db::DbConfig>(&text, &origin).map(|_| ()),
        Role::Topology => from_str::<topology::Topology>(&text, &origin).map(|_| ()),
    }?;
    Ok(role)
}

/// A secret value (token, cluster secret): the type of every secret in
/// every config schema. Its `Debug` never shows the value and it has no
/// `Display`, so logging a config (or an error holding one) cannot leak it;
/// the value is read only through [`Secret::expose`], which makes every use
/// easy to find. It serializes as the plain string so derived config files
/// work.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret given inline or, failing that, read from `file` (trailing
    /// whitespace trimmed). `key` names the config key in errors.
    pub fn resolve(inline: Option<&Secret>, file: Option<&Path>, key: &str) -> Result<Option<Secret>, SecretError> {
        if let Some(s) = inline {
            return Ok(Some(s.clone()));
        }
        match file {
            None => Ok(None),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| SecretError::Read {
                    key: key.to_string(),
                    path: p.to_path_buf(),
                    source,
                })?;
                let t = text.trim_end().to_string();
                if t.is_empty() {
                    return Err(SecretError::Empty { key: key.to_string(), path: p.to_path_buf() });
                }
                Ok(Some(Secret(t)))
            }
        }
    }

    /// Like [`Secret::resolve`], falling back to `fallback` when neither
    /// the inline value nor the file is set: how a per-hop secret defaults
    /// to the role's single cluster secret of earlier versions.
    pub fn resolve_or(
        inline: Option<&Secret>,
        file: Option<&Path>,
        key: &str,
        fallback: Option<&Secret>,
    ) -> Result<Option<Secret>, SecretError> {
        Ok(Secret::resolve(inline, file, key)?.or_else(|| fallback.cloned()))
    }
}

/// A secret file named by `<key>_file` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{key}_file {}: {source}", path.display())]
    Read { key: String, path: std::path::PathBuf, source: std::io::Error },
    #[error("{key}_file {} is empty", path.display())]
    Empty { key: String, path: std::path::PathBuf },
}

/// Common helpers for schema modules.
pub(crate) mod util {
    use crate::Validator;

    /// An optional secret given inline (`key`) or in a file (`key_file`):
    /// not both, an inline one at least 16 characters without surrounding
    /// whitespace or control characters, a file name not empty.
    pub fn check_secret_source(
        v: &mut Validator,
        key: &str,
        inline: Option<&crate::Secret>,
        file: Option<&std::path::PathBuf>,
    ) {
        match (inline, file) {
            (Some(_), Some(_)) => v.error(&format!("{key}_file"), format!("set {key} or {key}_file, not both")),
            (Some(s), None) => {
                let s = s.expose();
                if s.trim().len() < 16 {
                    v.error(key, "must be at least 16 characters");
                }
                if s.trim() != s || s.contains(char::is_control) {
                    v.error(key, "must not have surrounding whitespace or control characters");
                }
            }
            (None, Some(p)) if p.as_os_str().is_empty() => v.error(&format!("{key}_file"), "must not be empty"),
            _ => {}
        }
    }

    /// The optional `role = "..."` marker of a file for `role` (`what` names
    /// the kind of file in the message).
    pub fn check_role(v: &mut Validator, marker: Option<crate::Role>, role: crate::Role, what: &str) {
        if let Some(r) = marker.filter(|&r| r != role) {
            v.error("role", format!("this is {what}, but role = \"{}\"", r.name()));
        }
    }

    /// A relative path of plain segments (letters, digits, `-`, `_`, `.`;
    /// never empty, `.` or `..`): it stays under the directory it is
    /// joined to, and maps to the same URL path.
    pub fn is_plain_path(path: &str) -> bool {
        !path.is_empty()
            && path.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            })
    }

    /// Default of the boolean keys that are on unless turned off.
    pub fn yes() -> bool {
        true
    }

    pub fn check_name(v: &mut Validator, key: &str, value: &str) {
        if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
            v.error(key, format!("`{value}` is not a valid name (letters, digits, - _ . only)"));
        }
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    const SECRET: &str = "do-not-print-0123456789";

    /// Every secret of every schema is a [`Secret`]: `{:?}` of a whole
    /// config (what a log line or a panic would show) never has its value.
    #[test]
    fn no_config_prints_a_secret() {
        let db = format!("node_id = 1\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nsecret = \"{SECRET}\"\n");
        let app =
            format!("name = \"app1\"\nlisten = \"127.0.0.1:0\"\ndb_nodes = [\"127.0.0.1:1\"]\nsecret = \"{SECRET}\"\n");
        let web = format!("listen = [\"127.0.0.1:0\"]\nroot = \"/srv\"\nsecret = \"{SECRET}\"\n");
        let lb = format!(
            "[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"{SECRET}\"\ncluster_secret = \"{SECRET}\"\n\
             [[frontend]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"web\"\n\
             [[backend]]\nname = \"web\"\ncluster_secret = \"{SECRET}\"\n\
             [[backend.server]]\nname = \"w1\"\naddress = \"127.0.0.1:1\"\n"
        );
        let printed = [
            format!("{:?}", from_str::<db::DbConfig>(&db, "db.toml").unwrap()),
            format!("{:?}", from_str::<app::AppConfig>(&app, "app.toml").unwrap()),
            format!("{:?}", from_str::<web::WebConfig>(&web, "web.toml").unwrap()),
            format!("{:?}", from_str::<lb::LbConfig>(&lb, "lb.toml").unwrap()),
        ];
        for p in printed {
            assert!(!p.contains(SECRET), "a secret in Debug output: {p}");
            assert!(p.contains("redacted"), "{p}");
        }
        let db: db::DbConfig = from_str(&db, "db.toml").unwrap();
        assert_eq!(db.load_secret().unwrap().expose(), SECRET);
        // Secret::resolve reads a file for `<key>_file`, and says what is wrong with it.
        let dir = std::env::temp_dir().join(format!("bulwark-config-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (full, empty, missing) = (dir.join("full"), dir.join("empty"), dir.join("missing"));
        std::fs::write(&full, format!("{SECRET}\n")).unwrap();
        std::fs::write(&empty, "\n").unwrap();
        assert_eq!(Secret::resolve(None, Some(&full), "secret").unwrap().unwrap().expose(), SECRET);
        let e = Secret::resolve(None, Some(&empty), "secret").unwrap_err();
        assert_eq!(e.to_string(), format!("secret_file {} is empty", empty.display()));
        let e = Secret::resolve(None, Some(&missing), "secret").unwrap_err();
        assert!(matches!(&e, SecretError::Read { key, .. } if key == "secret"), "{e}");
        assert!(e.to_string().starts_with(&format!("secret_file {}: ", missing.display())), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!format!("{:?}", db.load_secret().unwrap()).contains(SECRET));
    }

    /// Each hop's secret has its own key; a `secret` given alone stands in
    /// for every hop, and the lb's earlier `cluster_secret` key for the
    /// monitoring token still loads.
    #[test]
    fn per_hop_secrets_default_to_the_single_secret() {
        let db = format!("node_id = 1\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nsecret = \"{SECRET}\"\n");
        let single: db::DbConfig = from_str(&db, "db.toml").unwrap();
        assert_eq!(single.load_peer_secret().unwrap().expose(), SECRET);
        assert_eq!(single.load_monitor_token().unwrap(), None);
        let split = format!("{db}peer_secret = \"peer-secret-0123456789\"\nmonitor_token = \"monitor-0123456789ab\"\n");
        let split: db::DbConfig = from_str(&split, "db.toml").unwrap();
        assert_eq!(split.load_peer_secret().unwrap().expose(), "peer-secret-0123456789");
        assert!(!format!("{split:?}").contains("peer-secret"), "{split:?}");
        let short = format!("{db}peer_secret = \"short\"\n");
        assert_eq!(from_str::<db::DbConfig>(&short, "db.toml").unwrap_err().issues[0].key, "peer_secret");
        let both = format!("{db}monitor_token = \"monitor-0123456789ab\"\nmonitor_token_file = \"/x\"\n");
        assert_eq!(from_str::<db::DbConfig>(&both, "db.toml").unwrap_err().issues[0].key, "monitor_token_file");
        let app = format!(
            "name = \"a\"\nlisten = \"127.0.0.1:0\"\ndb_nodes = [\"127.0.0.1:1\"]\nsecret = \"{SECRET}\"\ndb_secret = \"x\"\n"
        );
        assert_eq!(from_str::<app::AppConfig>(&app, "app.toml").unwrap_err().issues[0].key, "db_secret");
        let web = format!(
            "listen = [\"127.0.0.1:0\"]\nroot = \"/srv\"\nupstream_secret = \"{SECRET}\"\nupstream_secret_file = \"/x\"\n"
        );
        assert_eq!(from_str::<web::WebConfig>(&web, "web.toml").unwrap_err().issues[0].key, "upstream_secret_file");
        let lb = format!(
            "[admin]\nbind = \"127.0.0.1:0\"\ncluster_secret = \"{SECRET}\"\n\
             [[frontend]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"web\"\n\
             [[backend]]\nname = \"web\"\n[[backend.server]]\nname = \"w1\"\naddress = \"127.0.0.1:1\"\n"
        );
        let lb: lb::LbConfig = from_str(&lb, "lb.toml").unwrap();
        assert_eq!(lb.admin.unwrap().monitor_token.unwrap().expose(), SECRET);
    }

    /// The optional `role` marker names one of the roles and must be the
    /// file's own.
    #[test]
    fn a_role_marker_must_be_the_files_own() {
        let app = "name = \"a\"\nlisten = \"127.0.0.1:0\"\ndb_nodes = [\"127.0.0.1:1\"]\nrequire_secret = false\n";
        let c: app::AppConfig = from_str(&format!("role = \"app\"\n{app}"), "app.toml").unwrap();
        assert_eq!(c.role, Some(Role::App));
        let e = from_str::<app::AppConfig>(&format!("role = \"web\"\n{app}"), "app.toml").unwrap_err();
        assert_eq!(e.to_string(), "app.toml:1: role: this is an app config, but role = \"web\"");
        let e = from_str::<app::AppConfig>(&format!("role = \"ap\"\n{app}"), "app.toml").unwrap_err();
        assert!(e.to_string().starts_with("app.toml:1: role: unknown variant `ap`"), "{e}");
    }

    /// A bad secret is still reported with its file, line and key, and the
    /// message does not repeat the value.
    #[test]
    fn a_bad_secret_is_named_by_file_line_and_key() {
        let text = "node_id = 1\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nsecret = \" short-secret\"\n";
        let e = from_str::<db::DbConfig>(text, "db.toml").unwrap_err();
        let rendered = e.to_string();
        assert!(rendered.starts_with("db.toml:5: secret: "), "{rendered}");
        assert!(!rendered.contains("short-secret"), "{rendered}");
        let text =
            "node_id = 1\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nsecret = 12\n";
        let e = from_str::<db::DbConfig>(text, "db.toml").unwrap_err();
        assert_eq!(e.issues[0].line, Some(5), "{e}");
    }
}
