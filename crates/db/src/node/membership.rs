//! Membership and leadership: `POST /v1/promote` (a planned leadership
//! transfer), `/v1/members/add` and `/v1/members/remove`.
use super::{bad_request, json, parse, ApiError, NodeState, Resp, Retry};
use bulwark_db_api::api::{AddMember, NodeRef};
use bulwark_db_api::raft_types::{Node, NodeId};
use bytes::Bytes;
use http::StatusCode;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, RaftMetrics, ServerState};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Why a leadership transfer did not end with the asked node leading. The
/// cluster still has a primary (this one, or the winner); asking again may
/// succeed.
#[derive(Debug, thiserror::Error)]
pub(super) enum TransferError {
    #[error("node {0} did not catch up within 5 s")]
    NotCaughtUp(NodeId),
    #[error("{0}")]
    Metrics(#[source] tokio::sync::watch::error::RecvError),
    #[error("asking node {target} to campaign: {source}")]
    Campaign {
        target: NodeId,
        #[source]
        source: bulwark_db_api::http_client::TransportError,
    },
    #[error("node {target} refused to campaign: {reason}")]
    Refused { target: NodeId, reason: String },
    #[error("node {winner} won the election instead of {target}; retry")]
    OtherWon { winner: NodeId, target: NodeId },
    #[error("node {0} did not take over in time")]
    NoTakeover(NodeId),
}

/// How long a transfer's target may take to start its campaign: it waits
/// until it has not heard from this node for its own lease (which may be
/// longer than this node's).
const ELECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Ends a transfer on drop: heartbeats on again, writes and membership
/// changes allowed again.
struct TransferEnd<'a>(&'a NodeState);

impl Drop for TransferEnd<'_> {
    fn drop(&mut self) {
        self.0.raft.runtime_config().heartbeat(true);
        self.0.transferring.store(false, Ordering::SeqCst);
    }
}

impl NodeState {
    pub(super) async fn promote(&self, body: Bytes, forwarded: bool) -> Resp {
        let req: NodeRef = match parse(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let m = self.metrics();
        if m.state != ServerState::Leader {
            return self.to_primary("/v1/promote", body, forwarded, true).await;
        }
        let target = req.node_id;
        if target == self.id {
            return json(StatusCode::OK, &serde_json::json!({"primary": self.id, "changed": false}));
        }
        let Some(raft_addr) = m.membership_config.membership().get_node(&target).map(|n| n.raft_addr().to_string())
        else {
            return bad_request(format!("node {target} is not a member"));
        };
        if !Self::voters(&m).contains(&target) {
            return bad_request(format!("node {target} is a learner; only a voter can become primary"));
        }
        if self.transferring.swap(true, Ordering::SeqCst) {
            return ApiError::TransferRunning.response();
        }
        // Heartbeats back on and writes open again however the transfer
        // ends, the caller gone (this future dropped) included.
        let _handed_back = TransferEnd(self);
        let result = self.transfer_to(target, &raft_addr).await;
        match result {
            Ok(elapsed) => json(
                StatusCode::OK,
                &serde_json::json!({"primary": target, "changed": true, "millis": elapsed.as_millis() as u64}),
            ),
            Err(e) => ApiError::TransferFailed(e.to_string()).response(),
        }
    }

    /// openraft 0.9 has no leader transfer, so: writes are paused, the
    /// target catches up, this primary stops its heartbeats until the
    /// voters' leader lease expires, then the target campaigns. The other
    /// voters' own election timers fire only after lease + election
    /// timeout, so the target (with a complete log) wins the vote.
    /// `raft_addr`: the target's Raft listener.
    pub(super) async fn transfer_to(&self, target: NodeId, raft_addr: &str) -> Result<Duration, TransferError> {
        let start = Instant::now();
        let caught_up = |m: &RaftMetrics<NodeId, Node>| {
            let last = m.last_log_index;
            m.replication.as_ref().and_then(|r| r.get(&target)).is_some_and(|matched| matched.map(|l| l.index) == last)
        };
        let mut rx = self.raft.metrics();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(caught_up))
            .await
            .map_err(|_| TransferError::NotCaughtUp(target))?
            .map_err(TransferError::Metrics)?;
        self.raft.runtime_config().heartbeat(false);
        tokio::time::sleep(self.lease + self.heartbeat * 2).await;
        // The target campaigns once it has heard nothing from this node
        // for its own lease (which may be longer than this node's), and
        // whatever it accepted before: from now on none of its
        // acceptances of earlier requests counts for this node's quorum,
        // whatever the answer (set before asking, so that no way out of
        // this function skips it).
        self.leader_acks.forget_before(target, tokio::time::Instant::now());
        let reply = self
            .raft_http
            .post_json(raft_addr, "/raft/elect", &serde_json::json!({}), ELECT_TIMEOUT)
            .await
            .map_err(|source| TransferError::Campaign { target, source })?;
        if reply.status != 200 {
            let reason = String::from_utf8_lossy(&reply.body).into_owned();
            return Err(TransferError::Refused { target, reason });
        }
        let mut rx = self.raft.metrics();
        let done = tokio::time::timeout(
            self.lease * 4,
            rx.wait_for(|m| m.state != ServerState::Leader && m.current_leader.is_some()),
        )
        .await
        .map(|r| r.is_ok());
        let m = self.metrics();
        match (done, m.current_leader) {
            (Ok(_), Some(l)) if l == target => {
                tracing::info!(target, "leadership transferred");
                Ok(start.elapsed())
            }
            (Ok(_), Some(l)) => Err(TransferError::OtherWon { winner: l, target }),
            _ => Err(TransferError::NoTakeover(target)),
        }
    }

