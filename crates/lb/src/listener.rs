//! The frontends' accept loops and client connections. Each worker is an
//! OS thread with a `current_thread` runtime and its own SO_REUSEPORT
//! socket per frontend (`bulwark-workers`, shared with the web tier), so
//! the kernel spreads connections across workers and a connection is
//! handled start to finish by one thread (no work stealing, no shared
//! connection pool lock).
use crate::h2_streams::{OpenStreams, StreamBody, StreamGuard};
use crate::routing::Routing;
use crate::upgradable::IDLE_GRACE;
use arc_swap::ArcSwap;
use bulwark_config::lb::{Frontend, Mode};
use bulwark_firewall::{ConnectionPermit, Refusal};
use bulwark_proxy::send_stall::SendDeadline;
use bulwark_proxy::{ClientContext, ProxyBody};
use bulwark_workers::{SocketSharing, WorkerListeners};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) struct BoundFrontend {
    pub index: usize,
    pub name: String,
    pub addr: SocketAddr,
    pub mode: Mode,
    /// One socket per worker (SO_REUSEPORT), or one shared socket.
    sockets: WorkerListeners,
}

impl BoundFrontend {
    pub fn bind(index: usize, f: &Frontend, threads: usize) -> std::io::Result<BoundFrontend> {
        let sharing = if f.reuse_port { SocketSharing::ReusePort } else { SocketSharing::Shared };
        let sockets = WorkerListeners::bind(f.bind, threads, sharing)?;
        Ok(BoundFrontend { index, name: f.name.clone(), addr: sockets.local_addr(), mode: f.mode, sockets })
    }
}

/// What a worker knows of the frontend a socket belongs to.
#[derive(Clone)]
struct FrontendLabel {
    index: usize,
    name: String,
    mode: Mode,
}

pub(crate) fn spawn_workers(
    threads: usize,
    frontends: Vec<BoundFrontend>,
    routing: Arc<ArcSwap<Routing>>,
    connections: Arc<Vec<AtomicI64>>,
    shutdown: CancellationToken,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let listeners = frontends
        .into_iter()
        .map(|f| (FrontendLabel { index: f.index, name: f.name, mode: f.mode }, f.sockets))
        .collect();
    bulwark_workers::spawn("lb", threads, listeners, move |_, sockets| {
        worker(sockets, routing.clone(), connections.clone(), shutdown.clone())
    })
}

async fn worker(
    listeners: Vec<(FrontendLabel, std::net::TcpListener)>,
    routing: Arc<ArcSwap<Routing>>,
    connections: Arc<Vec<AtomicI64>>,
    shutdown: CancellationToken,
) {
    let tasks = tokio_util::task::TaskTracker::new();
    let mut accepting = tokio::task::JoinSet::new();
    for (FrontendLabel { index, name, mode }, std_listener) in listeners {
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(frontend = %name, "cannot register listener: {e}");
                continue;
            }
        };
        let (routing, tasks, stop, open) = (routing.clone(), tasks.clone(), shutdown.clone(), connections.clone());
        let idle_stop = late_stop(&shutdown);
        accepting.spawn(async move {
            while let Some((stream, peer)) = bulwark_workers::next_connection(&listener, &stop, &name).await {
                let _ = stream.set_nodelay(true);
                let open_guard = OpenConnection::enter(open.clone(), index);
                let r = routing.load_full();
                let fe = &r.frontends[index];
                let permit = fe.firewall.admit(peer.ip());
                match mode {
                    Mode::Http => {
                        if let (Err(refusal), Some(_)) = (&permit, &fe.tls) {
                            // No TLS handshake for a refused client: closing
                            // now costs nothing, a handshake costs CPU an
                            // attacker would choose how to spend.
                            tracing::info!(frontend = %name, client = %peer, "connection refused before TLS: {}", refusal.reason());
                            continue;
                        }
                        let (routing, stop, idle_stop) = (routing.clone(), stop.clone(), idle_stop.clone());
                        let accepted = tokio::time::Instant::now();
                        tasks.spawn(async move {
                            // Nothing is set up for a connection until its
                            // first bytes arrive: an idle client costs this
                            // small task and its socket, not hyper's and
                            // rustls's buffers. The big future is boxed, so
                            // the task holds only a pointer to it.
                            // `client_header` read here, not captured: every
                            // byte of this future is held by each idle client.
                            let wait = routing.load().config.timeouts.client_header;
                            if first_bytes(&stream, wait, &idle_stop).await {
                                let conn = serve_http(index, stream, peer, accepted, routing, stop, idle_stop, permit);
                                Box::pin(conn).await;
                            }
                            drop(open_guard);
                        });
                    }
                    Mode::Tcp => {
                        let permit = match permit {
                            Ok(p) => p,
                            Err(refusal) => {
                                tracing::info!(frontend = %name, client = %peer, "tcp connection refused: {}", refusal.reason());
                                continue;
                            }
                        };
                        let upstream = fe.forwarder.upstream.clone();
                        let t = r.config.timeouts.clone();
                        tasks.spawn(async move {
                            bulwark_proxy::tcp::tunnel(&upstream, stream, peer, t.connect, t.tunnel).await;
                            drop((permit, open_guard));
                        });
                    }
                }
            }
        });
    }
    shutdown.cancelled().await;
    // Stop accepting: close the listening sockets.
    while accepting.join_next().await.is_some() {}
    let drain = routing.load().config.timeouts.drain;
    tasks.close();
    // Every connection saw `shutdown` and closes once its request in
    // flight is answered (HTTP/1 and HTTP/2 alike).
    if tokio::time::timeout(drain, tasks.wait()).await.is_err() {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
}

