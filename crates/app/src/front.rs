//! The app role in front of the user's program: binds the public app
//! address, answers `/health`, `/api/health` (the program's health, as the
//! supervision last saw it) and `/metrics` itself, checks the web tier's
//! credential on everything else, strips it, and proxies the request to
//! the program's private address (a loopback port or a Unix socket).
//!
//! Requests for `/_bulwark/deploy/` that do not come through the web tier
//! are `bulwark deploy`'s (see [`crate::deploy`]).
//!
//! When the program cannot take a request (not running, or the connection
//! to it fails before an answer), the front closes the client connection
//! without an answer: the web tier then sends an idempotent or keyed
//! request to another app server, as it does when an app server dies.
use crate::program::client::ProgramClient;
use crate::program::supervise::{self, Launch};
use crate::program::{ProgramAddress, ProgramState, ProgramStatus};
use crate::AppError;
use bulwark_config::app::{AppConfig, ProgramSocket};
use bulwark_firewall::Firewall;
use bulwark_telemetry::metrics::{self, STATUS_CLASSES};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub(crate) type FrontBody = Either<Full<Bytes>, Incoming>;

/// Why a request got no answer (the connection is closed instead).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotForwarded {
    #[error("the program is not running")]
    NotRunning,
    #[error("the program did not answer: {0}")]
    Upstream(String),
}

#[derive(Default)]
struct FrontStats {
    /// Answers of the program, by status class (index 1..=5).
    responses: [AtomicU64; 6],
    /// Requests closed without an answer because the program could not take them.
    not_forwarded: AtomicU64,
}

pub(crate) struct Front {
    config: AppConfig,
    /// Required from the web tier (`X-Bulwark-Cluster`).
    secret: Option<String>,
    monitor_token: Option<String>,
    firewall: Firewall,
    status: watch::Receiver<ProgramStatus>,
    client: ProgramClient<Incoming>,
    stats: Arc<FrontStats>,
    /// `bulwark deploy`: drain, in-flight requests, release switches.
    deploy: crate::deploy::DeployState,
}

/// A bound front and the program it will run.
pub(crate) struct ProgramServer {
    front: Arc<Front>,
    launch: Launch,
    status: watch::Sender<ProgramStatus>,
    /// Holds the program's copies of the database credentials, when it
    /// needs them.
    _private_dir: Option<tempfile::TempDir>,
    /// Holds the program's socket files (`socket = "unix"`).
    _socket_dir: Option<tempfile::TempDir>,
}

/// Request headers that concern one connection only (RFC 9110 7.6.1), and
/// the web tier's credential, which the program never sees.
const NOT_FORWARDED_HEADERS: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "x-bulwark-cluster",
];

impl ProgramServer {
    pub(crate) fn bind(
        config: AppConfig,
        secret: Option<String>,
        db_secret: Option<String>,
        monitor_token: Option<String>,
        deploy_token: Option<String>,
    ) -> Result<ProgramServer, AppError> {
        let program = config.program.clone().expect("a [program] table");
        let firewall = Firewall::new(&config.firewall).map_err(AppError::Firewall)?;
        let files = ProgramFiles::prepare(&config, db_secret.as_deref(), program.user.as_deref())?;
        let (status, rx) = watch::channel(ProgramStatus::new());
        let client = ProgramClient::new(true, files.program_uid);
        let releases = match &config.release_dir {
            Some(d) => Some(program_releases(&config, &program, d)?),
            None => None,
        };
        let restart = Arc::new(tokio::sync::Notify::new());
        let deploy = crate::deploy::DeployState::new(&config, deploy_token, releases.clone(), restart.clone());
        let launch = Launch {
            program,
            app_name: config.name.clone(),
            db_nodes: config.db_nodes.iter().map(|n| n.to_string()).collect(),
            db_secret_file: files.db_secret_file,
            db_tls: files.db_tls,
            releases,
            restart,
            socket_dir: files.socket_dir.as_ref().map(|d| d.path().to_path_buf()),
            program_uid: files.program_uid,
        };
        Ok(ProgramServer {
            front: Arc::new(Front {
                config,
                secret,
                monitor_token,
                firewall,
                status: rx,
                client,
                stats: Arc::default(),
                deploy,
            }),
            launch,
            status,
            _private_dir: files.dir,
            _socket_dir: files.socket_dir,
        })
    }

