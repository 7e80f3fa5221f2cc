//! A node's two listeners: binding them, and serving each connection
//! accepted on one with that listener's router (the API's `handle` or
//! Raft's `handle_raft`), behind the API's firewall and the TLS both
//! share.
use super::{ApiError, NodeState};
use crate::DbError;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Which of a node's listeners a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listener {
    /// The client API: every endpoint but Raft's.
    Api,
    /// Raft: `/raft/*` alone.
    Raft,
}

/// Bind a listener on `addr`: the listener and the address it is bound to.
pub(super) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), DbError> {
    let listener =
        TcpListener::bind(addr).await.map_err(|source| DbError::Io { context: format!("binding {addr}"), source })?;
    let local = listener
        .local_addr()
        .map_err(|source| DbError::Io { context: format!("the address of the listener on {addr}"), source })?;
    Ok((listener, local))
}

/// What serving one accepted connection needs.
pub(super) struct Serve {
    pub(super) state: Arc<NodeState>,
    pub(super) firewall: Arc<bulwark_firewall::Firewall>,
    pub(super) header_timeout: Duration,
    pub(super) tls: Option<bulwark_mtls::MutualTls>,
}

impl Serve {
    /// Serve a connection accepted `on` one of the listeners, on a task of
    /// its own. The firewall (`[firewall]`: ACL, rate and connection
    /// limits) guards the API; Raft answers the peer secret alone.
    pub(super) fn connection(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        on: Listener,
        graceful: &hyper_util::server::graceful::GracefulShutdown,
    ) {
        let _ = stream.set_nodelay(true);
        let permit = match on {
            Listener::Raft => None,
            Listener::Api => match self.firewall.admit(peer.ip()) {
                Ok(p) => Some(p),
                Err(refusal) => {
                    tracing::info!(client = %peer, "connection refused: {}", refusal.reason());
                    return;
                }
            },
        };
        let st = self.state.clone();
        let fw = self.firewall.clone();
        let svc = hyper::service::service_fn(move |req| {
            let st = st.clone();
            let limited = (on == Listener::Api).then(|| fw.check_rate(peer.ip()).err()).flatten();
            async move {
                if let Some(r) = limited {
                    return Ok::<_, std::convert::Infallible>(ApiError::RateLimited(r).response());
                }
                Ok(match on {
                    Listener::Api => st.handle(req).await,
                    Listener::Raft => st.handle_raft(req).await,
                })
            }
        });
        let (tls, watcher, header_timeout) = (self.tls.clone(), graceful.watcher(), self.header_timeout);
        tokio::spawn(async move {
            // The TLS handshake counts against the header timeout: a silent
            // client holds the permit no longer than one that sends no
            // request head.
            let Some(stream) = bulwark_mtls::ServerStream::accept(tls.as_ref(), stream, peer, header_timeout).await
            else {
                return;
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = watcher.watch(conn).await;
            drop(permit);
        });
    }
}