/// Counts an open client connection of a frontend while alive.
struct OpenConnection(Arc<Vec<AtomicI64>>, usize);

impl OpenConnection {
    fn enter(counts: Arc<Vec<AtomicI64>>, index: usize) -> Self {
        counts[index].fetch_add(1, Ordering::Relaxed);
        OpenConnection(counts, index)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits until the client has sent its first byte, for at most `limit`
/// (`timeouts.client_header`, which counts from the accept on). False when
/// the client closed first, the limit passed or `idle_stop` fired: the
/// worker's stop, [`IDLE_GRACE`] late (see [`late_stop`]), so that a
/// request sent just as the lb stops is answered (with `Connection:
/// close`), as on an idle keep-alive connection, not met by a close.
///
/// A peek, not `readable()`: tokio reports a newly registered socket
/// ready at once, so only a byte actually there tells that the client
/// has started.
async fn first_bytes(
    stream: &tokio::net::TcpStream,
    limit: std::time::Duration,
    idle_stop: &CancellationToken,
) -> bool {
    let mut byte = [0u8; 1];
    tokio::select! {
        // Bytes already there win over a stop that came at the same time.
        biased;
        r = tokio::time::timeout(limit, stream.peek(&mut byte)) => matches!(r, Ok(Ok(n)) if n > 0),
        _ = idle_stop.cancelled() => false,
    }
}

/// A token cancelled [`IDLE_GRACE`] after `stop`: one timer per listener
/// of a worker, where a grace inside [`first_bytes`] would make the future
/// that every idle client holds larger.
fn late_stop(stop: &CancellationToken) -> CancellationToken {
    let late = CancellationToken::new();
    let (stop, fire) = (stop.clone(), late.clone());
    tokio::spawn(async move {
        stop.cancelled().await;
        tokio::time::sleep(IDLE_GRACE).await;
        fire.cancel();
    });
    late
}

/// Serve one client connection: TLS handshake when configured (ALPN picks
/// HTTP/2 or HTTP/1.1), then HTTP with the frontend's firewall checks.
/// Every write to the client has the send-progress deadline
/// (`timeouts.client_send`); HTTP/2 connections get keep-alive pings and
/// are closed when idle (`timeouts.http2_*`).
#[allow(clippy::too_many_arguments)]
async fn serve_http(
    index: usize,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    accepted: tokio::time::Instant,
    routing: Arc<ArcSwap<Routing>>,
    stop: CancellationToken,
    idle_stop: CancellationToken,
    permit: Result<ConnectionPermit, Refusal>,
) {
    let r = routing.load_full();
    let t = r.config.timeouts.clone();
    let f = &r.config.frontends[index];
    let fe = &r.frontends[index];
    let header_timeout = t.client_header;
    // The TLS handshake must end within what is left of `client_header`
    // since the accept (the wait for the first bytes counts). hyper's own
    // head timeout stays whole: it also applies to later requests of a
    // keep-alive connection.
    let handshake_timeout = header_timeout.saturating_sub(accepted.elapsed()).max(std::time::Duration::from_millis(1));
    let max_buf = f.max_header_bytes.max(8192);
    let tls = fe.tls.clone();
    let http2_max_streams = f.tls.as_ref().map_or(100, |t| t.http2_max_streams);
    let proto = if tls.is_some() { "https" } else { "http" };
    let ctx = Arc::new(ClientContext::new(peer, proto));
    let keep_tls_facts = fe.keep_tls_facts;
    let refusal = permit.as_ref().err().cloned();
    if let Some(refusal) = &refusal {
        tracing::info!(frontend = %f.name, client = %peer, "connection refused: {}", refusal.reason());
    }
    drop(r);
    let stream = SendDeadline::new(stream, peer, t.client_send, "timeouts.client_send");
    let h1 = Http1 { header_timeout, max_buf, keep_alive: permit.is_ok() };
    // Each way of serving is boxed: until it starts, this future holds
    // only the stream (an idle TLS client costs its rustls state and no
    // more), not the largest of hyper's connection states.
    let result = match tls {
        None => {
            let svc = service(routing, index, ctx, refusal, stop.clone());
            // One flat buffer per response: one send instead of a writev of
            // head and body (measured cheaper for small responses).
            Box::pin(h1.serve(TokioIo::new(stream), svc, Some(false), &stop)).await
        }
        Some(acceptor) => {
            let mut tls_stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %peer, "TLS handshake timed out");
                    return;
                }
            };
            // As before the handshake: hyper's connection (its dispatcher
            // and buffers) only once the client sends its first request
            // bytes, unless they came with the handshake's last flight and
            // rustls holds them already.
            let left = header_timeout.saturating_sub(accepted.elapsed());
            if !crate::tls::holds_plaintext(tls_stream.get_mut().1)
                && !first_bytes(tls_stream.get_ref().0.get_ref(), left, &idle_stop).await
            {
                return;
            }
            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let ctx = match keep_tls_facts {
                false => ctx,
                true => {
                    Arc::new(ClientContext { tls: Some(crate::tls::facts(tls_stream.get_ref().1)), ..(*ctx).clone() })
                }
            };
            let io = TokioIo::new(tls_stream);
            if h2 {
                let streams = Arc::new(OpenStreams::default());
                let svc = h2_service(routing, index, ctx, refusal, streams.clone());
                let limits = Http2 { max_buf, max_streams: http2_max_streams, timeouts: t };
                Box::pin(limits.serve(io, svc, streams, peer, &stop)).await
            } else {
                let svc = service(routing, index, ctx, refusal, stop.clone());
                Box::pin(h1.serve(io, svc, None, &stop)).await
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %peer, "client connection ended: {e}");
    }
    drop(permit);
}

