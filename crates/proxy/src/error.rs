//! Forwarding errors, typed where they are born (as pingora-error does):
//! what went wrong ([`ErrorKind`]), whose failure it is ([`ErrorSource`]),
//! and whether sending the request again may help ([`RetryType`]).
//!
//! The forwarder never guesses a cause from a message: a failure of the
//! client's request body is made a [`ProxyError`] with source
//! [`ErrorSource::Client`] inside the body stream ([`crate::body`]), and
//! travels up through hyper's error chain to [`ProxyError::from_send`].
//! Only failures whose source is [`ErrorSource::Upstream`] count against a
//! server (passive ejection); client failures are never retried.
use http::StatusCode;
use std::fmt;

/// Whose failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client (downstream): its request or its connection.
    Client,
    /// The server the request was sent to.
    Upstream,
    /// This proxy: no server to send to, or its own limits.
    Internal,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request body grew past the limit (413).
    BodyTooLarge,
    /// The request body was not received in time (408).
    BodyTimeout,
    /// The request body could not be read: a malformed chunk, a body
    /// shorter than announced, the client's connection closed (400).
    BodyBroken,
    /// No server may take the request (503).
    NoServer,
    /// Connecting to a server failed or timed out (502).
    Connect,
    /// The server closed, reset or garbled the exchange after the request
    /// was sent (502).
    ResponseBroken,
    /// The server did not start its answer within the server timeout (504).
    ResponseTimeout,
    /// The health check marked the server down while the request waited
    /// for it (502).
    MarkedDown,
    /// The server closed the connection before answering (502); on a
    /// reused keep-alive connection this is usually the close racing the
    /// request, not a failure of the server.
    ClosedEarly,
    /// The request never left: hyper handed it back unsent, or a pooled
    /// connection was found closed (502 once fresh connections ran out).
    Unsent,
    /// A request whose body was already streamed cannot be sent again (502).
    NotReplayable,
}

impl ErrorKind {
    /// The status the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::BodyBroken => StatusCode::BAD_REQUEST,
            ErrorKind::NoServer => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Connect
            | ErrorKind::ResponseBroken
            | ErrorKind::MarkedDown
            | ErrorKind::ClosedEarly
            | ErrorKind::Unsent
            | ErrorKind::NotReplayable => StatusCode::BAD_GATEWAY,
            ErrorKind::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// May the request be sent again, and where (pingora-error's `RetryType`).
/// Whether it can be sent again at all is the request's own property
/// (method, `Idempotency-Key`, body kept): see the forwarder's retry phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryType {
    /// Sending it again cannot help or may repeat its effect.
    Never,
    /// Another server may succeed: the request never reached this
    /// server's application, or this server failed.
    OtherServer,
    /// A fresh connection to the same server first (a bounded number of
    /// times), then another server: the request never left, or a reused
    /// keep-alive connection closed as it went out.
    FreshConnection,
}

/// One forwarding failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub source: ErrorSource,
    pub retry: RetryType,
    /// Human detail for logs and the error page.
    pub detail: String,
}

impl ProxyError {
    fn new(kind: ErrorKind, source: ErrorSource, retry: RetryType, detail: impl Into<String>) -> Self {
        ProxyError { kind, source, retry, detail: detail.into() }
    }

    /// The client's body failed: never retried, never the server's fault.
    pub fn client_body(kind: ErrorKind, detail: impl Into<String>) -> Self {
        ProxyError::new(kind, ErrorSource::Client, RetryType::Never, detail)
    }

    pub fn no_server(detail: impl Into<String>) -> Self {
        ProxyError::new(ErrorKind::NoServer, ErrorSource::Internal, RetryType::Never, detail)
    }

    /// Connecting failed: the request never left, another server may take it.
    pub fn connect(detail: impl Into<String>) -> Self {
        ProxyError::new(ErrorKind::Connect, ErrorSource::Upstream, RetryType::OtherServer, detail)
    }

    /// The server broke the exchange; a replayable request may go elsewhere.
    pub fn response_broken(detail: impl Into<String>) -> Self {
        ProxyError::new(ErrorKind::ResponseBroken, ErrorSource::Upstream, RetryType::OtherServer, detail)
    }

    /// The server accepted the request but did not answer in time: it may
    /// still be working on it, so it is not sent elsewhere.
    pub fn response_timeout(detail: impl Into<String>) -> Self {
        ProxyError::new(ErrorKind::ResponseTimeout, ErrorSource::Upstream, RetryType::Never, detail)
    }

    pub fn marked_down(detail: impl Into<String>) -> Self {
        ProxyError::new(ErrorKind::MarkedDown, ErrorSource::Upstream, RetryType::OtherServer, detail)
    }

    /// The server closed the connection without answering.
    pub fn closed_early(detail: impl Into<String>) -> Self {
        ProxyError::new(ErrorKind::ClosedEarly, ErrorSource::Upstream, RetryType::FreshConnection, detail)
    }

    /// The request never left; it is in hand to send again.
    pub fn unsent(detail: impl Into<String>) -> Self {
        ProxyError::new(ErrorKind::Unsent, ErrorSource::Upstream, RetryType::FreshConnection, detail)
    }

    pub fn not_replayable() -> Self {
        ProxyError::new(ErrorKind::NotReplayable, ErrorSource::Internal, RetryType::Never, "request body already sent")
    }

    /// Classify an error of sending a request to a server: a failure of
    /// the client's body stream was born a [`ProxyError`] and is found in
    /// hyper's error chain; a connection closed before the answer is
    /// [`ErrorKind::ClosedEarly`]; anything else is the server's.
    pub fn from_send(err: &hyper::Error) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cause {
            if let Some(born) = e.downcast_ref::<ProxyError>() {
                return born.clone();
            }
            cause = e.source();
        }
        if err.is_incomplete_message() || err.is_canceled() {
            return ProxyError::closed_early(err.to_string());
        }
        ProxyError::response_broken(err.to_string())
    }

    /// Whether this failure counts against the server (passive health).
    pub fn is_upstream(&self) -> bool {
        self.source == ErrorSource::Upstream
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_sources() {
        let e = ProxyError::client_body(ErrorKind::BodyBroken, "bad chunk");
        assert_eq!((e.status(), e.is_upstream(), e.retry), (StatusCode::BAD_REQUEST, false, RetryType::Never));
        let e = ProxyError::connect("refused");
        assert_eq!((e.status(), e.is_upstream(), e.retry), (StatusCode::BAD_GATEWAY, true, RetryType::OtherServer));
        let e = ProxyError::response_timeout("slow");
        assert_eq!((e.status(), e.is_upstream(), e.retry), (StatusCode::GATEWAY_TIMEOUT, true, RetryType::Never));
        let e = ProxyError::closed_early("eof");
        assert_eq!((e.status(), e.is_upstream(), e.retry), (StatusCode::BAD_GATEWAY, true, RetryType::FreshConnection));
        assert_eq!(ProxyError::no_server("none").status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
