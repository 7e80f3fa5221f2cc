//! Tiny HTTP/1.1 client used for readiness and status probes and by
//! `bulwark deploy`.
use bulwark_mtls::rustls::pki_types::ServerName;
use bulwark_mtls::{MutualTls, Stream};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::time::Duration;

/// GET `path` from `addr` with optional bearer token, over mutual TLS
/// with `tls` (the server's certificate must name `addr`'s IP); returns
/// status and body, or an error string. Bounded by `timeout`.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    tls: Option<&MutualTls>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
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
) -> Result<(u16, Bytes), String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(tls) => {
                tls.connect(stream, ServerName::IpAddress(addr.ip().into())).await.map_err(|e| format!("TLS: {e}"))?
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
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
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| "timed out".to_string())?
}
