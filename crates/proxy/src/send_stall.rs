//! The send-progress deadline of client connections (nginx's
//! `send_timeout`), shared by the lb and the web tier: a write to the
//! client that stays blocked for the configured time, because the client
//! accepted no byte in that time, fails with `TimedOut` and the connection
//! ends. A client reading a large answer very slowly (or not at all)
//! cannot pin a connection, its buffers and the server connection behind
//! it forever.
//!
//! [`SendStall`] is the accounting alone: each connection wrapper (tokio's
//! `AsyncWrite` in the lb, hyper's `rt::Write` in the web tier) passes it
//! the result of every write attempt. The timer is armed only when a write
//! blocks, and re-armed only on a new stall.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub struct SendStall {
    peer: SocketAddr,
    timeout: Duration,
    /// The config key named in the log line and the error.
    key: &'static str,
    timer: Option<Pin<Box<Sleep>>>,
    blocked: bool,
}

impl SendStall {
    pub fn new(peer: SocketAddr, timeout: Duration, key: &'static str) -> SendStall {
        SendStall { peer, timeout, key, timer: None, blocked: false }
    }

    /// Account for one write attempt's result: progress clears the stall,
    /// a blocked write arms the deadline (once per stall) and fails once it
    /// has passed.
    pub fn account<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
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