/// How a client connection speaks HTTP/1.1.
struct Http1 {
    header_timeout: std::time::Duration,
    max_buf: usize,
    keep_alive: bool,
}

impl Http1 {
    /// `writev`: hyper's choice between vectored and flattened writes
    /// (None: its default, by what the stream supports).
    async fn serve<I, S>(self, io: I, svc: S, writev: Option<bool>, stop: &CancellationToken) -> hyper::Result<()>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: hyper::service::HttpService<Incoming, ResBody = StreamBody>,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(self.max_buf)
            .keep_alive(self.keep_alive);
        if let Some(w) = writev {
            b.writev(w);
        }
        crate::upgradable::serve(b.serve_connection(io, svc).with_upgrades(), stop).await
    }
}

/// How a client connection speaks HTTP/2: keep-alive pings, a close when
/// idle for `http2_idle` or when the worker drains (GOAWAY, open streams
/// finish; dropped if still without a stream a further `http2_idle`
/// later), and a close when a stream accepts no data for `client_send`.
struct Http2 {
    max_buf: usize,
    max_streams: u32,
    timeouts: bulwark_config::lb::Timeouts,
}

impl Http2 {
    async fn serve<I, S>(
        self,
        io: I,
        svc: S,
        streams: Arc<OpenStreams>,
        peer: SocketAddr,
        stop: &CancellationToken,
    ) -> hyper::Result<()>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: hyper::service::HttpService<Incoming, ResBody = StreamBody>,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let t = self.timeouts;
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(self.max_buf as u32)
            .keep_alive_interval(Some(t.http2_ping_interval))
            .keep_alive_timeout(t.http2_ping_timeout)
            .max_concurrent_streams(self.max_streams)
            // RFC 8441: WebSockets over HTTP/2 streams.
            .enable_connect_protocol();
        let conn = b.serve_connection(io, svc);
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = streams.stalled_for(t.client_send) => {
                    tracing::info!(
                        client = %peer,
                        "closing: an HTTP/2 stream accepted no data for {:?} (timeouts.client_send)",
                        t.client_send
                    );
                    break Ok(());
                }
                _ = streams.idle_for(t.http2_idle) => {
                    if closing {
                        // Still no stream a whole `http2_idle` after the
                        // GOAWAY: hyper waits for a preface that never
                        // ends, or the client ignores the GOAWAY.
                        tracing::debug!(client = %peer, "dropping an HTTP/2 connection idle since its GOAWAY");
                        break Ok(());
                    }
                    tracing::debug!(client = %peer, "closing an idle HTTP/2 connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = stop.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// The per-connection service of an HTTP/1 connection: every request
/// through [`handle`].
fn service(
    routing: Arc<ArcSwap<Routing>>,
    index: usize,
    ctx: Arc<ClientContext>,
    refusal: Option<Refusal>,
    closing: CancellationToken,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<StreamBody>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<hyper::Response<StreamBody>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        answer(&routing, index, &ctx, &refusal, None, Some(&closing), req)
    })
}

/// The per-connection service of an HTTP/2 connection: each request
/// counts as an open stream until its response body is gone. Its future is
/// boxed: the request's whole forwarding state is a large future, and hyper
/// moves it into each stream's task by copying it (a quarter of the lb's
/// `memmove` under HTTP/2 in a profile); a box moves as a pointer. HTTP/1
/// keeps it unboxed: its dispatcher moves it once, into a slot of its own.
fn h2_service(
    routing: Arc<ArcSwap<Routing>>,
    index: usize,
    ctx: Arc<ClientContext>,
    refusal: Option<Refusal>,
    streams: Arc<OpenStreams>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<StreamBody>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<hyper::Response<StreamBody>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        Box::pin(answer(&routing, index, &ctx, &refusal, Some(&streams), None, req))
    })
}

