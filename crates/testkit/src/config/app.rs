//! The `bulwark app` config of a test: the role, its database nodes and,
//! when the test runs one, the user's program.

use super::{str_value, toml_value};
use std::net::SocketAddr;
use std::path::Path;
use toml::{Table, Value};

/// A `bulwark app` config.
#[derive(Debug, Clone)]
pub struct AppConfig {
    top: Table,
    program: Option<Table>,
}

impl AppConfig {
    /// The role `name` on `127.0.0.1:0`, talking to the database nodes
    /// `db_nodes`, taking requests that carry the web tier's `secret`.
    pub fn new(name: &str, db_nodes: &[SocketAddr], secret: &str) -> AppConfig {
        let mut top = Table::new();
        top.insert("name".into(), str_value(name));
        top.insert("listen".into(), str_value(SocketAddr::from(([127, 0, 0, 1], 0))));
        top.insert("db_nodes".into(), Value::Array(db_nodes.iter().map(str_value).collect()));
        top.insert("secret".into(), str_value(secret));
        AppConfig { top, program: None }
    }

    /// The credential the role presents to the database.
    pub fn db_secret(mut self, secret: &str) -> AppConfig {
        self.top.insert("db_secret".into(), str_value(secret));
        self
    }

    /// Run the user's program `exec` (`{listen}` in it is replaced by the
    /// address it is to serve on) in `workdir`, instead of the built-in
    /// guestbook.
    pub fn program(mut self, exec: &[&str], workdir: Option<&Path>) -> AppConfig {
        let mut p = Table::new();
        p.insert("exec".into(), Value::Array(exec.iter().map(str_value).collect()));
        if let Some(dir) = workdir {
            p.insert("workdir".into(), str_value(dir.display()));
        }
        self.program = Some(p);
        self
    }

    /// Set `key` of `[program]` to a TOML value (`stop_grace`, ...).
    pub fn program_set(mut self, key: &str, raw: &str) -> AppConfig {
        let p = self.program.as_mut().unwrap_or_else(|| panic!("test config: `program.{key}` set before `program`"));
        p.insert(key.into(), toml_value(key, raw));
        self
    }

    /// Set a top-level `key` to a TOML value.
    pub fn set(mut self, key: &str, raw: &str) -> AppConfig {
        self.top.insert(key.into(), toml_value(key, raw));
        self
    }

    pub fn to_toml(&self) -> String {
        let mut t = self.top.clone();
        if let Some(p) = &self.program {
            t.insert("program".into(), Value::Table(p.clone()));
        }
        toml::to_string(&t).expect("a TOML table renders")
    }
}
