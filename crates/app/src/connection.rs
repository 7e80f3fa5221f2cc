//! One accepted client connection of the app role, the guestbook's and
//! the user program's front alike: the mutual TLS handshake when the role
//! has `tls_*` keys (it counts against the header timeout), then HTTP/1.1
//! with the header timeout, drained with the role's graceful shutdown.

use hyper::body::{Body, Incoming};
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Serve `stream` from `peer` with `svc` until it closes or the shutdown
/// behind `watcher` drains it.
pub(crate) async fn serve<S>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<bulwark_mtls::MutualTls>,
    header_timeout: Duration,
    svc: S,
    watcher: Watcher,
) where
    S: HttpService<Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as Body>::Data: Send,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = match &tls {
        None => bulwark_mtls::Stream::Plain(stream),
        Some(tls) => match tls.accept(stream, header_timeout).await {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(client = %peer, "TLS handshake refused: {e}");
                return;
            }
        },
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), svc);
    let _ = watcher.watch(conn).await;
}