/// The answer to one request of a connection's service.
fn answer(
    routing: &ArcSwap<Routing>,
    index: usize,
    ctx: &Arc<ClientContext>,
    refusal: &Option<Refusal>,
    streams: Option<&Arc<OpenStreams>>,
    closing: Option<&CancellationToken>,
    mut req: hyper::Request<Incoming>,
) -> impl std::future::Future<Output = Result<hyper::Response<StreamBody>, Infallible>> + Send + 'static {
    let r = routing.load_full();
    let ctx = ctx.clone();
    let refusal = refusal.clone();
    let guard = streams.map(|s| StreamGuard::open(s.clone()));
    let closing = closing.cloned();
    // A WebSocket over HTTP/2 keeps its stream open after the answer:
    // the connection is not idle while the tunnel lasts.
    if let Some(s) = streams.filter(|_| req.method() == http::Method::CONNECT) {
        let hold = bulwark_proxy::TunnelHold::new(StreamGuard::open(s.clone()));
        req.extensions_mut().insert(hold);
    }
    async move {
        let mut resp = handle(&r, index, req, &ctx, refusal).await;
        // A worker that stops answers its HTTP/1 connections' last
        // requests with `Connection: close` (see `upgradable`).
        if closing.is_some_and(|c| c.is_cancelled()) && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        Ok::<_, Infallible>(resp.map(|inner| StreamBody::new(inner, guard)))
    }
}

/// One request through the frontend's gates, then to its backend.
async fn handle(
    r: &Routing,
    index: usize,
    req: hyper::Request<Incoming>,
    ctx: &ClientContext,
    refusal: Option<Refusal>,
) -> hyper::Response<ProxyBody> {
    let fe = &r.frontends[index];
    let refusal = refusal.or_else(|| fe.firewall.check_rate(ctx.addr.ip()).err());
    if let Some(refusal) = refusal {
        let mut resp = bulwark_proxy::error_response(refusal.status(), &refusal.reason());
        if let Some(secs) = refusal.retry_after() {
            resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        return resp;
    }
    if let Some(why) = crate::request_checks::framing_error(&req) {
        return crate::request_checks::bad_request(req.version(), why);
    }
    if let Some(port) = fe.redirect_https_port {
        return crate::redirect::to_https(req, port, r.config.timeouts.client_body).await;
    }
    let compress = fe
        .compression
        .as_ref()
        .map(|c| (c, req.method().clone(), bulwark_proxy::compress::accept_encoding(req.headers())));
    let mut resp = fe.forwarder.forward(req, ctx).await;
    if let Some((c, method, accept)) = compress {
        resp = c.apply(&method, accept.as_ref(), resp, |b| ProxyBody::Compressed(Box::new(b)));
    }
    if let Some(h) = &fe.hsts {
        resp.headers_mut().insert(http::header::STRICT_TRANSPORT_SECURITY, h.clone());
    }
    resp
}
