//! One database node: opens its stores, runs Raft, serves the HTTP API.
//!
//! Roles follow Raft: the leader is the **primary** and the only node that
//! executes writes; voters are **replicas**, learners async read replicas.
//! A primary that has not heard from a majority within the election
//! timeout refuses writes, so an isolated old primary cannot accept any.
//!
//! A node has two listeners: the client API (`listen`: SQL, status,
//! membership, probes, and the requests other nodes forward to the
//! primary) and Raft (`raft_listen`: `/raft/*` only, for the peer secret
//! only), so that a firewall can let only the database nodes reach Raft.
//! Each serves only its own endpoints (`handle` and `handle_raft`).
use crate::append_queue::AppendQueue;
use crate::error::RaftStop;
use crate::group_commit::GroupCommit;
use crate::leader_acks::LeaderAcks;
use crate::transport::{AheadStats, AppliedHints, RaftTransport};
use crate::DbError;
use bulwark_config::db::DbConfig;
use bulwark_db_api::http_client::HttpClient;
use bulwark_db_api::raft_types::{Node, NodeId, Raft};
use bulwark_db_log::{InlineSyncPause, LogStore};
use bulwark_db_sm::sql;
use bulwark_db_sm::state_machine::{Applied, ReadPool, StateMachine};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use openraft::RaftMetrics;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod auth;
mod backup;
mod campaign_gate;
mod error;
mod forward;
mod lease_memory;
mod listeners;
mod membership;
mod metrics;
mod primary_word;
mod probes;
mod raft_rpc;
mod reads;
mod status;
mod writes;

use error::{ApiError, Retry};
use listeners::{bind, Listener, Serve};
use primary_word::PrimaryWord;
#[cfg(test)]
pub(crate) use raft_rpc::{HoldAppends, RefuseAppends};

/// Marks a request one node passed to the primary (never passed again).
const FORWARDED_HEADER: &str = "x-bulwark-forwarded";

/// On an answer a replica passed on from the primary: the primary's API
/// address.
const PRIMARY_HEADER: &str = "x-bulwark-primary";

type Resp = Response<Full<Bytes>>;

struct NodeState {
    id: NodeId,
    /// This node's client API address, as clients and peers use it.
    address: String,
    /// This node's Raft address, as peers dial it.
    raft_address: String,
    raft: Raft,
    writes: GroupCommit,
    appends: AppendQueue,
    applied: watch::Receiver<Applied>,
    reads: Arc<ReadPool>,
    inline_sync: InlineSyncPause,
    /// The state machine, closed cleanly once Raft has stopped.
    database: StateMachine,
    /// To the other nodes' API (writes, promote and membership changes
    /// forwarded to the primary), from this node's API address.
    http: HttpClient,
    /// To the other nodes' Raft listeners (`/raft/elect` of a leadership
    /// transfer; the Raft transport has a clone), from this node's Raft
    /// address.
    raft_http: HttpClient,
    auth: auth::Credentials,
    /// What this node heard of the primary's applied state (its lag).
    primary_word: Mutex<PrimaryWord>,
    /// This node's clock as its answers to Raft requests stamp it (see
    /// `peer_clock`).
    clock: crate::peer_clock::LocalClock,
    /// When this node may campaign on request (`/raft/elect`).
    campaign_gate: campaign_gate::CampaignGate,
    /// Until then this node neither votes nor campaigns: a previous run of
    /// it had a longer lease (see `lease_memory`).
    votes_held_until: Option<tokio::time::Instant>,
    transferring: AtomicBool,
    forward_writes: bool,
    max_request_bytes: usize,
    write_timeout: Duration,
    read_wait: Duration,
    /// Longest election timeout: the leader lease and the quorum deadline.
    lease: Duration,
    heartbeat: Duration,
    stats: DbStats,
    ahead_stats: Arc<AheadStats>,
    /// The quorum clock: when each peer last accepted a request of this
    /// node's (see `leader_acks`).
    leader_acks: Arc<LeaderAcks>,
    /// The log archive's state, when this node archives its log.
    archive: Option<Arc<crate::archive::ArchiveState>>,
    #[cfg(test)]
    refuse_appends: Arc<RefuseAppends>,
    #[cfg(test)]
    hold_appends: Arc<HoldAppends>,
}

