//! Schema of `bulwark db` (the MySQL primary-replica role).
//!
//! ```toml
//! node_id = 1                          # unique, >= 1, never reused
//! listen = "127.0.0.1:7001"            # the client API (port 0 = any free port)
//! advertise = "127.0.0.1:7001"         # address clients use (default: the bound listen address)
//! raft_listen = "127.0.0.1:7101"       # Raft between the db nodes, apart from the API (port 0 = any free port)
//! raft_advertise = "127.0.0.1:7101"    # address peers dial for Raft (default: the bound raft_listen address)
//! data_dir = "/var/lib/bulwark/db1"    # SQLite database, Raft log ("binary log"), snapshots
//! secret_file = "/etc/bulwark/app-db.secret"     # clients (app servers): SQL API; or secret = "..." (16+ characters)
//! peer_secret_file = "/etc/bulwark/db-peer.secret" # other db nodes: Raft, membership, promote (default: secret)
//! monitor_token_file = "/etc/bulwark/monitor.token" # read-only: /metrics and /v1/status (default: none)
//! bootstrap = true                     # on an empty data dir, create a cluster of `peer`s + this node (default false)
//! forward_writes = true                # a replica proxies writes to the primary (false: 307 redirect)
//! max_write_steps = 100000000          # SQLite VM steps one write may run (the same on every node)
//! # mutual TLS with peers and clients (see `internal_tls`): the API speaks TLS only and
//! # requires a client certificate issued by `ca`
//! mutual_tls = { cert = "/var/lib/bulwark/tls/internal/db1.pem", key = "/var/lib/bulwark/tls/internal/db1.key", ca = "/var/lib/bulwark/tls/internal/ca.pem" }
//!
//! [[peer]]                             # the initial voters (this node may be listed too)
//! id = 2
//! address = "127.0.0.1:7002"           # its client API
//! raft_address = "127.0.0.1:7102"      # its Raft listener
//! [[peer]]
//! id = 3
//! address = "127.0.0.1:7003"
//! raft_address = "127.0.0.1:7103"
//! ```
//!
//! Raft has a listener of its own so that a firewall can let only the
//! database nodes reach it: it serves `/raft/*` alone and takes only the
//! peer secret; the API listener serves everything else and never Raft.
//!
//! A node with an empty data dir that is not bootstrapping waits until the
//! primary adds it (`bulwark db add-node`), then receives a snapshot.
use crate::util::yes;
use crate::{HostPort, Secret, Validate, Validator};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbConfig {
    /// Optional explicit role marker (`role = "db"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::Role>,
    /// Raft node id: unique in the cluster, at least 1.
    pub node_id: u64,
    /// Listen address of the client API (SQL, status, membership, and the
    /// writes other nodes forward to the primary).
    #[serde(with = "crate::address::ip_port")]
    pub listen: SocketAddr,
    /// `host:port` clients (and nodes forwarding to the primary) use to
    /// reach this node's API. Defaults to the bound listen address
    /// (required when listening on 0.0.0.0/::).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<HostPort>,
    /// Listen address of Raft between the database nodes (`/raft/*`
    /// only, peer secret only), apart from the API so that a firewall can
    /// allow it between the database nodes alone.
    #[serde(with = "crate::address::ip_port")]
    pub raft_listen: SocketAddr,
    /// `host:port` the other nodes dial for Raft. Defaults to the bound
    /// `raft_listen` address (required when it is 0.0.0.0/::).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_advertise: Option<HostPort>,
    /// Directory of the SQLite database, the Raft log and snapshots.
    pub data_dir: PathBuf,
    /// Secret of the database's clients (the app servers), sent as
    /// `Authorization: Bearer <secret>`: opens the SQL API (`/v1/execute`,
    /// `/v1/query`) and `/v1/status`. Exactly one of `secret` and
    /// `secret_file`. Given alone (no `peer_secret`), it is also the peer
    /// credential: the single-secret setup of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// File holding the client secret (surrounding whitespace is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Secret between database nodes: the only credential that opens
    /// `/raft/*`, membership changes and promote, and the one this node
    /// sends to its peers (Raft and forwarded requests). Default: `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_secret_file: Option<PathBuf>,
    /// Read-only monitoring token: opens `/metrics` and `/v1/status`, never
    /// SQL or cluster changes. Default: none (the other credentials open
    /// status and metrics too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_token_file: Option<PathBuf>,
    /// Initialize a new cluster from `peer` (plus this node) when the data
    /// dir is empty. Safe to set on every initial voter. Off by default: a node
    /// joining an existing cluster must not start one of its own.
    #[serde(default)]
    pub bootstrap: bool,
    /// The initial voters; used only when bootstrapping.
    #[serde(default, rename = "peer", skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    /// A replica proxies writes to the primary; when false it answers 307
    /// with the primary's address.
    #[serde(default = "yes")]
    pub forward_writes: bool,
    /// Largest accepted request body, bytes.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Longest wait for a write to be committed by a majority before the
    /// primary answers 503 (outcome unknown).
    #[serde(default = "default_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Longest wait of a replica for a read-your-writes token or a bounded
    /// lag before it redirects the read to the primary.
    #[serde(default = "default_read_wait", with = "humantime_serde")]
    pub read_wait: Duration,
    /// Leader heartbeat period.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Minimum election timeout; the maximum (and leader lease) is 1.2x
    /// this. A new primary is elected roughly 2-3 election timeouts after
    /// the old one dies.
    #[serde(default = "default_election_timeout", with = "humantime_serde")]
    pub election_timeout: Duration,
    /// Take a snapshot (and compact the log) after this many log entries,
    /// instead of by size (`snapshot_log_bytes`).
    #[serde(default)]
    pub snapshot_every: Option<u64>,
    /// Take a snapshot (and compact the log) once the log written since the
    /// last one is larger than both this and the database file: a snapshot
    /// copies the whole database, so it then never writes more than the
    /// log it lets go.
    #[serde(default = "default_snapshot_log_bytes")]
    pub snapshot_log_bytes: u64,
    /// Read-only SQLite connections serving reads.
    #[serde(default = "default_read_connections")]
    pub read_connections: usize,
    /// ACL, rate limit and connection limits for the API listener.
    #[serde(default)]
    pub firewall: crate::firewall::FirewallConfig,
    /// A client must send a complete request head within this time.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Threads of the network runtime (Raft, HTTP). 1 (the default) runs
    /// it on one thread, which hands work between tasks without waking
    /// other threads: the shortest commit path. 0 = one per core. SQLite
    /// work (log fsync, applying writes, reads) has threads of its own.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Mutual TLS (see [`crate::internal_tls`]): this node's certificate
    /// and key, served to clients and peers and presented to peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_tls: Option<crate::internal_tls::TlsFiles>,
    /// Most SQLite VM instructions one write (one `/v1/execute` request,
    /// all its statements) may run; past it the write fails alone with
    /// "write exceeded N steps" and the others of its batch apply. Counted,
    /// never timed, so every node stops the same write at the same
    /// instruction: it must be the same on every node (a node with another
    /// value could keep a write the others failed).
    #[serde(default = "default_max_write_steps")]
    pub max_write_steps: u64,
}

