//! The Raft network: openraft's RPCs to each peer over the nodes'
//! [`HttpClient`] ([`RaftTransport`], [`PeerConnection`]). Sending new
//! entries ahead of openraft, and answering its requests they cover, is
//! `ahead` (see [`send_ahead`]).
use crate::leader_acks::LeaderAcks;
use crate::peer_clock::PeerClock;
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
use openraft::RaftMetrics;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Header carrying the sender primary's applied index (lag reporting).
pub const APPLIED_INDEX_HEADER: &str = "x-bulwark-applied-index";
/// Header carrying the sender primary's clock of its last applied write.
/// No longer read (a replica dates the primary's word on its own clock,
/// see `node/primary_word.rs`); still sent for nodes of the previous
/// version during a rolling upgrade.
pub const APPLIED_TIME_HEADER: &str = "x-bulwark-applied-time";

/// The applied hint this node puts on its Raft requests
/// ([`APPLIED_INDEX_HEADER`], [`APPLIED_TIME_HEADER`], and the replica's
/// own clock stamp echoed, see `peer_clock`): a replica measures its lag
/// for `bounded` reads against it, and takes it as the primary's word that
/// nothing newer was committed anywhere when it was made.
///
/// So the node sends it only while that word is true: as the primary, once
/// it has applied an entry of its own term (before that, writes the
/// previous primary acknowledged may be applied nowhere yet; see
/// `leader_acks::applied_own_term`), and while a majority acknowledged it
/// within the lease by the quorum clock (no other primary can have been
/// elected meanwhile; openraft 0.9 never steps down by itself, and a
/// deposed primary cut off with a minority would otherwise keep the
/// replicas it still reaches fresh forever). Without the hint, the
/// replica's last one ages and its lag grows.
///
/// This is decided at each send, from openraft's metrics and the quorum
/// clock: a quorum ages out without any event, so a flag the node kept
/// current would need a timer of its own, and a term the replica checked
/// would not catch a deposed primary, whose term its replicas still share.
/// A missing header already meant "no hint", so nodes of either kind work
/// together during a rolling upgrade.
pub struct AppliedHints {
    /// This node's applied state.
    pub applied: watch::Receiver<Applied>,
    /// openraft's metrics, once Raft runs (it is built after its
    /// transport): no hint before.
    pub metrics: Arc<OnceLock<watch::Receiver<RaftMetrics<NodeId, Node>>>>,
    pub leader_acks: Arc<LeaderAcks>,
    pub id: NodeId,
    /// The leader lease (the longest election timeout).
    pub lease: Duration,
}

impl AppliedHints {
    /// The headers for a request sent now: none unless this node is a
    /// primary that may speak for the cluster (see [`AppliedHints`]).
    fn headers(&self) -> Vec<(&'static str, String)> {
        let Some(metrics) = self.metrics.get() else { return Vec::new() };
        if !self.may_hint(&metrics.borrow()) {
            return Vec::new();
        }
        let a = *self.applied.borrow();
        vec![(APPLIED_INDEX_HEADER, a.index.to_string()), (APPLIED_TIME_HEADER, a.time_ms.to_string())]
    }

    fn may_hint(&self, m: &RaftMetrics<NodeId, Node>) -> bool {
        crate::leader_acks::applied_own_term(m) && self.leader_acks.primary_within(self.id, m, self.lease)
    }
}

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
    pub hints: Arc<AppliedHints>,
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

/// Where a peer is and how to reach it, and what its answers said of its
/// clock and lease (see `peer_clock`).
#[derive(Clone)]
struct Link {
    addr: String,
    http: HttpClient,
    hints: Arc<AppliedHints>,
    clock: Arc<PeerClock>,
    leader_acks: Arc<LeaderAcks>,
}

