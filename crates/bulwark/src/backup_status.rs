//! Running the scheduled backups of `bulwark up` (see `backup_schedule`)
//! and their status listener, on a thread of their own so that streaming
//! and compressing a large backup never holds up the supervisor.
//!
//! The schedule runs in the `up` of the host of its db role (`[backup]
//! node`, default the first db role): it reaches the cluster with that
//! role's config (peer secret, peers, certificate), as `bulwark db backup
//! -c` would. The listener (on that host's address, `[backup] port`,
//! default `port_base + 40`) answers, with the monitoring token and over
//! the role's mutual TLS when the topology uses it:
//! - `GET /metrics`: `bulwark_db_last_backup_age_seconds` (present once a
//!   good backup exists), `bulwark_db_backups_total`,
//!   `bulwark_db_backup_failures_total`;
//! - `GET /v1/status`: the same as JSON with `age_seconds` and
//!   `max_age_seconds`, which the lb's monitor polls (a watched node of
//!   kind `backup`) for the dashboard and the `BackupTooOld` alert;
//! - `GET /health`: 200.
use crate::backup_schedule::{Schedule, SharedState};
use anyhow::{Context, Result};
use bulwark_cluster::derive::{DerivedRole, SharedFiles};
use bulwark_config::topology::Topology;
use bulwark_telemetry::clock::unix_ms;
use bulwark_telemetry::metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The schedule of this host, bound and ready to run (see [`start`]).
pub struct Prepared {
    schedule: Arc<Schedule>,
    listener: std::net::TcpListener,
    monitor: Option<String>,
    tls: Option<bulwark_mtls::MutualTls>,
}

impl Prepared {
    pub fn address(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }
}

/// The backups' directory (`[backup] dir`, default `DATA/backups`).
fn backup_dir(settings: &bulwark_config::backup::BackupSettings, files: &SharedFiles) -> std::path::PathBuf {
    settings.dir.clone().unwrap_or_else(|| files.data_dir.join("backups"))
}

/// With `[backup] archive_log = true`: the db role that archives its log
/// (the one whose host runs the schedule: the archive is written beside
/// the backups, on that host's disk) and the archive's directory,
/// `archive/` in the backups' directory. `up` passes it to that role as
/// `--archive-log`.
pub fn log_archive(t: &Topology, files: &SharedFiles) -> Option<(String, std::path::PathBuf)> {
    let settings = t.backup.as_ref().filter(|b| b.archive_log)?;
    let (node, _) = t.backup_placement()?;
    Some((node, backup_dir(settings, files).join("archive")))
}

/// The schedule, when the topology has `[backup]` and its db role is one
/// of `roles` (this host's): its dir made, its listener bound.
pub fn prepare(t: &Topology, files: &SharedFiles, roles: &[DerivedRole]) -> Result<Option<Prepared>> {
    let (Some(settings), Some((node, addr))) = (t.backup.clone(), t.backup_placement()) else { return Ok(None) };
    let Some(role) = roles.iter().find(|r| r.placed.name == node) else { return Ok(None) };
    let config: bulwark_config::db::DbConfig = bulwark_config::from_str(&role.config, "derived db config")
        .map_err(|e| anyhow::anyhow!("the backup schedule's db config: {e}"))?;
    let mut nodes = vec![config.listen.to_string()];
    nodes.extend(config.peers.iter().map(|p| p.address.to_string()));
    let secret = config.load_peer_secret().context("reading the peer secret for the backup schedule")?;
    let tls = bulwark_mtls::MutualTls::load_optional(config.mutual_tls.as_ref())
        .context("loading the certificate for the backup schedule")?;
    let monitor = config.load_monitor_token().context("reading the monitoring token")?.map(|s| s.expose().to_string());
    let tool = bulwark_db_backup::backup_tool::BackupTool::new(nodes, secret.expose(), tls.clone());
    let dir = backup_dir(&settings, files);
    let schedule = Schedule::new(settings, dir, tool);
    schedule.prepare().with_context(|| format!("preparing the backup dir {}", schedule.dir.display()))?;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("binding the backup status listener {addr} (`[backup] port`)"))?;
    listener.set_nonblocking(true)?;
    Ok(Some(Prepared { schedule: Arc::new(schedule), listener, monitor, tls }))
}

/// Run the schedule and its listener on their own thread until `stop`.
pub fn start(p: Prepared, stop: CancellationToken) -> Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let thread = std::thread::Builder::new().name("backups".into()).spawn(move || {
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(p.listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("backup status listener: {e}");
                    return;
                }
            };
            let serve = serve(listener, p.schedule.state.clone(), p.monitor, p.tls, stop.clone());
            tokio::join!(p.schedule.clone().run(stop.clone()), serve);
        })
    })?;
    Ok(thread)
}

async fn serve(
    listener: tokio::net::TcpListener,
    state: SharedState,
    monitor: Option<String>,
    tls: Option<bulwark_mtls::MutualTls>,
    stop: CancellationToken,
) {
    let monitor = Arc::new(monitor);
    // A failed accept (out of descriptors) pauses instead of spinning.
    while let Some((stream, peer)) = bulwark_workers::next_connection(&listener, &stop, "backup status").await {
        let (state, monitor, tls) = (state.clone(), monitor.clone(), tls.clone());
        tokio::spawn(async move {
            let Some(stream) =
                bulwark_mtls::ServerStream::accept(tls.as_ref(), stream, peer, Duration::from_secs(5)).await
            else {
                return;
            };
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = answer(&req, &state, monitor.as_deref());
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            let _ = conn.await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn answer(req: &Request<hyper::body::Incoming>, state: &SharedState, monitor: Option<&str>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path == "/health" {
        return reply(StatusCode::OK, "text/plain", "ok\n".into());
    }
    if let Some(token) = monitor {
        if !bulwark_firewall::bearer_matches(req.headers(), token) {
            return reply(StatusCode::UNAUTHORIZED, "text/plain", "the monitoring token is required\n".into());
        }
    }
    if req.method() != http::Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    let s = state.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let now = unix_ms();
    match path {
        "/metrics" => {
            let collector = metrics::from_fn(move |out| {
                if s.last_good_ms.is_some() {
                    out.gauge(
                        "bulwark_db_last_backup_age_seconds",
                        "Seconds since the newest good scheduled backup.",
                        s.age_seconds(now),
                    )?;
                }
                out.counter("bulwark_db_backups", "Scheduled backups written.", s.backups_total)?;
                out.counter("bulwark_db_backup_failures", "Scheduled backups that failed.", s.failures_total)
            });
            reply(StatusCode::OK, metrics::CONTENT_TYPE, metrics::render(vec![collector]))
        }
        "/v1/status" => {
            let mut v = serde_json::to_value(&s).unwrap_or_default();
            v["age_seconds"] = serde_json::json!(s.age_seconds(now));
            reply(StatusCode::OK, "application/json", v.to_string())
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
