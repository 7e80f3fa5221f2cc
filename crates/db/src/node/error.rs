//! [`ApiError`]: every way the HTTP API refuses or fails a request, with
//! its HTTP status, its machine-readable `code` and whether the client may
//! retry. Each answers with the JSON body [`ErrorBody`]
//! (`{"error": ..., "code": ..., "retryable": ..., "leader": ...}`), which
//! [`Client`](bulwark_db_api::Client) and other clients parse: a variant's code,
//! status and retry classification are part of the API (docs/db.md).
use super::{json, Resp};
use crate::node::auth::Refusal;
use bulwark_db_api::api::{ErrorBody, BAD_TOKEN};
use http::{Method, StatusCode};

/// Whether a client may send the same request again (to this node or
/// another one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Nothing took effect, or the request carries an idempotency id that
    /// makes a second attempt safe.
    Safe,
    /// Retrying would fail the same way, or could apply a write twice.
    Unsafe,
}

impl Retry {
    /// `Safe` when `safe` holds.
    pub(crate) fn when(safe: bool) -> Retry {
        if safe {
            Retry::Safe
        } else {
            Retry::Unsafe
        }
    }
}

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// The request itself is malformed (JSON, missing fields, bad request
    /// id): 400 `bad_request`.
    BadRequest(String),
    /// A read-your-writes token no write of this cluster produced: 400
    /// `bad_token`.
    BadToken(String),
    /// SQLite (or the SQL checks before it) refused a statement: 400 `sql`.
    Sql(String),
    /// No credential, or one that does not open this endpoint: 401 or 403.
    Refused(Refusal),
    /// The firewall's per-client rate limit: 429 `rate_limited`.
    RateLimited(bulwark_firewall::Refusal),
    /// No such endpoint: 404 `not_found`.
    NotFound { method: Method, path: String },
    /// The body is larger than the node accepts: 413 `too_large`.
    TooLarge { limit: usize },
    /// No primary is known, or it cannot be reached: 503 `no_leader`.
    NoLeader { message: String, leader: Option<String> },
    /// This node is not (or no longer) the primary: 503 `not_primary`.
    NotPrimary { message: String, leader: Option<String> },
    /// A write passed on to the primary failed after it was sent: its
    /// outcome is unknown. 502 `forward_failed`.
    ForwardFailed { message: String, leader: String },
    /// A leadership transfer is under way on this primary: 503
    /// `transferring`.
    Transferring,
    /// A second transfer was asked for while one runs: 409 `transferring`.
    TransferRunning,
    /// The leadership transfer did not end with the asked node leading:
    /// 503 `transfer_failed`.
    TransferFailed(String),
    /// The primary has not heard from a majority recently enough: 503
    /// `no_quorum`.
    NoQuorum(String),
    /// A wait ran out (commit, apply, catch-up): 503 `timeout`.
    Timeout { message: String, retry: Retry },
    /// Raft failed the request: 503 `raft`.
    Raft { message: String, retry: Retry },
    /// Raft has stopped on this node: 503 `stopped`.
    Stopped(String),
    /// openraft refused a membership change: 409 `membership`.
    Membership(String),
    /// No backup copy of that id on this node: 404 `not_found`.
    NoSuchBackup(String),
    /// Taking or reading a backup copy failed on this node: 500
    /// `backup_failed` (another attempt, or another node, may work).
    BackupFailed(String),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::BadToken(_) | ApiError::Sql(_) => StatusCode::BAD_REQUEST,
            ApiError::Refused(r) => r.status(),
            ApiError::RateLimited(r) => r.status(),
            ApiError::NotFound { .. } | ApiError::NoSuchBackup(_) => StatusCode::NOT_FOUND,
            ApiError::BackupFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ForwardFailed { .. } => StatusCode::BAD_GATEWAY,
            ApiError::TransferRunning | ApiError::Membership(_) => StatusCode::CONFLICT,
            ApiError::NoLeader { .. }
            | ApiError::NotPrimary { .. }
            | ApiError::Transferring
            | ApiError::TransferFailed(_)
            | ApiError::NoQuorum(_)
            | ApiError::Timeout { .. }
            | ApiError::Raft { .. }
            | ApiError::Stopped(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `code` of the JSON body.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::BadToken(_) => BAD_TOKEN,
            ApiError::Sql(_) => "sql",
            ApiError::Refused(r) => r.code(),
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::NotFound { .. } | ApiError::NoSuchBackup(_) => "not_found",
            ApiError::BackupFailed(_) => "backup_failed",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::NoLeader { .. } => "no_leader",
            ApiError::NotPrimary { .. } => "not_primary",
            ApiError::ForwardFailed { .. } => "forward_failed",
            ApiError::Transferring | ApiError::TransferRunning => "transferring",
            ApiError::TransferFailed(_) => "transfer_failed",
            ApiError::NoQuorum(_) => "no_quorum",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Raft { .. } => "raft",
            ApiError::Stopped(_) => "stopped",
            ApiError::Membership(_) => "membership",
        }
    }

    pub(crate) fn retry(&self) -> Retry {
        match self {
            ApiError::BadRequest(_)
            | ApiError::BadToken(_)
            | ApiError::Sql(_)
            | ApiError::Refused(_)
            | ApiError::NotFound { .. }
            | ApiError::NoSuchBackup(_)
            | ApiError::TooLarge { .. }
            | ApiError::ForwardFailed { .. }
            | ApiError::Stopped(_) => Retry::Unsafe,
            ApiError::RateLimited(_)
            | ApiError::NoLeader { .. }
            | ApiError::NotPrimary { .. }
            | ApiError::Transferring
            | ApiError::TransferRunning
            | ApiError::TransferFailed(_)
            | ApiError::NoQuorum(_)
            | ApiError::Membership(_)
            | ApiError::BackupFailed(_) => Retry::Safe,
            ApiError::Timeout { retry, .. } | ApiError::Raft { retry, .. } => *retry,
        }
    }

    /// The primary's address, where the error names it.
    fn leader(&self) -> Option<String> {
        match self {
            ApiError::NoLeader { leader, .. } | ApiError::NotPrimary { leader, .. } => leader.clone(),
            ApiError::ForwardFailed { leader, .. } => Some(leader.clone()),
            _ => None,
        }
    }

    /// The human-readable `error` of the JSON body.
    fn message(&self) -> String {
        match self {
            ApiError::BadRequest(m)
            | ApiError::BadToken(m)
            | ApiError::Sql(m)
            | ApiError::TransferFailed(m)
            | ApiError::NoQuorum(m)
            | ApiError::Stopped(m)
            | ApiError::Membership(m)
            | ApiError::NoSuchBackup(m)
            | ApiError::BackupFailed(m) => m.clone(),
            ApiError::Refused(r) => r.message().to_string(),
            ApiError::RateLimited(r) => r.reason(),
            ApiError::NotFound { method, path } => format!("no such endpoint: {method} {path}"),
            ApiError::TooLarge { limit } => format!("request body larger than {limit} bytes"),
            ApiError::NoLeader { message, .. }
            | ApiError::NotPrimary { message, .. }
            | ApiError::ForwardFailed { message, .. }
            | ApiError::Timeout { message, .. }
            | ApiError::Raft { message, .. } => message.clone(),
            ApiError::Transferring => "leadership transfer in progress; retry".to_string(),
            ApiError::TransferRunning => "a leadership transfer is already running".to_string(),
        }
    }

    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.message(),
            code: self.code().to_string(),
            retryable: self.retry() == Retry::Safe,
            leader: self.leader(),
        }
    }

    /// The JSON answer.
    pub(crate) fn response(&self) -> Resp {
        json(self.status(), &self.body())
    }
}

