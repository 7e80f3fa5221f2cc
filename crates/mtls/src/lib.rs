//! Mutual TLS between tiers (`mutual_tls` in a role's
//! config; see `bulwark_config::internal_tls`).
//!
//! Owns: loading a role's certificate, key and the cluster CA into rustls
//! configurations ([`MutualTls`]), the server side of a connection (TLS
//! only, a client certificate issued by the CA required), the client side
//! (the role's certificate presented, the server's checked against the CA
//! and the address dialled), the stream types both sides hand to hyper,
//! and a connector for hyper-util's pooled client ([`Connector`]).
//!
//! Which name a server's certificate must carry: the host of the address
//! the client dials, as written (`10.0.0.11` of `10.0.0.11:7001`, or a DNS
//! name), and for a proxy's upstream the IP address it connects to. The
//! certificates `bulwark up` issues name both the role's host address and
//! the role name (`cluster::pki`).
//!
//! Connections stay pooled by their users, so a TLS handshake is paid once
//! per connection, never per request; clients also keep rustls' session
//! cache, so a new connection to a known server resumes its session.
use bulwark_config::internal_tls::TlsFiles;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use rustls;
pub use tokio_rustls;

/// Why mutual TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MtlsError {
    /// A file is missing, unreadable or not what it should be.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    /// The certificate, key and CA do not make a working configuration
    /// (the key does not match the certificate, ...).
    #[error("mutual TLS: {0}")]
    Config(String),
    /// Not an address a certificate can name.
    #[error("`{0}` has no host a certificate can name")]
    ServerName(String),
}

/// A role's mutual TLS: its server side and its client side. Cheap to
/// clone.
#[derive(Clone)]
pub struct MutualTls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for MutualTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MutualTls")
    }
}

fn file_err(path: &Path) -> impl Fn(String) -> MtlsError + '_ {
    move |reason| MtlsError::File { path: path.display().to_string(), reason }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, MtlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path)(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path)(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(path)("no certificate in the file".into()));
    }
    Ok(certs)
}

impl MutualTls {
    /// Read the certificate chain, its key and the CA certificate(s).
    pub fn load(files: &TlsFiles) -> Result<MutualTls, MtlsError> {
        let chain = certificates(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_err(&files.key)(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates(&files.ca)? {
            roots.add(ca).map_err(|e| file_err(&files.ca)(e.to_string()))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = |e: rustls::Error| MtlsError::Config(e.to_string());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| MtlsError::Config(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config)?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config)?;
        Ok(MutualTls { server: Arc::new(server), client: Arc::new(client) })
    }

    /// [`MutualTls::load`] when `files` is set.
    pub fn load_optional(files: Option<&TlsFiles>) -> Result<Option<MutualTls>, MtlsError> {
        files.map(MutualTls::load).transpose()
    }

    /// The server side of an accepted connection: the TLS handshake,
    /// which fails unless the client presents a certificate of the CA,
    /// within `limit`.
    pub async fn accept(&self, stream: TcpStream, limit: Duration) -> io::Result<ServerStream> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server.clone());
        match tokio::time::timeout(limit, acceptor.accept(stream)).await {
            Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake within the header timeout")),
        }
    }

    /// The client side of a connection to the server at `name` (see
    /// [`server_name`]).
    pub async fn connect(&self, stream: TcpStream, name: ServerName<'static>) -> io::Result<ClientStream> {
        let connector = tokio_rustls::TlsConnector::from(self.client.clone());
        Ok(Stream::Tls(Box::new(connector.connect(name, stream).await?)))
    }

    /// The rustls client configuration (the role's certificate, the CA).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }
}

/// The name a server's certificate must carry when dialled at `address`
/// (`host:port`, `[v6]:port`, or a bare host): its host part.
pub fn server_name(address: &str) -> Result<ServerName<'static>, MtlsError> {
    if let Ok(a) = address.parse::<std::net::SocketAddr>() {
        return Ok(ServerName::IpAddress(a.ip().into()));
    }
    let host = match address.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| MtlsError::ServerName(address.to_string()))
}

/// A connection that is plain TCP or TLS over TCP.
pub enum Stream<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

/// An accepted connection.
pub type ServerStream = Stream<tokio_rustls::server::TlsStream<TcpStream>>;
/// A connection to a server.
pub type ClientStream = Stream<tokio_rustls::client::TlsStream<TcpStream>>;

impl<T> Stream<T> {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl ServerStream {
    /// An accepted connection as the listener serves it: plain without
    /// `tls`, else after a TLS handshake within `limit` (the header
    /// timeout: a silent client holds its place no longer than one that
    /// sends no request head). A refused handshake is logged with the
    /// client's address and gives `None`.
    pub async fn accept(
        tls: Option<&MutualTls>,
        stream: TcpStream,
        peer: std::net::SocketAddr,
        limit: Duration,
    ) -> Option<ServerStream> {
        match tls {
            None => Some(Stream::Plain(stream)),
            Some(tls) => match tls.accept(stream, limit).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::info!(client = %peer, "TLS handshake refused: {e}");
                    None
                }
            },
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl Connection for ClientStream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(s) => s.connected(),
            Stream::Tls(s) => s.get_ref().0.connected(),
        }
    }
}

/// A connector for hyper-util's pooled client: TCP, then TLS with the
/// role's certificate when mutual TLS is configured (see [`server_name`]
/// for the name checked).
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<MutualTls>,
}

impl Connector {
    /// `http` makes the TCP connections (its timeouts and source address
    /// apply); `tls`, when set, is spoken over them.
    pub fn new(mut http: HttpConnector, tls: Option<MutualTls>) -> Connector {
        http.enforce_http(false);
        Connector { http, tls }
    }

    /// The URI scheme of requests through this connector.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<ClientStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (mut http, tls) = (self.http.clone(), self.tls.clone());
        Box::pin(async move {
            let name = match &tls {
                Some(_) => Some(server_name(uri.authority().map(|a| a.as_str()).unwrap_or_default())?),
                None => None,
            };
            let tcp = http.call(uri).await?.into_inner();
            let stream = match (tls, name) {
                (Some(tls), Some(name)) => tls.connect(tcp, name).await?,
                _ => Stream::Plain(tcp),
            };
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests;
