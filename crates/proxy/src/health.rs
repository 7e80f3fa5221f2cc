//! Active health checks: a task per upstream probes each server every
//! `interval` (TCP connect, or HTTP GET expecting a status) and flips it
//! down after `fall` consecutive failures and up after `rise` successes.
use crate::server::ServerState;
use crate::upstream::Upstream;
use bulwark_config::lb::{CheckKind, HealthCheck as CheckConfig};
use bulwark_mtls::{MutualTls, Stream};
use bytes::Bytes;
use http_body_util::Empty;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Health checking of one upstream; runs until its token is cancelled
/// (e.g. when a reload replaces the upstream).
pub struct HealthCheck;

impl HealthCheck {
    /// Spawn the checker on the current runtime. Does nothing when the
    /// backend has no `health_check`.
    pub fn spawn(upstream: Arc<Upstream>, stop: CancellationToken) {
        let Some(cfg) = upstream.config.health_check.clone() else { return };
        for server in upstream.servers.clone() {
            let (cfg, stop, backend) = (cfg.clone(), stop.clone(), upstream.name().to_string());
            let tls = upstream.tls.clone();
            tokio::spawn(async move {
                let mut ok_streak = 0u32;
                let mut fail_streak = 0u32;
                let mut tick = tokio::time::interval(cfg.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let result = probe(&server, &cfg, tls.as_ref()).await;
                    match result {
                        Ok(()) => {
                            fail_streak = 0;
                            ok_streak += 1;
                            // HAProxy-style: a passively ejected server comes
                            // back once `rise` checks that started after the
                            // ejection pass, instead of sitting out the whole
                            // `eject_for` (a restarted server is back in ~rise
                            // intervals).
                            let now = bulwark_telemetry::clock::monotonic_ms();
                            if let Some(since) = server.ejected_since(now) {
                                let checks_since = now.saturating_sub(since) / (cfg.interval.as_millis() as u64).max(1);
                                if ok_streak >= cfg.rise
                                    && checks_since >= cfg.rise as u64
                                    && server.clear_ejection(now)
                                {
                                    tracing::warn!(backend, server = %server.name, "server is back (health check passed {} times after its ejection)", ok_streak);
                                }
                            }
                            if !server.is_up() && ok_streak >= cfg.rise && server.set_up(true) {
                                tracing::warn!(backend, server = %server.name, "server is UP (health check passed {} times)", ok_streak);
                            }
                        }
                        Err(why) => {
                            ok_streak = 0;
                            fail_streak += 1;
                            server.stats.check_failures.fetch_add(1, Ordering::Relaxed);
                            if server.is_up() && fail_streak >= cfg.fall && server.set_up(false) {
                                tracing::warn!(backend, server = %server.name, reason = %why, "server is DOWN (health check failed {} times)", fail_streak);
                            } else {
                                tracing::debug!(backend, server = %server.name, reason = %why, "health check failed");
                            }
                        }
                    }
                }
            });
        }
    }
}

/// Why one probe of a server failed. Every cause is the server's (or the
/// path to it); the next probe, one interval later, is the retry.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("{0}")]
    Request(#[source] http::Error),
    #[error("request: {0}")]
    Send(#[source] hyper::Error),
    #[error("status {got} (expected {expected})")]
    Status { got: u16, expected: u16 },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One probe of one server, over mutual TLS with `tls` (an http check
/// then also checks the TLS handshake, as a request would make it).
pub async fn probe(server: &ServerState, cfg: &CheckConfig, tls: Option<&MutualTls>) -> Result<(), ProbeError> {
    let addr = server.addr;
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(ProbeError::Connect)?;
        if cfg.kind == CheckKind::Tcp {
            return Ok(());
        }
        let _ = stream.set_nodelay(true);
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(tls) => {
                let name = bulwark_mtls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                tls.connect(stream, name).await.map_err(ProbeError::Tls)?
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(ProbeError::Handshake)?;
        let conn = tokio::spawn(conn);
        let req = http::Request::get(cfg.path.as_str())
            .header(http::header::HOST, addr.to_string())
            .header(http::header::USER_AGENT, "bulwark-health-check")
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(ProbeError::Request)?;
        let resp = sender.send_request(req).await.map_err(ProbeError::Send)?;
        conn.abort();
        if resp.status().as_u16() == cfg.expect_status {
            Ok(())
        } else {
            Err(ProbeError::Status { got: resp.status().as_u16(), expected: cfg.expect_status })
        }
    };
    match tokio::time::timeout(cfg.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(cfg.timeout)),
    }
}

/// Default interval used in docs and tests.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