impl RaftNetworkFactory<TypeConfig> for RaftTransport {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConnection {
        let link = Link {
            addr: node.raft_addr().to_string(),
            http: self.http.clone(),
            hints: self.hints.clone(),
            clock: Arc::default(),
            leader_acks: self.leader_acks.clone(),
        };
        let ahead = Ahead::Ready { me: self.id, appended: self.appended.clone(), max: self.max_entries };
        PeerConnection { target, link, peer_log: Arc::default(), ahead, stats: self.ahead_stats.clone() }
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
        let hints = hint_headers(&self.clock, || self.hints.headers());
        // openraft gives an AppendEntries one heartbeat interval and drops
        // this future when it runs out. Dropping an HTTP exchange closes its
        // connection, and the next one pays a new handshake, which on a slow
        // or lossy link again takes longer than the interval: replication
        // would never recover. So the exchange runs as a task of its own
        // with a longer limit and keeps its connection in the pool however
        // this call ends.
        let (http, addr, path) = (self.http.clone(), self.addr.clone(), path.to_string());
        let (clock, leader_acks) = (self.clock.clone(), self.leader_acks.clone());
        let exchange = tokio::spawn(async move {
            let reply = http.send(http::Method::POST, &addr, &path, body.into(), &hints, limit).await;
            // What the peer said of its clock and lease counts even when
            // openraft stopped waiting for this answer.
            if let Some(lease) = reply.as_ref().ok().and_then(|r| clock.heard(&r.headers)) {
                leader_acks.peer_lease(target, lease);
            }
            reply
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

/// The hint headers of a request (`hints`, see [`AppliedHints`]) with the
/// peer's newest clock stamp echoed. The stamp is read first: the hint is
/// then made after the answer that carried it arrived, which is what the
/// peer takes it to mean. A stamp read after the hint could come from an
/// answer that arrived meanwhile, and make the hint look younger than it is.
fn hint_headers(clock: &PeerClock, hints: impl FnOnce() -> Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
    let echo = clock.echo();
    let mut headers = hints();
    if !headers.is_empty() {
        headers.extend(echo);
    }
    headers
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
                self.link.leader_acks.acked(self.target, vote, called_at);
                if carries_entries {
                    if let Ahead::Ready { me, appended, max } = std::mem::replace(&mut self.ahead, Ahead::Off) {
                        let peer = Peer { target: self.target, link: self.link.clone(), log: self.peer_log.clone() };
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
                self.link.leader_acks.acked(self.target, vote, called_at);
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

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Membership, ServerState, StoredMembership};
    use std::collections::BTreeMap;

    /// Node 1, primary of term 4 among voters 1, 2 and 3, that has applied
    /// only entries of term 3.
    fn new_primary() -> RaftMetrics<NodeId, Node> {
        let nodes: BTreeMap<NodeId, Node> = (1..=3).map(|i| (i, Node::new("a:1", "a:2"))).collect();
        let mut m = RaftMetrics::new_initial(1);
        m.state = ServerState::Leader;
        m.current_term = 4;
        m.vote = Vote::new_committed(4, 1);
        m.membership_config = Arc::new(StoredMembership::new(None, Membership::new(vec![(1..=3).collect()], nodes)));
        m.last_applied = Some(openraft::LogId::new(CommittedLeaderId::new(3, 2), 9));
        m
    }

    fn hints() -> AppliedHints {
        AppliedHints {
            applied: watch::channel(Applied::default()).1,
            metrics: Arc::default(),
            leader_acks: Arc::new(LeaderAcks::new(Duration::from_millis(480))),
            id: 1,
            lease: Duration::from_millis(480),
        }
    }

    #[test]
    fn the_echo_is_read_before_the_hint_is_made() {
        let clock = PeerClock::default();
        let replica = crate::peer_clock::LocalClock::default();
        let headers = |pairs: [(&'static str, String); 2]| -> http::HeaderMap {
            pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
        };
        clock.heard(&headers(replica.answer_headers(Duration::from_millis(480))));
        let before = clock.echo().unwrap();
        // An answer arrives while the hint is being made: its stamp is
        // younger than the hint and must not be sent with it.
        let sent = hint_headers(&clock, || {
            std::thread::sleep(Duration::from_millis(1));
            clock.heard(&headers(replica.answer_headers(Duration::from_millis(480))));
            vec![(APPLIED_INDEX_HEADER, "7".to_string())]
        });
        assert_eq!(sent, vec![(APPLIED_INDEX_HEADER, "7".to_string()), before]);
        assert_ne!(clock.echo(), Some(sent[1].clone()), "the newer stamp is kept for the next hint");
        assert!(hint_headers(&clock, Vec::new).is_empty(), "no hint, no echo");
    }

    #[test]
    fn a_primary_hints_only_once_it_applied_its_own_entry_and_has_its_majority() {
        let mut m = new_primary();
        let fresh = hints();
        assert!(!fresh.may_hint(&m), "no majority, and only the previous term's entries applied");
        fresh.leader_acks.acked(2, m.vote, Instant::now());
        assert!(!fresh.may_hint(&m), "a majority, but only the previous term's entries applied");
        m.last_applied = Some(openraft::LogId::new(CommittedLeaderId::new(4, 1), 10));
        assert!(fresh.may_hint(&m), "a majority, and its own entry applied");
        // The majority's acknowledgement is older than the lease.
        let cut_off = hints();
        cut_off.leader_acks.acked(2, m.vote, Instant::now() - Duration::from_secs(1));
        assert!(!cut_off.may_hint(&m), "no majority within the lease");
        m.state = ServerState::Follower;
        assert!(!fresh.may_hint(&m), "not the primary");
    }
}
