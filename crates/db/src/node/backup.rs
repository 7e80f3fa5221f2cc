//! The node's backup endpoints and its disk metrics.
//!
//! - `POST /v1/backup`: take a consistent copy of the database (see
//!   `bulwark_db_backup::backup`), answer its [`BackupInfo`](bulwark_db_backup::backup::BackupInfo).
//! - `GET /v1/backup/<id>?offset=N`: up to 4 MiB of the copy from byte N
//!   (an empty body past its end), so the tool streams it to its file.
//! - `POST /v1/backup/<id>/finish`: remove the copy.
//!
//! The client and the peer secret open them (a backup holds the
//! application's tables, which the client secret reads anyway). One copy
//! is taken at a time per node; copies a tool left behind are removed
//! after an hour.
//!
//! `/metrics` gets `bulwark_db_disk_free_bytes`: the space left on the
//! file system of the data dir for this node's user.
use super::error::ApiError;
use super::{json, query_param, NodeState, Resp};
use bulwark_db_backup::backup::{self, BackupError};
use bulwark_telemetry::metrics::Exposition;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::path::PathBuf;

/// One copy at a time: a copy reads the whole database.
static TAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn failed(e: BackupError) -> Resp {
    match e {
        BackupError::Unknown(_) => ApiError::NoSuchBackup(e.to_string()).response(),
        e => ApiError::BackupFailed(e.to_string()).response(),
    }
}

impl NodeState {
    fn data_dir(&self) -> PathBuf {
        let db = self.database.db_path();
        db.parent().map(PathBuf::from).unwrap_or_default()
    }

    /// Every request under `/v1/backup`.
    pub(super) async fn backup(&self, req: Request<Incoming>) -> Resp {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let rest = path.strip_prefix("/v1/backup").unwrap_or_default();
        let dir = self.data_dir();
        match (&method, rest) {
            (&Method::POST, "") => {
                let _one = TAKING.lock().await;
                let (db, id) = (self.database.db_path(), self.id);
                match tokio::task::spawn_blocking(move || backup::take_copy(&db, &dir, id)).await {
                    Ok(Ok(info)) => {
                        tracing::info!(id = %info.id, bytes = info.bytes, log_index = info.log_index, "backup copy ready");
                        json(StatusCode::OK, &info)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("backup copy failed: {e}");
                        failed(e)
                    }
                    Err(e) => ApiError::BackupFailed(e.to_string()).response(),
                }
            }
            (&Method::GET, id) if id.starts_with('/') => {
                let id = id[1..].to_string();
                let offset: u64 = match query_param(req.uri(), "offset").map(|v| v.parse()) {
                    None => 0,
                    Some(Ok(o)) => o,
                    Some(Err(_)) => return ApiError::BadRequest("`offset` must be a number".into()).response(),
                };
                match tokio::task::spawn_blocking(move || backup::read_chunk(&dir, &id, offset)).await {
                    Ok(Ok(bytes)) => Response::builder()
                        .header(http::header::CONTENT_TYPE, "application/octet-stream")
                        .body(Full::new(Bytes::from(bytes)))
                        .expect("valid response"),
                    Ok(Err(e)) => failed(e),
                    Err(e) => ApiError::BackupFailed(e.to_string()).response(),
                }
            }
            (&Method::POST, id) if id.starts_with('/') && id.ends_with("/finish") => {
                let id = id[1..id.len() - "/finish".len()].to_string();
                match backup::finish(&dir, &id) {
                    Ok(()) => json(StatusCode::OK, &serde_json::json!({"finished": id})),
                    Err(e) => failed(e),
                }
            }
            _ => ApiError::NotFound { method, path }.response(),
        }
    }

    /// The node's disk (see the module doc): nothing when the file system
    /// of the data dir cannot be read.
    pub(super) fn encode_disk_metrics(&self, node: &str, out: &mut Exposition<'_>) -> std::fmt::Result {
        let Ok(fs) = nix::sys::statvfs::statvfs(&self.data_dir()) else { return Ok(()) };
        let free = fs.blocks_available().saturating_mul(fs.fragment_size());
        out.gauges(
            "bulwark_db_disk_free_bytes",
            "Space left for this node on the file system of its data dir.",
            [([("node", node)], free)],
        )
    }
}
