//! Layer-4 (TCP) proxying: pick a server, connect (moving on to another
//! server when a connect fails), then copy bytes both ways until either side
//! closes or the tunnel is idle for too long.
use crate::server::InFlight;
use crate::upstream::Upstream;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Tunnel one accepted client connection to a server of `upstream`.
pub async fn tunnel(
    upstream: &Upstream,
    mut client: TcpStream,
    peer: SocketAddr,
    connect_timeout: Duration,
    idle_timeout: Duration,
) {
    let mut tried = Vec::new();
    let attempts = 1 + upstream.config.retries.attempts as usize;
    for _ in 0..attempts {
        let Some(idx) = upstream.pick(peer.ip(), &tried) else { break };
        tried.push(idx);
        let server = &upstream.servers[idx];
        let _guard = InFlight::enter(server);
        server.stats.requests.fetch_add(1, Ordering::Relaxed);
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(server.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                server.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                let p = &upstream.config.passive;
                if server.record_failure(p.consecutive_errors, p.eject_for) {
                    tracing::warn!(backend = upstream.name(), server = %server.name, error = %e, "server ejected after consecutive errors");
                }
                continue;
            }
            Err(_) => {
                server.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        server.record_success();
        let _ = stream.set_nodelay(true);
        let _ = client.set_nodelay(true);
        let (up_bytes, down_bytes) = splice(client, stream, idle_timeout).await;
        tracing::info!(target: "access", backend = upstream.name(), client = %peer, server = %server.name, up_bytes, down_bytes, "tcp session closed");
        return;
    }
    tracing::warn!(backend = upstream.name(), client = %peer, "tcp: no server could be reached; closing client connection");
    let _ = client.shutdown().await;
}

/// Copy bytes both ways between `client` and `server` until both sides
/// have closed, a write fails, or nothing moved in either direction for
/// `idle`. A side that closes has its close passed on (half-close). Returns
/// the bytes sent (client to server, server to client).
pub(crate) async fn splice<C, S>(client: C, server: S, idle: Duration) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite,
    S: AsyncRead + AsyncWrite,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = tokio::io::split(server);
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut sbuf = vec![0u8; 16 * 1024];
    let (mut up, mut down) = (0u64, 0u64);
    let (mut client_open, mut server_open) = (true, true);
    while client_open || server_open {
        tokio::select! {
            r = cr.read(&mut cbuf), if client_open => match r {
                Ok(0) | Err(_) => { client_open = false; let _ = sw.shutdown().await; }
                Ok(n) => { if sw.write_all(&cbuf[..n]).await.is_err() { break; } up += n as u64; }
            },
            r = sr.read(&mut sbuf), if server_open => match r {
                Ok(0) | Err(_) => { server_open = false; let _ = cw.shutdown().await; }
                Ok(n) => { if cw.write_all(&sbuf[..n]).await.is_err() { break; } down += n as u64; }
            },
            _ = tokio::time::sleep(idle) => {
                tracing::info!("tunnel idle for {:?}; closing", idle);
                break;
            }
        }
    }
    (up, down)
}
