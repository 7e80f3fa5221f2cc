//! Tiny HTTP/1.1 client used for readiness and status probes and by
//! `bulwark deploy`.
use bulwark_mtls::rustls::pki_types::ServerName;
use bulwark_mtls::{MutualTls, Stream};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::time::Duration;

/// Why a request got no answer. Every cause is the server's or the
/// network's (a status, even 5xx, is an answer, not an error); the
/// callers decide whether to ask again.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error("{0}")]
    Http(#[source] hyper::Error),
    #[error("{0}")]
    Request(#[source] http::Error),
    #[error("timed out")]
    Timeout,
}

/// GET `path` from `addr` with optional bearer token, over mutual TLS
/// with `tls` (the server's certificate must name `addr`'s IP); returns
/// status and body. Bounded by `timeout`.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    tls: Option<&MutualTls>,
    timeout: Duration,
) -> Result<(u16, Bytes), RequestError> {
    http_request(addr, http::Method::GET, path, token, None, tls, timeout).await
}

/// [`http_get`] with any method, and a JSON body when `json` is set.
pub async fn http_request(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    json: Option<&serde_json::Value>,
    tls: Option<&MutualTls>,
    timeout: Duration,
) -> Result<(u16, Bytes), RequestError> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(RequestError::Connect)?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(tls) => {
                tls.connect(stream, ServerName::IpAddress(addr.ip().into())).await.map_err(RequestError::Tls)?
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(RequestError::Http)?;
        tokio::spawn(conn);
        let mut req = http::Request::builder().method(method).uri(path).header(http::header::HOST, addr.to_string());
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match json {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body)).map_err(RequestError::Request)?;
        let resp = sender.send_request(req).await.map_err(RequestError::Http)?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(RequestError::Http)?.to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| RequestError::Timeout)?
}
