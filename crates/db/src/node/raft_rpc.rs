//! The Raft listener: Raft's RPCs from the other nodes (`POST
//! /raft/append`, `/raft/vote`, `/raft/snapshot`) and `/raft/elect`, the
//! request to campaign that a leadership transfer sends to its target.
//! Only the peer credential opens them (see `auth`), and only here: the
//! API listener does not serve them, nor does this one serve the API.
use super::primary_word::PrimaryHint;
use super::{json, parse, ApiError, NodeState, Resp, RAFT_BODY_LIMIT};
use crate::peer_clock::LocalClock;
use crate::transport::APPLIED_INDEX_HEADER;
use bytes::Bytes;
use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::Request;
use std::sync::Arc;

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
        #[cfg(test)]
        self.hold_appends.arrived(&path).await;
        let hint = primary_hint(req.headers(), &self.clock);
        let body = match self.read_body(req, RAFT_BODY_LIMIT).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let campaign = path == "/raft/vote" || path == "/raft/elect";
        if let Some(until) = self.votes_held_until.filter(|u| campaign && tokio::time::Instant::now() < *u) {
            let wait = until.saturating_duration_since(tokio::time::Instant::now());
            let why = format!("this node's previous run had a longer leader lease: no vote nor campaign for {wait:?}");
            return json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "error": why }));
        }
        let mut resp = match path.as_str() {
            "/raft/append" => self.raft_append(body, hint).await,
            "/raft/vote" => self.raft_vote(body).await,
            "/raft/snapshot" => self.raft_snapshot(body).await,
            "/raft/elect" => self.raft_elect().await,
            _ => ApiError::NotFound { method, path }.response(),
        };
        // Stamped as the answer leaves: the primary's next hint is younger.
        for (name, value) in self.clock.answer_headers(self.lease) {
            if let Ok(v) = http::HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }

    /// Append entries (through the queue that merges a burst into one
    /// sync); `hint` is the primary's applied index from the request's
    /// headers, dated by the answer of this node's it echoes, kept for bounded reads on
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
        let Some(pass) = self.campaign_gate.append() else {
            let why = "this node is starting a campaign for leadership";
            return json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "error": why }));
        };
        let res = self.appends.append(rpc).await;
        #[cfg(test)]
        if res.is_ok() {
            self.refuse_appends.appended(last_sent);
        }
        if let Ok(ok) = &res {
            if !matches!(ok, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                pass.answered();
                if let Some(hint) = hint {
                    let applied = self.applied.borrow().index;
                    self.primary_word.lock().unwrap_or_else(|p| p.into_inner()).record(hint, applied);
                }
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

    /// Campaign (a leadership transfer's last step), once a lease has
    /// passed since this node last answered an append of a primary's and
    /// none is in flight (see `campaign_gate`): at most `ELECT_WAIT_LEASES`
    /// leases and a second from now, else 503.
    pub(super) async fn raft_elect(&self) -> Resp {
        tracing::info!("asked to campaign for leadership");
        let limit = self.lease * ELECT_WAIT_LEASES + std::time::Duration::from_secs(1);
        match self.campaign_gate.campaign(self.lease, limit, || async { self.raft.trigger().elect().await }).await {
            Ok(Ok(())) => json(StatusCode::OK, &serde_json::json!({"electing": true})),
            Ok(Err(e)) => ApiError::Stopped(e.to_string()).response(),
            Err(no) => {
                tracing::info!("not campaigning: {no}");
                json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "error": no.to_string() }))
            }
        }
    }
}

/// How many of its leases a node asked to campaign waits, at most, for
/// its primary to fall silent.
const ELECT_WAIT_LEASES: u32 = 2;

/// The primary's word on a Raft request: its applied index, dated by the
/// stamp of this node's it echoes. The primary made the hint after it
/// received that answer of this node's, so the hint is at least that
/// recent, however long the request then took to arrive (see
/// `peer_clock`). A hint without a stamp of this run of this node says
/// nothing.
fn primary_hint(headers: &http::HeaderMap, clock: &LocalClock) -> Option<PrimaryHint> {
    let index = headers.get(APPLIED_INDEX_HEADER)?.to_str().ok()?.parse::<u64>().ok()?;
    Some(PrimaryHint { index, at: clock.echoed(headers)? })
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

/// A test's hold on the Raft requests reaching a node, as if they were
/// delayed on the wire: while held, each `/raft/append` waits before the
/// node reads anything of it, and they go on one at a time, oldest first,
/// as the test releases them.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct HoldAppends {
    holding: std::sync::atomic::AtomicBool,
    gate: tokio::sync::Semaphore,
    /// Requests waiting at the gate, and requests answered after it.
    pub(crate) waiting: std::sync::atomic::AtomicU64,
    pub(crate) released: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
impl Default for HoldAppends {
    fn default() -> Self {
        HoldAppends {
            holding: Default::default(),
            gate: tokio::sync::Semaphore::new(0),
            waiting: Default::default(),
            released: Default::default(),
        }
    }
}

#[cfg(test)]
impl HoldAppends {
    /// Hold every append that arrives from now on.
    pub(crate) fn hold(&self) {
        self.holding.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Let the oldest held append go on.
    pub(crate) fn release_one(&self) {
        self.gate.add_permits(1);
    }

    /// Stop holding, and let every held append go on.
    pub(crate) fn lift(&self) {
        self.holding.store(false, std::sync::atomic::Ordering::SeqCst);
        self.gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS >> 4);
    }

    async fn arrived(&self, path: &str) {
        use std::sync::atomic::Ordering::SeqCst;
        if path != "/raft/append" || !self.holding.load(SeqCst) {
            return;
        }
        self.waiting.fetch_add(1, SeqCst);
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        self.waiting.fetch_sub(1, SeqCst);
        self.released.fetch_add(1, SeqCst);
    }
}
