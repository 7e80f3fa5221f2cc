//! Polling the watched nodes: each app's or web's `/health`, each
//! database's `/v1/status` (role, term, applied index, lag) and free disk
//! space (from its `/metrics`), the scheduled backups' status.
use super::NodeStatus;
use bulwark_config::lb::NodeKind;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

/// Poll one watched node: `/health` for apps and webs, `/v1/status` for
/// databases (role, term, applied index, lag).
pub(super) async fn poll_node(
    n: &bulwark_config::lb::WatchedNode,
    monitor_token: Option<&str>,
    tls: Option<&bulwark_mtls::MutualTls>,
) -> NodeStatus {
    let mut st = NodeStatus {
        name: n.name.clone(),
        kind: n.kind,
        host: n.host.clone(),
        address: n.address.clone(),
        healthy: false,
        detail: String::new(),
        db: None,
        backup: None,
    };
    let addr = match tokio::net::lookup_host(n.address.as_str()).await.ok().and_then(|mut a| a.next()) {
        Some(a) => a,
        None => {
            st.detail = format!("cannot resolve {}", n.address);
            return st;
        }
    };
    let path = if matches!(n.kind, NodeKind::Db | NodeKind::Backup) { "/v1/status" } else { "/health" };
    match get(addr, path, monitor_token, tls).await {
        Ok((200, body)) => {
            st.healthy = true;
            if n.kind == NodeKind::Db {
                let mut db = db_summary(&body);
                // The free space is on the node's /metrics only.
                if let Ok((200, metrics)) = get(addr, "/metrics", monitor_token, tls).await {
                    db["disk_free_bytes"] = disk_free_bytes(&metrics).map(Value::from).unwrap_or(Value::Null);
                }
                st.db = Some(db);
            }
            if n.kind == NodeKind::Backup {
                st.backup = Some(backup_summary(&body));
            }
        }
        Ok((code, _)) => st.detail = format!("{path} answered {code}"),
        Err(e) => st.detail = e.to_string(),
    }
    st
}

/// `bulwark_db_disk_free_bytes` from a db node's `/metrics`.
fn disk_free_bytes(metrics: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(metrics).ok()?;
    let line = text.lines().find(|l| l.starts_with("bulwark_db_disk_free_bytes"))?;
    let value: f64 = line.rsplit(' ').next()?.parse().ok()?;
    Some(value as u64)
}

/// The scheduled backups' `/v1/status`: the age of the newest good one
/// and the threshold of its alert.
fn backup_summary(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    json!({
        "age_seconds": v["age_seconds"], "max_age_seconds": v["max_age_seconds"],
        "last_good_ms": v["last_good_ms"], "last_good_log_index": v["last_good_log_index"],
        "backups_total": v["backups_total"], "failures_total": v["failures_total"], "last_error": v["last_error"],
    })
}

/// Normalise a db node's `/v1/status` into role/term/applied/lag.
fn db_summary(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let pick =
        |keys: &[&str]| keys.iter().find_map(|k| v.get(*k).filter(|x| !x.is_null()).cloned()).unwrap_or(Value::Null);
    let role = match pick(&["role"]).as_str().unwrap_or("unknown").to_lowercase().as_str() {
        "leader" | "primary" => "primary",
        "follower" | "replica" => "replica",
        "learner" => "learner",
        _ => "unknown",
    };
    let lag = v.get("lag").cloned().unwrap_or(Value::Null);
    json!({
        "role": role,
        "term": pick(&["term", "current_term"]),
        "applied_index": pick(&["applied_index", "last_applied", "applied"]),
        "lag_entries": lag.get("entries").cloned().unwrap_or_else(|| pick(&["lag_entries", "replication_lag_entries"])),
        "lag_seconds": lag.get("seconds").cloned().unwrap_or_else(|| pick(&["lag_seconds", "replication_lag_seconds"])),
    })
}

/// Why a watched node could not be polled: the node (or the way to it)
/// failed; the next poll, a second later, is the retry.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    #[error("{0}")]
    Http(#[source] hyper::Error),
    #[error("{0}")]
    Request(#[source] http::Error),
    #[error("no answer within 900ms")]
    Timeout,
}

/// GET `path` with the read-only monitoring token as a bearer token, over
/// mutual TLS with `tls` (`[admin]`'s `tls_*` keys; the node's certificate
/// must name `addr`'s IP).
async fn get(
    addr: SocketAddr,
    path: &str,
    monitor_token: Option<&str>,
    tls: Option<&bulwark_mtls::MutualTls>,
) -> Result<(u16, Vec<u8>), PollError> {
    use http_body_util::BodyExt;
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(PollError::Connect)?;
        let stream = match tls {
            None => bulwark_mtls::Stream::Plain(stream),
            Some(tls) => {
                let name = bulwark_mtls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                tls.connect(stream, name).await.map_err(PollError::Tls)?
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(PollError::Http)?;
        tokio::spawn(conn);
        let mut req = http::Request::get(path).header(http::header::HOST, addr.to_string());
        if let Some(t) = monitor_token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(PollError::Request)?;
        let resp = sender.send_request(req).await.map_err(PollError::Http)?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(PollError::Http)?.to_bytes();
        Ok((code, body.to_vec()))
    };
    tokio::time::timeout(Duration::from_millis(900), attempt).await.map_err(|_| PollError::Timeout)?
}

#[cfg(test)]
mod tests {
    #[test]
    fn db_status_is_normalised() {
        let v = super::db_summary(br#"{"role":"Leader","term":3,"last_applied":10,"lag":{"entries":2,"seconds":0.5}}"#);
        assert_eq!(v["role"], "primary");
        assert_eq!(v["term"], 3);
        assert_eq!(v["applied_index"], 10);
        assert_eq!(v["lag_entries"], 2);
        assert_eq!(super::db_summary(b"garbage")["role"], "unknown");
    }

    #[test]
    fn disk_free_is_read_from_metrics() {
        let m = b"# HELP bulwark_db_disk_free_bytes x\n# TYPE bulwark_db_disk_free_bytes gauge\nbulwark_db_disk_free_bytes{node=\"1\"} 123456789\n";
        assert_eq!(super::disk_free_bytes(m), Some(123456789));
        assert_eq!(super::disk_free_bytes(b"nothing"), None);
    }
}
