//! What a node knows about the cluster: the primary, the quorum clock,
//! its role, and the `/v1/status` report.
use super::NodeState;
use bulwark_db_api::api::{DbRole, Member, NodeStatus};
use bulwark_db_api::raft_types::{Node, NodeId};
use openraft::{RaftMetrics, ServerState};
use std::collections::BTreeSet;
use std::time::Duration;

impl NodeState {
    pub(super) fn metrics(&self) -> RaftMetrics<NodeId, Node> {
        self.raft.metrics().borrow().clone()
    }

    /// The primary's id and API address.
    pub(super) fn leader(&self, m: &RaftMetrics<NodeId, Node>) -> Option<(NodeId, String)> {
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?;
        Some((id, node.api_addr.clone()))
    }

    pub(super) fn voters(m: &RaftMetrics<NodeId, Node>) -> BTreeSet<NodeId> {
        m.membership_config.membership().voter_ids().collect()
    }

    /// Primary that a majority acknowledged within the lease, by the
    /// quorum clock kept outside openraft's core (see `leader_acks`).
    pub(super) fn has_quorum(&self, m: &RaftMetrics<NodeId, Node>) -> bool {
        self.quorum_within(m, self.lease)
    }

    /// Primary that a majority (counting itself) acknowledged requests
    /// sent within `window` (and the lease minus `LEASE_MARGIN`), and that
    /// is not handing its leadership over (its target campaigns whatever
    /// it acknowledged before).
    pub(super) fn quorum_within(&self, m: &RaftMetrics<NodeId, Node>, window: Duration) -> bool {
        !self.transferring.load(std::sync::atomic::Ordering::SeqCst)
            && self.leader_acks.primary_within(self.id, m, window)
    }

    /// How long ago the requests were sent whose acknowledgement makes
    /// this node's newest majority (`None`: no majority under its vote).
    pub(super) fn quorum_age(&self, m: &RaftMetrics<NodeId, Node>) -> Option<Duration> {
        self.leader_acks.quorum_age(self.id, &m.vote, m.membership_config.membership().get_joint_config())
    }

    pub(super) fn role(&self, m: &RaftMetrics<NodeId, Node>) -> DbRole {
        match m.state {
            ServerState::Leader => DbRole::Primary,
            ServerState::Candidate => DbRole::Candidate,
            ServerState::Shutdown => DbRole::Stopped,
            _ => {
                let mem = m.membership_config.membership();
                if mem.voter_ids().any(|v| v == self.id) {
                    DbRole::Replica
                } else if mem.learner_ids().any(|v| v == self.id) {
                    DbRole::Learner
                } else {
                    DbRole::Detached
                }
            }
        }
    }

    pub(super) fn status(&self) -> NodeStatus {
        let m = self.metrics();
        let a = *self.applied.borrow();
        let leader = self.leader(&m);
        let mem = m.membership_config.membership();
        let voters = Self::voters(&m);
        let members = mem
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                address: n.api_addr.clone(),
                raft_address: n.raft_addr().to_string(),
                voter: voters.contains(id),
            })
            .collect();
        let last = m.last_log_index.unwrap_or(0);
        let replication = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, matched)| (*id, last.saturating_sub(matched.map(|l| l.index).unwrap_or(0))))
                    .collect()
            })
            .unwrap_or_default();
        NodeStatus {
            node_id: self.id,
            address: self.address.clone(),
            raft_address: self.raft_address.clone(),
            role: self.role(&m),
            term: m.current_term,
            leader_id: leader.as_ref().map(|l| l.0),
            leader_address: leader.map(|l| l.1),
            applied_index: a.index,
            last_log_index: last,
            snapshot_index: m.snapshot.map(|s| s.index),
            purged_index: m.purged.map(|p| p.index),
            quorum: self.has_quorum(&m),
            lag: self.lag(&m),
            members,
            replication,
        }
    }
}