    pub(crate) fn status(&self) -> watch::Receiver<ProgramStatus> {
        self.front.status.clone()
    }

    /// Start the program and serve until `shutdown`; then finish in-flight
    /// requests (10 s at most), and only then stop the program.
    /// With `tls`, every connection must present a client certificate of
    /// the cluster CA (mutual TLS, as the guestbook's listener).
    pub(crate) async fn run(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<bulwark_mtls::MutualTls>,
        shutdown: CancellationToken,
    ) {
        let stop_program = CancellationToken::new();
        let supervision = tokio::spawn(supervise::run(self.launch, self.status, stop_program.clone()));
        let graceful = GracefulShutdown::new();
        loop {
            let Some((stream, peer)) = bulwark_workers::next_connection(&listener, &shutdown, "app").await else {
                break;
            };
            let _ = stream.set_nodelay(true);
            let permit = match self.front.firewall.admit(peer.ip()) {
                Ok(p) => p,
                Err(r) => {
                    tracing::info!(client = %peer, "connection refused: {}", r.reason());
                    continue;
                }
            };
            let front = self.front.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let front = front.clone();
                async move { front.handle(req, peer).await }
            });
            let (tls, watcher, header_timeout) = (tls.clone(), graceful.watcher(), self.front.config.header_timeout);
            tokio::spawn(async move {
                crate::connection::serve(stream, peer, tls, header_timeout, svc, watcher).await;
                drop(permit);
            });
        }
        drop(listener);
        if tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await.is_err() {
            tracing::warn!("drain timeout; closing remaining connections");
        }
        stop_program.cancel();
        let _ = supervision.await;
    }
}

/// The program's releases under `dir`, ready: readable by the program's
/// user when it runs as another one, `current` leading to a release.
fn program_releases(
    config: &AppConfig,
    program: &bulwark_config::app::Program,
    dir: &std::path::Path,
) -> Result<crate::program::release::Releases, AppError> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut releases = crate::program::release::Releases::new(dir, config.keep_releases, program.workdir.clone());
    let user = program.user.as_deref().filter(|_| nix::unistd::geteuid().is_root());
    let ids = match user {
        Some(u) => Some(crate::program::lookup_user(u).map_err(|e| AppError::Releases(format!("program.{e}")))?),
        None => None,
    };
    if let Some((_, gid, _)) = ids {
        releases = releases.readable_by(gid);
    }
    releases.prepare().map_err(|e| AppError::Releases(format!("release_dir: {e}")))?;
    if let (Some(u), Some((uid, gid, _))) = (user, ids) {
        // The program keeps running its release; a deploy would fail.
        if let Err(why) = crate::program::user_may(releases.dir(), uid, gid, crate::program::Access::Read) {
            tracing::warn!(
                "release_dir: user `{u}` cannot reach {}, so no release can be deployed to this app: {why}",
                releases.dir().display()
            );
        }
    }
    Ok(releases)
}

/// The database credentials the program gets as files: the secret
/// (`BULWARK_DB_SECRET_FILE`) and, under mutual TLS, the role's client
/// certificate, key and the cluster CA (`BULWARK_DB_CERT`, ...).
struct ProgramFiles {
    db_secret_file: Option<PathBuf>,
    db_tls: Option<bulwark_config::internal_tls::TlsFiles>,
    /// The private copies, when the role's own files will not do.
    dir: Option<tempfile::TempDir>,
    /// Where the program's socket files go (`socket = "unix"`).
    socket_dir: Option<tempfile::TempDir>,
    /// The user the program runs as.
    program_uid: u32,
}

impl ProgramFiles {
    /// The role's own files when the program runs as the role's user and
    /// they are files (absolute paths); otherwise copies in a new private
    /// directory, owned by the program's user.
    fn prepare(config: &AppConfig, db_secret: Option<&str>, user: Option<&str>) -> Result<ProgramFiles, AppError> {
        let switching = user.is_some() && nix::unistd::geteuid().is_root();
        let owner = match user.filter(|_| switching) {
            Some(u) => {
                let (uid, gid, _) = crate::program::lookup_user(u).map_err(|e| AppError::Secret(e.to_string()))?;
                Some((nix::unistd::Uid::from_raw(uid), nix::unistd::Gid::from_raw(gid)))
            }
            None => None,
        };
        let unix = config.program.as_ref().is_some_and(|p| p.socket == ProgramSocket::Unix);
        let socket_dir = if unix { Some(socket_dir(owner)?) } else { None };
        let mut files = ProgramFiles::credentials(config, db_secret, switching, owner)?;
        files.socket_dir = socket_dir;
        files.program_uid = owner.map_or_else(|| nix::unistd::geteuid().as_raw(), |(uid, _)| uid.as_raw());
        Ok(files)
    }

