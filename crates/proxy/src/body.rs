//! Bodies at the proxy boundary. Responses: either a server's streamed
//! body (which returns its connection to the pool when it ends) or a small
//! locally generated one. Requests: the client's streamed body under its
//! size and time limits, or one read ahead into memory so it can be sent
//! again ([`read_ahead`]). Enums, not boxed trait objects, to keep the hot
//! path free of allocations.
use crate::error::{ErrorKind, ProxyError};
use crate::pool::{self, Sender};
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub enum ProxyBody {
    /// Streaming from a server.
    Upstream(PooledBody),
    /// Generated here (errors, redirects, small static answers).
    Full(Option<Bytes>),
    /// Either of the above, writing its access line when it ends.
    Logged(Box<crate::access::LoggedBody>),
    /// Any of the above, compressed as it streams ([`crate::compress`]).
    Compressed(Box<crate::compress::CompressedBody<ProxyBody>>),
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
            ProxyBody::Logged(b) => Pin::new(&mut **b).poll_frame(cx),
            ProxyBody::Compressed(b) => Pin::new(&mut **b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Logged(b) => b.is_end_stream(),
            ProxyBody::Compressed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Logged(b) => b.size_hint(),
            ProxyBody::Compressed(b) => b.size_hint(),
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
/// size and time limits), nothing (bodiless requests, and replays of them
/// on retry), a body held in memory (keyed requests, and their replays), or
/// the part of a body read ahead followed by the rest still streaming.
pub enum RequestBody {
    Incoming(LimitedBody),
    Empty,
    Buffered(BufferedBody),
    Prefixed { head: Option<Bytes>, rest: LimitedBody },
}

/// A whole request body in memory; cloning it is a reference-count bump,
/// so every attempt sends the same bytes.
#[derive(Debug, Clone, Default)]
pub struct BufferedBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl BufferedBody {
    pub fn len(&self) -> usize {
        self.data.as_ref().map_or(0, Bytes::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`read_ahead`] got from the client.
pub enum ReadAhead {
    /// The whole body fit within the limit.
    Whole(BufferedBody),
    /// The body is longer than the limit: what was read, then the rest,
    /// still streaming (sent once, never replayed).
    TooLong(RequestBody),
    /// The client's body failed (a limit of [`LimitedBody`], a malformed
    /// chunk, a closed connection): always the client's failure.
    Failed(ProxyError),
}

/// Read the client's body into memory as long as it stays within `max`
/// bytes, so the request can be sent more than once.
pub async fn read_ahead(mut body: LimitedBody, max: u64) -> ReadAhead {
    let mut buf = BytesMut::new();
    loop {
        match body.frame().await {
            None => return ReadAhead::Whole(BufferedBody { data: Some(buf.freeze()), trailers: None }),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    buf.extend_from_slice(&data);
                    if buf.len() as u64 > max {
                        return ReadAhead::TooLong(RequestBody::Prefixed { head: Some(buf.freeze()), rest: body });
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        // Trailers end the body.
                        return ReadAhead::Whole(BufferedBody { data: Some(buf.freeze()), trailers: Some(trailers) });
                    }
                }
            },
            Some(Err(e)) => return ReadAhead::Failed(e),
        }
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client's body, cut off with an error when it grows past
/// `remaining` bytes or is still arriving at `deadline`. Every error it
/// yields is born here as a [`ProxyError`] whose source is the client
/// (413, 408, or 400 for a body hyper could not read), so that the
/// forwarder, finding it in the error of the request it was sending,
/// never blames the server.
pub struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl LimitedBody {
    pub(crate) fn new(inner: Incoming, max: u64, timeout: Option<std::time::Duration>) -> Self {
        LimitedBody { inner, remaining: max, limit: max, deadline: timeout.map(|t| Box::pin(tokio::time::sleep(t))) }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > self.remaining {
                        let detail = format!("the request body is larger than {} bytes", self.limit);
                        return Poll::Ready(Some(Err(ProxyError::client_body(ErrorKind::BodyTooLarge, detail))));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let detail = format!("the request body could not be read: {e}");
                Poll::Ready(Some(Err(ProxyError::client_body(ErrorKind::BodyBroken, detail))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if let Some(d) = self.deadline.as_mut() {
                    if d.as_mut().poll(cx).is_ready() {
                        let detail = "the request body was not received in time";
                        return Poll::Ready(Some(Err(ProxyError::client_body(ErrorKind::BodyTimeout, detail))));
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
    type Error = ProxyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        match self.get_mut() {
            RequestBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Buffered(b) => match b.data.take() {
                Some(d) if !d.is_empty() => Poll::Ready(Some(Ok(Frame::data(d)))),
                _ => Poll::Ready(b.trailers.take().map(|t| Ok(Frame::trailers(t)))),
            },
            RequestBody::Prefixed { head, rest } => match head.take() {
                Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                None => Pin::new(rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(b) => b.is_end_stream(),
            RequestBody::Empty => true,
            RequestBody::Buffered(b) => b.is_empty() && b.trailers.is_none(),
            RequestBody::Prefixed { head, rest } => head.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
            // Trailers need chunked encoding: no exact length then.
            RequestBody::Buffered(b) if b.trailers.is_some() => SizeHint::default(),
            RequestBody::Buffered(b) => SizeHint::with_exact(b.len() as u64),
            RequestBody::Prefixed { head, rest } => {
                let head = head.as_ref().map_or(0, |h| h.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + head);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + head);
                }
                hint
            }
        }
    }
}
