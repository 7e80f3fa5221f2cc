//! The HTTP client between nodes and from clients: one keep-alive
//! connection pool that always sends the cluster secret (over mutual TLS
//! when configured: see [`HttpClient::new`]).
use bulwark_mtls::{Connector, MutualTls};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why an HTTP exchange failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing was sent: the peer could not be reached. Safe to retry.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// The request may have been (partly) delivered.
    #[error("request to {0} failed: {1}")]
    Io(String, String),
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
}

/// A response read completely.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub location: Option<String>,
    /// Every header of the answer (a Raft peer reports its clock and
    /// lease in them).
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A pooled HTTP/1.1 client that sends `Authorization: Bearer <secret>`.
#[derive(Clone)]
pub struct HttpClient {
    client: HyperClient<Connector, Full<Bytes>>,
    auth: Arc<str>,
    /// `http` or, over mutual TLS, `https`.
    scheme: &'static str,
}

/// How long an idle connection to a node is kept for reuse.
const IDLE_CONNECTION_REUSE: Duration = Duration::from_secs(5);

impl HttpClient {
    /// `local_ip`: source address of outgoing connections (a node uses its
    /// own listen address so that peers see a stable identity). With
    /// `tls`, every connection is mutual TLS: it presents the role's
    /// certificate and checks that the node's chains to the cluster CA and
    /// names the host of the address dialled. A pooled connection keeps
    /// its TLS session: one handshake per connection, not per request.
    pub fn new(secret: &str, local_ip: Option<IpAddr>, tls: Option<MutualTls>) -> HttpClient {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(Duration::from_secs(2)));
        tcp.set_local_address(local_ip);
        let conn = Connector::new(tcp, tls);
        let scheme = conn.scheme();
        let client = HyperClient::builder(TokioExecutor::new())
            // Shorter than a node's `header_timeout` (10 s by default): a
            // node closes a keep-alive connection idle that long (measured:
            // 9.7 s), and a request sent on it just then fails.
            .pool_idle_timeout(IDLE_CONNECTION_REUSE)
            .pool_max_idle_per_host(32)
            .build(conn);
        HttpClient { client, auth: format!("Bearer {secret}").into(), scheme }
    }

    /// `https` over mutual TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Send one request to `{scheme}://{addr}{path}` and read the whole answer.
    pub async fn send(
        &self,
        method: http::Method,
        addr: &str,
        path: &str,
        body: Bytes,
        extra: &[(&'static str, String)],
        timeout: Duration,
    ) -> Result<HttpReply, TransportError> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{}://{addr}{path}", self.scheme))
            .header(http::header::AUTHORIZATION, &*self.auth)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (k, v) in extra {
            b = b.header(*k, v);
        }
        let req = b.body(Full::new(body)).map_err(|e| TransportError::Connect(addr.to_string(), e.to_string()))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    TransportError::Connect(addr.to_string(), with_causes(&e))
                } else {
                    TransportError::Io(addr.to_string(), with_causes(&e))
                }
            })?;
            let status = resp.status().as_u16();
            let location = resp.headers().get(http::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
            let (parts, body) = resp.into_parts();
            let body =
                body.collect().await.map_err(|e| TransportError::Io(addr.to_string(), e.to_string()))?.to_bytes();
            Ok(HttpReply { status, location, headers: parts.headers, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout(addr.to_string(), timeout)),
        }
    }

    pub async fn post_json<T: serde::Serialize>(
        &self,
        addr: &str,
        path: &str,
        value: &T,
        timeout: Duration,
    ) -> Result<HttpReply, TransportError> {
        let body = serde_json::to_vec(value).map_err(|e| TransportError::Connect(addr.to_string(), e.to_string()))?;
        self.send(http::Method::POST, addr, path, body.into(), &[], timeout).await
    }
}

/// An error and its causes, `: `-separated (hyper's own message alone
/// says only "client error (Connect)"; the cause says which, e.g. a TLS
/// certificate refused).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
