//! `POST /v1/query`: how fresh a read must be and whether this node may
//! serve it, and how far behind the primary a node is.
//!
//! - `none`: whatever this node has applied.
//! - `bounded` (`max_lag_ms`): on a replica, the age of the newest word
//!   from the primary whose applied index this node has applied (see
//!   `primary_word`: from that word's date on it held every write the
//!   primary had acknowledged; a replica cut off from the primary does not
//!   know what it missed since; a primary speaks only once it applied an
//!   entry of its term and while a majority acknowledged it within the
//!   lease, see `transport::AppliedHints`); on the primary, a majority must have
//!   acknowledged it within `max_lag` (and the lease), else it confirms its
//!   leadership with a round trip first: an old primary cut off from the
//!   majority cannot serve a read older than asked.
//! - `strong`: the primary after a read-index round trip.
//!
//! A read-your-writes token is checked before any wait: the primary
//! refuses at once (400 [`BAD_TOKEN`](bulwark_db_api::api::BAD_TOKEN)) a token beyond its log or of a term
//! above its own (Raft's leader completeness: the primary's log holds every
//! committed entry, so no write of this cluster produced such a token); a
//! replica redirects a token beyond what it knows (its log, or the applied
//! index the primary last sent it) to the primary at once instead of
//! waiting for it. A forged token therefore never holds a read.
use super::{bad_request, json, ApiError, NodeState, Resp, Retry};
use crate::leader_acks::applied_own_term;
use bulwark_db_api::api::{QueryRequest, ReplicationLag, Token};
use bulwark_db_api::raft_types::{Node, NodeId};
use bulwark_db_api::Consistency;
use bulwark_db_sm::sql;
use bytes::Bytes;
use http::StatusCode;
use openraft::error::RaftError;
use openraft::{RaftMetrics, ServerState};
use std::time::{Duration, Instant};

/// What a read does with its token before serving.
#[derive(Debug, PartialEq)]
enum TokenCheck {
    /// The token's write is (or will shortly be) in this node's log: wait
    /// for it to be applied.
    Wait,
    /// This node does not know the write: the primary decides.
    Redirect,
    /// No write of this cluster made this token.
    Refuse(String),
}

fn check_token(t: Token, m: &RaftMetrics<NodeId, Node>, primary_applied: Option<u64>) -> TokenCheck {
    let last = m.last_log_index.unwrap_or(0);
    if m.state == ServerState::Leader {
        if t.term > m.current_term {
            return TokenCheck::Refuse(format!(
                "token {} names term {}, above this primary's term {}",
                t.encode(),
                t.term,
                m.current_term
            ));
        }
        if t.index > last {
            return TokenCheck::Refuse(format!(
                "token {} names log index {}, beyond this primary's last index {last}",
                t.encode(),
                t.index
            ));
        }
        return TokenCheck::Wait;
    }
    let known = last.max(primary_applied.unwrap_or(0));
    if t.term > m.current_term || t.index > known {
        TokenCheck::Redirect
    } else {
        TokenCheck::Wait
    }
}

impl NodeState {
    /// How far this node is behind the primary; see the module doc.
    pub(super) fn lag(&self, m: &RaftMetrics<NodeId, Node>) -> ReplicationLag {
        if m.state == ServerState::Leader {
            return ReplicationLag { entries: 0, seconds: 0.0, known: true };
        }
        let applied = self.applied.borrow().index;
        self.primary_word.lock().unwrap_or_else(|p| p.into_inner()).lag(applied, Instant::now(), self.lease)
    }

    /// A primary may serve a `bounded` read when a majority acknowledged
    /// requests it sent within `max_lag` (and within the lease), by the
    /// quorum clock kept outside openraft's core (see `leader_acks`), and
    /// once it has applied an entry of its own term (see
    /// `leader_acks::applied_own_term`).
    fn primary_is_fresh(&self, m: &RaftMetrics<NodeId, Node>, max_lag: Duration) -> bool {
        applied_own_term(m) && self.quorum_within(m, max_lag)
    }

    async fn wait_applied(&self, index: u64, within: Duration) -> bool {
        let mut rx = self.applied.clone();
        let ok = matches!(tokio::time::timeout(within, rx.wait_for(|a| a.index >= index)).await, Ok(Ok(_)));
        ok
    }

