//! The admin listener: `/health`, `/stats` (JSON) and `/metrics`
//! (Prometheus text) for the running routing table.
use crate::routing::Routing;
use arc_swap::ArcSwap;
use bulwark_proxy::{now_ms, ProxyBody};
use http::{header, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) async fn serve(listener: tokio::net::TcpListener, routing: Arc<ArcSwap<Routing>>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let routing = routing.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let r = routing.load_full();
                async move { Ok::<_, std::convert::Infallible>(answer(&r, req.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(r: &Routing, path: &str) -> Response<ProxyBody> {
    let (ctype, body) = match path {
        "/health" => ("text/plain", "ok\n".to_string()),
        "/stats" => ("application/json", stats_json(r).to_string()),
        "/metrics" => ("text/plain; version=0.0.4", metrics(r)),
        _ => return bulwark_proxy::error_response(StatusCode::NOT_FOUND, "try /stats, /metrics or /health"),
    };
    let mut resp = Response::new(ProxyBody::full(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, ctype.parse().unwrap());
    resp.headers_mut().insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
    resp
}

/// `{"backends":[{"name":..,"balance":..,"servers":[{"name","address","state","weight","backup","in_flight","requests",...}]}]}`
pub fn stats_json(r: &Routing) -> serde_json::Value {
    let now = now_ms();
    let mut backends = Vec::new();
    for b in &r.config.backends {
        let u = &r.upstreams[&b.name];
        let servers = u
            .servers
            .iter()
            .map(|s| {
                let st = &s.stats;
                obj(&[
                    ("name", s.name.clone().into()),
                    ("address", s.addr.to_string().into()),
                    ("state", s.state_name(now).to_string().into()),
                    ("weight", (s.weight as u64).into()),
                    ("backup", s.backup.into()),
                    ("in_flight", (s.in_flight.load(Ordering::Relaxed) as u64).into()),
                    ("requests", st.requests.load(Ordering::Relaxed).into()),
                    ("responses_2xx", st.responses[2].load(Ordering::Relaxed).into()),
                    ("responses_5xx", st.responses[5].load(Ordering::Relaxed).into()),
                    ("connect_errors", st.connect_errors.load(Ordering::Relaxed).into()),
                    ("retries", st.retries.load(Ordering::Relaxed).into()),
                ])
            })
            .collect();
        backends.push(obj(&[
            ("name", b.name.clone().into()),
            ("balance", format!("{:?}", b.balance).to_lowercase().into()),
            ("servers", serde_json::Value::Array(servers)),
        ]));
    }
    obj(&[("backends", serde_json::Value::Array(backends))])
}

fn metrics(r: &Routing) -> String {
    let now = now_ms();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP bulwark_lb_server_up 1 when the server takes traffic.\n# TYPE bulwark_lb_server_up gauge"
    );
    for u in r.upstreams.values() {
        for s in &u.servers {
            let _ = writeln!(
                out,
                "bulwark_lb_server_up{{backend=\"{}\",server=\"{}\"}} {}",
                u.name(),
                s.name,
                (s.state_name(now) == "up") as u8
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP bulwark_lb_requests_total Responses by status class.\n# TYPE bulwark_lb_requests_total counter"
    );
    for u in r.upstreams.values() {
        for s in &u.servers {
            for (i, class) in ["other", "1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "bulwark_lb_requests_total{{backend=\"{}\",server=\"{}\",code=\"{}\"}} {}",
                    u.name(),
                    s.name,
                    class,
                    s.stats.responses[i].load(Ordering::Relaxed)
                );
            }
        }
    }
    let _ =
        writeln!(out, "# HELP bulwark_lb_in_flight Requests in flight per server.\n# TYPE bulwark_lb_in_flight gauge");
    for u in r.upstreams.values() {
        for s in &u.servers {
            let _ = writeln!(
                out,
                "bulwark_lb_in_flight{{backend=\"{}\",server=\"{}\"}} {}",
                u.name(),
                s.name,
                s.in_flight.load(Ordering::Relaxed)
            );
        }
    }
    out
}

fn obj(fields: &[(&str, serde_json::Value)]) -> serde_json::Value {
    serde_json::Value::Object(fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}
