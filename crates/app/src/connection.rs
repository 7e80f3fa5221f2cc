//! One accepted client connection of the app role, the guestbook's and
//! the user program's front alike: the mutual TLS handshake when the role
//! has `mutual_tls` (it counts against the header timeout), then HTTP/1.1
//! with the header timeout (and protocol upgrades), drained with the
//! role's graceful shutdown.

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Serve `stream` from `peer` with `svc` until it closes or the shutdown
/// behind `watcher` drains it.
pub(crate) async fn serve<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<bulwark_mtls::MutualTls>,
    header_timeout: Duration,
    svc: S,
    watcher: Watcher,
) where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<B>> + Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(stream) = bulwark_mtls::ServerStream::accept(tls.as_ref(), stream, peer, header_timeout).await else {
        return;
    };
    // HTTP/1.1 only, with upgrades: a WebSocket's connection is handed
    // over after its 101.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    let _ = watcher.watch(conn).await;
}
