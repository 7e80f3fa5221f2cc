//! Worker threads and their listeners. Each worker is an OS thread with a
//! `current_thread` runtime and its own SO_REUSEPORT socket per frontend, so
//! the kernel spreads connections across workers and a connection is
//! handled start to finish by one thread (no work stealing, no shared
//! connection pool lock).
use crate::routing::Routing;
use crate::send_deadline::SendDeadline;
use arc_swap::ArcSwap;
use bulwark_config::lb::{Frontend, Mode};
use bulwark_firewall::{ConnectionPermit, Refusal};
use bulwark_proxy::{ClientContext, ProxyBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) struct BoundFrontend {
    pub index: usize,
    pub name: String,
    pub addr: SocketAddr,
    pub mode: Mode,
    /// One socket per worker (SO_REUSEPORT), or one shared socket.
    sockets: Vec<std::net::TcpListener>,
}

fn listen_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

impl BoundFrontend {
    pub fn bind(index: usize, f: &Frontend, threads: usize) -> std::io::Result<BoundFrontend> {
        let want: SocketAddr =
            f.bind.parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
        let first = listen_socket(want, f.reuse_port)?;
        // A `:0` bind resolves to a concrete port that the other workers share.
        let addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..threads {
            if f.reuse_port {
                sockets.push(listen_socket(addr, true)?);
            } else {
                sockets.push(sockets[0].try_clone()?);
            }
        }
        Ok(BoundFrontend { index, name: f.name.clone(), addr, mode: f.mode, sockets })
    }
}

pub(crate) fn spawn_workers(
    threads: usize,
    frontends: Vec<BoundFrontend>,
    routing: Arc<ArcSwap<Routing>>,
    connections: Arc<Vec<AtomicI64>>,
    shutdown: CancellationToken,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    // Hand socket k of every frontend to worker k.
    let mut per_worker: Vec<Vec<(usize, String, Mode, std::net::TcpListener)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for f in frontends {
        for (k, s) in f.sockets.into_iter().enumerate() {
            per_worker[k].push((f.index, f.name.clone(), f.mode, s));
        }
    }
    let mut handles = Vec::new();
    for (k, listeners) in per_worker.into_iter().enumerate() {
        let (routing, shutdown, connections) = (routing.clone(), shutdown.clone(), connections.clone());
        let h = std::thread::Builder::new().name(format!("lb-worker-{k}")).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("worker {k}: cannot build runtime: {e}");
                    return;
                }
            };
            rt.block_on(worker(listeners, routing, connections, shutdown));
        })?;
        handles.push(h);
    }
    Ok(handles)
}

