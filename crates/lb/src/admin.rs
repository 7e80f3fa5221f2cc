//! The admin listener: `/health` (open), and behind the admin token
//! `/api/overview` (the dashboard's data), `/stats` (JSON) and `/metrics`
//! (OpenMetrics text); `/` and `/dashboard` serve the dashboard page.
//!
//! Every answer, errors included, carries a Content-Security-Policy (the
//! page's own hash-based one for the dashboard, "nothing at all" for the
//! rest), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer`. Without a token the listener is open to
//! whoever reaches it, which config validation allows only on a loopback
//! address.
use crate::monitor::Monitor;
use crate::routing::Routing;
use arc_swap::ArcSwap;
use bulwark_config::Secret;
use bulwark_proxy::ProxyBody;
use bulwark_telemetry::clock::monotonic_ms;
use bulwark_telemetry::metrics::{self, Exposition, STATUS_CLASSES};
use http::{header, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub(crate) struct AdminContext {
    pub routing: Arc<ArcSwap<Routing>>,
    pub monitor: Arc<Monitor>,
    pub token: Option<Secret>,
    pub connections: Arc<Vec<AtomicI64>>,
    /// The address each frontend actually listens on (`:0` resolved).
    pub bound: Vec<std::net::SocketAddr>,
    /// The floating addresses this lb holds with VRRP.
    pub floating: Arc<crate::floating::FloatingAddresses>,
}

pub(crate) async fn serve(listener: tokio::net::TcpListener, ctx: AdminContext, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let ctx = ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&ctx, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(ctx: &AdminContext, req: &hyper::Request<Incoming>) -> Response<ProxyBody> {
    let mut resp = route(ctx, req);
    let page = matches!(req.uri().path(), "/" | "/dashboard") && resp.status() == StatusCode::OK;
    harden(resp.headers_mut(), page);
    resp
}

/// Browser hardening headers on one answer; `page` = the dashboard page.
fn harden(headers: &mut http::HeaderMap, page: bool) {
    use bulwark_telemetry::dashboard::{dashboard_csp, HARDENING_HEADERS, NO_CONTENT_CSP};
    let csp = if page { dashboard_csp() } else { NO_CONTENT_CSP };
    if let Ok(v) = http::HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    for (name, value) in HARDENING_HEADERS {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
}

fn route(ctx: &AdminContext, req: &hyper::Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path();
    let open = matches!(path, "/health" | "/" | "/dashboard");
    if !open {
        if let Some(token) = &ctx.token {
            if !bulwark_firewall::bearer_matches(req.headers(), token.expose()) {
                let mut r = bulwark_proxy::error_response(
                    StatusCode::UNAUTHORIZED,
                    "admin token required (Authorization: Bearer …)",
                );
                r.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
                return r;
            }
        }
    }
    let r = ctx.routing.load_full();
    let (ctype, body) = match path {
        "/health" => ("text/plain", "ok\n".to_string()),
        "/" | "/dashboard" => ("text/html; charset=utf-8", bulwark_telemetry::DASHBOARD_HTML.to_string()),
        "/api/overview" => {
            let mut overview = ctx.monitor.overview(&r, &ctx.bound);
            overview["vrrp"] = ctx.floating.overview();
            ("application/json", overview.to_string())
        }
        "/stats" => ("application/json", stats_json(&r).to_string()),
        "/metrics" => {
            let ctx = ctx.clone();
            let collector = metrics::from_fn(move |out| encode_metrics(&r, &ctx, out));
            (metrics::CONTENT_TYPE, metrics::render(vec![collector]))
        }
        _ => {
            return bulwark_proxy::error_response(
                StatusCode::NOT_FOUND,
                "try /dashboard, /api/overview, /stats, /metrics or /health",
            )
        }
    };
    let mut resp = Response::new(ProxyBody::full(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, ctype.parse().unwrap());
    resp.headers_mut().insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
    resp
}

/// `{"backends":[{"name","balance","servers":[{"name","address","state",…}]}]}`
pub fn stats_json(r: &Routing) -> serde_json::Value {
    let now = monotonic_ms();
    let backends: Vec<_> = r
        .config
        .backends
        .iter()
        .map(|b| {
            let u = &r.upstreams[&b.name];
            let servers: Vec<_> = u
                .servers
                .iter()
                .map(|s| {
                    let st = &s.stats;
                    serde_json::json!({
                        "name": s.name, "address": s.addr.to_string(), "state": s.state_name(now),
                        "weight": s.weight, "backup": s.backup,
                        "in_flight": s.in_flight.load(Ordering::Relaxed),
                        "requests": st.requests.load(Ordering::Relaxed),
                        "responses_2xx": st.responses[2].load(Ordering::Relaxed),
                        "responses_5xx": st.responses[5].load(Ordering::Relaxed),
                        "connect_errors": st.connect_errors.load(Ordering::Relaxed),
                        "retries": st.retries.load(Ordering::Relaxed),
                        "tunnels": st.tunnels.load(Ordering::Relaxed),
                        "tunnels_open": st.tunnels_open.load(Ordering::Relaxed),
                    })
                })
                .collect();
            serde_json::json!({"name": b.name, "balance": format!("{:?}", b.balance).to_lowercase(), "servers": servers})
        })
        .collect();
    serde_json::json!({ "backends": backends })
}

/// Everything the lb counts, per server of each backend, per frontend,
/// alerts firing, and its floating addresses.
fn encode_metrics(r: &Routing, ctx: &AdminContext, out: &mut Exposition<'_>) -> std::fmt::Result {
    let now = monotonic_ms();
    let servers: Vec<_> = r
        .config
        .backends
        .iter()
        .flat_map(|b| r.upstreams[&b.name].servers.iter().map(move |s| (b.name.as_str(), &**s)))
        .collect();
    fn label<'a>(&(b, s): &(&'a str, &'a bulwark_proxy::ServerState)) -> [(&'static str, &'a str); 2] {
        [("backend", b), ("server", s.name.as_str())]
    }
    let requests = servers.iter().flat_map(|&(b, s)| {
        STATUS_CLASSES.iter().enumerate().map(move |(i, &class)| {
            (
                [("backend", b), ("server", s.name.as_str()), ("code", class)],
                s.stats.responses[i].load(Ordering::Relaxed),
            )
        })
    });
    out.counters("bulwark_lb_requests", "Responses relayed from servers, by status class.", requests)?;
    out.histograms(
        "bulwark_lb_request_duration_seconds",
        "Time from request to the server's response head.",
        servers.iter().map(|bs| (label(bs), &bs.1.stats.latency)),
    )?;
    type Read = fn(&bulwark_proxy::ServerStats) -> &std::sync::atomic::AtomicU64;
    let counters: [(&str, &str, Read); 8] = [
        ("bulwark_lb_server_attempts", "Requests sent (or tried) to the server, retries included.", |st| &st.requests),
        ("bulwark_lb_retries", "Attempts that were retries of a failed attempt.", |st| &st.retries),
        ("bulwark_lb_connect_errors", "Failed connection attempts to the server.", |st| &st.connect_errors),
        ("bulwark_lb_response_errors", "Connections that failed before a response head.", |st| &st.response_errors),
        ("bulwark_lb_timeouts", "Requests the server did not answer in time.", |st| &st.timeouts),
        ("bulwark_lb_health_check_failures", "Failed active health checks.", |st| &st.check_failures),
        ("bulwark_lb_upstream_connections_opened", "New connections opened to the server.", |st| {
            &st.connections_opened
        }),
        ("bulwark_lb_tunnels", "Tunnels opened (upgrades the server accepted with 101).", |st| &st.tunnels),
    ];
    for (name, help, read) in counters {
        out.counters(name, help, servers.iter().map(|bs| (label(bs), read(&bs.1.stats).load(Ordering::Relaxed))))?;
    }
    type Gauge = fn(&bulwark_proxy::ServerState, u64) -> i64;
    let gauges: [(&str, &str, Gauge); 4] = [
        ("bulwark_lb_server_up", "1 when the server takes traffic (up, not ejected or in maintenance).", |s, now| {
            i64::from(s.state_name(now) == "up")
        }),
        ("bulwark_lb_server_weight", "Configured weight.", |s, _| i64::from(s.weight)),
        ("bulwark_lb_server_in_flight", "Requests in flight to the server.", |s, _| {
            i64::from(s.in_flight.load(Ordering::Relaxed))
        }),
        ("bulwark_lb_tunnels_open", "Tunnels (e.g. WebSockets) open to the server.", |s, _| {
            i64::try_from(s.stats.tunnels_open.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
        }),
    ];
    for (name, help, read) in gauges {
        out.gauges(name, help, servers.iter().map(|bs| (label(bs), read(bs.1, now))))?;
    }
    let connections = r.config.frontends.iter().enumerate().map(|(i, f)| {
        ([("frontend", f.name.as_str())], ctx.connections.get(i).map(|c| c.load(Ordering::Relaxed)).unwrap_or(0))
    });
    out.gauges("bulwark_lb_frontend_connections", "Open client connections per frontend.", connections)?;
    out.gauges(
        "bulwark_lb_certificate_expiry_days",
        "Days until the frontend's soonest certificate expires.",
        r.certificate_expiry.iter().map(|(name, days)| ([("frontend", name.as_str())], *days)),
    )?;
    let mut by_rule = std::collections::BTreeMap::new();
    for a in ctx.monitor.firing() {
        *by_rule.entry(a.name).or_insert(0i64) += 1;
    }
    out.gauges(
        "bulwark_alerts_firing",
        "Alerts currently firing, by rule.",
        by_rule.into_iter().map(|(n, v)| ([("alert", n)], v)),
    )?;
    ctx.floating.encode_metrics(out)
}
