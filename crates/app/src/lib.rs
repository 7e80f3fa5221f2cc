//! The application server: the built-in guestbook ("foobar"), or, with a
//! `[program]` table, the user's own program run and supervised behind the
//! role ([`program`], `front`).
//!
//! Owns: the guestbook's JSON API (`POST /api/messages`, `GET
//! /api/messages?limit&before`, `GET /api/health`), its schema migrations,
//! the read-your-writes cookie (signed, see [`CookieKey`]), the security
//! headers of its answers, the `Idempotency-Key` of posts (passed to
//! the database as the write's request id, scoped `guestbook:<key>`, so a
//! post replayed by a proxy or resent by the page is stored once and
//! answered with the first outcome), and the guestbook's web page (served
//! by the web tier as static files, see [`site_files`]), and a WebSocket
//! echo (`GET /api/ws/echo`) to check the tunnels of the tiers in front.
//!
//! Must not touch: how the database replicates (it only uses
//! `bulwark_db_api::Client`: writes go to the primary, reads to a replica), or
//! anything of the other tiers.

mod connection;
mod cookie;
pub mod deploy;
mod front;
mod handlers;
pub mod program;
mod websocket;

use bulwark_config::app::AppConfig;
use bulwark_db_api::Client;
use bulwark_firewall::Firewall;
use hyper::body::Incoming;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use cookie::CookieKey;
pub use handlers::{
    idempotency_key, validate_message, InputError, MessageInput, COOKIE, IDEMPOTENCY_KEY, MAX_IDEMPOTENCY_KEY_BYTES,
};
pub use program::{ProgramState, ProgramStatus};

/// The guestbook page and its assets: (path under the web root, bytes).
/// The script and the style sheet are files of their own so that the
/// page's Content-Security-Policy allows scripts and styles from the site
/// only (no inline code: an injected `<script>` would not run).
pub fn site_files() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("index.html", include_bytes!("../assets/index.html")),
        ("guestbook.js", include_bytes!("../assets/guestbook.js")),
        ("guestbook.css", include_bytes!("../assets/guestbook.css")),
    ]
}

