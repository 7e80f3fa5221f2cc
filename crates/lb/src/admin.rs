//! The admin listener: `/health` (open), and behind the admin token
//! `/api/overview` (the dashboard's data), `/stats` (JSON) and `/metrics`
//! (Prometheus text); `/` and `/dashboard` serve the dashboard page.
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
use http::{header, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::fmt::Write;
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
        "/metrics" => ("text/plain; version=0.0.4", metrics(&r, ctx)),
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

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Prometheus text exposition of everything the lb counts.
fn metrics(r: &Routing, ctx: &AdminContext) -> String {
    let now = monotonic_ms();
    let mut out = String::with_capacity(16 * 1024);
    let servers: Vec<_> = r
        .config
        .backends
        .iter()
        .flat_map(|b| r.upstreams[&b.name].servers.iter().map(move |s| (b.name.as_str(), s)))
        .collect();
    let label = |b: &str, s: &bulwark_proxy::ServerState| format!("backend=\"{b}\",server=\"{}\"", s.name);

    family(&mut out, "bulwark_lb_requests_total", "counter", "Responses relayed from servers, by status class.");
    for (b, s) in &servers {
        for (i, class) in ["other", "1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let _ = writeln!(
                out,
                "bulwark_lb_requests_total{{{},code=\"{class}\"}} {}",
                label(b, s),
                s.stats.responses[i].load(Ordering::Relaxed)
            );
        }
    }
    family(
        &mut out,
        "bulwark_lb_request_duration_seconds",
        "histogram",
        "Time from request to the server's response head.",
    );
    for (b, s) in &servers {
        s.stats.latency.write_prometheus(&mut out, "bulwark_lb_request_duration_seconds", &label(b, s));
    }
    type Read = fn(&bulwark_proxy::ServerStats) -> u64;
    let counters: [(&str, &str, Read); 8] = [
        ("bulwark_lb_server_attempts_total", "Requests sent (or tried) to the server, retries included.", |st| {
            st.requests.load(Ordering::Relaxed)
        }),
        ("bulwark_lb_retries_total", "Attempts that were retries of a failed attempt.", |st| {
            st.retries.load(Ordering::Relaxed)
        }),
        ("bulwark_lb_connect_errors_total", "Failed connection attempts to the server.", |st| {
            st.connect_errors.load(Ordering::Relaxed)
        }),
        ("bulwark_lb_response_errors_total", "Connections that failed before a response head.", |st| {
            st.response_errors.load(Ordering::Relaxed)
        }),
        ("bulwark_lb_timeouts_total", "Requests the server did not answer in time.", |st| {
            st.timeouts.load(Ordering::Relaxed)
        }),
        ("bulwark_lb_health_check_failures_total", "Failed active health checks.", |st| {
            st.check_failures.load(Ordering::Relaxed)
        }),
        ("bulwark_lb_upstream_connections_opened_total", "New connections opened to the server.", |st| {
            st.connections_opened.load(Ordering::Relaxed)
        }),
        ("bulwark_lb_tunnels_total", "Tunnels opened (upgrades the server accepted with 101).", |st| {
            st.tunnels.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, get) in counters {
        family(&mut out, name, "counter", help);
        for (b, s) in &servers {
            let _ = writeln!(out, "{name}{{{}}} {}", label(b, s), get(&s.stats));
        }
    }
    family(
        &mut out,
        "bulwark_lb_server_up",
        "gauge",
        "1 when the server takes traffic (up, not ejected or in maintenance).",
    );
    for (b, s) in &servers {
        let _ = writeln!(out, "bulwark_lb_server_up{{{}}} {}", label(b, s), u8::from(s.state_name(now) == "up"));
    }
    family(&mut out, "bulwark_lb_server_weight", "gauge", "Configured weight.");
    for (b, s) in &servers {
        let _ = writeln!(out, "bulwark_lb_server_weight{{{}}} {}", label(b, s), s.weight);
    }
    family(&mut out, "bulwark_lb_server_in_flight", "gauge", "Requests in flight to the server.");
    for (b, s) in &servers {
        let _ = writeln!(out, "bulwark_lb_server_in_flight{{{}}} {}", label(b, s), s.in_flight.load(Ordering::Relaxed));
    }
    family(&mut out, "bulwark_lb_tunnels_open", "gauge", "Tunnels (e.g. WebSockets) open to the server.");
    for (b, s) in &servers {
        let _ = writeln!(
            out,
            "bulwark_lb_tunnels_open{{{}}} {}",
            label(b, s),
            s.stats.tunnels_open.load(Ordering::Relaxed)
        );
    }
    family(&mut out, "bulwark_lb_frontend_connections", "gauge", "Open client connections per frontend.");
    for (i, f) in r.config.frontends.iter().enumerate() {
        let n = ctx.connections.get(i).map(|c| c.load(Ordering::Relaxed)).unwrap_or(0);
        let _ = writeln!(out, "bulwark_lb_frontend_connections{{frontend=\"{}\"}} {n}", f.name);
    }
    family(
        &mut out,
        "bulwark_lb_certificate_expiry_days",
        "gauge",
        "Days until the frontend's soonest certificate expires.",
    );
    for (name, days) in &r.certificate_expiry {
        let _ = writeln!(out, "bulwark_lb_certificate_expiry_days{{frontend=\"{name}\"}} {days}");
    }
    family(&mut out, "bulwark_alerts_firing", "gauge", "Alerts currently firing, by rule.");
    let mut by_rule = std::collections::BTreeMap::new();
    for a in ctx.monitor.firing() {
        *by_rule.entry(a.name).or_insert(0u32) += 1;
    }
    for (name, n) in by_rule {
        let _ = writeln!(out, "bulwark_alerts_firing{{alert=\"{name}\"}} {n}");
    }
    ctx.floating.write_prometheus(&mut out);
    out.push_str(&bulwark_telemetry::process::process_metrics());
    out
}
