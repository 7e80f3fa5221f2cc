//! The Raft network: openraft's RPCs to each peer over the nodes'
//! [`HttpClient`] ([`RaftTransport`], [`PeerConnection`]). Sending new
//! entries ahead of openraft, and answering its requests they cover, is
//! `ahead` (see [`send_ahead`]).
use crate::leader_acks::LeaderAcks;
use bulwark_db_api::http_client::{HttpClient, TransportError};
use bulwark_db_api::raft_types::{LogId, Node, NodeId, TypeConfig, Vote};
use bulwark_db_log::AppendedEntries;
use bulwark_db_sm::state_machine::Applied;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Header carrying the sender primary's applied index (lag reporting).
pub const APPLIED_INDEX_HEADER: &str = "x-bulwark-applied-index";
/// Header carrying the sender primary's clock of its last applied write.
pub const APPLIED_TIME_HEADER: &str = "x-bulwark-applied-time";

/// How long a Raft RPC may keep its connection busy after openraft stopped
/// waiting for it (see [`PeerConnection`]'s `call`).
const RPC_BACKGROUND_LIMIT: Duration = Duration::from_secs(5);

mod ahead;
pub use ahead::AheadStats;
use ahead::{send_ahead, Cover, Peer, PeerState};

/// Creates a [`PeerConnection`] per replication target.
pub struct RaftTransport {
    pub http: HttpClient,
    /// This node's applied state, sent to followers as a lag reference.
    pub applied: watch::Receiver<Applied>,
    /// This node's id and its log's new entries: as primary it sends them
    /// ahead (see [`send_ahead`]).
    pub id: NodeId,
    pub appended: AppendedEntries,
    /// Entries per append-entries request.
    pub max_entries: usize,
    pub ahead_stats: Arc<AheadStats>,
    /// Where every peer's acceptance of a request is recorded: the
    /// primary's quorum clock.
    pub leader_acks: Arc<LeaderAcks>,
}

/// The Raft RPCs to one peer, over HTTP.
pub struct PeerConnection {
    target: NodeId,
    link: Link,
    peer_log: Arc<PeerState>,
    /// What starts the task that sends this node's new entries ahead, on
    /// the first entries this connection replicates: openraft makes
    /// connections also for votes, snapshots and read-index heartbeats, and
    /// only its replication stream's carries entries.
    ahead: Ahead,
    stats: Arc<AheadStats>,
    leader_acks: Arc<LeaderAcks>,
}

enum Ahead {
    Ready { me: NodeId, appended: AppendedEntries, max: usize },
    Running(tokio::task::JoinHandle<()>),
    Off,
}

impl Drop for PeerConnection {
    fn drop(&mut self) {
        // The task ends with the connection (openraft drops it when the
        // replication stream ends).
        if let Ahead::Running(task) = &self.ahead {
            task.abort();
        }
    }
}

/// Where a peer is and how to reach it.
#[derive(Clone)]
struct Link {
    addr: String,
    http: HttpClient,
    applied: watch::Receiver<Applied>,
}

impl RaftNetworkFactory<TypeConfig> for RaftTransport {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConnection {
        let link = Link { addr: node.raft_addr().to_string(), http: self.http.clone(), applied: self.applied.clone() };
        let ahead = Ahead::Ready { me: self.id, appended: self.appended.clone(), max: self.max_entries };
        let (stats, leader_acks) = (self.ahead_stats.clone(), self.leader_acks.clone());
        PeerConnection { target, link, peer_log: Arc::default(), ahead, stats, leader_acks }
    }
}

