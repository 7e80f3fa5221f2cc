//! TLS termination: certificates from PEM files, chosen by SNI, TLS 1.2+
//! only, ALPN `h2` and `http/1.1`; and a self-signed certificate for
//! localhost when none is configured (`bulwark up`).
use bulwark_config::lb::Tls;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("writing {path}: {reason}")]
    Write { path: String, reason: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Picks the certificate valid for the client's SNI name; the first one
/// when there is no SNI or no certificate matches.
#[derive(Debug)]
struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name().and_then(|n| ServerName::try_from(n.to_string()).ok()) {
            for k in &self.keys {
                let Some(leaf) = k.cert.first() else { continue };
                if let Ok(ee) = webpki::EndEntityCert::try_from(leaf) {
                    if ee.verify_is_valid_for_subject_name(&name).is_ok() {
                        return Some(k.clone());
                    }
                }
            }
        }
        self.keys.first().cloned()
    }
}

/// Load every certificate of `tls` and build the rustls server config.
pub fn server_config(tls: &Tls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let mut keys = Vec::new();
    for c in &tls.certificates {
        let cert_err = |reason: String| TlsError::Certificate { path: c.cert.display().to_string(), reason };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
            .map_err(|e| cert_err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| cert_err(e.to_string()))?;
        if chain.is_empty() {
            return Err(cert_err("no PEM certificate in file".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&c.key)
            .map_err(|e| TlsError::Key { path: c.key.display().to_string(), reason: e.to_string() })?;
        let ck = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| TlsError::Key { path: c.key.display().to_string(), reason: e.to_string() })?;
        keys.push(Arc::new(ck));
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Certificate { path: String::new(), reason: e.to_string() })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { keys }));
    cfg.alpn_protocols =
        if tls.http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(cfg))
}

/// Days until the soonest `notAfter` among the leaf certificates of `tls`
/// (negative when already expired); None when unreadable.
pub fn days_until_expiry(tls: &Tls) -> Option<i64> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    tls.certificates
        .iter()
        .filter_map(|c| {
            let leaf = CertificateDer::pem_file_iter(&c.cert).ok()?.next()?.ok()?;
            let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
            Some((cert.validity().not_after.timestamp() - now) / 86_400)
        })
        .min()
}

/// Write a self-signed certificate for `names` into `dir` (as
/// `cert.pem`/`key.pem`, key mode 0600) unless both files already exist.
/// Returns their paths.
pub fn ensure_self_signed(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let werr =
        |p: &Path, e: &dyn std::fmt::Display| TlsError::Write { path: p.display().to_string(), reason: e.to_string() };
    std::fs::create_dir_all(dir).map_err(|e| werr(dir, &e))?;
    let ck = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| werr(&cert, &e))?;
    std::fs::write(&cert, ck.cert.pem()).map_err(|e| werr(&cert, &e))?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)
            .map_err(|e| werr(&key, &e))?;
        f.write_all(ck.signing_key.serialize_pem().as_bytes()).map_err(|e| werr(&key, &e))?;
    }
    Ok((cert, key))
}

/// What the handshake with a client settled, for header rules naming
/// `$tls_*`.
pub(crate) fn facts(conn: &tokio_rustls::rustls::ServerConnection) -> bulwark_proxy::TlsFacts {
    use http::HeaderValue;
    use tokio_rustls::rustls::ProtocolVersion;
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    };
    let cipher = conn.negotiated_cipher_suite().and_then(|c| c.suite().as_str()).unwrap_or("");
    bulwark_proxy::TlsFacts {
        version: HeaderValue::from_static(version),
        cipher: HeaderValue::from_static(cipher),
        sni: conn.server_name().and_then(|n| HeaderValue::from_str(n).ok()),
        alpn: conn.alpn_protocol().and_then(|p| HeaderValue::from_bytes(p).ok()),
    }
}

/// Whether rustls already holds something for hyper to read on a
/// connection whose handshake just ended: a client may send its first
/// request in the same flight as its `Finished` message, and then no more
/// bytes come on the socket for a peek to see. An error counts too (the
/// first read reports it and the connection ends).
pub fn holds_plaintext(conn: &mut rustls::ServerConnection) -> bool {
    match conn.process_new_packets() {
        Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_config::lb::CertificateFiles;

    #[test]
    fn self_signed_loads_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ensure_self_signed(dir.path(), &["localhost".into()]).unwrap();
        let tls = Tls {
            certificates: vec![CertificateFiles { cert: cert.clone(), key: key.clone() }],
            hsts: std::time::Duration::from_secs(1),
            http2: true,
            http2_max_streams: 100,
        };
        let cfg = server_config(&tls).unwrap();
        assert_eq!(cfg.alpn_protocols[0], b"h2");
        // rcgen's default validity runs to 4096.
        assert!(days_until_expiry(&tls).unwrap() > 365);
        // A key that does not belong to the certificate is refused.
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = ensure_self_signed(other.path(), &["example.org".into()]).unwrap();
        let bad = Tls { certificates: vec![CertificateFiles { cert, key: other_key }], ..tls.clone() };
        let err = server_config(&bad).unwrap_err().to_string();
        assert!(err.starts_with("key "), "{err}");
        let missing = Tls { certificates: vec![CertificateFiles { cert: "/nonexistent.pem".into(), key }], ..tls };
        assert!(server_config(&missing).unwrap_err().to_string().contains("/nonexistent.pem"));
    }
}
