//! The Raft listener: Raft's RPCs from the other nodes (`POST
//! /raft/append`, `/raft/vote`, `/raft/snapshot`) and `/raft/elect`, the
//! request to campaign that a leadership transfer sends to its target.
//! Only the peer credential opens them (see `auth`), and only here: the
//! API listener does not serve them, nor does this one serve the API.
use super::primary_word::PrimaryHint;
use super::{json, parse, ApiError, NodeState, Resp, RAFT_BODY_LIMIT};
use crate::transport::APPLIED_INDEX_HEADER;
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
        // Stamped on arrival: the append may wait in the queue and for a
        // sync, and the primary's word is as old as the request.
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let hint = header(APPLIED_INDEX_HEADER).map(|index| PrimaryHint { index, at: Instant::now() });
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
    /// request's headers, stamped on arrival, kept for bounded reads on
    /// this replica unless a newer one is (see [`PrimaryHint::supersedes`]:
    /// merged appends finish in any order).
    pub(super) async fn raft_append(&self, body: Bytes, hint: Option<PrimaryHint>) -> Resp {
        let rpc: openraft::raft::AppendEntriesRequest<bulwark_db_api::raft_types::TypeConfig> = match parse(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        #[cfg(test)]
        if self.refuse_appends.refuses() {
            return json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"error": "appends refused by a test"}));
        }
        #[cfg(test)]
        let last_sent = rpc.entries.last().map(|e| e.log_id.index);
        let res = self.appends.append(rpc).await;
        #[cfg(test)]
        if res.is_ok() {
            self.refuse_appends.appended(last_sent);
        }
        if let (Ok(ok), Some(hint)) = (&res, hint) {
            if !matches!(ok, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                let applied = self.applied.borrow().index;
                self.primary_word.lock().unwrap_or_else(|p| p.into_inner()).record(hint, applied);
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

/// A test's hold on a node's Raft log: once the node accepted an append
/// that reached a given index, it refuses (503) every later append, as if
/// cut off from its primary right after accepting that entry.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct RefuseAppends {
    /// The index whose acceptance starts the refusal; 0: none.
    from: std::sync::atomic::AtomicU64,
    refusing: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl RefuseAppends {
    /// Refuse every append after one that reached `index`.
    pub(crate) fn after(&self, index: u64) {
        self.from.store(index, std::sync::atomic::Ordering::SeqCst);
    }

    /// Accept appends again.
    pub(crate) fn lift(&self) {
        self.from.store(0, std::sync::atomic::Ordering::SeqCst);
        self.refusing.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn refuses(&self) -> bool {
        self.refusing.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn appended(&self, last: Option<u64>) {
        let from = self.from.load(std::sync::atomic::Ordering::SeqCst);
        if from > 0 && last.is_some_and(|l| l >= from) {
            self.refusing.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}