/// Request counters and latencies for `/metrics`.
#[derive(Default)]
struct DbStats {
    /// [ok, error] per kind.
    executes: [std::sync::atomic::AtomicU64; 2],
    queries: [std::sync::atomic::AtomicU64; 2],
    execute_latency: bulwark_telemetry::LatencyHistogram,
    query_latency: bulwark_telemetry::LatencyHistogram,
}

/// A bound, running database node.
pub struct DbNode {
    /// The client API.
    listener: TcpListener,
    /// Raft, from the other nodes only.
    raft_listener: TcpListener,
    state: Arc<NodeState>,
    firewall: Arc<bulwark_firewall::Firewall>,
    header_timeout: Duration,
    /// Mutual TLS of both listeners (`mutual_tls`):
    /// every connection, from clients and peers alike, must present a
    /// certificate of the cluster CA.
    tls: Option<bulwark_mtls::MutualTls>,
}

/// Largest body a node accepts on `/raft/*` (append-entries, snapshot chunks).
const RAFT_BODY_LIMIT: usize = 256 << 20;

/// Entries per append-entries request: at most 256, fewer when one write
/// may be large, so that a request of full entries (each up to the larger
/// of `max_request_bytes` and a group-commit entry, plus a quarter for its
/// encoding) stays under [`RAFT_BODY_LIMIT`]: a replica catching up must
/// never be sent a request it refuses.
fn max_payload_entries(max_request_bytes: usize) -> u64 {
    let entry = max_request_bytes.max(crate::group_commit::MAX_BYTES);
    (RAFT_BODY_LIMIT * 4 / 5 / entry).clamp(1, 256) as u64
}

/// How long after a read a replica's log syncs go back to its log thread
/// (see [`LogStore::sync_inline_unless_leader`]).
const PAUSE_INLINE_SYNC_FOR_READS_MS: u64 = 200;

fn raft_config(c: &DbConfig) -> Result<openraft::Config, DbError> {
    let ms = |d: Duration| d.as_millis() as u64;
    let cfg = openraft::Config {
        cluster_name: "bulwark-db".into(),
        heartbeat_interval: ms(c.heartbeat_interval),
        election_timeout_min: ms(c.election_timeout),
        // openraft 0.9 makes the maximum also the leader lease: a follower
        // refuses votes for that long after it last heard the leader. With a
        // narrow range the first candidate after a crash usually finds the
        // other follower's lease already over and wins in one round
        // (measured: 2x gave elections of 1.3-1.6 s, two rounds).
        election_timeout_max: ms(c.election_timeout) * 6 / 5,
        install_snapshot_timeout: 10_000,
        // By size (see `compaction`) unless a count is configured.
        snapshot_policy: match c.snapshot_every {
            Some(n) => openraft::SnapshotPolicy::LogsSinceLast(n),
            None => openraft::SnapshotPolicy::Never,
        },
        max_in_snapshot_log_to_keep: c.snapshot_every.map_or(1000, |n| (n / 2).min(1000)),
        snapshot_max_chunk_size: 1 << 20,
        max_payload_entries: max_payload_entries(c.max_request_bytes),
        ..Default::default()
    };
    cfg.validate().map_err(|e| DbError::RaftConfig(Box::new(e)))
}

impl DbNode {
    /// Open the stores in `data_dir`, bind the listener and start Raft. On
    /// an empty data dir with `bootstrap = true` the cluster is initialized
    /// from `peer` plus this node.
    pub async fn bind(config: DbConfig) -> Result<DbNode, DbError> {
        DbNode::bind_archiving(config, None).await
    }

    /// [`DbNode::bind`], copying every committed log entry into the log
    /// archive in `archive` (when given) before the log may purge it (see
    /// `archive`).
    pub async fn bind_archiving(config: DbConfig, archive: Option<std::path::PathBuf>) -> Result<DbNode, DbError> {
        let client_secret = config.load_secret().map_err(|source| DbError::Secret { what: "secret", source })?;
        let peer_secret =
            config.load_peer_secret().map_err(|source| DbError::Secret { what: "peer_secret", source })?;
        let monitor_token =
            config.load_monitor_token().map_err(|source| DbError::Secret { what: "monitor_token", source })?;
        let tls = bulwark_mtls::MutualTls::load_optional(config.mutual_tls.as_ref()).map_err(DbError::Tls)?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| DbError::Io { context: format!("creating {}", config.data_dir.display()), source })?;
        let (listener, local) = bind(config.listen).await?;
        let address = config.advertise.as_ref().map_or_else(|| local.to_string(), |a| a.to_string());
        let (raft_listener, raft_local) = bind(config.raft_listen).await?;
        let raft_address = config.raft_advertise.as_ref().map_or_else(|| raft_local.to_string(), |a| a.to_string());

