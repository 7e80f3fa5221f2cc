//! The Raft listener: Raft's RPCs from the other nodes (`POST
//! /raft/append`, `/raft/vote`, `/raft/snapshot`) and `/raft/elect`, the
//! request to campaign that a leadership transfer sends to its target.
//! Only the peer credential opens them (see `auth`), and only here: the
//! API listener does not serve them, nor does this one serve the API.
use super::{json, parse, ApiError, NodeState, PrimaryHint, Resp, RAFT_BODY_LIMIT};
use crate::transport::{APPLIED_INDEX_HEADER, APPLIED_TIME_HEADER};
use bytes::Bytes;
use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::Request;
use std::sync::Arc;
use std::time::Instant;

impl NodeState {
    /// The Raft listener's router.
    pub(super) async fn handle_raft(self: &Arc<Self>, req: Request<Incoming>) -> Resp {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        if let Err(refusal) = self.auth.check_peer(req.headers()) {
            return ApiError::Refused(refusal).response();
        }
        if method != Method::POST || !path.starts_with("/raft/") {
            return ApiError::NotFound { method, path }.response();
        }
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let hint = (header(APPLIED_INDEX_HEADER), header(APPLIED_TIME_HEADER));
        let body = match self.read_body(req, RAFT_BODY_LIMIT).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        match path.as_str() {
            "/raft/append" => self.raft_append(body, hint).await,
            "/raft/vote" => self.raft_vote(body).await,
            "/raft/snapshot" => self.raft_snapshot(body).await,
            "/raft/elect" => self.raft_elect().await,
            _ => ApiError::NotFound { method, path }.response(),
        }
    }

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
