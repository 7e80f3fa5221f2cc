//! When each peer last acknowledged this node as its leader: the clock by
//! which a primary decides that it still has a quorum (`/primary`, the
//! write path, `bounded` reads on the primary, `/v1/status`'s `quorum`).
//!
//! openraft 0.9 has its own (`RaftMetrics::millis_since_quorum_ack`), but
//! its core computes it only when it reports metrics, and the core stops
//! while it waits for an append to this node's own log to be synced: a
//! primary whose disk stalls keeps showing the last report, a quorum
//! acknowledged a few milliseconds ago, for as long as the stall lasts,
//! even if every replica has stopped answering. This clock is kept by the
//! transport (`transport.rs`) outside the core: each time a peer accepts a
//! request of this node's (openraft's own append-entries and heartbeats,
//! and entries sent ahead), the time the request was **sent** is recorded
//! under the vote it carried. Answers given without a round trip (covered
//! answers) are not acknowledgements and are not recorded. The question
//! "has a majority acknowledged me within the lease?" is then answered
//! with the current time, whatever the core is doing.
//!
//! A peer that accepted a request sent at `t` refuses to vote for anyone
//! else until at least `t` + its leader lease (openraft 0.9: its own
//! `election_timeout_max`), so while a majority (counting this node)
//! accepted requests sent within the lease no other node can have become
//! primary. Each peer reports its lease on its answers (`peer_clock`): a
//! peer whose lease is shorter than this node's counts as if its
//! acceptance had been sent that much earlier, so nodes configured with
//! different election timeouts are safe too. The window used is the lease
//! minus [`LEASE_MARGIN`], for timers that fire late and clocks that run
//! at slightly different rates on different machines.
use bulwark_db_api::raft_types::{Node, NodeId, Vote};
use openraft::{RaftMetrics, ServerState};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How much shorter than the lease the quorum window is: a peer's
/// election timer and this node's clock may not agree to the millisecond
/// (timer slack, clock rates of different machines).
pub(crate) const LEASE_MARGIN: Duration = Duration::from_millis(5);

/// Per peer: the vote of the newest acknowledged request and when the
/// newest request it accepted under that vote was sent, and the lease the
/// peer last reported.
#[derive(Debug)]
pub(crate) struct LeaderAcks {
    /// This node's own leader lease.
    lease: Duration,
    acks: Mutex<Acks>,
}

#[derive(Debug, Default)]
struct Acks {
    accepted: HashMap<NodeId, (Vote, Instant)>,
    leases: HashMap<NodeId, Duration>,
    /// Per peer: acceptances of requests sent before this do not count.
    floors: HashMap<NodeId, Instant>,
}

impl Acks {
    /// When `peer`'s acceptance under `vote` counts as sent: its real
    /// time, moved back by how much shorter the peer's lease is than
    /// `lease`. A peer that never reported its lease (a node of an earlier
    /// version) counts with `lease`.
    fn counted(&self, peer: NodeId, vote: &Vote, lease: Duration) -> Option<Instant> {
        let (v, t) = self.accepted.get(&peer)?;
        if v != vote {
            return None;
        }
        let shorter = self.leases.get(&peer).map_or(Duration::ZERO, |l| lease.saturating_sub(*l));
        t.checked_sub(shorter)
    }
}

impl LeaderAcks {
    /// The quorum clock of a node whose leader lease is `lease`.
    pub(crate) fn new(lease: Duration) -> LeaderAcks {
        LeaderAcks { lease, acks: Mutex::default() }
    }

    /// `peer` reported its leader lease. The shortest it ever reported
    /// counts: answers of a peer that restarted with another lease arrive
    /// in any order, and counting an acceptance for less time than the
    /// peer refuses votes is only cautious (a peer whose lease grew is
    /// counted with its old one until this node restarts).
    pub(crate) fn peer_lease(&self, peer: NodeId, lease: Duration) {
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let kept = acks.leases.entry(peer).or_insert(lease);
        *kept = (*kept).min(lease);
    }

    /// Count no acceptance of `peer`'s of a request sent before `t`: it
    /// was asked to campaign (a leadership transfer), which it does
    /// whatever it accepted before.
    pub(crate) fn forget_before(&self, peer: NodeId, t: Instant) {
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        acks.floors.insert(peer, t);
        if acks.accepted.get(&peer).is_some_and(|(_, sent)| *sent < t) {
            acks.accepted.remove(&peer);
        }
    }

