//! The open streams of one HTTP/2 client connection: how many there are
//! (to close a connection idle for `timeouts.http2_idle`) and which of them
//! wait on the client's flow-control window (to close a connection whose
//! client accepts no data for `timeouts.client_send`).
//!
//! Why the second: on HTTP/1.1 a client that stops reading blocks the
//! socket write, and the send deadline ([`crate::send_deadline`]) ends the
//! connection. On HTTP/2 the client can instead keep its stream window (or
//! the connection window) shut while answering PINGs: the socket never
//! blocks, hyper simply stops asking the response body for data, and the
//! stream, its buffered chunk and the upstream connection behind it would
//! be held for ever. hyper gives no handle to reset one stream from
//! outside, so the connection is closed, as it is for an HTTP/1.1 client
//! that stops reading (nginx resets only the stream; a connection whose
//! client shuts one window for a whole `client_send` loses its other
//! streams too).
//!
//! How a stall is seen without a timer per stream: a stream is "waiting on
//! the client" from the moment its response is handed to hyper and each
//! time its body has handed hyper a chunk; hyper asks for the next chunk
//! only once the window has room again, which ends the wait. The
//! connection's task looks at the oldest wait when it would be due, and
//! otherwise once per `client_send` while streams are open: a stall is
//! seen between one and two `client_send` after it began.
//!
//! Must not touch: requests, routing or sockets; the listener owns the
//! connection and closes it when [`OpenStreams::stalled_for`] resolves.

use bulwark_proxy::{now_ms, ProxyBody};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Waiting-on-the-client state of one stream: 0 = not waiting, else the
/// [`now_ms`] when the wait began (never 0: `now_ms` counts from a fixed
/// past instant and is at least 1 here).
#[derive(Default)]
struct Waiting(AtomicU64);

impl Waiting {
    fn begin(&self) {
        self.0.store(now_ms().max(1), Ordering::Relaxed);
    }

    fn end(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub(crate) struct OpenStreams {
    open: AtomicUsize,
    /// [`now_ms`] when the last stream ended (0: never opened).
    idle_since_ms: AtomicU64,
    changed: tokio::sync::Notify,
    /// One entry per open stream; a stream removes its own on drop.
    waits: Mutex<Vec<Arc<Waiting>>>,
}

impl OpenStreams {
    /// Resolves once no stream has been open for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        let idle_ms = idle.as_millis() as u64;
        let start = now_ms();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.open.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            let since = self.idle_since_ms.load(Ordering::SeqCst).max(start);
            let now = now_ms();
            let deadline = since + idle_ms;
            if now >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(deadline - now)) => {}
                _ = changed => {}
            }
        }
    }

    /// Resolves once some stream has waited on the client's window for
    /// `limit` without hyper asking it for more data.
    pub async fn stalled_for(&self, limit: Duration) {
        let limit_ms = (limit.as_millis() as u64).max(1);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let oldest = self.oldest_wait();
            let now = now_ms();
            match oldest {
                Some(since) if now >= since + limit_ms => return,
                // Looked at again when that wait would be due; a stream that
                // moved on meanwhile has a later (or no) wait by then.
                Some(since) => tokio::time::sleep(Duration::from_millis(since + limit_ms - now)).await,
                // A wait that begins is not announced (that would cost a
                // wake-up per chunk): with streams open, look again after
                // `limit`, so a stall is seen within twice the limit.
                None if self.open.load(Ordering::SeqCst) > 0 => {
                    tokio::select! {
                        _ = tokio::time::sleep(limit) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    fn oldest_wait(&self) -> Option<u64> {
        let waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        waits.iter().map(|w| w.0.load(Ordering::Relaxed)).filter(|&t| t != 0).min()
    }
}

/// One open HTTP/2 stream; closes it on drop.
pub(crate) struct StreamGuard {
    streams: Arc<OpenStreams>,
    waiting: Arc<Waiting>,
}

impl StreamGuard {
    pub fn open(streams: Arc<OpenStreams>) -> Self {
        let waiting = Arc::new(Waiting::default());
        streams.waits.lock().unwrap_or_else(|p| p.into_inner()).push(waiting.clone());
        streams.open.fetch_add(1, Ordering::SeqCst);
        streams.changed.notify_waiters();
        StreamGuard { streams, waiting }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        {
            let mut waits = self.streams.waits.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = waits.iter().position(|w| Arc::ptr_eq(w, &self.waiting)) {
                waits.swap_remove(i);
            }
        }
        self.streams.idle_since_ms.store(now_ms(), Ordering::SeqCst);
        self.streams.open.fetch_sub(1, Ordering::SeqCst);
        self.streams.changed.notify_waiters();
    }
}

/// A response body that holds its HTTP/2 stream open until it is dropped
/// and, on HTTP/2, marks when it waits on the client's window.
pub(crate) struct StreamBody {
    inner: ProxyBody,
    guard: Option<StreamGuard>,
}

impl StreamBody {
    /// `guard` is `Some` on HTTP/2: the response is about to be handed to
    /// hyper, which sends its first chunk when the window allows.
    pub fn new(inner: ProxyBody, guard: Option<StreamGuard>) -> Self {
        if let Some(g) = &guard {
            g.waiting.begin();
        }
        StreamBody { inner, guard }
    }
}

impl http_body::Body for StreamBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(g) = &this.guard {
            // Being asked means the window had room: the wait is over. A
            // chunk handed over starts a new one until hyper asks again.
            match &r {
                Poll::Ready(Some(Ok(f))) if f.data_ref().is_some_and(|d| !d.is_empty()) => g.waiting.begin(),
                _ => g.waiting.end(),
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_that_is_never_asked_for_data_is_seen_stalled() {
        let streams = Arc::new(OpenStreams::default());
        let guard = StreamGuard::open(streams.clone());
        guard.waiting.begin();
        let stalled = tokio::time::timeout(Duration::from_secs(30), streams.stalled_for(Duration::from_millis(2)));
        assert!(stalled.await.is_ok(), "a wait older than the limit is seen");
    }

    #[tokio::test]
    async fn a_stream_asked_for_data_again_is_not_stalled() {
        let streams = Arc::new(OpenStreams::default());
        let guard = StreamGuard::open(streams.clone());
        guard.waiting.begin();
        guard.waiting.end();
        let r = tokio::time::timeout(Duration::from_millis(50), streams.stalled_for(Duration::from_millis(1))).await;
        assert!(r.is_err(), "a stream that hyper asked again does not wait on the client");
    }

    #[tokio::test]
    async fn no_open_stream_is_never_stalled() {
        let streams = Arc::new(OpenStreams::default());
        {
            let g = StreamGuard::open(streams.clone());
            g.waiting.begin();
        }
        assert!(streams.oldest_wait().is_none(), "a closed stream's wait is gone");
        let r = tokio::time::timeout(Duration::from_millis(50), streams.stalled_for(Duration::from_millis(1))).await;
        assert!(r.is_err());
    }
}
