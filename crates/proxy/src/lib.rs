//! The shared forwarding core used by the load balancer and the web tier.
//!
//! Owns: upstream pools ([`Upstream`]) and their servers' live state
//! ([`ServerState`]), the balancing algorithms, active health checks and
//! passive ejection, the per-thread keep-alive connection pool, HTTP request
//! forwarding with retries and a retry budget ([`Forwarder`]), forwarding
//! errors typed where they are born ([`ProxyError`]: whose failure, may a
//! retry help), forwarded headers, header rules ([`header_rules`]), request ids ([`request_id`]), the send-progress deadline of client
//! connections ([`send_stall`]), protocol upgrades (WebSocket and any other
//! protocol a server switches to with 101) tunnelled both ways, and
//! layer-4 tunnelling ([`tcp`]).
//!
//! Must not touch: listening sockets, TLS, firewalling, config files or
//! process lifecycle; the roles (lb, web) own those and call in here with a
//! request and a client address.
//!
//! Compression of responses ([`compress`], gzip and Brotli by the
//! client's `Accept-Encoding`, [`encoding`]) is shared by the web tier and
//! the lb.
//!
//! Sticky sessions ([`StickyCookie`]) pin a client to a server with a
//! signed cookie.

mod access;
mod attempt;
mod balance;
pub mod body;
pub mod compress;
pub mod encoding;
pub mod error;
mod forward;
pub mod header_rules;
pub mod headers;
pub mod health;
mod pool;
mod prepare;
pub mod request_id;
pub mod send_stall;
mod server;
mod sticky;
pub mod tcp;
mod upgrade;
pub use upgrade::TunnelHold;
mod upstream;

pub use body::ProxyBody;
pub use compress::Compressor;
pub use error::{ErrorKind, ErrorSource, ProxyError, RetryType};
pub use forward::{error_response, forget_server, ClientContext, ForwardOptions, Forwarder, IDEMPOTENCY_KEY};
pub use header_rules::{CompiledRules, HeaderRuleError, TlsFacts};
pub use health::{HealthCheck, ProbeError};
pub use request_id::{RequestIdMode, X_REQUEST_ID};
pub use server::{LatencyHistogram, ServerState, ServerStats, LATENCY_BUCKETS_US};
pub use sticky::StickyCookie;
pub use upstream::{RetryBudget, Upstream, UpstreamError};
