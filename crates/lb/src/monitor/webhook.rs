//! The alert webhook: a JSON POST `{"status", "alert"}` per firing and
//! resolution, in the background, at most once (the next alert is the
//! retry).
use super::Alert;
use serde_json::json;
use std::time::Duration;

/// Post `a` to the alert webhook, if any, in the background.
pub(super) fn notify(webhook: &Option<String>, status: &'static str, a: &Alert) {
    let Some(url) = webhook.clone() else { return };
    let body = json!({"status": status, "alert": a}).to_string();
    tokio::spawn(async move {
        if let Err(e) = post_json(&url, body).await {
            tracing::warn!("alert webhook {url}: {e}");
        }
    });
}

/// Why an alert could not be posted to the webhook. The URL's faults are
/// the config's; the others are the receiver's, and the next alert is the
/// retry.
#[derive(Debug, thiserror::Error)]
enum WebhookError {
    #[error("{0}")]
    Url(#[source] http::uri::InvalidUri),
    #[error("no host")]
    NoHost,
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    #[error("{0}")]
    Http(#[source] hyper::Error),
    #[error("{0}")]
    Request(#[source] http::Error),
    #[error("status {0}")]
    Status(http::StatusCode),
    #[error("timed out")]
    Timeout,
}

async fn post_json(url: &str, body: String) -> Result<(), WebhookError> {
    let uri: http::Uri = url.parse().map_err(WebhookError::Url)?;
    let host = uri.host().ok_or(WebhookError::NoHost)?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(WebhookError::Connect)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(WebhookError::Http)?;
        tokio::spawn(conn);
        let req = http::Request::post(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(http::header::HOST, format!("{host}:{port}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(WebhookError::Request)?;
        let resp = sender.send_request(req).await.map_err(WebhookError::Http)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(WebhookError::Status(resp.status()))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.map_err(|_| WebhookError::Timeout)?
}