/// Schema migrations, applied in order on start; each is idempotent.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            author TEXT NOT NULL,
            text TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            app TEXT NOT NULL
        )",
    ),
    (2, "CREATE INDEX IF NOT EXISTS messages_created ON messages (created_at)"),
];

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    #[error("{0}")]
    Secret(String),
    #[error("firewall: {0}")]
    Firewall(#[source] bulwark_firewall::FirewallError),
    #[error("tls: {0}")]
    Tls(#[from] bulwark_mtls::MtlsError),
    #[error("schema migration failed: {0}")]
    Migration(String),
    /// The directory of the program's socket could not be made.
    #[error("making the directory of the program's socket: {0}")]
    SocketDir(#[source] std::io::Error),
    /// The program's release directory could not be set up.
    #[error("{0}")]
    Releases(String),
}

pub(crate) struct App {
    pub config: AppConfig,
    pub db: Client,
    /// Required from the web tier (`X-Bulwark-Cluster`).
    pub secret: Option<String>,
    /// Opens `/metrics` (bearer).
    pub monitor_token: Option<String>,
    pub cookie_key: CookieKey,
    pub firewall: Firewall,
    pub stats: std::sync::Arc<handlers::AppStats>,
}

/// A bound application server.
pub struct AppServer {
    kind: Kind,
    listener: tokio::net::TcpListener,
    /// Mutual TLS of the listener: a client certificate of the cluster CA
    /// is required on every connection.
    tls: Option<bulwark_mtls::MutualTls>,
}

enum Kind {
    Guestbook(Arc<App>),
    Program(Box<front::ProgramServer>),
}

impl AppServer {
    /// Resolve the secret, run migrations against the database, bind.
    pub async fn bind(config: AppConfig) -> Result<AppServer, AppError> {
        let secret = bulwark_config::Secret::resolve(config.secret.as_ref(), config.secret_file.as_deref(), "secret")
            .map_err(|e| AppError::Secret(e.to_string()))?;
        // Each hop has its own credential; a config with `secret` alone
        // uses it for every one (the single-secret setup).
        let db_secret = bulwark_config::Secret::resolve_or(
            config.db_secret.as_ref(),
            config.db_secret_file.as_deref(),
            "db_secret",
            secret.as_ref(),
        )
        .map_err(|e| AppError::Secret(e.to_string()))?;
        let monitor_token = bulwark_config::Secret::resolve_or(
            config.monitor_token.as_ref(),
            config.monitor_token_file.as_deref(),
            "monitor_token",
            secret.as_ref(),
        )
        .map_err(|e| AppError::Secret(e.to_string()))?;
        let db_secret = db_secret.map(|s| s.expose().to_string());
        let deploy_token = bulwark_config::Secret::resolve(
            config.deploy_token.as_ref(),
            config.deploy_token_file.as_deref(),
            "deploy_token",
        )
        .map_err(|e| AppError::Secret(e.to_string()))?;
        let tls = bulwark_mtls::MutualTls::load_optional(config.mutual_tls.as_ref())?;
        if config.program.is_some() {
            let listener =
                tokio::net::TcpListener::bind(&config.listen).await.map_err(|e| AppError::Bind(config.listen, e))?;
            let server = front::ProgramServer::bind(
                config,
                secret.map(|s| s.expose().to_string()),
                db_secret,
                monitor_token.map(|s| s.expose().to_string()),
                deploy_token.map(|s| s.expose().to_string()),
            )?;
            return Ok(AppServer { kind: Kind::Program(Box::new(server)), listener, tls });
        }
        let db = Client::with_tls(
            config.db_nodes.iter().map(|n| n.to_string()),
            db_secret.as_deref().unwrap_or_default(),
            tls.clone(),
        )
        .with_deadline(config.db_deadline);
        migrate(&db).await?;
        let firewall = Firewall::new(&config.firewall).map_err(AppError::Firewall)?;
        let listener =
            tokio::net::TcpListener::bind(&config.listen).await.map_err(|e| AppError::Bind(config.listen, e))?;
        // Signed with a key derived from the app→db secret: every app
        // server has it, the web tier and the lb do not.
        let cookie_key = match db_secret.as_deref() {
            Some(s) => CookieKey::from_secret(s),
            None => {
                tracing::info!("no cluster secret: read-your-writes cookies are signed with a key of this server only");
                CookieKey::random()
            }
        };
        Ok(AppServer {
            kind: Kind::Guestbook(Arc::new(App {
                config,
                db,
                secret: secret.map(|s| s.expose().to_string()),
                monitor_token: monitor_token.map(|s| s.expose().to_string()),
                cookie_key,
                firewall,
                stats: Default::default(),
            })),
            listener,
            tls,
        })
    }

    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.listener.local_addr().map(|a| vec![("http".to_string(), a)]).unwrap_or_default()
    }

    /// The user's program's status, when this server runs one.
    pub fn program_status(&self) -> Option<tokio::sync::watch::Receiver<ProgramStatus>> {
        match &self.kind {
            Kind::Program(p) => Some(p.status()),
            Kind::Guestbook(_) => None,
        }
    }

    /// Serve until `shutdown`, then finish in-flight requests (10 s at
    /// most); a program is stopped after that.
    pub async fn run(self, shutdown: CancellationToken) {
        let app = match self.kind {
            Kind::Program(p) => return p.run(self.listener, self.tls, shutdown).await,
            Kind::Guestbook(app) => app,
        };
        let graceful = GracefulShutdown::new();
        loop {
            let Some((stream, peer)) = bulwark_workers::next_connection(&self.listener, &shutdown, "app").await else {
                break;
            };
            let _ = stream.set_nodelay(true);
            let permit = match app.firewall.admit(peer.ip()) {
                Ok(p) => p,
                Err(r) => {
                    tracing::info!(client = %peer, "connection refused: {}", r.reason());
                    continue;
                }
            };
            let conn_app = app.clone();
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let app = conn_app.clone();
                async move { Ok::<_, std::convert::Infallible>(handlers::handle(&app, req, peer).await) }
            });
            let (tls, watcher, header_timeout) = (self.tls.clone(), graceful.watcher(), app.config.header_timeout);
            tokio::spawn(async move {
                crate::connection::serve(stream, peer, tls, header_timeout, svc, watcher).await;
                drop(permit);
            });
        }
        if tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await.is_err() {
            tracing::warn!("drain timeout; closing remaining connections");
        }
    }
}

/// Apply [`MIGRATIONS`] not yet recorded in `schema_migrations`. Safe when
/// several app servers start at once: every statement is idempotent.
/// Retries while the database elects a primary (bounded).
async fn migrate(db: &Client) -> Result<(), AppError> {
    use bulwark_db_api::{Statement, Value};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut stmts = vec![Statement::new(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )];
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        for (v, sql) in MIGRATIONS {
            stmts.push(Statement::new(*sql));
            stmts.push(Statement::with_params(
                "INSERT OR IGNORE INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                vec![Value::Integer(*v), Value::Integer(now)],
            ));
        }
        match db.execute(&stmts).await {
            Ok(_) => {
                tracing::info!(version = MIGRATIONS.last().map(|m| m.0).unwrap_or(0), "schema is up to date");
                return Ok(());
            }
            Err(bulwark_db_api::ClientError::Sql(e)) => return Err(AppError::Migration(e)),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!("waiting for the database before migrating: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => return Err(AppError::Migration(e.to_string())),
        }
    }
}
