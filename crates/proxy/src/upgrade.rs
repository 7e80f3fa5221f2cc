//! Protocol upgrades (`Connection: Upgrade` + `Upgrade: websocket`, or any
//! protocol the server accepts with `101 Switching Protocols`): the request
//! goes to one server over a connection of its own (never pooled), and
//! when the server switches, both connections are handed over by hyper and
//! their bytes spliced both ways until either side closes or nothing moves
//! for the tunnel idle timeout ([`crate::ForwardOptions::tunnel_idle`]).
//!
//! A server that answers anything but 101 has its answer relayed as for any
//! request. Only a failed connect moves on to another server: once sent, an
//! upgrade request is never replayed (the server may have switched).
//!
//! An HTTP/2 client asks for a WebSocket with an extended CONNECT
//! (RFC 8441: `:method CONNECT`, `:protocol websocket`; the lb's HTTP/2
//! listener announces `SETTINGS_ENABLE_CONNECT_PROTOCOL`). Servers speak
//! HTTP/1.1, so the stream becomes the classic handshake
//! ([`connect_to_get`]): a `GET` with `Upgrade: websocket` and a fresh
//! `Sec-WebSocket-Key` (the `Sec-WebSocket-Version`, `-Protocol` and
//! `-Extensions` the client sent go with it); the server's `101` is
//! answered on the stream as `200` (its `Sec-WebSocket-Protocol` and
//! `-Extensions` kept, `Sec-WebSocket-Accept` checked and dropped), and
//! the stream's data and the server's connection are spliced both ways,
//! as any tunnel. Another `:protocol` is answered 501. A server that
//! answers the handshake with another 2xx opened no WebSocket: the
//! stream gets 502, since a 2xx would tell the client it had one. A
//! plain `CONNECT` (no `:protocol`, or HTTP/1.1) is answered 405: this is
//! no forward proxy.
//!
//! A tunnel counts as in flight on its server for its whole life, so
//! `leastconn` balances long-lived tunnels by how many each server holds;
//! each server counts tunnels opened and open ([`crate::ServerStats`]).
use crate::body::{ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::forward::{ClientContext, Forwarder};
use crate::pool;
use crate::server::ServerState;
use base64::Engine as _;
use bulwark_telemetry::clock::{monotonic_ms, monotonic_us};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The protocol a request asks to switch to: its `Upgrade` value when the
/// request is HTTP/1.1 and its `Connection` header lists `upgrade`. No
/// allocation unless it does.
pub(crate) fn requested(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let protocol = headers.get(UPGRADE)?;
    let listed = headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade")));
    listed.then(|| protocol.clone())
}

/// An HTTP/2 extended CONNECT (RFC 8441): `Some(true)` when it asks for
/// a WebSocket, `Some(false)` for another protocol, `None` when the
/// request is not one.
pub(crate) fn extended_connect<B>(req: &Request<B>) -> Option<bool> {
    if req.version() != Version::HTTP_2 || req.method() != Method::CONNECT {
        return None;
    }
    let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
    Some(protocol.as_str().eq_ignore_ascii_case("websocket"))
}

/// Turn a WebSocket extended CONNECT into the HTTP/1.1 handshake's
/// request: a `GET` with a fresh `Sec-WebSocket-Key` (the `Connection`
/// and `Upgrade` headers are added with the other upgrades').
pub(crate) fn connect_to_get<B>(req: &mut Request<B>) {
    *req.method_mut() = Method::GET;
    req.extensions_mut().remove::<hyper::ext::Protocol>();
    let key: [u8; 16] = rand::random();
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    req.headers_mut().insert(SEC_WEBSOCKET_KEY, HeaderValue::from_str(&key).expect("base64 is a header value"));
    if !req.headers().contains_key(SEC_WEBSOCKET_VERSION) {
        req.headers_mut().insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2).
fn websocket_accept(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &[key, GUID].concat());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Put back the two hop-by-hop headers of an upgrade after the others were
/// stripped.
pub(crate) fn restore_headers(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// Holds an upgrade request's server as in flight until dropped, and,
/// once both the client's and the server's connection are handed over,
/// counts the tunnel open.
struct TunnelGuard {
    server: Arc<ServerState>,
    open: bool,
}

impl TunnelGuard {
    fn enter(server: Arc<ServerState>) -> Self {
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        TunnelGuard { server, open: false }
    }

    fn opened(&mut self) {
        self.open = true;
        self.server.stats.tunnels.fetch_add(1, Ordering::Relaxed);
        self.server.stats.tunnels_open.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.open {
            self.server.stats.tunnels_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Whatever must live as long as the tunnel a request opens, put in the
/// request's extensions by the listener: the lb's count of a client
/// connection's open HTTP/2 streams, which closes the connection once it
/// has none for a while (a WebSocket over HTTP/2 is a stream that stays
/// open after its response).
#[derive(Clone)]
pub struct TunnelHold {
    _held: std::sync::Arc<dyn std::any::Any + Send + Sync>,
}

impl TunnelHold {
    pub fn new(held: impl std::any::Any + Send + Sync) -> TunnelHold {
        TunnelHold { _held: std::sync::Arc::new(held) }
    }
}

/// The client's side of an upgrade: its connection once the answer is
/// sent, and what is held while the tunnel lasts.
pub(crate) struct ClientSide {
    pub(crate) upgrade: OnUpgrade,
    pub(crate) hold: Option<TunnelHold>,
}

impl Forwarder {
    /// Send an upgrade request (`protocol` is its `Upgrade` value) and,
    /// when the server switches, tunnel the client's connection
    /// (`client`; an HTTP/2 stream when `over_h2`, answered 200) to it.
    pub(crate) async fn forward_upgrade(
        &self,
        req: Request<RequestBody>,
        client_side: ClientSide,
        protocol: HeaderValue,
        over_h2: bool,
        ctx: &ClientContext,
        start: u64,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let up = &*self.upstream;
        let client = ctx.addr;
        let method = req.method().clone();
        let uri = self.options.access_log.then(|| req.uri().clone());
        let request_id = req.headers().get(crate::request_id::X_REQUEST_ID).cloned();
        let expected_accept =
            over_h2.then(|| req.headers().get(SEC_WEBSOCKET_KEY).map(|k| websocket_accept(k.as_bytes())));
        let mut pending = Some(req);
        let mut tried: Vec<usize> = Vec::new();
        let mut failure = ProxyError::no_server("no server available to take this request");
        let max_attempts = 1 + up.config.retries.attempts as usize;
        for attempts in 1..=max_attempts {
            if attempts > 1 && !up.retry_budget.try_withdraw(monotonic_ms()) {
                break;
            }
            let Some(idx) = up.pick_at(client.ip(), &tried, monotonic_ms()) else { break };
            tried.push(idx);
            let server = &up.servers[idx];
            if attempts > 1 {
                server.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            let mut guard = TunnelGuard::enter(server.clone());
            server.stats.requests.fetch_add(1, Ordering::Relaxed);
            let mut sender = match pool::connect(server.addr, self.options.connect_timeout, up.tls.as_ref(), true).await
            {
                Ok(s) => s,
                Err(e) => {
                    server.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                    let error = ProxyError::connect(format!("could not connect to any server ({e})"));
                    self.passive_failure(server, &error.detail);
                    failure = error;
                    continue;
                }
            };
            server.stats.connections_opened.fetch_add(1, Ordering::Relaxed);
            let Some(req) = pending.take() else { break };
            let exchange = tokio::time::timeout(self.options.server_timeout, sender.send_request(req)).await;
            let mut resp = match exchange {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => {
                    let error = ProxyError::from_send(&e);
                    if error.is_upstream() {
                        server.stats.response_errors.fetch_add(1, Ordering::Relaxed);
                        self.passive_failure(server, &error.detail);
                    }
                    return Err(error);
                }
                Err(_) => {
                    server.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(ProxyError::response_timeout(format!(
                        "the server did not answer within {:?}",
                        self.options.server_timeout
                    )));
                }
            };
            let took = monotonic_us().saturating_sub(start);
            let status = resp.status();
            server.count_response(status.as_u16());
            server.stats.latency.observe(Duration::from_micros(took));
            if status.is_server_error() && up.config.passive.on_5xx {
                self.passive_failure(server, &format!("status {status}"));
            } else {
                server.record_success();
            }
            if let Some(uri) = &uri {
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
            if status != StatusCode::SWITCHING_PROTOCOLS {
                // Refused: relay the answer; the connection is not kept.
                drop(guard);
                if over_h2 && status.is_success() {
                    // A 2xx on the stream would tell the client its
                    // WebSocket is open (RFC 8441 §5): it is not.
                    return Err(ProxyError::response_broken(format!(
                        "the server answered the websocket handshake with {status}, not 101"
                    )));
                }
                let (mut parts, body) = resp.into_parts();
                crate::headers::strip_hop_by_hop(&mut parts.headers);
                let body = crate::body::PooledBody::new(body, server.id, sender, 0);
                return Ok(Response::from_parts(parts, ProxyBody::Upstream(body)));
            }
            let on_server = hyper::upgrade::on(&mut resp);
            let (mut parts, _) = resp.into_parts();
            let accepted = parts.headers.get(UPGRADE).cloned().unwrap_or(protocol);
            crate::headers::strip_hop_by_hop(&mut parts.headers);
            match &expected_accept {
                None => restore_headers(&mut parts.headers, accepted),
                Some(expected) => {
                    // The HTTP/2 stream is answered 200; the handshake's
                    // proof is checked here, the client never saw the key.
                    let proof = parts.headers.remove(SEC_WEBSOCKET_ACCEPT);
                    if proof.as_ref().map(HeaderValue::as_bytes) != expected.as_ref().map(|e| e.as_bytes()) {
                        server.stats.response_errors.fetch_add(1, Ordering::Relaxed);
                        return Err(ProxyError::response_broken(
                            "the server switched to websocket without a valid Sec-WebSocket-Accept",
                        ));
                    }
                    parts.status = StatusCode::OK;
                }
            }
            let (idle, route, server_name) =
                (self.options.tunnel_idle, self.options.route.clone(), server.name.clone());
            tokio::spawn(async move {
                let ClientSide { upgrade: on_client, hold } = client_side;
                let (client_io, server_io) = match tokio::join!(on_client, on_server) {
                    (Ok(c), Ok(s)) => (c, s),
                    (c, s) => {
                        let why = c.err().or(s.err()).map(|e| e.to_string()).unwrap_or_default();
                        tracing::info!(route = %route, client = %client, server = %server_name, "tunnel not opened: {why}");
                        return;
                    }
                };
                // Counted once both sides are handed over.
                guard.opened();
                let opened = monotonic_ms();
                let (up_bytes, down_bytes) =
                    crate::tcp::splice(TokioIo::new(client_io), TokioIo::new(server_io), idle).await;
                drop((guard, hold));
                tracing::info!(
                    target: "access",
                    route = %route,
                    client = %client,
                    server = %server_name,
                    up_bytes,
                    down_bytes,
                    secs = monotonic_ms().saturating_sub(opened) as f64 / 1000.0,
                    "tunnel closed"
                );
            });
            return Ok(Response::from_parts(parts, ProxyBody::empty()));
        }
        Err(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn an_upgrade_needs_both_headers_on_http_1_1() {
        let ws = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(requested(Version::HTTP_11, &ws).unwrap(), "websocket");
        let split = headers(&[("connection", "keep-alive"), ("connection", "upgrade"), ("upgrade", "h2c")]);
        assert_eq!(requested(Version::HTTP_11, &split).unwrap(), "h2c");
        assert!(requested(Version::HTTP_10, &ws).is_none());
        assert!(requested(Version::HTTP_2, &ws).is_none());
        assert!(requested(Version::HTTP_11, &headers(&[("upgrade", "websocket")])).is_none());
        assert!(requested(Version::HTTP_11, &headers(&[("connection", "upgrade")])).is_none());
        let lookalike = headers(&[("connection", "upgrades"), ("upgrade", "websocket")]);
        assert!(requested(Version::HTTP_11, &lookalike).is_none());
    }

    #[test]
    fn an_extended_connect_becomes_the_websocket_handshake() {
        // RFC 6455 §1.3's example.
        assert_eq!(websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let connect = |protocol: &'static str| {
            let mut r = Request::new(());
            *r.method_mut() = Method::CONNECT;
            *r.version_mut() = Version::HTTP_2;
            r.extensions_mut().insert(hyper::ext::Protocol::from_static(protocol));
            r
        };
        assert_eq!(extended_connect(&connect("websocket")), Some(true));
        assert_eq!(extended_connect(&connect("connect-udp")), Some(false));
        let mut plain = connect("websocket");
        plain.extensions_mut().clear();
        assert_eq!(extended_connect(&plain), None, "a plain CONNECT is not one");
        let mut r = connect("websocket");
        r.headers_mut().insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static("chosen-by-the-client"));
        connect_to_get(&mut r);
        assert_eq!(r.method(), Method::GET);
        assert!(r.extensions().get::<hyper::ext::Protocol>().is_none());
        let key = r.headers()[SEC_WEBSOCKET_KEY].to_str().unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(key).unwrap().len(), 16, "a fresh 16-byte key");
        assert_eq!(r.headers()[SEC_WEBSOCKET_VERSION], "13");
    }
}
