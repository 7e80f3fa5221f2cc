//! The send-progress deadline of client connections (nginx's
//! `send_timeout`), shared by the lb and the web tier: a write to the
//! client that stays blocked for the configured time, because the client
//! accepted no byte in that time, fails with `TimedOut` and the connection
//! ends. A client reading a large answer very slowly (or not at all)
//! cannot pin a connection, its buffers and the server connection behind
//! it forever.
//!
//! [`SendDeadline`] wraps a client's stream (under TLS, so it sees the
//! bytes the client's kernel accepts whatever the protocol above: HTTP/1.1
//! or HTTP/2) and passes the result of every write attempt to
//! `SendStall`, the accounting. The timer is armed only when a write
//! blocks, and re-armed only on a new stall.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

struct SendStall {
    peer: SocketAddr,
    timeout: Duration,
    /// The config key named in the log line and the error.
    key: &'static str,
    timer: Option<Pin<Box<Sleep>>>,
    blocked: bool,
}

impl SendStall {
    fn new(peer: SocketAddr, timeout: Duration, key: &'static str) -> SendStall {
        SendStall { peer, timeout, key, timer: None, blocked: false }
    }

    /// Account for one write attempt's result: progress clears the stall,
    /// a blocked write arms the deadline (once per stall) and fails once it
    /// has passed.
    fn account<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.blocked = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !self.blocked {
                    self.blocked = true;
                    let deadline = Instant::now() + self.timeout;
                    match self.timer.as_mut() {
                        Some(t) => t.as_mut().reset(deadline),
                        None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                if let Some(t) = self.timer.as_mut() {
                    ready!(t.as_mut().poll(cx));
                }
                let why = format!("the client accepted no data for {:?} ({})", self.timeout, self.key);
                tracing::info!(client = %self.peer, "closing: {why}");
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
            }
        }
    }
}

/// A client's stream with the send-progress deadline on its writes (see
/// the module docs).
pub struct SendDeadline<T> {
    inner: T,
    stall: SendStall,
}

impl<T> SendDeadline<T> {
    /// `key` is the config key of `timeout`, named in the log line and
    /// the error.
    pub fn new(inner: T, peer: SocketAddr, timeout: Duration, key: &'static str) -> Self {
        SendDeadline { inner, stall: SendStall::new(peer, timeout, key) }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendDeadline<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendDeadline<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.stall.account(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.stall.account(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.stall.account(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.stall.account(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that never reads: writes block once both socket buffers are
    /// full, and the deadline ends them; a reading peer keeps them going.
    #[tokio::test]
    async fn a_peer_that_reads_nothing_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _peer = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let mut io = SendDeadline::new(server, peer, Duration::from_millis(200), "timeouts.send");
        let chunk = vec![0u8; 64 * 1024];
        let err = loop {
            if let Err(e) = io.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    }
}
