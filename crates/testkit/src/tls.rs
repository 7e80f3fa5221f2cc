//! Blocking TLS clients for tests of HTTPS listeners: a raw request over
//! TLS (for requests no ordinary client sends), and a bare TLS connection
//! with a chosen ALPN protocol (to speak HTTP/2 frames by hand). The
//! server's certificate is verified against a PEM file taken as the only
//! trusted root (the self-signed certificate of the listener under test).
use crate::{read_response, HttpResponse, PATIENCE};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

/// A TLS client connection over a blocking socket.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn client_config(ca_pem: &Path, alpn: &[&[u8]]) -> std::io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).map_err(std::io::Error::other)? {
        roots.add(cert.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Connect to `addr`, and complete a TLS handshake for `server_name`
/// offering the `alpn` protocols. An error means the handshake did not
/// complete (e.g. the server closed the connection first).
pub fn tls_connect(addr: SocketAddr, server_name: &str, ca_pem: &Path, alpn: &[&[u8]]) -> std::io::Result<TlsStream> {
    let name = ServerName::try_from(server_name.to_string()).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(client_config(ca_pem, alpn)?, name).map_err(std::io::Error::other)?;
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(PATIENCE))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// Send raw HTTP/1.1 bytes over a fresh TLS connection and read one
/// response (as [`crate::raw_request`] does in clear text).
pub fn tls_raw_request(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &Path,
    raw: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut tls = tls_connect(addr, server_name, ca_pem, &[b"http/1.1"])?;
    tls.write_all(raw)?;
    tls.flush()?;
    read_response(&mut tls)
}

/// Like [`tls_raw_request`], but the request leaves in the same write as
/// the client's last handshake message (its `Finished`), as a TLS 1.3
/// client that sends its first request at once may do: the server gets
/// both in one read, and nothing more comes on the socket after them.
pub fn tls_request_with_finished(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &Path,
    raw: &[u8],
) -> std::io::Result<HttpResponse> {
    let name = ServerName::try_from(server_name.to_string()).map_err(std::io::Error::other)?;
    let mut conn =
        rustls::ClientConnection::new(client_config(ca_pem, &[b"http/1.1"])?, name).map_err(std::io::Error::other)?;
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(PATIENCE))?;
    // The client's handshake ends when it has read the server's flight;
    // its `Finished` is then queued, not yet written.
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        if conn.read_tls(&mut sock)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        conn.process_new_packets().map_err(std::io::Error::other)?;
    }
    conn.writer().write_all(raw)?;
    // One vectored write: the `Finished` record and the request's.
    while conn.wants_write() {
        conn.write_tls(&mut sock)?;
    }
    let mut tls = rustls::StreamOwned::new(conn, sock);
    read_response(&mut tls)
}
