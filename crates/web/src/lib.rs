//! The web role (nginx's place in the picture): static files and the
//! reverse-proxy routes to the app tier.
//!
//! Owns: the web listeners (one SO_REUSEPORT socket per worker thread, each
//! thread with its own event loop), request limits and client timeouts,
//! safe mapping of URLs to files under the root, the per-thread file cache,
//! static responses (content types, ETag/Last-Modified and conditional
//! requests, byte ranges, precompressed `.br`/`.gz` siblings, Cache-Control
//! rules, index files), the access log (tracing target `access`, or a
//! written format through [`bulwark_telemetry::AccessLog`]), and
//! matching `[[proxy]]` prefixes to a [`ProxyRoute`].
//!
//! Must not touch: how proxied requests are forwarded, balanced or
//! health-checked (that is `bulwark-proxy`, plugged in through
//! [`ProxyRoute`]), config parsing (`bulwark-config`), or process signals
//! (the binary turns them into a cancelled token).

mod access;
mod body;
pub mod conditional;
pub use bulwark_proxy::encoding;
mod files;
mod forward;
pub mod path;
mod proxy_route;
pub mod range;
mod response_cache;
mod security_headers;
mod server;
mod site;

pub use body::{BoxError, WebBody};
pub use forward::{ForwardRoute, RequestLimits, RouteError};
pub use proxy_route::{ProxyRoute, RouteFuture};
pub use security_headers::PolicyNotHeaderValue;

