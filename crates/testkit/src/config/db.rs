//! The `bulwark db` config of a test: one node, its listeners, its data
//! directory and its Raft timers.

use super::{duration_value, str_value, toml_value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::{Table, Value};

/// A `bulwark db` config. It keeps the node's identity and addresses so
/// that a test can start the same node again on them.
#[derive(Debug, Clone)]
pub struct DbConfig {
    node_id: u64,
    listen: SocketAddr,
    raft_listen: SocketAddr,
    data_dir: PathBuf,
    bootstrap: bool,
    top: Table,
}

impl DbConfig {
    /// Node `node_id` keeping its data in `data_dir`, the client API and
    /// Raft both on `127.0.0.1:0`, clients and peers authenticated by
    /// `secret`, not bootstrapping a cluster.
    pub fn new(node_id: u64, data_dir: &Path, secret: &str) -> DbConfig {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut top = Table::new();
        top.insert("secret".into(), str_value(secret));
        DbConfig { node_id, listen: any, raft_listen: any, data_dir: data_dir.to_path_buf(), bootstrap: false, top }
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The client API's address as configured (port 0 until the node ran).
    pub fn listen_address(&self) -> SocketAddr {
        self.listen
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The client API's address.
    pub fn listen(mut self, address: SocketAddr) -> DbConfig {
        self.listen = address;
        self
    }

    /// The Raft listener's address.
    pub fn raft_listen(mut self, address: SocketAddr) -> DbConfig {
        self.raft_listen = address;
        self
    }

    /// Keep the data in `dir`.
    pub fn in_dir(mut self, dir: &Path) -> DbConfig {
        self.data_dir = dir.to_path_buf();
        self
    }

    /// Start a one-node cluster (`true`) or wait to be added (`false`).
    pub fn bootstrap(mut self, bootstrap: bool) -> DbConfig {
        self.bootstrap = bootstrap;
        self
    }

    pub fn heartbeat_interval(self, d: Duration) -> DbConfig {
        self.duration("heartbeat_interval", d)
    }

    pub fn election_timeout(self, d: Duration) -> DbConfig {
        self.duration("election_timeout", d)
    }

    pub fn write_timeout(self, d: Duration) -> DbConfig {
        self.duration("write_timeout", d)
    }

    /// How long a read waits for a write it must see.
    pub fn read_wait(self, d: Duration) -> DbConfig {
        self.duration("read_wait", d)
    }

    /// How long a client may take to send its request head.
    pub fn header_timeout(self, d: Duration) -> DbConfig {
        self.duration("header_timeout", d)
    }

    /// Take a snapshot every `entries` applied log entries.
    pub fn snapshot_every(mut self, entries: u64) -> DbConfig {
        self.top.insert("snapshot_every".into(), Value::Integer(entries as i64));
        self
    }

    /// Take a snapshot once the log holds `bytes`.
    pub fn snapshot_log_bytes(mut self, bytes: u64) -> DbConfig {
        self.top.insert("snapshot_log_bytes".into(), Value::Integer(bytes as i64));
        self
    }

    /// The credential of the Raft listener (the client secret otherwise).
    pub fn peer_secret(mut self, secret: &str) -> DbConfig {
        self.top.insert("peer_secret".into(), str_value(secret));
        self
    }

    /// The token of the read-only status endpoints.
    pub fn monitor_token(mut self, token: &str) -> DbConfig {
        self.top.insert("monitor_token".into(), str_value(token));
        self
    }

    /// Set a top-level `key` to a TOML value (`firewall`, ...).
    pub fn set(mut self, key: &str, raw: &str) -> DbConfig {
        self.top.insert(key.into(), toml_value(key, raw));
        self
    }

    fn duration(mut self, key: &str, d: Duration) -> DbConfig {
        self.top.insert(key.into(), duration_value(d));
        self
    }

    pub fn to_toml(&self) -> String {
        let mut t = self.top.clone();
        t.insert("node_id".into(), Value::Integer(self.node_id as i64));
        t.insert("listen".into(), str_value(self.listen));
        t.insert("raft_listen".into(), str_value(self.raft_listen));
        t.insert("data_dir".into(), str_value(self.data_dir.display()));
        t.insert("bootstrap".into(), Value::Boolean(self.bootstrap));
        toml::to_string(&t).expect("a TOML table renders")
    }
}
