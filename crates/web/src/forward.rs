//! `[[proxy]]` routes served by `bulwark-proxy`: one upstream pool per
//! route with its balancing, health checks, passive ejection and retries.
use crate::body::WebBody;
use crate::proxy_route::{ProxyRoute, RouteFuture};
use bulwark_config::web::ProxyRoute as RouteConfig;
use bulwark_proxy::{ClientContext, ForwardOptions, Forwarder, HealthCheck, Upstream};
use http::{HeaderName, HeaderValue, Request};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct ForwardRoute {
    forwarder: Forwarder,
}

/// The web role's request-body limits, applied to proxied requests too.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_body_bytes: u64,
    pub body_timeout: std::time::Duration,
}

/// Why a `[[proxy]]` route cannot be built: its config is wrong, so
/// retrying cannot help.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Upstream(#[from] bulwark_proxy::UpstreamError),
    #[error("upstream_secret is not a valid header value")]
    Secret,
    #[error(transparent)]
    HeaderRules(#[from] bulwark_proxy::HeaderRuleError),
}

impl ForwardRoute {
    /// Build route number `index`; its health checks run on the current
    /// runtime until `stop`. `secret` (the web→app credential) is sent as
    /// `X-Bulwark-Cluster`; with `tls` the servers are reached over mutual
    /// TLS.
    /// Request bodies are held to the web role's `limits.max_body_bytes`
    /// (413) and `timeouts.body` (408), as for static files.
    pub fn new(
        index: usize,
        cfg: &RouteConfig,
        limits: RequestLimits,
        secret: Option<&str>,
        tls: Option<&bulwark_config::internal_tls::TlsFiles>,
        stop: CancellationToken,
    ) -> Result<Self, RouteError> {
        let name = format!("proxy{index}");
        let upstream = Arc::new(Upstream::new(cfg.to_backend(&name, tls), None)?);
        HealthCheck::spawn(upstream.clone(), stop);
        let mut set_headers = Vec::new();
        if let Some(s) = secret {
            let v = HeaderValue::from_str(s).map_err(|_| RouteError::Secret)?;
            set_headers.push((HeaderName::from_static("x-bulwark-cluster"), v));
        }
        let options = ForwardOptions {
            route: format!("{name} {}", cfg.prefix),
            proto: "http",
            forwarded_headers: cfg.forwarded_headers,
            // Behind the lb: keep the scheme the client really used.
            keep_forwarded_proto: true,
            via: false,
            access_log: false,
            access_writer: None,
            connect_timeout: cfg.connect_timeout,
            server_timeout: cfg.server_timeout,
            set_headers,
            max_body_bytes: limits.max_body_bytes,
            body_timeout: Some(limits.body_timeout),
            tunnel_idle: cfg.tunnel_timeout,
            // Passed on as it came from the lb.
            request_id: bulwark_proxy::RequestIdMode::Off,
            header_rules: bulwark_proxy::CompiledRules::new(&cfg.headers)?.map(Arc::new),
        };
        Ok(ForwardRoute { forwarder: Forwarder::new(upstream, options) })
    }
}

impl ProxyRoute for ForwardRoute {
    fn server_timeout(&self) -> std::time::Duration {
        self.forwarder.options.server_timeout
    }

    fn has_available_server(&self) -> bool {
        let now = bulwark_telemetry::clock::monotonic_ms();
        self.forwarder.upstream.servers.iter().any(|s| s.is_available(now))
    }

    fn servers(&self) -> Vec<(String, bool)> {
        let now = bulwark_telemetry::clock::monotonic_ms();
        self.forwarder.upstream.servers.iter().map(|s| (s.addr.to_string(), s.is_available(now))).collect()
    }

    fn tunnels(&self) -> (u64, u64) {
        let servers = &self.forwarder.upstream.servers;
        let sum = |get: fn(&bulwark_proxy::ServerStats) -> u64| servers.iter().map(|s| get(&s.stats)).sum();
        (sum(|st| st.tunnels.load(Relaxed)), sum(|st| st.tunnels_open.load(Relaxed)))
    }

    fn forward(&self, req: Request<Incoming>, client: SocketAddr) -> RouteFuture<'_> {
        Box::pin(async move {
            let ctx = ClientContext::new(client, "http");
            self.forwarder.forward(req, &ctx).await.map(WebBody::other)
        })
    }
}