    /// Confirm leadership with a majority (read index), within `read_wait`.
    /// Not while this primary hands its leadership over: the confirmation
    /// would reach the target as a fresh request of this primary's right
    /// before it campaigns (see `transfer_to`).
    async fn confirm_leadership(&self, body: &Bytes) -> Result<(), Resp> {
        if self.transferring.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ApiError::Transferring.response());
        }
        match tokio::time::timeout(self.read_wait, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(_))) => Err(self.to_primary("/v1/query", body.clone(), false, false).await),
            Ok(Err(e)) => Err(ApiError::Raft { message: e.to_string(), retry: Retry::Safe }.response()),
            Err(_) => Err(ApiError::NoQuorum("could not confirm leadership with a majority in time".into()).response()),
        }
    }

    pub(super) async fn query(&self, body: Bytes) -> Resp {
        let req: QueryRequest = match super::parse(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let consistency = match req.consistency() {
            Ok(c) => c,
            Err(e) => return bad_request(e.to_string()),
        };
        if let Err(e) = sql::check_length(&req.sql) {
            return bad_request(e.to_string());
        }
        let m = self.metrics();
        let leader = m.state == ServerState::Leader;
        if let Some(t) = req.token {
            let primary_applied = self.primary_word.lock().unwrap_or_else(|p| p.into_inner()).primary_applied();
            match check_token(t, &m, primary_applied) {
                TokenCheck::Wait => {}
                TokenCheck::Redirect => return self.to_primary("/v1/query", body, false, false).await,
                TokenCheck::Refuse(why) => return ApiError::BadToken(why).response(),
            }
        }
        match consistency {
            Consistency::Strong if !leader => return self.to_primary("/v1/query", body, false, false).await,
            Consistency::Strong => {
                if let Err(r) = self.confirm_leadership(&body).await {
                    return r;
                }
            }
            Consistency::Bounded { max_lag } if leader => {
                if !self.primary_is_fresh(&m, max_lag) {
                    if let Err(r) = self.confirm_leadership(&body).await {
                        return r;
                    }
                }
            }
            Consistency::Bounded { max_lag } => {
                let ok = |s: &NodeState| {
                    let lag = s.lag(&s.metrics());
                    lag.known && Duration::from_secs_f64(lag.seconds) <= max_lag
                };
                let deadline = Instant::now() + self.read_wait;
                while !ok(self) {
                    if Instant::now() >= deadline {
                        return self.to_primary("/v1/query", body, false, false).await;
                    }
                    // A new word from the primary (or a newly applied
                    // entry) may make the lag small enough.
                    let mut rx = self.applied.clone();
                    let _ = tokio::time::timeout(self.heartbeat, rx.changed()).await;
                }
            }
            Consistency::None => {}
        }
        if let Some(t) = req.token {
            if !self.wait_applied(t.index, self.read_wait).await {
                if leader {
                    return ApiError::Timeout {
                        message: "the token's write is not applied yet".into(),
                        retry: Retry::Safe,
                    }
                    .response();
                }
                return self.to_primary("/v1/query", body, false, false).await;
            }
        }
        let applied = self.applied.borrow().index;
        match self.reads.query(req.sql, req.params).await {
            Ok((columns, rows)) => json(StatusCode::OK, &sql::rows(columns, rows, self.id, applied)),
            Err(e) => ApiError::Sql(e.to_string()).response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A primary elected in term 4 whose newest applied entry is of term
    /// 3 may miss writes the term-3 primary acknowledged: it must not
    /// serve a `bounded` read from its own database yet.
    #[test]
    fn a_new_primary_serves_bounded_reads_only_after_applying_an_entry_of_its_term() {
        let mut m = metrics(ServerState::Leader, 4, 10);
        m.vote = openraft::Vote::new_committed(4, 1);
        m.last_applied = Some(LogId::new(CommittedLeaderId::new(3, 2), 9));
        assert!(!applied_own_term(&m), "only the previous term's entries are applied");
        m.last_applied = Some(LogId::new(CommittedLeaderId::new(4, 1), 10));
        assert!(applied_own_term(&m), "its own first entry is applied");
        m.last_applied = None;
        assert!(!applied_own_term(&m), "nothing applied");
    }
    use openraft::{CommittedLeaderId, LogId};

    fn metrics(state: ServerState, term: u64, last: u64) -> RaftMetrics<NodeId, Node> {
        let mut m = RaftMetrics::new_initial(1);
        m.state = state;
        m.current_term = term;
        m.last_log_index = Some(last);
        m.last_applied = Some(LogId::new(CommittedLeaderId::new(term, 1), last));
        m
    }

    #[test]
    fn a_primary_refuses_tokens_no_write_of_its_cluster_made() {
        let m = metrics(ServerState::Leader, 3, 100);
        assert_eq!(check_token(Token { term: 3, index: 100 }, &m, None), TokenCheck::Wait);
        assert_eq!(check_token(Token { term: 1, index: 7 }, &m, None), TokenCheck::Wait);
        let forged = Token { term: 1, index: u64::MAX };
        assert!(matches!(check_token(forged, &m, None), TokenCheck::Refuse(e) if e.contains("beyond")));
        let future = Token { term: 4, index: 50 };
        assert!(matches!(check_token(future, &m, None), TokenCheck::Refuse(e) if e.contains("term 4")));
    }

    #[test]
    fn a_replica_waits_only_for_writes_it_knows_of() {
        let m = metrics(ServerState::Follower, 3, 100);
        assert_eq!(check_token(Token { term: 3, index: 90 }, &m, None), TokenCheck::Wait);
        // Not in its log yet, but the primary said it applied it: it comes.
        assert_eq!(check_token(Token { term: 3, index: 104 }, &m, Some(105)), TokenCheck::Wait);
        assert_eq!(check_token(Token { term: 3, index: 106 }, &m, Some(105)), TokenCheck::Redirect);
        assert_eq!(check_token(Token { term: 1, index: u64::MAX }, &m, Some(105)), TokenCheck::Redirect);
        assert_eq!(check_token(Token { term: 9, index: 1 }, &m, Some(105)), TokenCheck::Redirect);
    }
}