/// Default of `max_write_steps`: one to two seconds of SQLite's work on one
/// core (a 100,000-row `INSERT ... SELECT` from `json_each` takes about 1
/// million).
pub const DEFAULT_MAX_WRITE_STEPS: u64 = 100_000_000;
/// Smallest accepted `max_write_steps`.
pub const MIN_MAX_WRITE_STEPS: u64 = 100_000;
/// Largest accepted `max_write_steps` (about half an hour of SQLite's
/// work: every node's apply waits that long for such a write).
pub const MAX_MAX_WRITE_STEPS: u64 = 100_000_000_000;

fn default_max_write_steps() -> u64 {
    DEFAULT_MAX_WRITE_STEPS
}

fn default_threads() -> usize {
    1
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: u64,
    /// `host:port` of the peer's client API.
    pub address: HostPort,
    /// `host:port` of the peer's Raft listener (its `raft_advertise`).
    pub raft_address: HostPort,
}

/// Largest `max_request_bytes` accepted.
pub const MAX_REQUEST_BYTES_LIMIT: usize = 64 << 20;

fn default_max_request_bytes() -> usize {
    1 << 20
}
fn default_write_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_read_wait() -> Duration {
    Duration::from_secs(2)
}
fn default_heartbeat() -> Duration {
    Duration::from_millis(100)
}
fn default_election_timeout() -> Duration {
    Duration::from_millis(400)
}
fn default_snapshot_log_bytes() -> u64 {
    64 << 20
}
fn default_read_connections() -> usize {
    4
}

