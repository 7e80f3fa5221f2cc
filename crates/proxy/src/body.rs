//! Response bodies the proxy hands back: either a server's streamed body
//! (which returns its connection to the pool when it ends) or a small
//! locally generated one. An enum, not a boxed trait object, to keep the
//! hot path free of allocations.
use crate::pool::{self, Sender};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub enum ProxyBody {
    /// Streaming from a server.
    Upstream(PooledBody),
    /// Generated here (errors, redirects, small static answers).
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(b.into()))
    }
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

/// A server's response body; gives the connection back to this thread's
/// pool once the body has been read to the end.
pub struct PooledBody {
    inner: Incoming,
    giveback: Option<(u64, Sender, usize)>,
}

impl PooledBody {
    pub(crate) fn new(inner: Incoming, server_id: u64, sender: Sender, max_idle: usize) -> Self {
        let mut b = PooledBody { inner, giveback: Some((server_id, sender, max_idle)) };
        if b.inner.is_end_stream() {
            b.release();
        }
        b
    }

    fn release(&mut self) {
        if let Some((id, sender, max_idle)) = self.giveback.take() {
            pool::checkin(id, sender, max_idle);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => {
                // Broken connection: never reuse it.
                self.giveback = None;
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Request bodies sent to servers: the client's streamed body (with its
/// size and time limits), or nothing (bodiless requests, and replays of
/// them on retry).
pub enum RequestBody {
    Incoming(LimitedBody),
    Empty,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which client-side limit stopped a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    TooLarge = 1,
    TooSlow = 2,
}

/// The client's body, cut off with an error when it grows past
/// `remaining` bytes or is still arriving at `deadline`. The trip is
/// recorded in `tripped` so the forwarder can answer 413 or 408.
pub struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(crate) tripped: std::sync::Arc<std::sync::atomic::AtomicU8>,
}

impl LimitedBody {
    pub(crate) fn new(inner: Incoming, max: u64, timeout: Option<std::time::Duration>) -> Self {
        LimitedBody {
            inner,
            remaining: max,
            deadline: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            tripped: Default::default(),
        }
    }

    fn trip(&self, why: BodyLimit) -> BoxError {
        self.tripped.store(why as u8, std::sync::atomic::Ordering::Relaxed);
        match why {
            BodyLimit::TooLarge => "request body larger than the limit".into(),
            BodyLimit::TooSlow => "request body not received in time".into(),
        }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > self.remaining {
                        return Poll::Ready(Some(Err(self.trip(BodyLimit::TooLarge))));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if let Some(d) = self.deadline.as_mut() {
                    if d.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(self.trip(BodyLimit::TooSlow))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(b) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
