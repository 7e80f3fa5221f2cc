//! Worker threads, their listeners and client connections.
//!
//! Each worker is an OS thread with a `current_thread` runtime and a
//! `LocalSet`, and its own SO_REUSEPORT socket per listen address
//! (`bulwark-workers`, shared with the lb), so the kernel spreads
//! connections across workers and a connection lives on one thread from
//! accept to close (nginx's worker model). Per-thread state (the file
//! cache) needs no locks.
use crate::body::WebBody;
use crate::site::{Shared, Site};
use bulwark_proxy::send_stall::SendDeadline;
use bulwark_workers::{SocketSharing, WorkerListeners};
use http_body::{Body, Frame, SizeHint};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::server::conn::http1;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connection settings every worker uses.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// Longest wait for the client to accept any byte of a response.
    pub send_timeout: Duration,
    pub max_header_bytes: usize,
    pub drain: Duration,
    /// Mutual TLS (`mutual_tls`): every connection must
    /// complete a TLS handshake with a client certificate of the cluster
    /// CA within `header_timeout`.
    pub tls: Option<bulwark_mtls::MutualTls>,
}

/// A listen address bound once per worker.
pub struct BoundListener {
    pub name: String,
    pub addr: SocketAddr,
    sockets: WorkerListeners,
}

impl BoundListener {
    /// Bind `threads` SO_REUSEPORT sockets on `addr` (a `:0` port is chosen
    /// by the first bind and shared by the others).
    pub fn bind(name: String, addr: SocketAddr, threads: usize) -> io::Result<BoundListener> {
        let sockets = WorkerListeners::bind(addr, threads, SocketSharing::ReusePort)?;
        Ok(BoundListener { name, addr: sockets.local_addr(), sockets })
    }
}

/// Start one worker thread per socket index; each serves until `shutdown`,
/// then drains its connections (bounded by `settings.drain`).
pub fn spawn_workers(
    threads: usize,
    listeners: Vec<BoundListener>,
    shared: Arc<Shared>,
    settings: ConnectionSettings,
    shutdown: CancellationToken,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let listeners = listeners.into_iter().map(|l| (l.name, l.sockets)).collect();
    bulwark_workers::spawn("web", threads, listeners, move |_, sockets| {
        worker(sockets, shared.clone(), settings.clone(), shutdown.clone())
    })
}