impl Validate for DbConfig {
    fn validate(&self, v: &mut Validator) {
        v.scope("firewall", |v| self.firewall.validate_in(v));
        if self.header_timeout.is_zero() {
            v.error("header_timeout", "must be greater than 0");
        }
        crate::util::check_role(v, self.role, crate::Role::Db, "a db config");
        if self.node_id == 0 {
            v.error("node_id", "must be at least 1");
        }
        check_listener(v, ("listen", self.listen), ("advertise", self.advertise.as_ref()));
        check_listener(v, ("raft_listen", self.raft_listen), ("raft_advertise", self.raft_advertise.as_ref()));
        if self.listen.port() != 0 && self.listen == self.raft_listen {
            v.error("raft_listen", "must differ from `listen`: Raft and the API have listeners of their own");
        }
        if self.data_dir.as_os_str().is_empty() {
            v.error("data_dir", "must not be empty");
        }
        match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => v.error("secret_file", "set either `secret` or `secret_file`, not both"),
            (None, None) => v.error("secret", "a cluster secret is required: set `secret` or `secret_file`"),
            (Some(s), None) => {
                let s = s.expose();
                if s.trim().len() < 16 {
                    v.error("secret", "must be at least 16 characters");
                }
                if s.trim() != s || s.contains(char::is_control) {
                    v.error("secret", "must not have surrounding whitespace or control characters");
                }
            }
            (None, Some(p)) => {
                if p.as_os_str().is_empty() {
                    v.error("secret_file", "must not be empty");
                }
            }
        }
        for (key, secret, file) in [
            ("peer_secret", self.peer_secret.as_ref(), self.peer_secret_file.as_ref()),
            ("monitor_token", self.monitor_token.as_ref(), self.monitor_token_file.as_ref()),
        ] {
            crate::util::check_secret_source(v, key, secret, file);
        }
        crate::internal_tls::check(v, self.mutual_tls.as_ref());
        let mut ids = HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            v.scope("peer", |v| {
                v.index(i, |v| {
                    if p.id == 0 {
                        v.error("id", "must be at least 1");
                    }
                    if !ids.insert(p.id) {
                        v.error("id", format!("node id {} is listed twice", p.id));
                    }
                    for (key, address) in [("address", &p.address), ("raft_address", &p.raft_address)] {
                        if address.port() == 0 && p.id != self.node_id {
                            v.error(key, "must name a real port, not 0");
                        }
                    }
                });
            });
        }
        if self.max_request_bytes < 1024 {
            v.error("max_request_bytes", "must be at least 1024");
        }
        if self.max_request_bytes > MAX_REQUEST_BYTES_LIMIT {
            // A write travels to the replicas as one log entry, inside an
            // append-entries request that a node accepts up to 256 MiB.
            v.error("max_request_bytes", "must be at most 64 MiB (67108864)");
        }
        if self.heartbeat_interval.is_zero() {
            v.error("heartbeat_interval", "must be more than 0");
        }
        if self.election_timeout < self.heartbeat_interval * 3 {
            v.error("election_timeout", "must be at least 3 × heartbeat_interval");
        }
        if self.election_timeout > Duration::from_secs(60) {
            v.error("election_timeout", "must be at most 60 s (a primary's death goes unnoticed that long)");
        }
        if self.write_timeout < self.election_timeout {
            v.error("write_timeout", "must be at least election_timeout");
        }
        if self.snapshot_every.is_some_and(|n| n < 10) {
            v.error("snapshot_every", "must be at least 10");
        }
        if self.snapshot_log_bytes < 1 << 20 {
            v.error("snapshot_log_bytes", "must be at least 1 MiB (1048576)");
        }
        if self.read_connections == 0 || self.read_connections > 64 {
            v.error("read_connections", "must be between 1 and 64");
        }
        if !(MIN_MAX_WRITE_STEPS..=MAX_MAX_WRITE_STEPS).contains(&self.max_write_steps) {
            v.error(
                "max_write_steps",
                format!("must be between {MIN_MAX_WRITE_STEPS} and {MAX_MAX_WRITE_STEPS}, the same on every node"),
            );
        }
    }
}

impl DbConfig {
    /// The address clients use for this node's API as configured:
    /// `advertise`, else `listen` (whose port may be 0 until bound).
    pub fn api_address(&self) -> HostPort {
        self.advertise.clone().unwrap_or_else(|| self.listen.into())
    }

    /// The address peers dial for Raft as configured: `raft_advertise`,
    /// else `raft_listen`.
    pub fn raft_address(&self) -> HostPort {
        self.raft_advertise.clone().unwrap_or_else(|| self.raft_listen.into())
    }

    /// The cluster secret from `secret` or `secret_file` (trimmed).
    pub fn load_secret(&self) -> std::io::Result<Secret> {
        if let Some(s) = &self.secret {
            return Ok(s.clone());
        }
        let path = self.secret_file.as_ref().expect("validated: secret or secret_file");
        read_secret_file(path)
    }

    /// The peer credential (`peer_secret[_file]`), or the client secret
    /// when none is set.
    pub fn load_peer_secret(&self) -> std::io::Result<Secret> {
        match (&self.peer_secret, &self.peer_secret_file) {
            (Some(s), _) => Ok(s.clone()),
            (None, Some(p)) => read_secret_file(p),
            (None, None) => self.load_secret(),
        }
    }

    /// The read-only monitoring token, if one is configured.
    pub fn load_monitor_token(&self) -> std::io::Result<Option<Secret>> {
        match (&self.monitor_token, &self.monitor_token_file) {
            (Some(s), _) => Ok(Some(s.clone())),
            (None, Some(p)) => read_secret_file(p).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// A listen address and the address advertised for it: the advertised one
/// must name a real port, and a wildcard listener needs one.
fn check_listener(
    v: &mut Validator,
    (listen_key, listen): (&str, SocketAddr),
    (advertise_key, advertise): (&str, Option<&HostPort>),
) {
    if let Some(a) = advertise {
        if a.port() == 0 {
            v.error(advertise_key, "must name a real port, not 0");
        }
    } else if listen.ip().is_unspecified() {
        v.error(
            advertise_key,
            format!("required when `{listen_key}` is a wildcard address (peers need a reachable address)"),
        );
    }
}

/// A secret file's content, trimmed; at least 16 characters.
fn read_secret_file(path: &std::path::Path) -> std::io::Result<Secret> {
    let s = std::fs::read_to_string(path)?.trim().to_string();
    if s.len() < 16 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: the secret must be at least 16 characters", path.display()),
        ));
    }
    Ok(Secret::new(s))
}

#[cfg(test)]
mod tests;
