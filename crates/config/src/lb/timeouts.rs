//! `[timeouts]` of the lb: how long each side of a connection may take.
use crate::Validator;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Connecting to a server.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// Client must send the whole request body within this time (→ 408).
    #[serde(with = "humantime_serde")]
    pub client_body: Duration,
    /// Client must send a complete request head within this time. The clock
    /// starts when the lb waits for a request, so it also closes keep-alive
    /// connections idle for this long (as HAProxy's `http-keep-alive`).
    #[serde(with = "humantime_serde")]
    pub client_header: Duration,
    /// Server must start answering within this time (→ 504).
    #[serde(with = "humantime_serde")]
    pub server: Duration,
    /// A client that accepts no byte of its response for this long is
    /// disconnected (nginx's `send_timeout`): a client reading a large
    /// answer very slowly cannot hold a connection forever.
    #[serde(with = "humantime_serde")]
    pub client_send: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed
    /// (GOAWAY, then close).
    #[serde(with = "humantime_serde")]
    pub http2_idle: Duration,
    /// HTTP/2 keep-alive: a PING is sent after this long without a frame
    /// from the client...
    #[serde(with = "humantime_serde")]
    pub http2_ping_interval: Duration,
    /// ...and the connection is closed when its answer takes longer.
    #[serde(with = "humantime_serde")]
    pub http2_ping_timeout: Duration,
    /// TCP mode: a tunnel idle in both directions is closed after this.
    #[serde(with = "humantime_serde")]
    pub tunnel: Duration,
    /// On SIGTERM, wait at most this long for in-flight requests.
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let secs = Duration::from_secs;
        Timeouts {
            connect: secs(3),
            client_header: secs(10),
            client_body: secs(30),
            server: secs(30),
            client_send: secs(60),
            http2_idle: secs(60),
            http2_ping_interval: secs(20),
            http2_ping_timeout: secs(10),
            tunnel: secs(3600),
            drain: secs(30),
        }
    }
}

impl Timeouts {
    /// Every timeout but `client_body` and `drain` must be greater than 0.
    pub(crate) fn validate_in(&self, v: &mut Validator) {
        for (k, d) in [
            ("connect", self.connect),
            ("client_header", self.client_header),
            ("server", self.server),
            ("client_send", self.client_send),
            ("http2_idle", self.http2_idle),
            ("http2_ping_interval", self.http2_ping_interval),
            ("http2_ping_timeout", self.http2_ping_timeout),
            ("tunnel", self.tunnel),
        ] {
            if d.is_zero() {
                v.error(k, "must be greater than 0");
            }
        }
    }
}
