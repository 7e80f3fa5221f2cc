//! Serving an HTTP/1 client connection that may switch protocols (a
//! WebSocket through the frontend): hyper hands the connection over to the
//! forwarder's tunnel after a 101, and the connection future ends there.
//! On shutdown the connection closes gracefully: its request in flight is
//! answered first, with `Connection: close`, and an idle keep-alive
//! connection is kept for [`IDLE_GRACE`] for a next request, answered the
//! same way, before it is closed (HAProxy's `idle-close-on-response`): a
//! client that sends on it just as the lb stops is answered rather than
//! reset. A tunnel already handed over is not a request and ends with the
//! process.
use hyper::server::conn::http1::UpgradeableConnection;
use hyper::service::HttpService;
use tokio_util::sync::CancellationToken;

/// How long after a stop an idle keep-alive connection waits for a next
/// request before it is closed.
pub(crate) const IDLE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Drive `conn` to its end; when `stop` fires, let it answer a request
/// for up to [`IDLE_GRACE`] (the service marks answers `Connection: close`
/// once `stop` fired), then close it gracefully.
pub(crate) async fn serve<I, S, B>(conn: UpgradeableConnection<I, S>, stop: &CancellationToken) -> hyper::Result<()>
where
    S: HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            if let Ok(r) = tokio::time::timeout(IDLE_GRACE, conn.as_mut()).await {
                return r;
            }
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