    fn credentials(
        config: &AppConfig,
        db_secret: Option<&str>,
        switching: bool,
        owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    ) -> Result<ProgramFiles, AppError> {
        let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        let tls = config.mutual_tls.clone();
        let secret_in_file = config.db_secret_file.is_some() && !switching;
        if !switching && (db_secret.is_none() || secret_in_file) {
            return Ok(ProgramFiles {
                db_secret_file: db_secret.and(config.db_secret_file.as_ref()).map(abs),
                db_tls: tls.map(|t| bulwark_config::internal_tls::TlsFiles {
                    cert: abs(&t.cert),
                    key: abs(&t.key),
                    ca: abs(&t.ca),
                }),
                dir: None,
                socket_dir: None,
                program_uid: 0,
            });
        }
        let fail = |e: std::io::Error| {
            AppError::Secret(format!("writing the program's copy of the database credentials: {e}"))
        };
        let dir = tempfile::Builder::new().prefix("bulwark-app-").tempdir().map_err(fail)?;
        let write = |name: &str, bytes: &[u8]| -> Result<PathBuf, AppError> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let file = dir.path().join(name);
            let mut f =
                std::fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(&file).map_err(fail)?;
            f.write_all(bytes).map_err(fail)?;
            if let Some((uid, gid)) = owner {
                nix::unistd::chown(&file, Some(uid), Some(gid)).map_err(|e| fail(e.into()))?;
            }
            Ok(file)
        };
        let db_secret_file = db_secret.map(|s| write("db-secret", s.as_bytes())).transpose()?;
        let db_tls = match tls {
            None => None,
            Some(t) => {
                let read = |p: &PathBuf| {
                    std::fs::read(p).map_err(|e| AppError::Secret(format!("reading {}: {e}", p.display())))
                };
                Some(bulwark_config::internal_tls::TlsFiles {
                    cert: write("db-cert.pem", &read(&t.cert)?)?,
                    key: write("db-key.pem", &read(&t.key)?)?,
                    ca: write("db-ca.pem", &read(&t.ca)?)?,
                })
            }
        };
        if let Some((uid, gid)) = owner {
            nix::unistd::chown(dir.path(), Some(uid), Some(gid)).map_err(|e| fail(e.into()))?;
        }
        Ok(ProgramFiles { db_secret_file, db_tls, dir: Some(dir), socket_dir: None, program_uid: 0 })
    }
}