    /// `peer` accepted a request sent at `sent_at` under `vote`.
    pub(crate) fn acked(&self, peer: NodeId, vote: Vote, sent_at: Instant) {
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        if acks.floors.get(&peer).is_some_and(|floor| sent_at < *floor) {
            return;
        }
        match acks.accepted.get_mut(&peer) {
            Some((v, t)) if *v == vote => *t = (*t).max(sent_at),
            // A late answer to a request of an older vote changes nothing.
            Some((v, _)) if *v > vote => {}
            _ => {
                acks.accepted.insert(peer, (vote, sent_at));
            }
        }
    }

    /// When the request was sent whose acknowledgement completes a
    /// majority of every voter set in `configs` (one, or two during a
    /// membership change) under `vote`, this node `me` counting as
    /// acknowledged `now`; `None` if some set has no such majority.
    pub(crate) fn quorum_acked_at(
        &self,
        me: NodeId,
        vote: &Vote,
        configs: &[BTreeSet<NodeId>],
        now: Instant,
    ) -> Option<Instant> {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let mut oldest: Option<Instant> = None;
        for voters in configs {
            let mut times: Vec<Instant> = voters
                .iter()
                .filter_map(|id| {
                    if *id == me {
                        return Some(now);
                    }
                    acks.counted(*id, vote, self.lease)
                })
                .collect();
            let majority = voters.len() / 2 + 1;
            if times.len() < majority {
                return None;
            }
            // Newest first: the majority-th newest acknowledgement.
            times.sort_unstable_by(|a, b| b.cmp(a));
            let at = times[majority - 1];
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
        oldest
    }

    /// How long ago the majority acknowledgement of
    /// [`LeaderAcks::quorum_acked_at`] was sent, if any.
    pub(crate) fn quorum_age(&self, me: NodeId, vote: &Vote, configs: &[BTreeSet<NodeId>]) -> Option<Duration> {
        let now = Instant::now();
        self.quorum_acked_at(me, vote, configs, now).map(|t| now.saturating_duration_since(t))
    }

    /// True when a majority acknowledged a request sent within `window`
    /// (at most the lease minus [`LEASE_MARGIN`]).
    pub(crate) fn quorum_within(
        &self,
        me: NodeId,
        vote: &Vote,
        configs: &[BTreeSet<NodeId>],
        window: Duration,
    ) -> bool {
        let window = window.min(self.lease.saturating_sub(LEASE_MARGIN));
        self.quorum_age(me, vote, configs).is_some_and(|age| age <= window)
    }

    /// True when `m`, node `me`'s metrics, show a primary that a majority
    /// (counting itself) acknowledged requests sent within `window` (and
    /// the lease minus [`LEASE_MARGIN`]). A primary alone in its cluster
    /// always has its quorum.
    pub(crate) fn primary_within(&self, me: NodeId, m: &RaftMetrics<NodeId, Node>, window: Duration) -> bool {
        if m.state != ServerState::Leader || m.vote.leader_id().voted_for() != Some(me) {
            return false;
        }
        let configs = m.membership_config.membership().get_joint_config();
        if configs.iter().all(|c| c.len() == 1 && c.contains(&me)) {
            return true;
        }
        self.quorum_within(me, &m.vote, configs, window)
    }
}

/// Whether this node has applied an entry of its current term. A new
/// primary's log may hold entries the previous primary committed (and
/// acknowledged to clients) that this node has not applied yet: it learns
/// they are committed only when the first entry of its own term (the one
/// openraft appends on election) is committed. Until it has applied that
/// entry its database may miss acknowledged writes, however recently a
/// majority acknowledged it.
pub(crate) fn applied_own_term(m: &RaftMetrics<NodeId, Node>) -> bool {
    m.last_applied.is_some_and(|a| a.leader_id.get_term() == m.vote.leader_id().get_term())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_majority_counts_this_node_and_only_acknowledgements_of_its_vote() {
        let acks = LeaderAcks::new(Duration::from_secs(1));
        let vote = Vote::new_committed(4, 1);
        let now = Instant::now() + Duration::from_secs(10);
        let voters = [set(&[1, 2, 3])];
        assert_eq!(acks.quorum_acked_at(1, &vote, &voters, now), None, "nobody answered");
        acks.acked(2, Vote::new_committed(3, 1), now - Duration::from_millis(1));
        assert_eq!(acks.quorum_acked_at(1, &vote, &voters, now), None, "an older term's answer");
        acks.acked(2, vote, now - Duration::from_millis(300));
        acks.acked(3, vote, now - Duration::from_millis(100));
        assert_eq!(acks.quorum_acked_at(1, &vote, &voters, now), Some(now - Duration::from_millis(100)));
        // Only forward, and a late answer of an older vote changes nothing.
        acks.acked(3, vote, now - Duration::from_millis(200));
        acks.acked(3, Vote::new_committed(3, 1), now);
        assert_eq!(acks.quorum_acked_at(1, &vote, &voters, now), Some(now - Duration::from_millis(100)));
        // Five voters need two others.
        let five = [set(&[1, 2, 3, 4, 5])];
        assert_eq!(acks.quorum_acked_at(1, &vote, &five, now), Some(now - Duration::from_millis(300)));
        // During a membership change, a majority of both sets.
        let joint = [set(&[1, 2, 3]), set(&[1, 4, 5])];
        assert_eq!(acks.quorum_acked_at(1, &vote, &joint, now), None);
        acks.acked(5, vote, now - Duration::from_millis(50));
        assert_eq!(acks.quorum_acked_at(1, &vote, &joint, now), Some(now - Duration::from_millis(100)));
        // A set without this node needs a majority of others.
        assert_eq!(acks.quorum_acked_at(9, &vote, &voters, now), Some(now - Duration::from_millis(300)));
    }

    #[test]
    fn a_peer_asked_to_campaign_counts_only_for_requests_sent_after() {
        let acks = LeaderAcks::new(Duration::from_secs(1));
        let vote = Vote::new_committed(4, 1);
        let voters = [set(&[1, 2])];
        let now = Instant::now() + Duration::from_secs(10);
        acks.acked(2, vote, now - Duration::from_millis(100));
        assert!(acks.quorum_acked_at(1, &vote, &voters, now).is_some());
        acks.forget_before(2, now - Duration::from_millis(50));
        assert_eq!(acks.quorum_acked_at(1, &vote, &voters, now), None, "forgotten");
        acks.acked(2, vote, now - Duration::from_millis(60));
        assert_eq!(acks.quorum_acked_at(1, &vote, &voters, now), None, "a late answer to an older request");
        acks.acked(2, vote, now - Duration::from_millis(40));
        assert_eq!(acks.quorum_acked_at(1, &vote, &voters, now), Some(now - Duration::from_millis(40)));
    }

    #[test]
    fn a_peer_with_a_shorter_lease_is_trusted_for_its_lease_only() {
        // This node's lease is 1 s; peer 2 refuses votes for 300 ms after
        // it heard this node, peer 3 reported nothing (an older node).
        let acks = LeaderAcks::new(Duration::from_secs(1));
        let vote = Vote::new_committed(4, 1);
        let voters = [set(&[1, 2, 3])];
        let now = Instant::now() + Duration::from_secs(10);
        acks.acked(2, vote, now - Duration::from_millis(200));
        assert!(acks.quorum_acked_at(1, &vote, &voters, now).is_some());
        acks.peer_lease(2, Duration::from_millis(300));
        // Counted as sent 700 ms earlier: 900 ms ago.
        assert_eq!(acks.quorum_acked_at(1, &vote, &voters, now), Some(now - Duration::from_millis(900)));
        // Peer 3 without a lease counts with this node's own.
        acks.acked(3, vote, now - Duration::from_millis(400));
        assert_eq!(acks.quorum_acked_at(1, &vote, &voters, now), Some(now - Duration::from_millis(400)));
        // A longer lease than this node's changes nothing.
        acks.peer_lease(3, Duration::from_secs(5));
        assert_eq!(acks.quorum_acked_at(1, &vote, &voters, now), Some(now - Duration::from_millis(400)));
        // A late report of a longer lease (from before the peer restarted
        // with a shorter one) does not lengthen its count.
        acks.peer_lease(2, Duration::from_millis(480));
        assert_eq!(acks.quorum_acked_at(1, &vote, &[set(&[1, 2])], now), Some(now - Duration::from_millis(900)));
    }
}
