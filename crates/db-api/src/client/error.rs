//! How a [`Client`](super::Client) call fails.

/// Why a [`Client`](crate::Client) call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// SQLite refused the statement (syntax, constraint, ...); nothing was
    /// written.
    #[error("{0}")]
    Sql(String),
    /// The node refused the request (bad request, wrong secret, too large).
    #[error("rejected (HTTP {status}, {code}): {message}")]
    Rejected { status: u16, code: String, message: String },
    /// No node could serve the request before the deadline; nothing was
    /// written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The write may have reached a primary but its outcome is unknown (the
    /// primary died or lost its majority mid-write and the deadline ended).
    /// Resolve it by calling [`Client::execute_once`](crate::Client::execute_once) with
    /// [`AmbiguousWrite::request_id`] and the same statements: the stored
    /// outcome comes back (`replayed = true`) if the write was applied, or it
    /// is applied now; never twice.
    #[error("write outcome unknown: {0}")]
    Ambiguous(AmbiguousWrite),
}

/// A write whose outcome is unknown (see [`ClientError::Ambiguous`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmbiguousWrite {
    /// The request id the write was sent with (the caller's, or the one
    /// [`Client::execute`](crate::Client::execute) generated); `None` for calls without one
    /// (membership changes, leadership transfer).
    pub request_id: Option<String>,
    /// Why the outcome is unknown: the last error seen.
    pub reason: String,
}

impl AmbiguousWrite {
    pub(super) fn new(reason: impl Into<String>) -> AmbiguousWrite {
        AmbiguousWrite { request_id: None, reason: reason.into() }
    }
}

impl std::fmt::Display for AmbiguousWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.request_id {
            Some(id) => write!(f, "{} (request id {id})", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}