/// A new directory for the program's socket files: mode 0700, owned by the
/// program's user (the role, as root, reaches it all the same), so that no
/// other local user can connect to the program around the role's checks.
fn socket_dir(owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>) -> Result<tempfile::TempDir, AppError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("bulwark-app-sock-").tempdir().map_err(AppError::SocketDir)?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).map_err(AppError::SocketDir)?;
    // A socket's path must fit in `sockaddr_un` (107 bytes) with the
    // longest file name a start gets, and be text: it is passed in `exec`.
    let longest = dir.path().join(format!("program-{}.sock", u64::MAX));
    let fits = longest.as_os_str().len() <= 107;
    if !fits || dir.path().to_str().is_none() {
        let why = if fits { "is not UTF-8 text" } else { "is too long for a socket's path (107 bytes)" };
        return Err(AppError::SocketDir(std::io::Error::other(format!(
            "{} {why}: set TMPDIR to a short directory",
            dir.path().display()
        ))));
    }
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(dir.path(), Some(uid), Some(gid)).map_err(|e| AppError::SocketDir(e.into()))?;
    }
    Ok(dir)
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<FrontBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl Front {
    async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Result<Response<FrontBody>, NotForwarded> {
        let ip = self.firewall.client_ip(peer.ip(), req.headers());
        if let Err(r) = self.firewall.check_rate(ip) {
            let mut resp = json(r.status(), serde_json::json!({ "error": r.reason() }));
            if let Some(s) = r.retry_after() {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            return Ok(resp);
        }
        let path = req.uri().path();
        if path == "/health" || path == "/api/health" {
            return Ok(self.health());
        }
        if self.deploy.wants(&req) {
            let (code, body) = self.deploy.handle(req, &self.status, &self.config.name).await;
            return Ok(json(code, body));
        }
        if path == "/metrics" && req.method() == Method::GET {
            if let Some(token) = &self.monitor_token {
                if !bulwark_firewall::bearer_matches(req.headers(), token) {
                    return Ok(json(
                        StatusCode::UNAUTHORIZED,
                        serde_json::json!({ "error": "/metrics needs the monitoring token as `Authorization: Bearer`" }),
                    ));
                }
            }
            let text = metrics::render(vec![self.metrics()]);
            let mut r = Response::new(Either::Left(Full::new(Bytes::from(text))));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
            return Ok(r);
        }
        if self.config.require_secret {
            let ok = self
                .secret
                .as_deref()
                .is_some_and(|s| bulwark_firewall::header_matches(req.headers(), "x-bulwark-cluster", s));
            if !ok {
                return Ok(json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({ "error": "this tier accepts requests only through the web tier" }),
                ));
            }
        }
        let Some(target) = self.status.borrow().listen.clone() else {
            self.stats.not_forwarded.fetch_add(1, Ordering::Relaxed);
            return Err(NotForwarded::NotRunning);
        };
        let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let uri = target.uri(pq).map_err(|e| NotForwarded::Upstream(format!("{e}")))?;
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        if matches!(target, ProgramAddress::Unix(_)) && !req.headers().contains_key(header::HOST) {
            // Else the client would name the socket's encoded path.
            req.headers_mut().insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        strip(req.headers_mut());
        let _in_flight = self.deploy.track();
        match self.client.request(&target, req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip(&mut parts.headers);
                let class = usize::from(parts.status.as_u16() / 100).min(5);
                self.stats.responses[class].fetch_add(1, Ordering::Relaxed);
                Ok(Response::from_parts(parts, Either::Right(body)))
            }
            Err(e) => {
                self.stats.not_forwarded.fetch_add(1, Ordering::Relaxed);
                let e = bulwark_db_api::http_client::with_causes(&e);
                tracing::info!(app = %self.config.name, "request not forwarded to the program: {e}");
                Err(NotForwarded::Upstream(e))
            }
        }
    }

    /// The program's health; 503 `draining` while a deploy has this
    /// server out of rotation.
    fn health(&self) -> Response<FrontBody> {
        let st = self.status.borrow().clone();
        let draining = self.deploy.is_draining();
        let code = if st.is_healthy() && !draining { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        json(
            code,
            serde_json::json!({
                "status": if draining { "draining" } else if st.is_healthy() { "ok" } else { "unavailable" },
                "app": self.config.name,
                "program": st,
            }),
        )
    }

    /// A collector of the program's metrics: whether it answers, its
    /// restarts and answers.
    fn metrics(&self) -> Box<dyn metrics::Collector> {
        let (app, status, stats) = (self.config.name.clone(), self.status.clone(), Arc::clone(&self.stats));
        metrics::from_fn(move |out| {
            let st = status.borrow().clone();
            let labels = [("app", app.as_str())];
            out.gauges(
                "bulwark_app_program_up",
                "Whether the app's program answers its health path.",
                [(labels, i64::from(st.state == ProgramState::Healthy))],
            )?;
            out.counters(
                "bulwark_app_program_restarts",
                "Starts of the program after the first.",
                [(labels, u64::from(st.restarts))],
            )?;
            let responses = (1..=5).map(|class| {
                (
                    [("app", app.as_str()), ("code", STATUS_CLASSES[class])],
                    stats.responses[class].load(Ordering::Relaxed),
                )
            });
            out.counters("bulwark_app_program_responses", "Answers of the program, by status class.", responses)?;
            out.counters(
                "bulwark_app_program_not_forwarded",
                "Requests closed unanswered because the program could not take them.",
                [(labels, stats.not_forwarded.load(Ordering::Relaxed))],
            )
        })
    }
}

/// Remove the headers that are not passed between the front and the
/// program, including those a `Connection` header names.
fn strip(headers: &mut http::HeaderMap) {
    let named: Vec<http::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| http::HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| ![header::HOST, header::CONTENT_LENGTH, header::TRANSFER_ENCODING].contains(n))
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in NOT_FORWARDED_HEADERS {
        headers.remove(n);
    }
}