pub(super) type RpcResult<T, E> = Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl Link {
    /// POST `req` to the peer's `path` and decode openraft's answer; the
    /// exchange may take up to `limit`.
    async fn call<Req, Resp, E>(&self, target: NodeId, path: &str, req: &Req, limit: Duration) -> RpcResult<Resp, E>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let a = *self.applied.borrow();
        let hints = [(APPLIED_INDEX_HEADER, a.index.to_string()), (APPLIED_TIME_HEADER, a.time_ms.to_string())];
        // openraft gives an AppendEntries one heartbeat interval and drops
        // this future when it runs out. Dropping an HTTP exchange closes its
        // connection, and the next one pays a new handshake, which on a slow
        // or lossy link again takes longer than the interval: replication
        // would never recover. So the exchange runs as a task of its own
        // with a longer limit and keeps its connection in the pool however
        // this call ends.
        let http = self.http.clone();
        let addr = self.addr.clone();
        let path = path.to_string();
        let exchange = tokio::spawn(async move {
            let hints: Vec<(&'static str, String)> = hints.into();
            http.send(http::Method::POST, &addr, &path, body.into(), &hints, limit).await
        });
        let reply = exchange
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&TransportError::Io(self.addr.clone(), e.to_string()))))?
            .map_err(|e| match e {
                TransportError::Connect(..) => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        if reply.status != 200 {
            let e = TransportError::Io(
                self.addr.clone(),
                format!("HTTP {}: {}", reply.status, String::from_utf8_lossy(&reply.body)),
            );
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let res: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.body).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
    }
}

impl PeerConnection {
    /// True once the peer accepted entries sent ahead up to `last` under
    /// `vote`: then openraft's request for them would be answered success
    /// (the peer's log matches this node's up to there), so it is answered
    /// here without a round trip. Waits (at most `wait`) while sending
    /// ahead goes on; false once it stopped (a refusal, or entries it does
    /// not send).
    ///
    /// And only when the peer accepted a request sent at most
    /// [`ahead::COVERED_MAX_AGE`] before `called_at`, when openraft made this
    /// request: openraft counts the answer as an acknowledgement at
    /// `called_at`, so an older one would make its metrics show this node
    /// acknowledged while the peer has stopped answering.
    async fn covered_ahead(&self, vote: &Vote, last: LogId, wait: Duration, called_at: Instant) -> bool {
        let deadline = called_at + wait;
        loop {
            let changed = self.peer_log.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.peer_log.lock().cover(vote, last, called_at) {
                Cover::Answer => return true,
                Cover::RoundTrip => return false,
                Cover::Wait => {}
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    async fn call<Req, Resp, E>(&self, path: &str, req: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let limit = option.hard_ttl().max(RPC_BACKGROUND_LIMIT);
        self.link.call(self.target, path, req, limit).await
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        // openraft took its clock just before this call: it counts a
        // success as the peer's acknowledgement at this time.
        let called_at = Instant::now();
        let carries_entries = !rpc.entries.is_empty();
        let (vote, sent) = (rpc.vote, rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id));
        if let Some(commit) = rpc.leader_commit {
            self.peer_log.update(|p| match &mut p.commit {
                Some((v, c)) if *v == vote => *c = (*c).max(commit),
                _ => p.commit = Some((vote, commit)),
            });
        }
        if let (true, Ahead::Running(_), Some(last)) = (carries_entries, &self.ahead, sent) {
            if self.covered_ahead(&vote, last, option.soft_ttl() / 2, called_at).await {
                self.stats.covered.fetch_add(1, Ordering::Relaxed);
                return Ok(AppendEntriesResponse::Success);
            }
        }
        let r = self.call("/raft/append", &rpc, &option).await;
        match &r {
            Ok(AppendEntriesResponse::Success) => {
                self.peer_log.update(|p| {
                    if let Some(sent) = sent {
                        p.learn(vote, sent);
                    }
                    p.acked(vote, called_at);
                });
                self.leader_acks.acked(self.target, vote, called_at);
                if carries_entries {
                    if let Ahead::Ready { me, appended, max } = std::mem::replace(&mut self.ahead, Ahead::Off) {
                        let peer = Peer {
                            target: self.target,
                            link: self.link.clone(),
                            log: self.peer_log.clone(),
                            leader_acks: self.leader_acks.clone(),
                        };
                        let stats = self.stats.clone();
                        self.ahead = Ahead::Running(tokio::spawn(send_ahead(me, peer, appended, max, stats)));
                    }
                }
            }
            Ok(AppendEntriesResponse::PartialSuccess(Some(m))) => {
                self.peer_log.update(|p| {
                    p.learn(vote, *m);
                    p.acked(vote, called_at);
                });
                self.leader_acks.acked(self.target, vote, called_at);
            }
            Ok(_) => self.peer_log.update(|p| p.known = None),
            Err(_) => {}
        }
        r
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call("/raft/vote", &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // A dead peer is retried often enough that a restarted node rejoins
        // quickly, without spinning.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
