//! HTTP forwarding: pick a server, send the request over a pooled
//! connection, retry by the rules, and answer failures by their
//! [`ProxyError`]: the client's (400/408/413, never counted against the
//! server, never retried) or the server's (502/503/504).
//!
//! Retry rules (HAProxy's `retry-on conn-failure` plus safe replays):
//! - a connect failure always moves on to another server;
//! - a request hyper hands back unsent (a pooled connection the server had
//!   just closed) is resent on a fresh connection, whatever its method;
//! - an idempotent request without a body is replayed on another server when
//!   the connection fails before the first response byte;
//! - a request of any method carrying an `Idempotency-Key` header
//!   ([`IDEMPOTENCY_KEY`], draft-ietf-httpapi-idempotency-key-header) is
//!   replayed the same way, its body read ahead into memory first; a body
//!   over the backend's `retries.max_replay_body_bytes` is streamed instead
//!   and not replayed. The server behind must honour the key (execute a
//!   request with a given key at most once): the proxy only resends it;
//! - anything else that was sent is never replayed;
//! - a server that accepted the request but did not answer within the
//!   server timeout is not retried (504): it may still be working on it;
//! - every retry after the first attempt is drawn from the backend's retry
//!   budget and counted in the server's `retries`;
//! - a failure of the client's request body (malformed chunk, short body,
//!   over the size limit, too slow) is never retried and never a passive
//!   failure of the server.
use crate::body::{self, BufferedBody, LimitedBody, PooledBody, ProxyBody, ReadAhead, RequestBody};
use crate::error::{ErrorKind, ErrorSource, ProxyError};
use crate::headers::{self, ForwardedValues};
use crate::pool;
use crate::request_id::{self, RequestIdMode, X_REQUEST_ID};
use crate::server::{InFlight, ServerState};
use crate::upstream::Upstream;
use bulwark_telemetry::clock::{monotonic_ms, monotonic_us};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Per-frontend forwarding behaviour.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Name used in logs (the frontend or route).
    pub route: String,
    /// Scheme the client used: "http" or "https".
    pub proto: &'static str,
    pub forwarded_headers: bool,
    /// Keep an incoming `X-Forwarded-Proto` (inner tiers behind a trusted
    /// proxy); the edge overwrites it.
    pub keep_forwarded_proto: bool,
    pub via: bool,
    pub access_log: bool,
    pub connect_timeout: Duration,
    /// Time allowed for the server to start its response.
    pub server_timeout: Duration,
    /// Extra request headers set on every forwarded request (e.g. the
    /// cluster secret towards an inner tier).
    pub set_headers: Vec<(http::HeaderName, HeaderValue)>,
    /// Largest request body accepted from the client (→ 413).
    pub max_body_bytes: u64,
    /// Time allowed to receive the whole request body (→ 408).
    pub body_timeout: Option<Duration>,
    /// A tunnel (an upgraded connection, e.g. a WebSocket) with no byte
    /// moving either way for this long is closed.
    pub tunnel_idle: Duration,
    /// `X-Request-Id`: set at the edge, passed on by inner tiers.
    pub request_id: RequestIdMode,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            route: "default".into(),
            proto: "http",
            forwarded_headers: true,
            keep_forwarded_proto: false,
            via: true,
            access_log: true,
            connect_timeout: Duration::from_secs(3),
            server_timeout: Duration::from_secs(30),
            set_headers: Vec::new(),
            max_body_bytes: 16 * 1024 * 1024,
            body_timeout: Some(Duration::from_secs(30)),
            tunnel_idle: Duration::from_secs(3600),
            request_id: RequestIdMode::Off,
        }
    }
}

/// Forwards requests to one [`Upstream`]. Cheap to clone behind an `Arc`;
/// rebuilt on reload.
#[derive(Debug)]
pub struct Forwarder {
    pub upstream: Arc<Upstream>,
    pub options: ForwardOptions,
}

/// What the forwarder needs to know about the client connection; build it
/// once per connection with [`ClientContext::new`].
#[derive(Debug, Clone)]
pub struct ClientContext {
    pub addr: SocketAddr,
    pub forwarded: ForwardedValues,
}

