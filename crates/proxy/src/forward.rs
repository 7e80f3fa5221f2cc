//! HTTP forwarding: the options of one frontend or route, and
//! [`Forwarder::forward`], which runs the phases of one request:
//! rewrite the head and take the body ([`crate::prepare`]), then pick a
//! server, connect, send, read the head and decide on retry
//! ([`crate::attempt`], where the retry rules are), or hand an upgrade to
//! [`crate::upgrade`]. A failure is answered by its [`ProxyError`]: the
//! client's (400/408/413, never counted against the server, never retried)
//! or the server's (502/503/504).
use crate::access::{RequestLine, Trace};
use crate::body::ProxyBody;
use crate::error::{ErrorSource, ProxyError};
use crate::header_rules::{CompiledRules, TlsFacts};
use crate::headers::ForwardedValues;
use crate::pool;
use crate::request_id::RequestIdMode;
use crate::server::ServerState;
use crate::upstream::Upstream;
use bulwark_telemetry::clock::monotonic_us;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
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
    /// Write the `text` access line (a structured log line, target
    /// `access`).
    pub access_log: bool,
    /// Write access lines in a written format (`combined`, `json`, a
    /// template) through this writer, with timings and body bytes; `None`
    /// costs nothing per request.
    pub access_writer: Option<Arc<bulwark_telemetry::AccessLog>>,
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
    /// Headers removed, set and added on requests and responses; `None`
    /// costs nothing per request.
    pub header_rules: Option<Arc<CompiledRules>>,
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
            access_writer: None,
            connect_timeout: Duration::from_secs(3),
            server_timeout: Duration::from_secs(30),
            set_headers: Vec::new(),
            max_body_bytes: 16 * 1024 * 1024,
            body_timeout: Some(Duration::from_secs(30)),
            tunnel_idle: Duration::from_secs(3600),
            request_id: RequestIdMode::Off,
            header_rules: None,
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
    /// What the TLS handshake settled, kept only when a header rule names
    /// it.
    pub tls: Option<TlsFacts>,
}

impl ClientContext {
    /// `proto` is the scheme the client used ("http" or "https").
    pub fn new(addr: SocketAddr, proto: &'static str) -> Self {
        ClientContext { addr, forwarded: ForwardedValues::new(addr.ip(), proto), tls: None }
    }
}

/// The request header that makes a request of any method safe to replay:
/// the client promises the server will execute it at most once per key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

impl Forwarder {
    pub fn new(upstream: Arc<Upstream>, options: ForwardOptions) -> Self {
        Forwarder { upstream, options }
    }

    /// Forward one request from `client`; never fails: errors become
    /// 4xx/502/503/504 responses with a plain-text reason.
    pub async fn forward(&self, req: Request<Incoming>, ctx: &ClientContext) -> Response<ProxyBody> {
        let start = monotonic_us();
        let line = self.options.access_writer.as_ref().map(|log| RequestLine::new(log, &req, ctx.addr.ip()));
        let mut trace = Trace::new(line.is_some());
        let mut resp = match self.try_forward(req, ctx, start, &mut trace).await {
            Ok(resp) => resp,
            Err(e) => self.fail(e, start),
        };
        if let Some(rules) = &self.options.header_rules {
            rules.apply_response(resp.headers_mut(), ctx);
        }
        match line {
            None => resp,
            Some(line) => {
                let upstream = trace.server.map(|i| self.upstream.servers[i].name.as_str());
                line.finish(resp, trace, &self.options.route, upstream, start)
            }
        }
    }

    async fn try_forward(
        &self,
        mut req: Request<Incoming>,
        ctx: &ClientContext,
        start: u64,
        trace: &mut Trace,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        self.upstream.retry_budget.deposit(start / 1000);
        let over_h2 = match crate::upgrade::extended_connect(&req) {
            // A tunnel to the host the client names: this is no forward
            // proxy, and a server's 2xx would tell the client it has one.
            None if req.method() == Method::CONNECT => {
                return Ok(error_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not relayed"))
            }
            None => false,
            Some(true) => {
                crate::upgrade::connect_to_get(&mut req);
                true
            }
            Some(false) => {
                return Ok(error_response(
                    StatusCode::NOT_IMPLEMENTED,
                    "extended CONNECT is relayed for the websocket protocol only",
                ))
            }
        };
        let upgrade = match over_h2 {
            true => Some(HeaderValue::from_static("websocket")),
            false => crate::upgrade::requested(req.version(), req.headers()),
        }
        .map(|protocol| {
            let hold = req.extensions_mut().remove::<crate::upgrade::TunnelHold>();
            (protocol, crate::upgrade::ClientSide { upgrade: hyper::upgrade::on(&mut req), hold })
        });
        let (mut parts, body) = req.into_parts();
        let facts = self.rewrite_head(&mut parts, ctx, upgrade.as_ref().map(|(protocol, _)| protocol));
        if trace.timed {
            trace.request_id.clone_from(&facts.request_id);
        }
        let outgoing = self.take_body(parts, body, &facts).await?;
        match upgrade {
            Some((protocol, client_side)) => {
                let req = outgoing.into_request().ok_or_else(ProxyError::not_replayable)?;
                self.forward_upgrade(req, client_side, protocol, over_h2, ctx, start).await
            }
            None => self.exchange(outgoing, &facts, ctx.addr, start, trace).await,
        }
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
