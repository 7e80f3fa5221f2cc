//! Votes a node refuses right after it starts.
//!
//! A replica refuses to vote for a new primary for a leader lease after it
//! last heard the current one (openraft's `handle_vote_req`): a primary
//! that a majority acknowledged within the lease may go on serving
//! `bounded` reads and answering `/primary`, because no other node can be
//! elected meanwhile. openraft keeps the time of that last contact in
//! memory only (`vote_last_modified`): after a restart it counts the lease
//! as expired and grants a vote at once, although a moment before the
//! restart this node acknowledged the primary. Then a primary cut off from
//! the other replica would still count a quorum within its lease while a
//! new primary is elected by the restarted node and that replica.
//!
//! So for one lease after it starts, a node whose saved vote is committed
//! (it knew a primary) refuses vote requests itself, as openraft would if
//! it remembered when it last heard that primary: it may have heard it
//! just before the restart. Elections after a restart of a replica wait at
//! most one lease longer.

use crate::raft_types::{NodeId, Raft};
use openraft::raft::VoteResponse;
use std::time::{Duration, Instant};

pub(super) struct VoteHold {
    until: Instant,
}

impl VoteHold {
    /// Hold votes for `lease` from now (the node's start).
    pub(super) fn new(lease: Duration) -> VoteHold {
        VoteHold { until: Instant::now() + lease }
    }

    /// The answer to a vote request while votes are held: refused, with
    /// this node's vote and last log id, as openraft refuses within a lease.
    pub(super) fn refusal(&self, raft: &Raft) -> Option<VoteResponse<NodeId>> {
        if Instant::now() >= self.until {
            return None;
        }
        let vote = raft.metrics().borrow().vote;
        if !vote.is_committed() {
            return None;
        }
        let last_log_id = raft.data_metrics().borrow().last_log;
        tracing::info!(%vote, "vote request refused: this node started less than a leader lease ago");
        Some(VoteResponse::new(vote, last_log_id, false))
    }
}
