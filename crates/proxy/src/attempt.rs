//! The phases of sending a request to the servers, each its own function:
//! pick a server ([`Forwarder::pick_server`]), connect
//! ([`Forwarder::connect`]), send and wait for the answer's head
//! ([`Forwarder::send`]), take the head in ([`Forwarder::read_head`]), and
//! decide what a failure means ([`fresh_connection_helps`],
//! [`moves_on`]). [`Forwarder::exchange`] runs them in turn.
//!
//! Retry rules (HAProxy's `retry-on conn-failure` plus safe replays):
//! - a connect failure always moves on to another server;
//! - a request that never left (hyper handed it back, or a pooled
//!   connection was found closed) is resent on a fresh connection to the
//!   same server, at most [`FRESH_CONNECTIONS`] times, whatever its method;
//! - a replayable request on a reused connection the server closed as it
//!   went out (the keep-alive race) goes again on a fresh connection too;
//! - a replayable request (idempotent and bodiless, or carrying an
//!   `Idempotency-Key` with its body read ahead) moves on to another server
//!   when the server fails before the first response byte;
//! - anything else that was sent is never replayed;
//! - a server that accepted the request but did not answer within the
//!   server timeout is not retried (504): it may still be working on it;
//! - every retry after the first attempt is drawn from the backend's retry
//!   budget and counted in the server's `retries`;
//! - only failures whose source is the server count against it (passive
//!   ejection); a client's body failure is never retried.
use crate::access::Trace;
use crate::body::{PooledBody, ProxyBody, RequestBody};
use crate::error::{ErrorKind, ProxyError, RetryType};
use crate::forward::Forwarder;
use crate::headers;
use crate::pool;
use crate::prepare::{Outgoing, RequestFacts};
use crate::request_id::X_REQUEST_ID;
use crate::server::{InFlight, ServerState};
use bulwark_telemetry::clock::{monotonic_ms, monotonic_us};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Fresh connections tried on one server for a request that never left.
pub(crate) const FRESH_CONNECTIONS: u32 = 2;

/// Whether to send the request again over a fresh connection to the same
/// server: it never left, or (when it may be sent again) a reused
/// keep-alive connection closed under it.
pub(crate) fn fresh_connection_helps(error: &ProxyError, reused: bool, resendable: bool) -> bool {
    error.retry == RetryType::FreshConnection
        && resendable
        && (error.kind == ErrorKind::Unsent || (reused && error.kind == ErrorKind::ClosedEarly))
}

/// Whether a failure on one server moves the request on to another: the
/// failure is one another server may not repeat, and the request can still
/// be sent (it never left, or it is replayable).
pub(crate) fn moves_on(error: &ProxyError, resendable: bool) -> bool {
    error.retry != RetryType::Never && resendable
}

impl Forwarder {
    /// Send `outgoing` to the servers by the retry rules until one answers
    /// or no attempt is left; the answer's head is relayed with its body
    /// streaming.
    pub(crate) async fn exchange(
        &self,
        mut outgoing: Outgoing,
        facts: &RequestFacts,
        client: SocketAddr,
        start: u64,
        trace: &mut Trace,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let up = &*self.upstream;
        let mut tried: Vec<usize> = Vec::new();
        let mut failure = ProxyError::no_server("no server available to take this request");
        let max_attempts = 1 + up.config.retries.attempts;
        for attempt in 1..=max_attempts {
            let Some(idx) = self.pick_server(client.ip(), &tried, attempt, start, facts) else { break };
            tried.push(idx);
            if attempt == 1 {
                trace.picked_us = trace.now();
            }
            (trace.server, trace.attempts) = (Some(idx), attempt);
            let server = &up.servers[idx];
            let error = match self.try_server(server, &mut outgoing, facts, client, attempt, start, trace).await {
                Ok(resp) => return Ok(resp),
                Err(error) => error,
            };
            if error.is_upstream() {
                self.passive_failure(server, &error.detail);
            }
            if !moves_on(&error, outgoing.resendable()) {
                return Err(error);
            }
            failure = error;
        }
        Err(failure)
    }