async fn worker(
    listeners: Vec<(usize, String, Mode, std::net::TcpListener)>,
    routing: Arc<ArcSwap<Routing>>,
    connections: Arc<Vec<AtomicI64>>,
    shutdown: CancellationToken,
) {
    let tasks = tokio_util::task::TaskTracker::new();
    let mut accepting = tokio::task::JoinSet::new();
    for (index, name, mode, std_listener) in listeners {
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(frontend = %name, "cannot register listener: {e}");
                continue;
            }
        };
        let (routing, tasks, stop, open) = (routing.clone(), tasks.clone(), shutdown.clone(), connections.clone());
        accepting.spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            // EMFILE and friends: back off briefly instead of spinning.
                            tracing::warn!(frontend = %name, "accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                };
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
                        let (routing, stop) = (routing.clone(), stop.clone());
                        tasks.spawn(async move {
                            serve_http(index, stream, peer, routing, stop, permit).await;
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

/// Serve one client connection: TLS handshake when configured (ALPN picks
/// HTTP/2 or HTTP/1.1), then HTTP with the frontend's firewall checks.
/// Every write to the client has the send-progress deadline
/// (`timeouts.client_send`); HTTP/2 connections get keep-alive pings and
/// are closed when idle (`timeouts.http2_*`).
async fn serve_http(
    index: usize,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    routing: Arc<ArcSwap<Routing>>,
    stop: CancellationToken,
    permit: Result<ConnectionPermit, Refusal>,
) {
    let r = routing.load_full();
    let t = r.config.timeouts.clone();
    let f = &r.config.frontends[index];
    let fe = &r.frontends[index];
    let header_timeout = t.client_header;
    let max_buf = f.max_header_bytes.max(8192);
    let tls = fe.tls.clone();
    let proto = if tls.is_some() { "https" } else { "http" };
    let ctx = Arc::new(ClientContext::new(peer, proto));
    let refusal = permit.as_ref().err().cloned();
    if let Some(refusal) = &refusal {
        tracing::info!(frontend = %f.name, client = %peer, "connection refused: {}", refusal.reason());
    }
    drop(r);
    let stream = SendDeadline::new(stream, peer, t.client_send);
    match tls {
        None => {
            let svc = service(routing, index, ctx, refusal, None);
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(max_buf)
                // One flat buffer per response: one send instead of a writev of
                // head and body (measured cheaper for small responses).
                .writev(false)
                .keep_alive(permit.is_ok());
            let conn = b.serve_connection(TokioIo::new(stream), svc).with_upgrades();
            if let Err(e) = crate::upgradable::serve(conn, &stop).await {
                tracing::debug!(client = %peer, "client connection ended: {e}");
            }
        }
        Some(acceptor) => {
            let tls_stream = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
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
            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = TokioIo::new(tls_stream);
            let result = if h2 {
                let streams = Arc::new(OpenStreams::default());
                let svc = service(routing, index, ctx, refusal, Some(streams.clone()));
                let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                b.timer(TokioTimer::new())
                    .max_header_list_size(max_buf as u32)
                    .keep_alive_interval(Some(t.http2_ping_interval))
                    .keep_alive_timeout(t.http2_ping_timeout);
                let conn = b.serve_connection(io, svc);
                tokio::pin!(conn);
                // Graceful close (GOAWAY, open streams finish) when idle for
                // `http2_idle` or when the worker drains.
                let mut closing = false;
                loop {
                    tokio::select! {
                        r = conn.as_mut() => break r,
                        _ = streams.idle_for(t.http2_idle), if !closing => {
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
            } else {
                let svc = service(routing, index, ctx, refusal, None);
                let mut b = http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .max_buf_size(max_buf)
                    .keep_alive(permit.is_ok());
                crate::upgradable::serve(b.serve_connection(io, svc).with_upgrades(), &stop).await
            };
            if let Err(e) = result {
                tracing::debug!(client = %peer, "client connection ended: {e}");
            }
        }
    }
    drop(permit);
}

/// The per-connection service: every request through [`handle`]; on
/// HTTP/2, each request counts as an open stream until its response body
/// is gone.
fn service(
    routing: Arc<ArcSwap<Routing>>,
    index: usize,
    ctx: Arc<ClientContext>,
    refusal: Option<Refusal>,
    streams: Option<Arc<OpenStreams>>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<StreamBody>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<hyper::Response<StreamBody>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let r = routing.load_full();
        let ctx = ctx.clone();
        let refusal = refusal.clone();
        let guard = streams.as_ref().map(|s| StreamGuard::open(s.clone()));
        async move {
            let resp = handle(&r, index, req, &ctx, refusal).await;
            Ok::<_, Infallible>(resp.map(|inner| StreamBody { inner, _guard: guard }))
        }
    })
}

/// Streams open on one HTTP/2 connection, and since when none is.
#[derive(Default)]
struct OpenStreams {
    open: AtomicUsize,
    /// `bulwark_proxy::now_ms` when the last stream ended (0: never opened).
    idle_since_ms: AtomicU64,
    changed: tokio::sync::Notify,
}

impl OpenStreams {
    /// Resolves once no stream has been open for `idle`.
    async fn idle_for(&self, idle: std::time::Duration) {
        let idle_ms = idle.as_millis() as u64;
        let start = bulwark_proxy::now_ms();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.open.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            let since = self.idle_since_ms.load(Ordering::SeqCst).max(start);
            let now = bulwark_proxy::now_ms();
            let deadline = since + idle_ms;
            if now >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(deadline - now)) => {}
                _ = changed => {}
            }
        }
    }
}

/// One open HTTP/2 stream; closes it on drop.
struct StreamGuard(Arc<OpenStreams>);

impl StreamGuard {
    fn open(s: Arc<OpenStreams>) -> Self {
        s.open.fetch_add(1, Ordering::SeqCst);
        s.changed.notify_waiters();
        StreamGuard(s)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(bulwark_proxy::now_ms(), Ordering::SeqCst);
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// A response body that holds its HTTP/2 stream open until it is dropped.
struct StreamBody {
    inner: ProxyBody,
    _guard: Option<StreamGuard>,
}

impl http_body::Body for StreamBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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
    if let Some(port) = fe.redirect_https_port {
        return redirect_to_https(&req, port);
    }
    let mut resp = fe.forwarder.forward(req, ctx).await;
    if let Some(h) = &fe.hsts {
        resp.headers_mut().insert(http::header::STRICT_TRANSPORT_SECURITY, h.clone());
    }
    resp
}

/// The 308 of a plain-HTTP frontend to its HTTPS twin. The host comes from
/// the client's `Host` (or HTTP/2 `:authority`), so it is checked to be a
/// DNS name or an IP literal (anything else, or no host: 400) before it is
/// echoed into `Location`. The redirect may be cached by the browser that
/// asked (`private`), never by a shared cache, which would otherwise replay
/// one client's `Host` to others.
fn redirect_to_https(req: &hyper::Request<Incoming>, port: u16) -> hyper::Response<ProxyBody> {
    let raw = match req.headers().get(http::header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    };
    let Some(host) = raw.and_then(redirect_host) else {
        return bulwark_proxy::error_response(
            http::StatusCode::BAD_REQUEST,
            "the Host header is missing or not a valid host name",
        );
    };
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = if port == 443 { format!("https://{host}{path}") } else { format!("https://{host}:{port}{path}") };
    let Ok(value) = http::HeaderValue::from_str(&location) else {
        return bulwark_proxy::error_response(http::StatusCode::BAD_REQUEST, "the request target cannot be redirected");
    };
    let mut resp = hyper::Response::new(ProxyBody::full(format!("moved to {location}\n")));
    *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    let h = resp.headers_mut();
    h.insert(http::header::LOCATION, value);
    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("private, max-age=3600"));
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// The host part of a `Host` value that is a valid authority (RFC 3986:
/// `host[:port]`, no user info): a DNS name of letters, digits, `-` and
/// `.`, an IPv4 address, or a bracketed IPv6 address. The port is dropped.
fn redirect_host(raw: &str) -> Option<&str> {
    let authority: http::uri::Authority = raw.parse().ok()?;
    if raw.contains('@') {
        return None;
    }
    let host = authority.host();
    // `host()` borrows from `authority`; find the same text in `raw`.
    let (host, rest) = raw.split_at(host.len());
    if !rest.is_empty() && rest.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).is_none() {
        return None;
    }
    let valid = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    valid.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::redirect_host;

    #[test]
    fn redirect_hosts_are_names_or_ip_literals() {
        assert_eq!(redirect_host("example.com:8080"), Some("example.com"));
        assert_eq!(redirect_host("Example.COM"), Some("Example.COM"));
        assert_eq!(redirect_host("127.0.0.1:80"), Some("127.0.0.1"));
        assert_eq!(redirect_host("[::1]:8080"), Some("[::1]"));
        for bad in [
            "",
            "evil.com/x",
            "user@evil.com",
            "evil.com:80@good.com",
            "a..b",
            "-a.com",
            "evil.com\\x",
            "[zz]",
            "exa mple.com",
            "evil.com%2f",
            "evil.com:notaport",
        ] {
            assert_eq!(redirect_host(bad), None, "{bad:?}");
        }
    }
}
