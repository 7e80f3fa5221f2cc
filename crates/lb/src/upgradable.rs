//! Serving an HTTP/1 client connection that may switch protocols (a
//! WebSocket through the frontend): hyper hands the connection over to the
//! forwarder's tunnel after a 101, and the connection future ends there.
//! On shutdown the connection closes gracefully (its request in flight is
//! answered first); a tunnel already handed over is not a request and
//! ends with the process.
use hyper::server::conn::http1::UpgradeableConnection;
use hyper::service::HttpService;
use tokio_util::sync::CancellationToken;

/// Drive `conn` to its end; when `stop` fires, close it gracefully.
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
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
