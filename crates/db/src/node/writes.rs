//! `POST /v1/execute`: checking a write, committing it through the
//! primary's group commit, and the answer.
use super::{bad_request, json, parse, ApiError, NodeState, Resp, Retry};
use crate::group_commit::Committed;
use bulwark_db_api::api::{ExecuteRequest, ExecuteResult, Token};
use bulwark_db_api::raft_types::{ApplyOutcome, Write};
use bulwark_db_sm::sql;
use bytes::Bytes;
use http::StatusCode;
use openraft::ServerState;
use std::sync::atomic::Ordering;

impl NodeState {
    pub(super) async fn execute(&self, body: Bytes, forwarded: bool) -> Resp {
        let req: ExecuteRequest = match parse(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        if req.statements.is_empty() {
            return bad_request("`statements` is empty");
        }
        if let Some(Err(e)) = req.request_id.as_deref().map(bulwark_db_api::api::check_request_id) {
            return bad_request(e.to_string());
        }
        let m = self.metrics();
        if m.state != ServerState::Leader {
            return self.to_primary("/v1/execute", body, forwarded, self.forward_writes).await;
        }
        if self.transferring.load(Ordering::SeqCst) {
            return ApiError::Transferring.response();
        }
        if !self.has_quorum(&m) {
            return ApiError::NoQuorum(match self.quorum_age(&m) {
                Some(age) => {
                    format!("this primary has not heard from a majority for {} ms and refuses writes", age.as_millis())
                }
                None => "this primary has not heard from a majority in its term and refuses writes".to_string(),
            })
            .response();
        }
        let statements = req.statements;
        for (i, s) in statements.iter().enumerate() {
            match sql::check_length(&s.sql).and_then(|()| sql::check_write(&s.sql)) {
                Ok(()) => {}
                Err(e) => {
                    let e = if i > 0 { format!("statement {}: {e}", i + 1) } else { e.to_string() };
                    return ApiError::Sql(e).response();
                }
            }
        }
        // With a request id a retry cannot apply the write twice, so an
        // unknown outcome is worth retrying.
        let idempotent = req.request_id.is_some();
        let write = Write { statements, request_id: req.request_id };
        match tokio::time::timeout(self.write_timeout, self.writes.commit(write, body.len())).await {
            Err(_) => ApiError::Timeout {
                message: format!(
                    "the write was not committed within {:?}: this primary may have lost its majority; the outcome is unknown",
                    self.write_timeout
                ),
                retry: Retry::when(idempotent),
            }
            .response(),
            Ok(Committed::NotPrimary) => self.to_primary("/v1/execute", body, forwarded, self.forward_writes).await,
            Ok(Committed::Unknown(e)) => {
                ApiError::Raft { message: e, retry: Retry::when(idempotent) }.response()
            }
            Ok(Committed::Done { log_id, outcome }) => {
                let token = Token { term: log_id.leader_id.term, index: log_id.index };
                execute_reply(outcome, token, false)
            }
        }
    }
}

/// The answer to a committed write.
fn execute_reply(outcome: ApplyOutcome, token: Token, replayed: bool) -> Resp {
    match outcome {
        ApplyOutcome::Done(results) => json(
            StatusCode::OK,
            &ExecuteResult {
                rows_affected: results.iter().map(|r| r.rows_affected).sum(),
                last_insert_id: results.last().map(|r| r.last_insert_id).unwrap_or(0),
                results,
                token,
                replayed,
            },
        ),
        ApplyOutcome::Failed(msg) => ApiError::Sql(msg).response(),
        ApplyOutcome::Replayed { term, index, first } => execute_reply(*first, Token { term, index }, true),
    }
}
