//! The Raft network: openraft's RPCs to each peer over the nodes'
//! [`HttpClient`], appends sent ahead of openraft and answers covered by
//! them (see [`send_ahead`]).
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// Append-entries sent ahead (see [`send_ahead`]), for `/metrics`.
#[derive(Debug, Default)]
pub struct AheadStats {
    /// Accepted by the peer.
    pub accepted: AtomicU64,
    /// Refused (the peer was not where this node thought) or failed; the
    /// task waits for openraft's next success.
    pub refused: AtomicU64,
    /// openraft append-entries answered from an accepted one sent ahead,
    /// without a round trip.
    pub covered: AtomicU64,
}

/// What a primary knows a peer holds: the last log id it acknowledged,
/// learned under `vote` (the primary's, so a new term starts over).
#[derive(Debug, Default)]
struct PeerLog {
    known: Option<(Vote, LogId)>,
    /// The last log id sent ahead (acknowledged or in flight).
    sent: Option<(Vote, LogId)>,
    /// The newest commit index openraft sent this peer, under its vote.
    commit: Option<(Vote, LogId)>,
    /// When the newest request the peer accepted under the vote was sent
    /// (openraft's or one sent ahead): the peer's leader lease for this
    /// node runs from no earlier than that.
    acked: Option<(Vote, Instant)>,
    /// Entries are waiting that the task sending ahead will not send (not
    /// in memory, or of an earlier term): openraft's requests carry them.
    stalled: bool,
}

impl PeerLog {
    fn learn(&mut self, vote: Vote, log_id: LogId) {
        match &mut self.known {
            Some((v, k)) if *v == vote => *k = (*k).max(log_id),
            _ => self.known = Some((vote, log_id)),
        }
    }

    /// The last log id the peer acknowledged under `vote`.
    fn known_under(&self, vote: &Vote) -> Option<LogId> {
        self.known.filter(|(v, _)| v == vote).map(|(_, k)| k)
    }

    /// The last log id sent ahead under `vote`.
    fn sent_under(&self, vote: &Vote) -> Option<LogId> {
        self.sent.filter(|(v, _)| v == vote).map(|(_, s)| s)
    }

    /// The peer accepted a request sent at `sent_at` under `vote`.
    fn acked(&mut self, vote: Vote, sent_at: Instant) {
        match &mut self.acked {
            Some((v, t)) if *v == vote => *t = (*t).max(sent_at),
            _ => self.acked = Some((vote, sent_at)),
        }
    }

    /// How to answer openraft's append-entries under `vote` whose entries
    /// end at `last`, called at `called_at`.
    fn cover(&self, vote: &Vote, last: LogId, called_at: Instant) -> Cover {
        let Some(known) = self.known_under(vote) else { return Cover::RoundTrip };
        if known < last {
            return if self.stalled { Cover::RoundTrip } else { Cover::Wait };
        }
        // openraft stamps the answer with `called_at` and takes the peer's
        // lease (and `millis_since_quorum_ack`) from it; the peer last
        // accepted something sent at `acked`. Only answer when the two are
        // so close that the stamp adds at most COVERED_MAX_AGE.
        match self.acked.filter(|(v, _)| v == vote) {
            Some((_, acked)) if acked + COVERED_MAX_AGE >= called_at => Cover::Answer,
            _ => Cover::RoundTrip,
        }
    }
}

/// What [`PeerLog::cover`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cover {
    /// Answer success without a round trip.
    Answer,
    /// Entries sent ahead are in flight: wait for their answer.
    Wait,
    /// Send openraft's request.
    RoundTrip,
}

/// The most a covered answer may add to the time openraft believes the
/// peer last acknowledged this node (see [`PeerLog::cover`]): openraft
/// stamps an answer with the time it made the request, while the peer's
/// real acknowledgement was of a request sent ahead earlier. Normally the
/// gap is the primary's own sync (0.1-1 ms); past this bound (a disk that
/// stalls, a paused process) openraft's request makes a real round trip,
/// which costs one network round trip, not a sync (the peer already holds
/// the entries). A hundredth of the default leader lease (480 ms).
pub(crate) const COVERED_MAX_AGE: Duration = Duration::from_millis(5);

