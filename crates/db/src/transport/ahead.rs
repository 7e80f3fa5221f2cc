//! Sending a primary's new entries to a peer ahead of openraft
//! ([`send_ahead`]), what the primary knows the peer holds ([`PeerLog`]),
//! and when openraft's own append-entries may be answered from it without
//! a round trip ([`PeerLog::cover`]).
use super::{Link, RpcResult};
use bulwark_db_api::raft_types::{LogId, NodeId, TypeConfig, Vote};
use bulwark_db_log::AppendedEntries;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

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
pub(super) struct PeerLog {
    pub(super) known: Option<(Vote, LogId)>,
    /// The last log id sent ahead (acknowledged or in flight).
    sent: Option<(Vote, LogId)>,
    /// The newest commit index openraft sent this peer, under its vote.
    pub(super) commit: Option<(Vote, LogId)>,
    /// When the newest request the peer accepted under the vote was sent
    /// (openraft's or one sent ahead): the peer's leader lease for this
    /// node runs from no earlier than that.
    acked: Option<(Vote, Instant)>,
    /// Entries are waiting that the task sending ahead will not send (not
    /// in memory, or of an earlier term): openraft's requests carry them.
    stalled: bool,
}

impl PeerLog {
    pub(super) fn learn(&mut self, vote: Vote, log_id: LogId) {
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
    pub(super) fn acked(&mut self, vote: Vote, sent_at: Instant) {
        match &mut self.acked {
            Some((v, t)) if *v == vote => *t = (*t).max(sent_at),
            _ => self.acked = Some((vote, sent_at)),
        }
    }

    /// How to answer openraft's append-entries under `vote` whose entries
    /// end at `last`, called at `called_at`.
    pub(super) fn cover(&self, vote: &Vote, last: LogId, called_at: Instant) -> Cover {
        let Some(known) = self.known_under(vote) else { return Cover::RoundTrip };
        if known < last {
            return if self.stalled { Cover::RoundTrip } else { Cover::Wait };
        }
        // openraft stamps the answer with `called_at` (its metrics'
        // `millis_since_quorum_ack` comes from that stamp); the peer last
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
pub(super) enum Cover {
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
/// real acknowledgement was of a request sent ahead earlier.
///
/// The gap is the primary's own sync plus the wait for openraft's core:
/// 0.1-1 ms on an idle machine, 3-10 ms on two busy cores where an
/// `fdatasync` takes 3-6 ms. Past this bound (a disk that stalls, a paused
/// process) openraft's request makes a real round trip, which costs one
/// network round trip, not a sync (the peer already holds the entries).
///
/// Nothing that decides who is primary reads that stamp: in openraft 0.9
/// it feeds only the `millis_since_quorum_ack` metric, which Bulwark does
/// not use; the quorum clock (`leader_acks`) records real acceptances
/// only, and openraft's leadership check for linearizable reads sends
/// empty append-entries, which are never covered (docs/db.md, "Covered
/// answers"). So the bound keeps that metric honest to within 40 ms and
/// sends a stalled primary's requests on the wire; a twelfth of the
/// default leader lease (480 ms).
pub(crate) const COVERED_MAX_AGE: Duration = Duration::from_millis(40);

/// A peer's [`PeerLog`] and who waits for it to change.
#[derive(Debug, Default)]
pub(super) struct PeerState {
    log: Mutex<PeerLog>,
    pub(super) changed: tokio::sync::Notify,
}

impl PeerState {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, PeerLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change the log and wake whoever waits for it.
    pub(super) fn update(&self, f: impl FnOnce(&mut PeerLog)) {
        f(&mut self.lock());
        self.changed.notify_waiters();
    }
}

/// How long an append-entries sent ahead may take.
const AHEAD_LIMIT: Duration = Duration::from_secs(1);

/// The peer that [`send_ahead`] serves.
pub(super) struct Peer {
    pub(super) target: NodeId,
    pub(super) link: Link,
    pub(super) log: Arc<PeerState>,
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
/// `bulwark-db-log`'s `never_resume_leadership`). openraft's own request for it is then answered
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
pub(super) async fn send_ahead(me: NodeId, peer: Peer, appended: AppendedEntries, max: usize, stats: Arc<AheadStats>) {
    let Peer { target, link, log: peer } = peer;
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
            let (link, peer, stats) = (link.clone(), peer.clone(), stats.clone());
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
                        link.leader_acks.acked(target, vote, sent_at);
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