async fn worker(
    sockets: Vec<(String, std::net::TcpListener)>,
    shared: Arc<Shared>,
    settings: ConnectionSettings,
    shutdown: CancellationToken,
) {
    let site = Rc::new(Site::new(shared));
    let settings = Rc::new(settings);
    let connections = TaskTracker::new();
    let accepting = TaskTracker::new();
    for (name, socket) in sockets {
        let listener = match tokio::net::TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listener = %name, "cannot register listener: {e}");
                continue;
            }
        };
        let (site, settings, connections, stop) =
            (site.clone(), settings.clone(), connections.clone(), shutdown.clone());
        accepting.spawn_local(async move {
            while let Some((stream, peer)) = bulwark_workers::next_connection(&listener, &stop, &name).await {
                // Connection limits per listener and per client (the ACL
                // and rate limit judge each request's client in `Site`).
                let permit = match site.firewall().count_connection(peer.ip()) {
                    Ok(p) => p,
                    Err(refusal) => {
                        tracing::info!(client = %peer, "connection refused: {}", refusal.reason());
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (site, settings, stop) = (site.clone(), settings.clone(), stop.clone());
                connections.spawn_local(async move {
                    serve_connection(stream, peer, site, settings, stop).await;
                    drop(permit);
                });
            }
        });
    }
    accepting.close();
    shutdown.cancelled().await;
    // The accept loops end (closing the listening sockets) ...
    accepting.wait().await;
    // ... and open connections finish their request in flight.
    connections.close();
    if tokio::time::timeout(settings.drain, connections.wait()).await.is_err() {
        tracing::warn!(open = connections.len(), "drain timeout reached; closing remaining connections");
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    site: Rc<Site>,
    settings: Rc<ConnectionSettings>,
    stop: CancellationToken,
) {
    let stream = match &settings.tls {
        None => bulwark_mtls::Stream::Plain(stream),
        Some(tls) => {
            let handshake = tls.accept(stream, settings.header_timeout);
            let handshake = async {
                tokio::select! {
                    r = handshake => Some(r),
                    _ = stop.cancelled() => None,
                }
            };
            match handshake.await {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    tracing::info!(client = %peer, "TLS handshake refused: {e}");
                    return;
                }
                None => return,
            }
        }
    };
    let phase = Arc::new(SharedPhase::new(Phase::Head(Instant::now())));
    let io = TimedIo::new(stream, peer, phase.clone(), &settings);
    let svc = hyper::service::service_fn(move |req| {
        let (site, phase) = (site.clone(), phase.clone());
        phase.set(Phase::Busy);
        async move {
            let resp = site.respond(req, peer).await;
            let tunnel = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
            Ok::<_, Infallible>(resp.map(|inner| TrackedBody { inner, phase, tunnel }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        // Our own timers (TimedIo) cover the head and idle keep-alive; no
        // hyper timer means no per-request timer allocation.
        .max_buf_size(settings.max_header_bytes.max(8192) + 1024)
        .max_header_size(settings.max_header_bytes)
        // One flat buffer per response: one send() instead of a writev of
        // head and body (see docs/web.md for the measurement).
        .writev(false);
    // Not `pipeline_flush(true)`: with unparsable bytes left in the read
    // buffer it skips the flush, and the automatic 400/431 is never sent.
    // With upgrades: after a 101 of a proxied WebSocket, hyper hands the
    // connection to the route's tunnel and this future ends.
    let conn = builder.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %peer, "connection ended: {e}");
    }
}

/// Where a connection is between requests, for its timeouts.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Receiving a request head since this instant (header timeout).
    Head(Instant),
    /// A request is being answered (no read deadline; the body timeout
    /// applies to request bodies).
    Busy,
    /// Idle keep-alive since this instant (keep-alive timeout).
    Idle(Instant),
    /// Handed over to a tunnel after a 101: no read deadline here, the
    /// tunnel's idle timeout (`tunnel_timeout`) applies.
    Tunnel,
}

/// A connection's [`Phase`], shared by its socket wrapper and its service.
/// Atomic only so that the socket wrapper is `Send` (hyper hands an
/// upgraded connection to a tunnel task); one worker thread uses it, so
/// relaxed ordering suffices. Encoded as the time since the connection
/// began (nanoseconds) shifted left by two, with the variant in the low
/// bits.
struct SharedPhase {
    base: Instant,
    bits: AtomicU64,
}

impl SharedPhase {
    const BUSY: u64 = 0;
    const TUNNEL: u64 = 1;
    const HEAD: u64 = 2;
    const IDLE: u64 = 3;

    fn new(phase: Phase) -> Self {
        let p = SharedPhase { base: Instant::now(), bits: AtomicU64::new(0) };
        p.set(phase);
        p
    }

    fn encode(&self, at: Instant, tag: u64) -> u64 {
        let nanos = u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX >> 2);
        (nanos.min(u64::MAX >> 2) << 2) | tag
    }

    fn set(&self, phase: Phase) {
        let bits = match phase {
            Phase::Busy => Self::BUSY,
            Phase::Tunnel => Self::TUNNEL,
            Phase::Head(at) => self.encode(at, Self::HEAD),
            Phase::Idle(at) => self.encode(at, Self::IDLE),
        };
        self.bits.store(bits, Relaxed);
    }

    fn get(&self) -> Phase {
        let bits = self.bits.load(Relaxed);
        let at = || self.base + Duration::from_nanos(bits >> 2);
        match bits & 3 {
            Self::BUSY => Phase::Busy,
            Self::TUNNEL => Phase::Tunnel,
            Self::HEAD => Phase::Head(at()),
            _ => Phase::Idle(at()),
        }
    }
}

/// The client socket with the header and keep-alive deadlines applied to
/// reads: a read that would block past the deadline fails with `TimedOut`,
/// which ends the connection. One timer per connection, re-armed only when
/// it fires early (deadlines only move later), so the hot path does no timer
/// work. Writes have a send-progress deadline (nginx's `send_timeout`): a
/// write that stays blocked for `send_timeout` (the client accepted no
/// byte) fails with `TimedOut`; its timer is armed only when a write blocks.
struct TimedIo {
    /// The client's stream, with the send-progress deadline
    /// (`timeouts.send`) on its writes.
    stream: SendDeadline<bulwark_mtls::ServerStream>,
    phase: Arc<SharedPhase>,
    header_timeout: Duration,
    keepalive_timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Set once our side of the connection is shut down (lingering close).
    linger_until: Option<Instant>,
    lingered_bytes: usize,
}

/// After closing our side, keep reading (and dropping) what the client
/// still sends for at most this long or this many bytes, so that unread
/// request bytes do not turn the close into a reset that destroys the
/// response before the client reads it (nginx's lingering close).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

impl TimedIo {
    fn new(
        stream: bulwark_mtls::ServerStream,
        peer: SocketAddr,
        phase: Arc<SharedPhase>,
        s: &ConnectionSettings,
    ) -> Self {
        TimedIo {
            stream: SendDeadline::new(stream, peer, s.send_timeout, "timeouts.send"),
            phase,
            header_timeout: s.header_timeout,
            keepalive_timeout: s.keepalive_timeout,
            timer: None,
            linger_until: None,
            lingered_bytes: 0,
        }
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let deadline = match self.phase.get() {
            Phase::Head(since) => since + self.header_timeout,
            Phase::Idle(since) => since + self.keepalive_timeout,
            Phase::Busy | Phase::Tunnel => return Poll::Pending,
        };
        loop {
            let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() > deadline {
                timer.as_mut().reset(deadline);
            }
            let fired_at = timer.deadline();
            ready!(timer.as_mut().poll(cx));
            if fired_at >= deadline {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client timed out")));
            }
            // Fired for an earlier deadline; the phase has moved on since.
            timer.as_mut().reset(deadline);
        }
    }
}

impl Read for TimedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // SAFETY: as in hyper-util's TokioIo: the tokio ReadBuf only writes
        // initialised bytes into the cursor's spare capacity, and we advance
        // the cursor by exactly the number of bytes it filled.
        let n = unsafe {
            let mut tbuf = tokio::io::ReadBuf::uninit(buf.as_mut());
            match Pin::new(&mut this.stream).poll_read(cx, &mut tbuf) {
                Poll::Ready(Ok(())) => tbuf.filled().len(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return this.poll_deadline(cx),
            }
        };
        if n > 0 {
            if let Phase::Idle(_) = this.phase.get() {
                this.phase.set(Phase::Head(Instant::now()));
            }
        }
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl Write for TimedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let until = match this.linger_until {
            Some(t) => t,
            None => {
                ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
                let t = Instant::now() + LINGER_TIME;
                this.linger_until = Some(t);
                t
            }
        };
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    this.lingered_bytes += buf.filled().len();
                    if this.lingered_bytes > LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if timer.deadline() != until {
            timer.as_mut().reset(until);
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Ok(()))
    }
}

/// A response body that marks the connection idle once the response is
/// done (hyper drops the body after sending it, or at once for HEAD/304),
/// or handed over to a tunnel when the response is a 101.
struct TrackedBody {
    inner: WebBody,
    phase: Arc<SharedPhase>,
    tunnel: bool,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.phase.set(if self.tunnel { Phase::Tunnel } else { Phase::Idle(Instant::now()) });
    }
}

impl Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
