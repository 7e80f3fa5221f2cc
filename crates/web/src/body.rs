//! The response body of the web role: nothing, bytes from memory, a file
//! region streamed from disk, or a body produced elsewhere (proxied).
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Chunk size when streaming a file from disk.
const CHUNK: usize = 64 * 1024;

pub enum WebBody {
    Empty,
    Bytes(Option<Bytes>),
    /// A region of a file, read in `CHUNK`-sized pieces.
    File {
        stream: ReaderStream<tokio::io::Take<tokio::fs::File>>,
        remaining: u64,
    },
    /// Any other body (the proxy's responses).
    Other(UnsyncBoxBody<Bytes, BoxError>),
}

impl WebBody {
    pub fn bytes(b: impl Into<Bytes>) -> Self {
        WebBody::Bytes(Some(b.into()))
    }

    /// Stream `len` bytes of `file` from its current position.
    pub fn file(file: std::fs::File, len: u64) -> Self {
        let reader = tokio::fs::File::from_std(file).take(len);
        WebBody::File { stream: ReaderStream::with_capacity(reader, CHUNK), remaining: len }
    }

    /// Wrap any body, e.g. a proxied response's.
    pub fn other<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        WebBody::Other(body.map_err(Into::into).boxed_unsync())
    }
}

impl std::fmt::Debug for WebBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebBody::Empty => f.write_str("WebBody::Empty"),
            WebBody::Bytes(b) => write!(f, "WebBody::Bytes({:?})", b.as_ref().map(Bytes::len)),
            WebBody::File { remaining, .. } => write!(f, "WebBody::File({remaining})"),
            WebBody::Other(_) => f.write_str("WebBody::Other"),
        }
    }
}

impl Body for WebBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            WebBody::Empty => Poll::Ready(None),
            WebBody::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            WebBody::File { stream, remaining } => {
                use futures_util::Stream;
                match ready!(Pin::new(stream).poll_next(cx)) {
                    Some(Ok(chunk)) => {
                        *remaining = remaining.saturating_sub(chunk.len() as u64);
                        Poll::Ready(Some(Ok(Frame::data(chunk))))
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
                    None if *remaining > 0 => {
                        // The file shrank under us: fail rather than send a
                        // body shorter than the Content-Length promised.
                        Poll::Ready(Some(Err("file shorter than announced".into())))
                    }
                    None => Poll::Ready(None),
                }
            }
            WebBody::Other(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            WebBody::Empty => true,
            WebBody::Bytes(b) => b.is_none(),
            WebBody::File { remaining, .. } => *remaining == 0,
            WebBody::Other(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            WebBody::Empty => SizeHint::with_exact(0),
            WebBody::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            WebBody::File { remaining, .. } => SizeHint::with_exact(*remaining),
            WebBody::Other(b) => b.size_hint(),
        }
    }
}
