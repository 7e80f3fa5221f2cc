//! Tiny HTTP/1.1 GET used for readiness and status probes.
use bulwark_mtls::rustls::pki_types::ServerName;
use bulwark_mtls::{MutualTls, Stream};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
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
        let mut req = http::Request::get(path).header(http::header::HOST, addr.to_string());
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| "timed out".to_string())?
}