    /// Phase: pick a server not yet tried. Every attempt after the first
    /// is drawn from the retry budget (None when it is spent) and counted
    /// in the chosen server's `retries`.
    pub(crate) fn pick_server(
        &self,
        client: IpAddr,
        tried: &[usize],
        attempt: u32,
        start: u64,
        facts: &RequestFacts,
    ) -> Option<usize> {
        let up = &*self.upstream;
        let now = if attempt == 1 { start / 1000 } else { monotonic_ms() };
        if attempt > 1 && !up.retry_budget.try_withdraw(now) {
            tracing::debug!(backend = up.name(), "retry budget spent");
            return None;
        }
        let sticky = facts.sticky_server.filter(|&i| attempt == 1 && up.is_pickable(i, now));
        let idx = match sticky {
            Some(i) => i,
            None => up.pick_at(client, tried, now)?,
        };
        if attempt > 1 {
            let server = &up.servers[idx];
            server.stats.retries.fetch_add(1, Ordering::Relaxed);
            if facts.keyed {
                tracing::info!(
                    route = %self.options.route,
                    backend = up.name(),
                    server = %server.name,
                    method = %facts.method,
                    attempts = attempt,
                    "retrying a request with an Idempotency-Key on another server"
                );
            }
        }
        Some(idx)
    }

    /// One server's turn: connect, send, and read the head, with fresh
    /// connections for a request that never left. A failure returned here
    /// is final for this server and counted in its stats.
    #[allow(clippy::too_many_arguments)]
    async fn try_server(
        &self,
        server: &ServerState,
        outgoing: &mut Outgoing,
        facts: &RequestFacts,
        client: SocketAddr,
        attempt: u32,
        start: u64,
        trace: &mut Trace,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let _guard = InFlight::enter(server);
        server.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut fresh_left = FRESH_CONNECTIONS;
        loop {
            let connecting = trace.now();
            let (mut sender, reused) = self.connect(server).await.inspect_err(|e| count_failure(server, e))?;
            let sending = trace.now();
            if let (Some(from), Some(to), false) = (connecting, sending, reused) {
                trace.connect_us += to.saturating_sub(from);
            }
            let req = outgoing.take()?;
            let sent = self.send(server, &mut sender, req, reused).await;
            if let Some(from) = sending {
                trace.upstream_header_us = Some(monotonic_us().saturating_sub(from));
            }
            let error = match sent {
                Ok(resp) => return Ok(self.read_head(server, resp, sender, facts, client, attempt, start)),
                Err((error, unsent)) => {
                    if let Some(req) = unsent {
                        outgoing.put_back(req);
                    }
                    error
                }
            };
            if fresh_left > 0 && fresh_connection_helps(&error, reused, outgoing.resendable()) {
                fresh_left -= 1;
                continue;
            }
            count_failure(server, &error);
            return Err(error);
        }
    }

    /// Phase: a connection to `server`: an idle pooled one of this thread
    /// (`reused`), else a new one.
    pub(crate) async fn connect(&self, server: &ServerState) -> Result<(pool::Sender, bool), ProxyError> {
        if let Some(sender) = pool::checkout(server.id) {
            return Ok((sender, true));
        }
        let up = &*self.upstream;
        match pool::connect(server.addr, self.options.connect_timeout, up.tls.as_ref(), false).await {
            Ok(sender) => {
                server.stats.connections_opened.fetch_add(1, Ordering::Relaxed);
                Ok((sender, false))
            }
            Err(e) => Err(ProxyError::connect(format!("could not connect to any server ({e})"))),
        }
    }

