//! The open streams of one HTTP/2 client connection: how many there are
//! (to close a connection idle for `timeouts.http2_idle`) and which of them
//! wait on the client's flow-control window (to close a connection whose
//! client accepts no data for `timeouts.client_send`).
//!
//! Why the second: on HTTP/1.1 a client that stops reading blocks the
//! socket write, and the send deadline ([`bulwark_proxy::send_stall`]) ends the
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
//! How a stall is seen without a timer per stream: every chunk the body
//! hands to hyper is a [`Chunk`] that counts itself as queued until its
//! last byte is written out, wherever it waits (in hyper, for capacity, or
//! in h2's send queue, for the window: hyper hands a whole chunk to h2 once
//! the window has one byte of room, and may drop the body while the chunk
//! is still queued). A stream "waits on the client" while a chunk is
//! queued, from the hand-over or from the last byte h2 wrote, whichever is
//! later: like the HTTP/1.1 deadline, every byte the client accepts re-arms
//! it, however large the upstream chunk. The connection's task looks at the
//! oldest wait when it would be due, and otherwise once per `client_send`
//! while streams are open: a stall is seen between one and two
//! `client_send` after it began.
//!
//! Must not touch: requests, routing or sockets; the listener owns the
//! connection and closes it when [`OpenStreams::stalled_for`] resolves.

use bulwark_proxy::ProxyBody;
use bulwark_telemetry::clock::monotonic_ms;
use bytes::{Buf, Bytes};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

/// Waiting-on-the-client state of one stream: `since` is 0 when not
/// waiting, else the [`monotonic_ms`] when the wait began or last made
/// progress (never 0: that clock starts at 1 ms); `queued` counts its
/// chunks handed over and not yet written out.
#[derive(Default)]
struct Waiting {
    since: AtomicU64,
    queued: AtomicUsize,
}

impl Waiting {
    fn begin(&self) {
        self.since.store(monotonic_ms().max(1), Ordering::Relaxed);
    }

    fn end(&self) {
        self.since.store(0, Ordering::Relaxed);
    }

    /// A chunk handed to hyper: waits from now unless an older chunk
    /// already does.
    fn queue(&self) {
        if self.queued.fetch_add(1, Ordering::Relaxed) == 0 || self.since.load(Ordering::Relaxed) == 0 {
            self.begin();
        }
    }

    /// A chunk written out (or dropped with the stream).
    fn unqueue(&self) {
        if self.queued.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.end();
        } else {
            self.begin();
        }
    }
}

#[derive(Default)]
pub(crate) struct OpenStreams {
    open: AtomicUsize,
    /// [`monotonic_ms`] when the last stream ended (0: never opened).
    idle_since_ms: AtomicU64,
    changed: tokio::sync::Notify,
    /// One entry per stream; it outlives the stream's guard while any of
    /// its chunks is still queued in hyper or h2.
    waits: Mutex<Vec<Weak<Waiting>>>,
}

impl OpenStreams {
    /// Resolves once no stream has been open for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        let idle_ms = idle.as_millis() as u64;
        let start = monotonic_ms();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.open.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            let since = self.idle_since_ms.load(Ordering::SeqCst).max(start);
            let now = monotonic_ms();
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
            let now = monotonic_ms();
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
        waits.iter().filter_map(Weak::upgrade).map(|w| w.since.load(Ordering::Relaxed)).filter(|&t| t != 0).min()
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
        {
            let mut waits = streams.waits.lock().unwrap_or_else(|p| p.into_inner());
            waits.retain(|w| w.strong_count() > 0);
            waits.push(Arc::downgrade(&waiting));
        }
        streams.open.fetch_add(1, Ordering::SeqCst);
        streams.changed.notify_waiters();
        StreamGuard { streams, waiting }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // The stream's entry in `waits` stays while a chunk of it is queued
        // (the chunk holds `waiting`); it is pruned when the last one goes.
        self.streams.idle_since_ms.store(monotonic_ms(), Ordering::SeqCst);
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
    type Data = Chunk;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Chunk>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        let waiting = this.guard.as_ref().map(|g| &g.waiting);
        if let Some(w) = waiting {
            // Nothing queued: the response head has gone out and the wait
            // begun in `new` is over (a chunk handed now starts its own).
            if w.queued.load(Ordering::Relaxed) == 0 {
                w.end();
            }
        }
        r.map(|f| f.map(|f| f.map(|f| f.map_data(|bytes| Chunk::new(bytes, waiting)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A chunk of a response body; on HTTP/2 it keeps its stream waiting on
/// the client until its last byte is written out (each byte written
/// re-arms the wait), even once hyper has dropped the body.
pub(crate) struct Chunk {
    bytes: Bytes,
    waiting: Option<Arc<Waiting>>,
}

impl Chunk {
    fn new(bytes: Bytes, waiting: Option<&Arc<Waiting>>) -> Self {
        let waiting = waiting.filter(|_| !bytes.is_empty()).cloned();
        if let Some(w) = &waiting {
            w.queue();
        }
        Chunk { bytes, waiting }
    }
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        self.bytes.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.bytes.chunk()
    }

    fn advance(&mut self, n: usize) {
        self.bytes.advance(n);
        if n == 0 {
            return;
        }
        if self.bytes.is_empty() {
            if let Some(w) = self.waiting.take() {
                w.unqueue();
            }
        } else if let Some(w) = &self.waiting {
            w.begin();
        }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(w) = self.waiting.take() {
            w.unqueue();
        }
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

    #[tokio::test]
    async fn a_chunk_queued_after_its_body_is_dropped_still_waits() {
        let streams = Arc::new(OpenStreams::default());
        let guard = StreamGuard::open(streams.clone());
        let mut chunk = Chunk::new(Bytes::from_static(b"home\n"), Some(&guard.waiting));
        chunk.advance(1);
        drop(guard);
        let stalled = tokio::time::timeout(Duration::from_secs(30), streams.stalled_for(Duration::from_millis(2)));
        assert!(stalled.await.is_ok(), "the bytes still queued in h2 keep the stream waiting");
        chunk.advance(4);
        assert!(streams.oldest_wait().is_none(), "a chunk written out ends the wait");
        drop(chunk);
        assert!(streams.waits.lock().unwrap().iter().all(|w| w.strong_count() == 0));
    }

    #[test]
    fn every_byte_written_re_arms_the_wait() {
        let streams = Arc::new(OpenStreams::default());
        let guard = StreamGuard::open(streams.clone());
        let mut chunk = Chunk::new(Bytes::from(vec![0u8; 1000]), Some(&guard.waiting));
        guard.waiting.since.store(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        chunk.advance(10);
        assert!(streams.oldest_wait().is_some_and(|t| t > 1), "progress moves the wait's start");
        let second = Chunk::new(Bytes::from_static(b"more"), Some(&guard.waiting));
        chunk.advance(990);
        assert!(streams.oldest_wait().is_some(), "the next chunk still waits");
        drop(second);
        assert!(streams.oldest_wait().is_none(), "nothing queued: no wait");
    }
}