impl ClientContext {
    /// `proto` is the scheme the client used ("http" or "https").
    pub fn new(addr: SocketAddr, proto: &'static str) -> Self {
        ClientContext { addr, forwarded: ForwardedValues::new(addr.ip(), proto) }
    }
}

/// The request header that makes a request of any method safe to replay:
/// the client promises the server will execute it at most once per key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// What is kept of a request to replay it: the head, and the body when it
/// was read ahead (`None`: bodiless).
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
    body: Option<BufferedBody>,
}

impl Replay {
    fn new(parts: &http::request::Parts, body: Option<BufferedBody>) -> Replay {
        Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body,
        }
    }

    fn build(&self) -> Request<RequestBody> {
        let body = match &self.body {
            Some(b) => RequestBody::Buffered(b.clone()),
            None => RequestBody::Empty,
        };
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        r
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

impl Forwarder {
    pub fn new(upstream: Arc<Upstream>, options: ForwardOptions) -> Self {
        Forwarder { upstream, options }
    }

    /// Forward one request from `client`; never fails: errors become
    /// 4xx/502/503/504 responses with a plain-text reason.
    pub async fn forward(&self, req: Request<Incoming>, ctx: &ClientContext) -> Response<ProxyBody> {
        let start = monotonic_us();
        match self.try_forward(req, ctx, start).await {
            Ok(resp) => resp,
            Err(e) => self.fail(e, start),
        }
    }

    async fn try_forward(
        &self,
        req: Request<Incoming>,
        ctx: &ClientContext,
        start: u64,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let client = ctx.addr;
        let up = &*self.upstream;
        let cfg = &up.config;
        up.retry_budget.deposit(start / 1000);
        let mut req = req;
        let upgrade = crate::upgrade::requested(req.version(), req.headers())
            .map(|protocol| (protocol, hyper::upgrade::on(&mut req)));
        let (mut parts, body) = req.into_parts();
        let method = parts.method.clone();
        let path_for_log = if self.options.access_log { Some(parts.uri.clone()) } else { None };

        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some((protocol, _)) = &upgrade {
            crate::upgrade::restore_headers(&mut parts.headers, protocol.clone());
        }
        headers::strip_tier_credential(&mut parts.headers);
        let request_id = match self.options.request_id {
            RequestIdMode::Off => None,
            mode => request_id::apply(mode, &mut parts.headers),
        };
        if self.options.forwarded_headers {
            headers::add_forwarded(&mut parts.headers, &ctx.forwarded, self.options.keep_forwarded_proto);
        }
        if self.options.via {
            headers::add_via(&mut parts.headers, parts.version);
        }
        for (k, v) in &self.options.set_headers {
            parts.headers.insert(k.clone(), v.clone());
        }
        // Requests go out as HTTP/1.1 whatever the client spoke. HTTP/2
        // clients send `:authority` (absolute-form here) instead of `Host`;
        // HTTP/1.1 requires `Host`, so it is set from the authority before
        // the target is cut down to origin-form.
        let client_version = parts.version;
        parts.version = Version::HTTP_11;
        if !parts.headers.contains_key(http::header::HOST) {
            if let Some(auth) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                parts.headers.insert(http::header::HOST, auth);
            }
        }
        if parts.uri.scheme().is_some() {
            // Absolute-form from the client: send origin-form upstream.
            let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            parts.uri = pq.parse().unwrap_or_else(|_| Uri::from_static("/"));
        }

        let bodiless = http_body::Body::is_end_stream(&body);
        if let Some(len) = parts.headers.get(http::header::CONTENT_LENGTH) {
            if len.to_str().ok().and_then(|l| l.parse::<u64>().ok()).is_some_and(|l| l > self.options.max_body_bytes) {
                let detail = format!("the request body is larger than {} bytes", self.options.max_body_bytes);
                return Err(ProxyError::client_body(ErrorKind::BodyTooLarge, detail));
            }
        }
        let keyed = parts.headers.contains_key(IDEMPOTENCY_KEY);
        let shutdown_on_down = cfg
            .health_check
            .as_ref()
            .is_some_and(|h| h.on_marked_down == bulwark_config::lb::OnMarkedDown::ShutdownSessions);
        let (body, replay) = if bodiless {
            let replay = (keyed || is_idempotent(&method)).then(|| Replay::new(&parts, None));
            (RequestBody::Empty, replay)
        } else {
            let limited = LimitedBody::new(body, self.options.max_body_bytes, self.options.body_timeout);
            let max_replay = cfg.retries.max_replay_body_bytes;
            let declared = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|l| l.to_str().ok()?.parse().ok());
            if keyed && max_replay > 0 && declared.is_none_or(|l: u64| l <= max_replay) {
                match body::read_ahead(limited, max_replay).await {
                    ReadAhead::Whole(b) => (RequestBody::Buffered(b.clone()), Some(Replay::new(&parts, Some(b)))),
                    ReadAhead::TooLong(rest) => (rest, None),
                    ReadAhead::Failed(e) => return Err(e),
                }
            } else {
                (RequestBody::Incoming(limited), None)
            }
        };
        if let Some((protocol, on_client)) = upgrade {
            let req = Request::from_parts(parts, body);
            return self.forward_upgrade(req, on_client, protocol, ctx, start).await;
        }
        let mut pending = Some(Request::from_parts(parts, body));

        let mut tried: Vec<usize> = Vec::new();
        let mut failure = ProxyError::no_server("no server available to take this request");
        let max_attempts = 1 + cfg.retries.attempts as usize;
        let mut attempts = 0;
        while attempts < max_attempts {
            if attempts > 0 && !up.retry_budget.try_withdraw(monotonic_ms()) {
                tracing::debug!(backend = up.name(), "retry budget spent");
                break;
            }
            attempts += 1;
            let now = if attempts == 1 { start / 1000 } else { monotonic_ms() };
            let Some(idx) = up.pick_at(client.ip(), &tried, now) else { break };
            tried.push(idx);
            let server = &up.servers[idx];
            if attempts > 1 {
                server.stats.retries.fetch_add(1, Ordering::Relaxed);
                if keyed {
                    tracing::info!(
                        route = %self.options.route,
                        backend = up.name(),
                        server = %server.name,
                        method = %method,
                        attempts,
                        "retrying a request with an Idempotency-Key on another server"
                    );
                }
            }
            let _guard = InFlight::enter(server);
            server.stats.requests.fetch_add(1, Ordering::Relaxed);

            // A pooled connection may have been closed by the server just
            // now; allow a bounded number of fresh tries on the same server.
            let mut stale_retries = 2;
            let error = loop {
                let (mut sender, reused) = match pool::checkout(server.id) {
                    Some(s) => (s, true),
                    None => {
                        match pool::connect(server.addr, self.options.connect_timeout, up.tls.as_ref(), false).await {
                            Ok(s) => {
                                server.stats.connections_opened.fetch_add(1, Ordering::Relaxed);
                                (s, false)
                            }
                            Err(e) => {
                                server.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                                break ProxyError::connect(format!("could not connect to any server ({e})"));
                            }
                        }
                    }
                };
                let req = match pending.take() {
                    Some(r) => r,
                    None => match &replay {
                        Some(rp) => rp.build(),
                        None => return Err(ProxyError::not_replayable()),
                    },
                };
                if reused && sender.ready().await.is_err() {
                    pending = Some(req);
                    if stale_retries == 0 {
                        break ProxyError::response_broken("the pooled connections to the server were closed");
                    }
                    stale_retries -= 1;
                    continue;
                }
                let exchange = tokio::time::timeout(self.options.server_timeout, sender.try_send_request(req));
                let exchange = async {
                    if !shutdown_on_down {
                        return Some(exchange.await);
                    }
                    tokio::select! {
                        r = exchange => Some(r),
                        _ = server.marked_down.notified() => None,
                    }
                };
                let Some(outcome) = exchange.await else {
                    // The health check marked the server down while this
                    // request waited for it (`on_marked_down`).
                    server.stats.response_errors.fetch_add(1, Ordering::Relaxed);
                    break ProxyError::marked_down(format!(
                        "server {} was marked down by its health check",
                        server.name
                    ));
                };
                match outcome {
                    Ok(Ok(resp)) => {
                        let took = monotonic_us().saturating_sub(start);
                        server.observe_latency(Duration::from_micros(took));
                        let status = resp.status();
                        server.count_response(status.as_u16());
                        server.stats.latency.observe(Duration::from_micros(took));
                        if status.is_server_error() && cfg.passive.on_5xx {
                            self.passive_failure(server, &format!("status {status}"));
                        } else {
                            server.record_success();
                        }
                        if let Some(uri) = &path_for_log {
                            tracing::info!(
                                target: "access",
                                route = %self.options.route,
                                client = %client,
                                method = %method,
                                uri = %uri,
                                status = status.as_u16(),
                                server = %server.name,
                                attempts,
                                ms = took as f64 / 1000.0,
                                request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
                            );
                        }
                        let mut resp = self.relay(resp, server, sender, client_version);
                        if let Some(id) = request_id {
                            // The edge tells the client the id to quote.
                            resp.headers_mut().insert(X_REQUEST_ID, id);
                        }
                        return Ok(resp);
                    }
                    Ok(Err(mut e)) => {
                        if let Some(req) = e.take_message() {
                            // Never written: safe to resend on a fresh connection.
                            pending = Some(req);
                            if stale_retries == 0 {
                                break ProxyError::response_broken(e.into_error().to_string());
                            }
                            stale_retries -= 1;
                            continue;
                        }
                        let err = e.into_error();
                        let error = ProxyError::from_send(&err);
                        if error.is_upstream()
                            && reused
                            && replay.is_some()
                            && stale_retries > 0
                            && (err.is_incomplete_message() || err.is_canceled())
                        {
                            // Classic keep-alive race on a reused connection.
                            stale_retries -= 1;
                            continue;
                        }
                        if error.is_upstream() {
                            server.stats.response_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        break error;
                    }
                    Err(_) => {
                        server.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                        break ProxyError::response_timeout(format!(
                            "the server did not answer within {:?}",
                            self.options.server_timeout
                        ));
                    }
                }
            };
            // One place decides what a failure means: only the server's own
            // failures count against it, and only a failure another server
            // may not repeat, of a request still unsent or replayable,
            // moves on to another server.
            if error.is_upstream() {
                self.passive_failure(server, &error.detail);
            }
            let moves_on = error.retry && (pending.is_some() || replay.is_some());
            if !moves_on {
                return Err(error);
            }
            failure = error;
        }
        Err(failure)
    }

    pub(crate) fn passive_failure(&self, server: &ServerState, why: &str) {
        let p = &self.upstream.config.passive;
        if server.record_failure(p.consecutive_errors, p.eject_for) {
            tracing::warn!(
                backend = self.upstream.name(),
                server = %server.name,
                reason = why,
                eject_for = ?p.eject_for,
                "server ejected after consecutive errors"
            );
        }
    }

    fn relay(
        &self,
        resp: Response<Incoming>,
        server: &ServerState,
        sender: pool::Sender,
        client_version: Version,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        if self.options.via {
            headers::add_via(&mut parts.headers, client_version.max(Version::HTTP_11));
        }
        let body = PooledBody::new(body, server.id, sender, self.upstream.config.pool_max_idle);
        Response::from_parts(parts, ProxyBody::Upstream(body))
    }

    fn fail(&self, error: ProxyError, start: u64) -> Response<ProxyBody> {
        let name = self.upstream.name();
        let status = error.status();
        let msg = match error.source {
            ErrorSource::Client => error.detail.clone(),
            _ => format!("backend `{name}`: {}", error.detail),
        };
        let ms = monotonic_us().saturating_sub(start) as f64 / 1000.0;
        match error.source {
            // A client's broken or slow body is routine: not a warning.
            ErrorSource::Client => {
                tracing::info!(route = %self.options.route, backend = name, status = status.as_u16(), ms, "client: {msg}")
            }
            _ => tracing::warn!(route = %self.options.route, backend = name, status = status.as_u16(), ms, "{msg}"),
        }
        error_response(status, &msg)
    }
}

/// A plain-text error page: `502 Bad Gateway: <reason>`.
pub fn error_response(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    let text = format!("{} {}: {}\n", status.as_u16(), status.canonical_reason().unwrap_or(""), reason);
    let mut r = Response::new(ProxyBody::full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Forget pooled connections to servers that left the configuration.
pub fn forget_server(id: u64) {
    pool::forget(id);
}
