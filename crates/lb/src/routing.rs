use crate::tls::{self, TlsError};
use bulwark_config::lb::{LbConfig, Mode};
use bulwark_firewall::Firewall;
use bulwark_proxy::{CompiledRules, ForwardOptions, Forwarder, HealthCheck, RequestIdMode, Upstream};
use bulwark_telemetry::AccessLog;
use http::HeaderValue;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Everything a worker needs to route a request, swapped as one unit on
/// reload. Frontends are indexed by position (fixed for the process life).
pub struct Routing {
    pub config: LbConfig,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// Per frontend, in config order.
    pub frontends: Vec<FrontendRuntime>,
    /// Days until the earliest certificate of each TLS frontend expires.
    pub certificate_expiry: Vec<(String, i64)>,
    /// The access log writer of a written format (`access_log_format`),
    /// shared by the frontends; reopened on SIGUSR1.
    pub access_log: Option<Arc<AccessLog>>,
    health: CancellationToken,
}

/// The live parts of one frontend.
pub struct FrontendRuntime {
    pub forwarder: Arc<Forwarder>,
    pub firewall: Arc<Firewall>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// `Strict-Transport-Security` value for TLS frontends.
    pub hsts: Option<HeaderValue>,
    pub redirect_https_port: Option<u16>,
    /// `[frontend.compression]` of the backend's responses, when on.
    pub compression: Option<bulwark_proxy::Compressor>,
    /// A header rule names a TLS fact: the listener keeps them per
    /// connection.
    pub keep_tls_facts: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error(transparent)]
    Upstream(#[from] bulwark_proxy::UpstreamError),
    #[error("frontend `{0}`: {1}")]
    Tls(String, TlsError),
    #[error("frontend `{0}` firewall: {1}")]
    Firewall(String, #[source] bulwark_firewall::FirewallError),
    #[error("backend `{0}`: {1}")]
    Secret(String, String),
    #[error("{0}")]
    AccessLog(std::io::Error),
    #[error("frontend `{0}` headers: {1}")]
    HeaderRules(String, #[source] bulwark_proxy::HeaderRuleError),
    #[error("frontend changes need a restart (listeners are kept across reloads): {0}")]
    Listeners(String),
}

impl Routing {
    pub fn build(config: LbConfig, previous: Option<&Routing>) -> Result<Routing, RoutingError> {
        if let Some(prev) = previous {
            let key = |c: &LbConfig| -> Vec<(String, std::net::SocketAddr, Mode, bool)> {
                c.frontends.iter().map(|f| (f.name.clone(), f.bind, f.mode, f.reuse_port)).collect()
            };
            if key(&prev.config) != key(&config) {
                return Err(RoutingError::Listeners(
                    "a frontend's name, bind, mode or reuse_port differs from the running config".into(),
                ));
            }
        }
        let mut upstreams = HashMap::new();
        for b in &config.backends {
            let prev = previous.and_then(|p| p.upstreams.get(&b.name)).map(|u| &**u);
            upstreams.insert(b.name.clone(), Arc::new(Upstream::new(b.clone(), prev)?));
        }
        let t = &config.timeouts;
        let mut secret_headers = HashMap::new();
        for b in &config.backends {
            let secret = bulwark_config::Secret::resolve(
                b.cluster_secret.as_ref(),
                b.cluster_secret_file.as_deref(),
                "cluster_secret",
            )
            .map_err(|e| RoutingError::Secret(b.name.clone(), e.to_string()))?;
            let mut headers = Vec::new();
            if let Some(s) = secret {
                let v = HeaderValue::from_str(s.expose())
                    .map_err(|_| RoutingError::Secret(b.name.clone(), "not a valid header value".into()))?;
                headers.push((http::HeaderName::from_static("x-bulwark-cluster"), v));
            }
            secret_headers.insert(b.name.clone(), headers);
        }
        let access_log = match config.access_log_format.is_written() {
            false => None,
            true => Some(Arc::new(
                AccessLog::open(config.access_log_format.clone(), config.access_log_file.as_deref())
                    .map_err(RoutingError::AccessLog)?,
            )),
        };
        let mut frontends = Vec::new();
        for f in &config.frontends {
            let tls = match &f.tls {
                Some(cfg) => Some(tokio_rustls::TlsAcceptor::from(
                    tls::server_config(cfg).map_err(|e| RoutingError::Tls(f.name.clone(), e))?,
                )),
                None => None,
            };
            let hsts = f
                .tls
                .as_ref()
                .filter(|t| !t.hsts.is_zero())
                .and_then(|t| HeaderValue::from_str(&format!("max-age={}", t.hsts.as_secs())).ok());
            let firewall = Firewall::new(&f.firewall).map_err(|e| RoutingError::Firewall(f.name.clone(), e))?;
            let header_rules =
                CompiledRules::new(&f.headers).map_err(|e| RoutingError::HeaderRules(f.name.clone(), e))?.map(Arc::new);
            let forwarder = Arc::new(Forwarder::new(
                upstreams[&f.backend].clone(),
                ForwardOptions {
                    route: f.name.clone(),
                    proto: if f.tls.is_some() { "https" } else { "http" },
                    forwarded_headers: f.forwarded_headers,
                    keep_forwarded_proto: false,
                    via: f.via,
                    access_log: f.access_log && access_log.is_none(),
                    access_writer: access_log.clone().filter(|_| f.access_log),
                    connect_timeout: t.connect,
                    server_timeout: t.server,
                    set_headers: secret_headers[&f.backend].clone(),
                    max_body_bytes: f.max_body_bytes,
                    body_timeout: Some(t.client_body),
                    tunnel_idle: t.tunnel,
                    request_id: match (f.request_id, f.trust_request_id) {
                        (false, _) => RequestIdMode::Off,
                        (true, false) => RequestIdMode::Generate,
                        (true, true) => RequestIdMode::Trust,
                    },
                    header_rules,
                },
            ));
            frontends.push(FrontendRuntime {
                forwarder,
                firewall: Arc::new(firewall),
                tls,
                hsts,
                redirect_https_port: f.redirect_https_port,
                compression: bulwark_proxy::Compressor::new(&f.compression),
                keep_tls_facts: f.headers.names_tls(),
            });
        }
        let certificate_expiry = config
            .frontends
            .iter()
            .filter_map(|f| Some((f.name.clone(), tls::days_until_expiry(f.tls.as_ref()?)?)))
            .collect();
        Ok(Routing { config, upstreams, frontends, certificate_expiry, access_log, health: CancellationToken::new() })
    }

    pub fn start_health_checks(&self) {
        for u in self.upstreams.values() {
            HealthCheck::spawn(u.clone(), self.health.clone());
        }
    }

    pub fn stop_health_checks(&self) {
        self.health.cancel();
    }
}