/// A peer's [`PeerLog`] and who waits for it to change.
#[derive(Debug, Default)]
struct PeerState {
    log: Mutex<PeerLog>,
    changed: tokio::sync::Notify,
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

type RpcResult<T, E> = Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl PeerState {
    fn lock(&self) -> std::sync::MutexGuard<'_, PeerLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change the log and wake whoever waits for it.
    fn update(&self, f: impl FnOnce(&mut PeerLog)) {
        f(&mut self.lock());
        self.changed.notify_waiters();
    }
}

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
    /// [`COVERED_MAX_AGE`] before `called_at`, when openraft made this
    /// request: openraft counts the answer as an acknowledgement at
    /// `called_at`, so an older one would make this node look acknowledged
    /// (primary with a quorum) while the peer has stopped answering.
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

/// How long an append-entries sent ahead may take.
const AHEAD_LIMIT: Duration = Duration::from_secs(1);

/// The peer that [`send_ahead`] serves.
struct Peer {
    target: NodeId,
    link: Link,
    log: Arc<PeerState>,
    leader_acks: Arc<LeaderAcks>,
}

/// Send this node's new entries to one peer as soon as they are appended,
/// while this node is primary.
///
/// openraft 0.9 appends an entry to the primary's own log, waits until it
/// is durable, and only then sends it, in one append-entries at a time per
/// peer; the peer makes it durable before it answers. So an entry waits for
/// two disk syncs in a row, and for the request already in flight. This
/// task sends each new entry of the primary's current term as soon as the
/// primary's log writer has written it (`pwrite` done, before its sync):
/// the peer syncs it while the primary does. Never an entry only handed to
/// the log: written, it survives a kill -9 of this process (the page
/// cache keeps it), so this node's log after a restart still holds what a
/// peer was sent; after a power loss it may not, and then the restarted
/// node cannot reuse its log ids either (it must win a new term first, see
/// `log_store`'s `never_resume_leadership`). openraft's own request for it is then answered
/// from the peer's acceptance (see [`PeerConnection::covered_ahead`]).
///
/// It is an ordinary append-entries of the current leader, which Raft
/// allows at any time: the peer checks the vote and that it holds
/// `prev_log_id` exactly as usual, and whatever this task sends is a
/// stretch of the primary's own log (entries of its term, after a log id
/// the peer acknowledged or was sent in this term), so a peer's log stays a
/// prefix of the primary's. Its commit index is the newest openraft sent
/// the peer, never more than is committed. It sends only to a peer that
/// acknowledged openraft's requests in this term (a peer catching up or
/// being sent a snapshot is left to openraft), [`AHEAD_IN_FLIGHT`] requests
/// at a time, and stops at the first refusal until openraft's next success.
async fn send_ahead(me: NodeId, peer: Peer, appended: AppendedEntries, max: usize, stats: Arc<AheadStats>) {
    let Peer { target, link, log: peer, leader_acks } = peer;
    let mut last = appended.watch_written();
    let slots = Arc::new(tokio::sync::Semaphore::new(AHEAD_IN_FLIGHT));
    loop {
        if last.changed().await.is_err() {
            return;
        }
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let Some(newest) = *last.borrow_and_update() else { break };
            if newest.leader_id.node_id != me {
                break;
            }
            let vote = Vote::new_committed(newest.leader_id.term, me);
            let (prev, commit) = {
                let p = peer.lock();
                let prev = p.known_under(&vote).map(|k| p.sent_under(&vote).map_or(k, |s| s.max(k)));
                (prev, p.commit.filter(|(v, _)| *v == vote).map(|(_, c)| c))
            };
            let prev = match prev {
                Some(k) if k.index < newest.index => k,
                _ => break,
            };
            let entries = appended.after(prev.index, max);
            if entries.first().map(|e| e.log_id.index) != Some(prev.index + 1)
                || entries.iter().any(|e| e.log_id.leader_id != newest.leader_id)
            {
                peer.update(|p| p.stalled = true);
                break;
            }
            let sent = entries.last().map(|e| e.log_id).unwrap_or(prev);
            peer.update(|p| {
                p.sent = Some((vote, sent));
                p.stalled = false;
            });
            // The commit index openraft last sent this peer (never more
            // than what is committed), so the replica applies as promptly
            // as openraft's own requests would make it.
            let rpc =
                AppendEntriesRequest::<TypeConfig> { vote, prev_log_id: Some(prev), entries, leader_commit: commit };
            let (link, peer, stats, leader_acks) = (link.clone(), peer.clone(), stats.clone(), leader_acks.clone());
            let sent_at = Instant::now();
            tokio::spawn(async move {
                let res: RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> =
                    link.call(target, "/raft/append", &rpc, AHEAD_LIMIT).await;
                drop(slot);
                match res {
                    Ok(AppendEntriesResponse::Success) => {
                        stats.accepted.fetch_add(1, Ordering::Relaxed);
                        peer.update(|p| {
                            p.learn(vote, sent);
                            p.acked(vote, sent_at);
                        });
                        leader_acks.acked(target, vote, sent_at);
                    }
                    other => {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %link.addr, "append-entries sent ahead not accepted: {other:?}");
                        peer.update(|p| {
                            if p.known.is_some_and(|(v, _)| v == vote) {
                                p.known = None;
                            }
                            p.sent = None;
                        });
                    }
                }
            });
        }
    }
}

/// Append-entries sent ahead to one peer at once. The peer merges those
/// that queue up into one append (`append_queue`). Of 1, 2, 4 and 8, 4
/// wrote fastest (figures: docs/BENCHMARKS.md).
const AHEAD_IN_FLIGHT: usize = 4;

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

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(3, 1), index)
    }

    /// A covered answer is stamped by openraft with the time of its own
    /// request; it is given only while the peer's real acknowledgement is
    /// at most COVERED_MAX_AGE older.
    #[test]
    fn a_covered_answer_needs_a_recent_real_acknowledgement() {
        let vote = Vote::new_committed(3, 1);
        let now = Instant::now() + Duration::from_secs(10);
        let mut p = PeerLog::default();
        assert_eq!(p.cover(&vote, id(5), now), Cover::RoundTrip, "nothing known");
        p.learn(vote, id(5));
        p.acked(vote, now - Duration::from_millis(1));
        assert_eq!(p.cover(&vote, id(5), now), Cover::Answer);
        assert_eq!(p.cover(&vote, id(4), now), Cover::Answer);
        assert_eq!(p.cover(&vote, id(6), now), Cover::Wait, "sent ahead, not answered yet");
        // The peer stopped answering (paused, cut off) while this node's
        // disk held openraft back: openraft would count it alive now.
        let later = now + COVERED_MAX_AGE + Duration::from_millis(1);
        assert_eq!(p.cover(&vote, id(5), later), Cover::RoundTrip);
        // An acknowledgement under another vote does not count.
        let mut q = PeerLog::default();
        q.learn(vote, id(5));
        q.acked(Vote::new_committed(2, 1), now);
        assert_eq!(q.cover(&vote, id(5), now), Cover::RoundTrip);
        // Acknowledgements only move forward.
        p.acked(vote, now - Duration::from_secs(5));
        assert_eq!(p.cover(&vote, id(5), now), Cover::Answer);
    }
}