        let mut log = LogStore::open(&config.data_dir, config.node_id).map_err(DbError::OpenLog)?;
        let inline_sync = InlineSyncPause::default();
        log.sync_inline_unless_leader(config.node_id, inline_sync.clone());
        let fresh = log.is_empty().map_err(DbError::Log)?;
        let archive = crate::archive::start_for(&mut log, archive.as_deref()).await?;
        let limits = sql::WriteLimits { max_steps: config.max_write_steps };
        let sm = StateMachine::open_with(&config.data_dir, limits).map_err(DbError::Database)?;
        let applied = sm.applied();
        let db_path = sm.db_path();
        let reads = Arc::new(ReadPool::new(db_path.clone(), config.read_connections));
        // To peers: Raft and forwarded requests carry the peer secret, each
        // from the address of its own listener.
        let source = |a: SocketAddr| (!a.ip().is_unspecified()).then_some(a.ip());
        let http = HttpClient::new(peer_secret.expose(), source(local), tls.clone());
        let raft_http = HttpClient::new(peer_secret.expose(), source(raft_local), tls.clone());
        let rcfg = raft_config(&config)?;
        let lease = Duration::from_millis(rcfg.election_timeout_max);
        let hold = lease_memory::at_start(&config.data_dir, lease, tokio::time::Instant::now()).map_err(|source| {
            DbError::Io { context: format!("recording the leader lease in {}", config.data_dir.display()), source }
        })?;
        let ahead_stats = Arc::new(AheadStats::default());
        let leader_acks = Arc::new(LeaderAcks::new(lease));
        let appended = log.appended_entries();
        let hints = Arc::new(AppliedHints {
            applied: applied.clone(),
            metrics: Arc::default(),
            leader_acks: leader_acks.clone(),
            id: config.node_id,
            lease,
        });
        let transport = RaftTransport {
            http: raft_http.clone(),
            hints: hints.clone(),
            id: config.node_id,
            appended: appended.clone(),
            max_entries: rcfg.max_payload_entries as usize,
            ahead_stats: ahead_stats.clone(),
            leader_acks: leader_acks.clone(),
        };
        let database = sm.clone();
        let raft = Raft::new(config.node_id, Arc::new(rcfg), transport, log, sm)
            .await
            .map_err(|e| DbError::Raft(Box::new(e)))?;
        let _ = hints.metrics.set(raft.metrics());
        let votes_held_until = match hold {
            lease_memory::LeaseHold::None => None,
            lease_memory::LeaseHold::Until(until) => {
                tracing::info!(
                    "the previous run's leader lease was longer than this one's: no vote nor campaign for {:?}",
                    until.saturating_duration_since(tokio::time::Instant::now())
                );
                raft.runtime_config().elect(false);
                let (raft, dir) = (raft.clone(), config.data_dir.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(until).await;
                    if let Err(e) = lease_memory::record(&dir, lease) {
                        tracing::warn!("recording the leader lease: {e}");
                    }
                    raft.runtime_config().elect(true);
                });
                Some(until)
            }
        };
        if fresh && config.bootstrap {
            let mut members: BTreeMap<NodeId, Node> =
                config.peers.iter().map(|p| (p.id, Node::new(p.address.as_str(), p.raft_address.as_str()))).collect();
            members.insert(config.node_id, Node::new(&address, &raft_address));
            tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "bootstrapping a new cluster");
            if let Err(e) = raft.initialize(members).await {
                tracing::warn!("initialize: {e}");
            }
        } else if fresh {
            tracing::info!("empty data dir: waiting to be added to a cluster");
        }
        let archive = archive.map(|a| a.run(applied.clone()));
        if config.snapshot_every.is_none() {
            tokio::spawn(crate::compaction::snapshot_by_size(
                raft.clone(),
                appended.clone(),
                db_path,
                config.snapshot_log_bytes,
            ));
        }
        let writes = GroupCommit::start(raft.clone(), config.write_timeout);
        let appends = AppendQueue::start(raft.clone());
        let state = NodeState {
            id: config.node_id,
            address,
            raft_address,
            raft,
            writes,
            appends,
            applied,
            reads,
            inline_sync,
            database,
            http,
            raft_http,
            auth: auth::Credentials::new(&peer_secret, &client_secret, monitor_token.as_ref()),
            primary_word: Mutex::new(PrimaryWord::default()),
            clock: Default::default(),
            votes_held_until,
            campaign_gate: Default::default(),
            transferring: AtomicBool::new(false),
            forward_writes: config.forward_writes,
            max_request_bytes: config.max_request_bytes,
            write_timeout: config.write_timeout,
            read_wait: config.read_wait,
            lease,
            heartbeat: config.heartbeat_interval,
            stats: DbStats::default(),
            ahead_stats,
            leader_acks,
            archive,
            #[cfg(test)]
            refuse_appends: Arc::default(),
            #[cfg(test)]
            hold_appends: Arc::default(),
        };
        let firewall = Arc::new(bulwark_firewall::Firewall::new(&config.firewall).map_err(DbError::Firewall)?);
        Ok(DbNode {
            listener,
            raft_listener,
            state: Arc::new(state),
            firewall,
            header_timeout: config.header_timeout,
            tls,
        })
    }

    /// A test's hold on this node's Raft log (see `RefuseAppends`).
    #[cfg(test)]
    pub(crate) fn refuse_appends(&self) -> Arc<RefuseAppends> {
        self.state.refuse_appends.clone()
    }

    /// A test's delay of the Raft requests reaching this node (see
    /// `HoldAppends`).
    #[cfg(test)]
    pub(crate) fn hold_appends(&self) -> Arc<HoldAppends> {
        self.state.hold_appends.clone()
    }

    /// The listeners for the ready line: `api`, then `raft`.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        vec![
            ("api".to_string(), self.listener.local_addr().expect("bound listener")),
            ("raft".to_string(), self.raft_listener.local_addr().expect("bound listener")),
        ]
    }

    /// The address clients (and peers forwarding to the primary) use for
    /// this node's API.
    pub fn address(&self) -> &str {
        &self.state.address
    }

    /// The address the other nodes dial for Raft.
    pub fn raft_address(&self) -> &str {
        &self.state.raft_address
    }

    /// Serve until `shutdown` is cancelled, then drain connections (5 s at
    /// most) and stop Raft.
    ///
    /// Also stops, the same way, when Raft stops on its own with a fatal
    /// error (a failed write or sync of the log, an apply that failed for a
    /// reason of this node: see `apply_error` in `bulwark-db-sm`), and then returns that error:
    /// the process exits non-zero and whoever supervises it (`bulwark up`,
    /// systemd) starts it again, with a backoff, instead of leaving a node
    /// that serves HTTP but never applies anything again. At the next start
    /// the node applies the same entry again.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DbError> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let DbNode { listener, raft_listener, state, firewall, header_timeout, tls } = self;
        let serve = Serve { state: state.clone(), firewall, header_timeout, tls };
        let raft_stopped = raft_stopped(state.raft.metrics());
        tokio::pin!(raft_stopped);
        let mut failed = None;
        loop {
            let (accepted, on) = tokio::select! {
                _ = shutdown.cancelled() => break,
                why = &mut raft_stopped => {
                    tracing::error!(
                        "Raft stopped on this node: {why}; the node stops and exits with an error so that it is \
                         started again (it then applies the same entries again)"
                    );
                    failed = Some(why);
                    break;
                }
                r = listener.accept() => (r, Listener::Api),
                r = raft_listener.accept() => (r, Listener::Raft),
            };
            match accepted {
                Ok((stream, peer)) => serve.connection(stream, peer, on, &graceful),
                Err(e) => {
                    tracing::warn!("accept ({on:?} listener): {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        drop((listener, raft_listener));
        if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await.is_err() {
            tracing::warn!("connections still open after 5 s; closing them");
        }
        let _ = state.raft.shutdown().await;
        let database = state.database.clone();
        match tokio::task::spawn_blocking(move || database.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!("closing the database: {e}; it is rebuilt if the machine restarts before the next start")
            }
            Err(e) => tracing::warn!("closing the database: {e}"),
        }
        match failed {
            Some(why) => Err(DbError::RaftStopped(why)),
            None => {
                tracing::info!("db node stopped");
                Ok(())
            }
        }
    }
}

/// Resolves once Raft has stopped (its metrics say so, or are gone), with
/// the reason.
async fn raft_stopped(mut metrics: watch::Receiver<RaftMetrics<NodeId, Node>>) -> RaftStop {
    match metrics.wait_for(|m| m.running_state.is_err()).await {
        Ok(m) => m.running_state.clone().err().map_or(RaftStop::MetricsEnded, |f| RaftStop::Fatal(Box::new(f))),
        Err(_) => RaftStop::MetricsEnded,
    }
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn bad_request(msg: impl Into<String>) -> Resp {
    ApiError::BadRequest(msg.into()).response()
}

// Handlers short-circuit with the finished error response; it is built once
// per failed request, so its size does not matter.
#[allow(clippy::result_large_err)]
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Resp> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

/// Constant-time comparison (the secret must not leak through timing).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn query_param(uri: &http::Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

impl NodeState {
    /// The API's router: one line per endpoint, each served in the file of
    /// its job (`probes`, `status`, `metrics`, `writes`, `reads`,
    /// `membership`). Raft's endpoints are not served here: they have a
    /// listener of their own (see `raft_rpc::handle_raft`).
    async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Resp {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        // Unauthenticated health endpoints for load balancers: role only.
        match (&method, path.as_str()) {
            (&Method::GET, "/health") => return self.health(),
            (&Method::GET, "/primary") => return self.primary_probe(),
            (&Method::GET, "/replica") => return self.replica_probe(req.uri()),
            _ => {}
        }
        if let Err(refusal) = self.auth.check(&method, &path, req.headers()) {
            return ApiError::Refused(refusal).response();
        }
        let forwarded = req.headers().contains_key(FORWARDED_HEADER);
        if path.starts_with("/v1/backup") {
            return self.backup(req).await;
        }
        match (&method, path.as_str()) {
            (&Method::GET, "/v1/status") => return json(StatusCode::OK, &self.status()),
            (&Method::GET, "/metrics") => return self.metrics_response(),
            (&Method::POST, _) => {}
            _ => return ApiError::NotFound { method, path }.response(),
        }
        let body = match self.read_body(req, self.max_request_bytes).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        match path.as_str() {
            "/v1/execute" => {
                let t = Instant::now();
                let r = self.execute(body, forwarded).await;
                self.stats.execute_latency.observe(t.elapsed());
                self.stats.executes[usize::from(!r.status().is_success())].fetch_add(1, Ordering::Relaxed);
                r
            }
            "/v1/query" => {
                // Reads on a replica need its runtime thread: no log syncs
                // on it while they come.
                self.inline_sync.pause(PAUSE_INLINE_SYNC_FOR_READS_MS);
                let t = Instant::now();
                let r = self.query(body).await;
                self.stats.query_latency.observe(t.elapsed());
                self.stats.queries[usize::from(!r.status().is_success())].fetch_add(1, Ordering::Relaxed);
                r
            }
            "/v1/promote" => self.promote(body, forwarded).await,
            "/v1/members/add" => self.add_member(body, forwarded).await,
            "/v1/members/remove" => self.remove_member(body, forwarded).await,
            _ => ApiError::NotFound { method, path }.response(),
        }
    }

    /// The request's body, at most `limit` bytes (the client limit on the
    /// API; Raft's snapshot chunks and entry batches have their own).
    async fn read_body(&self, req: Request<Incoming>, limit: usize) -> Result<Bytes, Resp> {
        let too_large = || ApiError::TooLarge { limit }.response();
        let declared =
            req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            // Lingering close: read (and drop) what the client is still
            // sending — up to 16 MiB or 2 s — so the 413 reaches it instead
            // of a reset on its unread data.
            let mut body = req.into_body();
            let drain = async {
                let mut seen = 0usize;
                while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut body).await {
                    seen += frame.data_ref().map_or(0, |d| d.len());
                    if seen > 16 << 20 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
            return Err(too_large());
        }
        match Limited::new(req.into_body(), limit).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
            Err(e) => Err(bad_request(format!("reading the body: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_entries_request_of_full_entries_fits_what_a_node_accepts() {
        for bytes in [1024, 1 << 20, 3 << 20, 16 << 20, bulwark_config::db::MAX_REQUEST_BYTES_LIMIT] {
            let n = max_payload_entries(bytes) as usize;
            let entry = bytes.max(crate::group_commit::MAX_BYTES);
            assert!((1..=256).contains(&n), "{bytes}: {n}");
            assert!(n * entry * 5 / 4 <= RAFT_BODY_LIMIT, "{bytes}: {n} entries of {entry} bytes");
        }
        assert_eq!(max_payload_entries(1 << 20), 204);
    }
}
