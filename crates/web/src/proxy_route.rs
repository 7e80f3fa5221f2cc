//! The hook through which requests under a `[[proxy]]` prefix leave the web
//! role. The forwarding itself belongs to `bulwark-proxy`; this crate only
//! matches the prefix and hands the request over.
use crate::body::WebBody;
use http::{Request, Response};
use hyper::body::Incoming;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

/// The future a [`ProxyRoute`] returns. It runs on the worker thread that
/// accepted the connection and need not be `Send`.
pub type RouteFuture<'a> = Pin<Box<dyn Future<Output = Response<WebBody>> + 'a>>;

/// Forwards the requests of one `[[proxy]]` route to its upstream servers.
///
/// One value serves every worker thread (it is shared behind an `Arc`).
/// `forward` must always produce a response: errors become 502/503/504. The
/// request arrives untouched (body not read, prefix not stripped); the web
/// role has already refused a declared `Content-Length` above
/// `limits.max_body_bytes` (413), so the route enforces the limit for
/// chunked bodies and `timeouts.body` itself.
pub trait ProxyRoute: Send + Sync + 'static {
    fn forward(&self, req: Request<Incoming>, client: SocketAddr) -> RouteFuture<'_>;
    /// Whether a request could be forwarded now (some server is
    /// available); `/health` reports the route as degraded when not.
    fn has_available_server(&self) -> bool {
        true
    }
    /// Each server of the route (its address) and whether
    /// requests may go to it now (health checks pass, not ejected): shown
    /// in `/metrics` as `bulwark_web_upstream_available`.
    fn servers(&self) -> Vec<(String, bool)> {
        Vec::new()
    }
    /// Tunnels (upgraded connections such as WebSockets) the route has
    /// opened, and those open now.
    fn tunnels(&self) -> (u64, u64) {
        (0, 0)
    }
    /// How long a server may take to answer (`server_timeout`); a
    /// background cache refresh, which no client waits for, is abandoned
    /// after it, its body included.
    fn server_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(30)
    }
}
