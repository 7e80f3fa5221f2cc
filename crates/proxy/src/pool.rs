//! Per-thread keep-alive pool of HTTP/1.1 connections to servers.
//!
//! Written by hand rather than using hyper-util's legacy `Client` because
//! the proxy must choose the server itself (balancing), tell a connect
//! failure from a failure after the request was written (retry rules), and
//! keep each worker thread's connections to itself without a shared lock.
//! Every worker runs a `current_thread` runtime, so a thread-local pool is
//! lock-free and its connections are driven by the thread that uses them.
use crate::body::RequestBody;
use hyper::client::conn::http1;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

pub(crate) type Sender = http1::SendRequest<RequestBody>;

thread_local! {
    static IDLE: RefCell<HashMap<u64, Vec<Sender>>> = RefCell::new(HashMap::new());
}

/// Take an idle, open connection to server `id`, if this thread has one.
pub(crate) fn checkout(id: u64) -> Option<Sender> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&id)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    })
}

/// Give a connection back after its response body has been read.
pub(crate) fn checkin(id: u64, sender: Sender, max_idle: usize) {
    if sender.is_closed() || max_idle == 0 {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(id).or_default();
        if list.len() < max_idle {
            list.push(sender);
        }
    });
}

/// Drop every idle connection to server `id` on this thread.
pub(crate) fn forget(id: u64) {
    IDLE.with(|idle| {
        idle.borrow_mut().remove(&id);
    });
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect to {0}: timed out")]
    Timeout(SocketAddr),
    #[error("connect to {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("TLS handshake with {0}: {1}")]
    Tls(SocketAddr, std::io::Error),
    #[error("handshake with {0}: {1}")]
    Handshake(SocketAddr, hyper::Error),
}

/// Open a new connection and drive it on the current runtime; over mutual
/// TLS with `tls` (the server's certificate must name `addr`'s IP). The
/// TCP connect and the TLS handshake share `timeout`. The connection is
/// pooled with its TLS session: one handshake per connection, not per
/// request. With `upgrades`, the connection can be handed over after a
/// `101 Switching Protocols` (a tunnel, see [`crate::upgrade`]); such a
/// connection is never pooled.
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&bulwark_mtls::MutualTls>,
    upgrades: bool,
) -> Result<Sender, ConnectError> {
    let open = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| ConnectError::Io(addr, e))?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => Ok(bulwark_mtls::Stream::Plain(stream)),
            Some(tls) => {
                let name = bulwark_mtls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                tls.connect(stream, name).await.map_err(|e| ConnectError::Tls(addr, e))
            }
        }
    };
    let stream = match tokio::time::timeout(timeout, open).await {
        Err(_) => return Err(ConnectError::Timeout(addr)),
        Ok(r) => r?,
    };
    let (sender, conn) = http1::Builder::new()
        .writev(false)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Handshake(addr, e))?;
    tokio::spawn(async move {
        let ended = if upgrades { conn.with_upgrades().await } else { conn.await };
        if let Err(e) = ended {
            tracing::debug!(%addr, error = %e, "server connection ended with error");
        }
    });
    Ok(sender)
}