impl From<ApiError> for Resp {
    fn from(e: ApiError) -> Resp {
        e.response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(e: ApiError) -> (StatusCode, String) {
        let r = e.response();
        let status = r.status();
        (status, String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
    }

    /// The bodies clients parse, byte for byte as the API has always sent
    /// them (field order, `leader` left out when unknown).
    #[tokio::test]
    async fn error_bodies_keep_their_wire_format() {
        let cases = [
            (
                ApiError::BadRequest("`statements` is empty".into()),
                400,
                r#"{"error":"`statements` is empty","code":"bad_request","retryable":false}"#,
            ),
            (
                ApiError::NotPrimary {
                    message: "this node is not the primary (any more); retry".into(),
                    leader: Some("10.0.0.1:7001".into()),
                },
                503,
                r#"{"error":"this node is not the primary (any more); retry","code":"not_primary","retryable":true,"leader":"10.0.0.1:7001"}"#,
            ),
            (
                ApiError::NotFound { method: Method::GET, path: "/nope".into() },
                404,
                r#"{"error":"no such endpoint: GET /nope","code":"not_found","retryable":false}"#,
            ),
            (
                ApiError::TooLarge { limit: 1024 },
                413,
                r#"{"error":"request body larger than 1024 bytes","code":"too_large","retryable":false}"#,
            ),
            (
                ApiError::TransferRunning,
                409,
                r#"{"error":"a leadership transfer is already running","code":"transferring","retryable":true}"#,
            ),
            (
                ApiError::Timeout { message: "late".into(), retry: Retry::when(false) },
                503,
                r#"{"error":"late","code":"timeout","retryable":false}"#,
            ),
            (ApiError::BadToken("ahead".into()), 400, r#"{"error":"ahead","code":"bad_token","retryable":false}"#),
            (
                ApiError::Refused(Refusal::Unknown),
                401,
                r#"{"error":"missing or wrong credential (Authorization: Bearer <secret>)","code":"unauthorized","retryable":false}"#,
            ),
        ];
        for (error, status, body) in cases {
            assert_eq!(
                body_of(error.clone()).await,
                (StatusCode::from_u16(status).unwrap(), body.to_string()),
                "{error:?}"
            );
        }
    }

    /// What the client library makes of each kind: a retryable refusal
    /// sends it to another node, a non-retryable one ends the call.
    #[test]
    fn retry_classification_follows_the_kind() {
        assert_eq!(ApiError::Sql("x".into()).retry(), Retry::Unsafe);
        assert_eq!(ApiError::NoQuorum("x".into()).retry(), Retry::Safe);
        assert_eq!(ApiError::Raft { message: "x".into(), retry: Retry::when(true) }.retry(), Retry::Safe);
        assert_eq!(ApiError::ForwardFailed { message: "x".into(), leader: "a:1".into() }.retry(), Retry::Unsafe);
    }
}