use bulwark_config::web::WebConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("root {}: {source}", path.display())]
    Root { path: PathBuf, source: std::io::Error },
    #[error("root {}: not a directory", path.display())]
    RootNotDirectory { path: PathBuf },
    #[error(transparent)]
    CacheRule(#[from] files::RuleError),
    #[error("listen[{index}]: cannot listen on {listen}: {source}")]
    Bind { index: usize, listen: SocketAddr, source: std::io::Error },
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Secret(#[from] bulwark_config::SecretError),
    #[error("firewall: {0}")]
    Firewall(#[source] bulwark_firewall::FirewallError),
    #[error("proxy[{index}]: {source}")]
    Upstream { index: usize, source: forward::RouteError },
    #[error("tls: {0}")]
    Tls(bulwark_mtls::MtlsError),
    #[error("{0}")]
    AccessLog(std::io::Error),
    #[error("security_headers: {0}")]
    SecurityHeaders(#[source] security_headers::PolicyNotHeaderValue),
}

/// A bound, not yet running web server.
pub struct WebServer {
    config: WebConfig,
    root: PathBuf,
    threads: usize,
    listeners: Vec<server::BoundListener>,
    routes: Vec<Arc<dyn ProxyRoute>>,
    /// Required from the lb (`X-Bulwark-Cluster`).
    secret: Option<String>,
    /// Opens `/metrics` (bearer).
    monitor_token: Option<String>,
    /// Mutual TLS of the listeners and the `[[proxy]]` connections.
    tls: Option<bulwark_mtls::MutualTls>,
    /// The writer of a written `access_log_format`.
    access_log: Option<Arc<bulwark_telemetry::AccessLog>>,
}

impl WebServer {
    /// Check the root, bind every listen address (once per worker thread)
    /// and start every `[[proxy]]` route on `bulwark-proxy` (the same pools,
    /// balancing, health checks and retries as the lb). Must be called
    /// inside a tokio runtime: the routes' health checks run on it until
    /// `stop` is cancelled.
    pub fn bind(config: WebConfig, stop: &CancellationToken) -> Result<WebServer, WebError> {
        let root = std::fs::canonicalize(&config.root)
            .map_err(|source| WebError::Root { path: config.root.clone(), source })?;
        if !root.is_dir() {
            return Err(WebError::RootNotDirectory { path: config.root.clone() });
        }
        // Served through the configured path: a root that is a symbolic
        // link is followed when it is switched (see `files`).
        let root = std::path::absolute(&config.root).unwrap_or(root);
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let mut listeners = Vec::new();
        for (i, &addr) in config.listen.iter().enumerate() {
            let bind_err = |source| WebError::Bind { index: i, listen: addr, source };
            let name = if i == 0 { "http".to_string() } else { format!("http{i}") };
            listeners.push(server::BoundListener::bind(name, addr, threads).map_err(bind_err)?);
        }
        let secret = bulwark_config::Secret::resolve(config.secret.as_ref(), config.secret_file.as_deref(), "secret")
            .map_err(WebError::Secret)?;
        // Each hop has its own credential; a config with `secret` alone
        // uses it for every one (the single-secret setup).
        let upstream_secret = bulwark_config::Secret::resolve_or(
            config.upstream_secret.as_ref(),
            config.upstream_secret_file.as_deref(),
            "upstream_secret",
            secret.as_ref(),
        )
        .map_err(WebError::Secret)?;
        let monitor_token = bulwark_config::Secret::resolve_or(
            config.monitor_token.as_ref(),
            config.monitor_token_file.as_deref(),
            "monitor_token",
            secret.as_ref(),
        )
        .map_err(WebError::Secret)?;
        let expose = |s: Option<bulwark_config::Secret>| s.map(|s| s.expose().to_string());
        let tls = bulwark_mtls::MutualTls::load_optional(config.mutual_tls.as_ref()).map_err(WebError::Tls)?;
        let limits =
            forward::RequestLimits { max_body_bytes: config.limits.max_body_bytes, body_timeout: config.timeouts.body };
        let (upstream_tls, to_upstream) = (config.mutual_tls.clone(), upstream_secret.as_ref().map(|s| s.expose()));
        let mut routes: Vec<Arc<dyn ProxyRoute>> = Vec::with_capacity(config.proxy.len());
        for (i, p) in config.proxy.iter().enumerate() {
            let route = forward::ForwardRoute::new(i, p, limits, to_upstream, upstream_tls.as_ref(), stop.clone())
                .map_err(|source| WebError::Upstream { index: i, source })?;
            routes.push(Arc::new(route));
        }
        let access_log = match config.access_log && config.access_log_format.is_written() {
            false => None,
            true => Some(Arc::new(
                bulwark_telemetry::AccessLog::open(config.access_log_format.clone(), config.access_log_file.as_deref())
                    .map_err(WebError::AccessLog)?,
            )),
        };
        Ok(WebServer {
            config,
            root,
            threads,
            listeners,
            routes,
            secret: expose(secret),
            monitor_token: expose(monitor_token),
            tls,
            access_log,
        })
    }

    /// The access log writer (reopened on SIGUSR1 by the binary), when the
    /// format is a written one.
    pub fn access_log(&self) -> Option<Arc<bulwark_telemetry::AccessLog>> {
        self.access_log.clone()
    }

    /// Names and bound addresses of the listeners: `http`, `http1`, ...
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.iter().map(|l| (l.name.clone(), l.addr)).collect()
    }

    pub fn config(&self) -> &WebConfig {
        &self.config
    }

    /// Serve until `shutdown` is cancelled, then stop accepting, let
    /// in-flight requests finish (bounded by `timeouts.drain`) and return.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WebError> {
        let c = &self.config;
        let source = files::FileSource::new(
            self.root.clone(),
            c.index.clone(),
            c.precompressed,
            c.cache.max_file_bytes,
            &c.cache_control,
        )?;
        let shared = Arc::new(site::Shared {
            source,
            dotfiles: c.dotfiles,
            access_log: c.access_log,
            access_writer: self.access_log.clone(),
            compression: bulwark_proxy::Compressor::new(&c.compression),
            response_cache: response_cache::ResponseCache::new(&c.response_cache),
            security_headers: security_headers::SecurityPreset::new(&c.security_headers)
                .map_err(WebError::SecurityHeaders)?,
            max_body_bytes: c.limits.max_body_bytes,
            body_timeout: c.timeouts.body,
            revalidate: c.cache.revalidate,
            cache_bytes: c.cache.max_bytes,
            proxies: c.proxy.iter().map(|p| p.prefix.clone()).zip(self.routes).collect(),
            static_prefixes: c.static_prefixes.clone(),
            secret: self.secret.clone(),
            monitor_token: self.monitor_token.clone(),
            firewall: bulwark_firewall::Firewall::new(&c.firewall).map_err(WebError::Firewall)?,
            stats: Default::default(),
        });
        let settings = server::ConnectionSettings {
            header_timeout: c.timeouts.header,
            keepalive_timeout: c.timeouts.keepalive,
            send_timeout: c.timeouts.send,
            max_header_bytes: c.limits.max_header_bytes,
            drain: c.timeouts.drain,
            tls: self.tls.clone(),
        };
        let drain = c.timeouts.drain;
        let workers = server::spawn_workers(self.threads, self.listeners, shared, settings, shutdown.clone())
            .map_err(WebError::Thread)?;
        shutdown.cancelled().await;
        tracing::info!(threads = workers.len(), "stopped accepting; draining in-flight requests (at most {drain:?})");
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
        tracing::info!("web server stopped");
        Ok(())
    }
}
