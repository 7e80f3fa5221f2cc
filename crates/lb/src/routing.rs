use bulwark_config::lb::{LbConfig, Mode};
use bulwark_proxy::{ForwardOptions, Forwarder, HealthCheck, Upstream};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Everything a worker needs to route a request, swapped as one unit on
/// reload. Frontends are indexed by position (fixed for the process life).
pub struct Routing {
    pub config: LbConfig,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// Per frontend, in config order.
    pub forwarders: Vec<Arc<Forwarder>>,
    health: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error(transparent)]
    Upstream(#[from] bulwark_proxy::UpstreamError),
    #[error("frontend changes need a restart (listeners are kept across reloads): {0}")]
    Listeners(String),
}

impl Routing {
    pub fn build(config: LbConfig, previous: Option<&Routing>) -> Result<Routing, RoutingError> {
        if let Some(prev) = previous {
            let key = |c: &LbConfig| -> Vec<(String, String, Mode, bool)> {
                c.frontends.iter().map(|f| (f.name.clone(), f.bind.clone(), f.mode, f.reuse_port)).collect()
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
        let forwarders = config
            .frontends
            .iter()
            .map(|f| {
                Arc::new(Forwarder::new(
                    upstreams[&f.backend].clone(),
                    ForwardOptions {
                        route: f.name.clone(),
                        proto: "http",
                        forwarded_headers: f.forwarded_headers,
                        via: f.via,
                        access_log: f.access_log,
                        connect_timeout: t.connect,
                        server_timeout: t.server,
                        set_headers: Vec::new(),
                    },
                ))
            })
            .collect();
        Ok(Routing { config, upstreams, forwarders, health: CancellationToken::new() })
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
