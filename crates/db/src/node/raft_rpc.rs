//! Raft's RPCs from the other nodes (`POST /raft/append`, `/raft/vote`,
//! `/raft/snapshot`) and `/raft/elect`, the request to campaign that a
//! leadership transfer sends to its target. Only the peer credential opens
//! them (see `auth`).
use super::{json, parse, ApiError, NodeState, PrimaryHint, Resp};
use bytes::Bytes;
use http::StatusCode;
use std::time::Instant;

impl NodeState {
    /// Append entries (through the queue that merges a burst into one
    /// sync); `hint` is the primary's applied index and time from the
    /// request's headers, kept for bounded reads on this replica.
    pub(super) async fn raft_append(&self, body: Bytes, hint: (Option<u64>, Option<u64>)) -> Resp {
        let rpc = match parse(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let res = self.appends.append(rpc).await;
        if let (Ok(ok), (Some(index), Some(time_ms))) = (&res, hint) {
            if !matches!(ok, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                *self.hint.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(PrimaryHint { index, time_ms, at: Instant::now() });
            }
        }
        json(StatusCode::OK, &res)
    }

    pub(super) async fn raft_vote(&self, body: Bytes) -> Resp {
        match parse(&body) {
            Ok(rpc) => json(StatusCode::OK, &self.raft.vote(rpc).await),
            Err(r) => r,
        }
    }

    pub(super) async fn raft_snapshot(&self, body: Bytes) -> Resp {
        match parse(&body) {
            Ok(rpc) => json(StatusCode::OK, &self.raft.install_snapshot(rpc).await),
            Err(r) => r,
        }
    }

    pub(super) async fn raft_elect(&self) -> Resp {
        tracing::info!("asked to campaign for leadership");
        match self.raft.trigger().elect().await {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({"electing": true})),
            Err(e) => ApiError::Stopped(e.to_string()).response(),
        }
    }
}
