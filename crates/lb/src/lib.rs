//! The load balancer role (HAProxy's place in the picture).
//!
//! Owns: frontend listeners (one SO_REUSEPORT socket per worker thread, each
//! thread with its own event loop), the routing table from frontends to
//! upstreams and its atomic swap on reload, graceful drain on shutdown, the
//! admin listener (stats, metrics, health), and the floating addresses this
//! lb holds with VRRP ([`floating`]).
//!
//! Must not touch: how requests are forwarded, balanced or health-checked
//! (that is `bulwark-proxy`), config parsing (`bulwark-config`), or process
//! signals (the binary turns signals into calls here).

mod admin;
pub mod floating;
mod h2_streams;
mod listener;
pub mod monitor;
mod redirect;
mod request_checks;
mod routing;
pub mod tls;
mod upgradable;

pub use routing::{Routing, RoutingError};

use arc_swap::ArcSwap;
use bulwark_config::lb::LbConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error("frontend `{frontend}`: cannot listen on {bind}: {source}")]
    Bind { frontend: String, bind: std::net::SocketAddr, source: std::io::Error },
    #[error("admin listener: cannot listen on {bind}: {source}")]
    AdminBind { bind: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Secret(#[from] bulwark_config::SecretError),
}

/// A bound, not yet running load balancer.
pub struct LbServer {
    routing: Arc<ArcSwap<Routing>>,
    frontends: Vec<listener::BoundFrontend>,
    admin: Option<tokio::net::TcpListener>,
    threads: usize,
    monitor: Arc<monitor::Monitor>,
    /// Open client connections per frontend (for metrics).
    connections: Arc<Vec<std::sync::atomic::AtomicI64>>,
}

/// Applies new configs to a running load balancer.
#[derive(Clone)]
pub struct LbReload {
    routing: Arc<ArcSwap<Routing>>,
    monitor: Arc<monitor::Monitor>,
}

impl LbServer {
    /// Resolve servers and bind every listener. Must be called inside a
    /// tokio runtime (the admin listener and health checks live there).
    pub async fn bind(config: LbConfig) -> Result<LbServer, LbError> {
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let routing = Routing::build(config.clone(), None)?;
        let mut frontends = Vec::new();
        for (i, f) in config.frontends.iter().enumerate() {
            frontends.push(listener::BoundFrontend::bind(i, f, threads).map_err(|source| LbError::Bind {
                frontend: f.name.clone(),
                bind: f.bind,
                source,
            })?);
        }
        let admin = match &config.admin {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a.bind)
                    .await
                    .map_err(|source| LbError::AdminBind { bind: a.bind, source })?,
            ),
            None => None,
        };
        let connections = Arc::new(config.frontends.iter().map(|_| std::sync::atomic::AtomicI64::new(0)).collect());
        Ok(LbServer {
            routing: Arc::new(ArcSwap::from_pointee(routing)),
            frontends,
            admin,
            threads,
            monitor: Arc::new(monitor::Monitor::default()),
            connections,
        })
    }

    /// Names and bound addresses: one per frontend, plus `admin`.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<_> = self.frontends.iter().map(|f| (f.name.clone(), f.addr)).collect();
        if let Some(a) = &self.admin {
            if let Ok(addr) = a.local_addr() {
                v.push(("admin".into(), addr));
            }
        }
        v
    }

    pub fn reload_handle(&self) -> LbReload {
        LbReload { routing: self.routing.clone(), monitor: self.monitor.clone() }
    }

    /// Serve until `shutdown` is cancelled, then stop accepting, let
    /// in-flight requests finish (bounded by `timeouts.drain`) and return.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), LbError> {
        self.routing.load().start_health_checks();
        let floating =
            Arc::new(floating::FloatingAddresses::start(self.routing.clone(), self.monitor.clone(), shutdown.clone()));
        if let Some(listener) = self.admin {
            let cfg = self.routing.load().config.admin.clone().expect("admin listener implies [admin]");
            let token = bulwark_config::Secret::resolve(cfg.token.as_ref(), cfg.token_file.as_deref(), "admin.token")
                .map_err(LbError::Secret)?;
            let secret = bulwark_config::Secret::resolve(
                cfg.monitor_token.as_ref(),
                cfg.monitor_token_file.as_deref(),
                "admin.monitor_token",
            )
            .map_err(LbError::Secret)?;
            let ctx = admin::AdminContext {
                routing: self.routing.clone(),
                monitor: self.monitor.clone(),
                token,
                connections: self.connections.clone(),
                bound: self.frontends.iter().map(|f| f.addr).collect(),
                floating: floating.clone(),
            };
            tokio::spawn(admin::serve(listener, ctx, shutdown.clone()));
            tokio::spawn(monitor::collect(
                self.monitor.clone(),
                self.routing.clone(),
                cfg,
                secret.map(|s| s.expose().to_string()),
                shutdown.clone(),
            ));
        }
        let drain = self.routing.load().config.timeouts.drain;
        // The workers stop accepting only once the floating addresses are
        // handed over: until the peer holds them, new connections still
        // arrive here and must not be refused.
        let stop_accepting = CancellationToken::new();
        let workers = listener::spawn_workers(
            self.threads,
            self.frontends,
            self.routing.clone(),
            self.connections.clone(),
            stop_accepting.clone(),
        )
        .map_err(LbError::Thread)?;
        shutdown.cancelled().await;
        floating.stopped().await;
        stop_accepting.cancel();
        tracing::info!(threads = workers.len(), "stopped accepting; draining in-flight requests (at most {:?})", drain);
        let joined = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        });
        let _ = joined.await;
        self.routing.load().stop_health_checks();
        tracing::info!("load balancer stopped");
        Ok(())
    }
}

impl LbReload {
    /// Validate-and-swap: builds the new routing table (keeping the live
    /// state of unchanged servers) and swaps it in atomically. On error the
    /// running configuration stays as it was.
    pub fn reload(&self, config: LbConfig) -> Result<(), RoutingError> {
        let old = self.routing.load_full();
        let new = match Routing::build(config, Some(&old)) {
            Ok(n) => n,
            Err(e) => {
                self.monitor.event("warn", format!("reload rejected, running config kept: {e}"));
                return Err(e);
            }
        };
        new.start_health_checks();
        self.routing.store(Arc::new(new));
        old.stop_health_checks();
        self.monitor.event("info", "configuration reloaded".into());
        Ok(())
    }

    /// Open the access log file again (logrotate renamed it; SIGUSR1).
    pub fn reopen_access_log(&self) -> std::io::Result<()> {
        match &self.routing.load().access_log {
            Some(log) => log.reopen(),
            None => Ok(()),
        }
    }

    pub fn current(&self) -> Arc<Routing> {
        self.routing.load_full()
    }
}