    /// Phase: send the request and wait for the head of the answer, within
    /// the server timeout; with `on_marked_down = shutdown-sessions`, give
    /// up as soon as the health check marks the server down. A request that
    /// never left comes back with the error.
    async fn send(
        &self,
        server: &ServerState,
        sender: &mut pool::Sender,
        req: Request<RequestBody>,
        reused: bool,
    ) -> Result<Response<Incoming>, (ProxyError, Option<Request<RequestBody>>)> {
        if reused && sender.ready().await.is_err() {
            return Err((ProxyError::unsent("the pooled connections to the server were closed"), Some(req)));
        }
        let shutdown_on_down = self
            .upstream
            .config
            .health_check
            .as_ref()
            .is_some_and(|h| h.on_marked_down == bulwark_config::lb::OnMarkedDown::ShutdownSessions);
        let exchange = tokio::time::timeout(self.options.server_timeout, sender.try_send_request(req));
        let outcome = if shutdown_on_down {
            tokio::select! {
                r = exchange => r,
                _ = server.marked_down.notified() => {
                    let why = format!("server {} was marked down by its health check", server.name);
                    return Err((ProxyError::marked_down(why), None));
                }
            }
        } else {
            exchange.await
        };
        match outcome {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(mut e)) => match e.take_message() {
                Some(req) => Err((ProxyError::unsent(e.into_error().to_string()), Some(req))),
                None => Err((ProxyError::from_send(&e.into_error()), None)),
            },
            Err(_) => {
                let why = format!("the server did not answer within {:?}", self.options.server_timeout);
                Err((ProxyError::response_timeout(why), None))
            }
        }
    }

    /// Phase: the head of the server's answer is in. Count it (latency,
    /// status, passive health), write the access line, and relay it with
    /// its body streaming back over the pooled connection.
    #[allow(clippy::too_many_arguments)]
    fn read_head(
        &self,
        server: &ServerState,
        resp: Response<Incoming>,
        sender: pool::Sender,
        facts: &RequestFacts,
        client: SocketAddr,
        attempt: u32,
        start: u64,
    ) -> Response<ProxyBody> {
        let took = monotonic_us().saturating_sub(start);
        server.observe_latency(Duration::from_micros(took));
        let status = resp.status();
        server.count_response(status.as_u16());
        server.stats.latency.observe(Duration::from_micros(took));
        if status.is_server_error() && self.upstream.config.passive.on_5xx {
            self.passive_failure(server, &format!("status {status}"));
        } else {
            server.record_success();
        }
        if let Some(uri) = &facts.uri_for_log {
            tracing::info!(
                target: "access",
                route = %self.options.route,
                client = %client,
                method = %facts.method,
                uri = %uri,
                status = status.as_u16(),
                server = %server.name,
                attempts = attempt,
                ms = took as f64 / 1000.0,
                request_id = facts.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
            );
        }
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        if self.options.via {
            headers::add_via(&mut parts.headers, facts.client_version.max(Version::HTTP_11));
        }
        if let Some(id) = &facts.request_id {
            // The edge tells the client the id to quote.
            parts.headers.insert(X_REQUEST_ID, id.clone());
        }
        if let Some(cookie) = &self.upstream.sticky {
            if facts.sticky_server.map(|i| self.upstream.servers[i].id) != Some(server.id) {
                let secure = self.options.proto == "https";
                if let Some(v) = cookie.set_cookie(self.upstream.name(), &server.name, secure) {
                    crate::sticky::add_set_cookie(&mut parts.headers, v);
                }
            }
        }
        let body = PooledBody::new(body, server.id, sender, self.upstream.config.pool_max_idle);
        Response::from_parts(parts, ProxyBody::Upstream(body))
    }
}

/// Count a failure that ends a server's turn in the server's stats.
fn count_failure(server: &ServerState, error: &ProxyError) {
    let counter = match error.kind {
        ErrorKind::Connect => &server.stats.connect_errors,
        ErrorKind::ResponseTimeout => &server.stats.timeouts,
        ErrorKind::ResponseBroken | ErrorKind::ClosedEarly | ErrorKind::MarkedDown => &server.stats.response_errors,
        _ => return,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_never_left_goes_again_on_a_fresh_connection() {
        let unsent = ProxyError::unsent("closed");
        assert!(fresh_connection_helps(&unsent, true, true));
        assert!(fresh_connection_helps(&unsent, false, true), "handed back unsent on a new connection too");
    }

    #[test]
    fn the_keep_alive_race_is_retried_only_on_a_reused_connection_of_a_replayable_request() {
        let closed = ProxyError::closed_early("incomplete message");
        assert!(fresh_connection_helps(&closed, true, true));
        assert!(!fresh_connection_helps(&closed, false, true), "a new connection closed: the server's failure");
        assert!(!fresh_connection_helps(&closed, true, false), "a streamed body cannot go again");
    }

    #[test]
    fn other_failures_never_retry_on_the_same_server() {
        for e in [
            ProxyError::connect("refused"),
            ProxyError::response_broken("garbled"),
            ProxyError::response_timeout("slow"),
            ProxyError::marked_down("down"),
            ProxyError::client_body(ErrorKind::BodyBroken, "bad chunk"),
        ] {
            assert!(!fresh_connection_helps(&e, true, true), "{e:?}");
        }
    }

    #[test]
    fn only_a_resendable_request_moves_on_and_never_after_a_timeout_or_a_client_failure() {
        assert!(moves_on(&ProxyError::connect("refused"), true));
        assert!(moves_on(&ProxyError::response_broken("reset"), true));
        assert!(moves_on(&ProxyError::closed_early("eof"), true));
        assert!(moves_on(&ProxyError::marked_down("down"), true));
        assert!(!moves_on(&ProxyError::response_broken("reset"), false), "streamed body already sent");
        assert!(!moves_on(&ProxyError::response_timeout("slow"), true), "the server may still be working");
        assert!(!moves_on(&ProxyError::client_body(ErrorKind::BodyTimeout, "slow body"), true));
        assert!(!moves_on(&ProxyError::not_replayable(), true));
    }
}