    pub(super) async fn add_member(&self, body: Bytes, forwarded: bool) -> Resp {
        let req: AddMember = match parse(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        if self.metrics().state != ServerState::Leader {
            return self.to_primary("/v1/members/add", body, forwarded, true).await;
        }
        // A membership entry would reach the transfer's target while it
        // decides to campaign.
        if self.transferring.load(Ordering::SeqCst) {
            return ApiError::Transferring.response();
        }
        if req.node_id == 0 {
            return bad_request("node_id must be at least 1");
        }
        if req.address.is_empty() || req.raft_address.is_empty() {
            return bad_request("address (the node's API) and raft_address (its Raft listener) are required");
        }
        // Adding as a learner first: it receives the log (or a snapshot)
        // before it counts for the majority.
        let timeout = Duration::from_secs(60);
        let node = Node::new(&req.address, &req.raft_address);
        match tokio::time::timeout(timeout, self.raft.add_learner(req.node_id, node, true)).await {
            Err(_) => {
                return ApiError::Timeout {
                    message: "the new node did not catch up in 60 s".into(),
                    retry: Retry::Unsafe,
                }
                .response()
            }
            Ok(Err(e)) => return self.membership_error(e),
            Ok(Ok(_)) => {}
        }
        if req.voter {
            let change = ChangeMembers::AddVoterIds(BTreeSet::from([req.node_id]));
            match tokio::time::timeout(timeout, self.raft.change_membership(change, false)).await {
                Err(_) => {
                    return ApiError::Timeout {
                        message: "membership change not committed in 60 s".into(),
                        retry: Retry::Unsafe,
                    }
                    .response()
                }
                Ok(Err(e)) => return self.membership_error(e),
                Ok(Ok(_)) => {}
            }
        }
        tracing::info!(
            node = req.node_id,
            address = %req.address,
            raft_address = %req.raft_address,
            voter = req.voter,
            "member added"
        );
        json(StatusCode::OK, &self.status())
    }

    pub(super) async fn remove_member(&self, body: Bytes, forwarded: bool) -> Resp {
        let req: NodeRef = match parse(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let m = self.metrics();
        if m.state != ServerState::Leader {
            return self.to_primary("/v1/members/remove", body, forwarded, true).await;
        }
        if self.transferring.load(Ordering::SeqCst) {
            return ApiError::Transferring.response();
        }
        if m.membership_config.membership().get_node(&req.node_id).is_none() {
            return bad_request(format!("node {} is not a member", req.node_id));
        }
        let ids = BTreeSet::from([req.node_id]);
        let change = if Self::voters(&m).contains(&req.node_id) {
            ChangeMembers::RemoveVoters(ids)
        } else {
            ChangeMembers::RemoveNodes(ids)
        };
        match tokio::time::timeout(Duration::from_secs(60), self.raft.change_membership(change, false)).await {
            Err(_) => {
                ApiError::Timeout { message: "membership change not committed in 60 s".into(), retry: Retry::Unsafe }
                    .response()
            }
            Ok(Err(e)) => self.membership_error(e),
            Ok(Ok(_)) => {
                tracing::info!(node = req.node_id, "member removed");
                json(StatusCode::OK, &self.status())
            }
        }
    }

    pub(super) fn membership_error(&self, e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> Resp {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                ApiError::NotPrimary { message: "leadership changed; retry".into(), leader: None }.response()
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                ApiError::Membership(e.to_string()).response()
            }
            RaftError::Fatal(e) => ApiError::Raft { message: e.to_string(), retry: Retry::Unsafe }.response(),
        }
    }
}
