//! The cluster's own certificate authority, for mutual TLS between tiers
//! on different hosts (topology `internal_tls`).
//!
//! `up` keeps it in `<data_dir>/tls/internal/` (0700): `ca.pem` (the CA
//! certificate every role trusts) and `ca.key` (0600), created once, and
//! per role `<name>.pem` and `<name>.key` (0600), issued by the CA for the
//! role's host address and name, valid as both TLS server and client (a
//! role accepts from the tier in front and connects to the tier behind).
//! A role's certificate is issued when missing; delete it to have the next
//! `up` issue a new one. A host that has `ca.pem` but not `ca.key` (the lb
//! host, given its roles' files) uses what it was given and issues nothing.
//! Rotation: docs/operations.md.
use crate::private;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
}

/// The directory of the cluster CA and the roles' certificates.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("internal")
}

/// The files of one role's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The cluster CA, able to issue role certificates where its key is.
pub struct ClusterCa {
    dir: PathBuf,
    /// None on a host given `ca.pem` and its roles' certificates but not
    /// `ca.key` (an lb host, see docs/operations.md): it issues nothing.
    issuer: Option<Issuer<'static, KeyPair>>,
}

/// The CA's parameters: what its certificate says and what a certificate it
/// issues names as its issuer (so an existing CA is rebuilt from its key).
fn ca_params(site: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("bulwark cluster CA ({site})"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_path_buf(), source }
}

fn cert_err(path: &Path) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Certificate { path: path.to_path_buf(), reason: e.to_string() }
}

impl ClusterCa {
    /// Open the CA under `data_dir`, creating it (key 0600) when absent.
    /// `site` names it (the topology's name).
    pub fn ensure(data_dir: &Path, site: &str) -> Result<ClusterCa, PkiError> {
        let dir = dir(data_dir);
        private::dir(&dir).map_err(io(&dir))?;
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        let params = ca_params(site);
        let key = if key_path.exists() {
            private::tighten(&key_path).map_err(io(&key_path))?;
            let pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            KeyPair::from_pem(&pem).map_err(cert_err(&key_path))?
        } else if cert_path.exists() {
            // The CA certificate without its key: trust it, issue nothing.
            return Ok(ClusterCa { dir, issuer: None });
        } else {
            let key = KeyPair::generate().map_err(cert_err(&key_path))?;
            let cert = params.self_signed(&key).map_err(cert_err(&cert_path))?;
            private::ensure_file(&key_path, || key.serialize_pem()).map_err(io(&key_path))?;
            std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
            key
        };
        Ok(ClusterCa { dir, issuer: Some(Issuer::new(params, key)) })
    }

    /// The CA certificate every role trusts.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The certificate of role `name` on a host at `address`, issued now
    /// unless both files exist.
    pub fn ensure_role(&self, name: &str, address: IpAddr) -> Result<RoleCertificate, PkiError> {
        let files =
            RoleCertificate { cert: self.dir.join(format!("{name}.pem")), key: self.dir.join(format!("{name}.key")) };
        if files.cert.exists() && files.key.exists() {
            private::tighten(&files.key).map_err(io(&files.key))?;
            return Ok(files);
        }
        let Some(issuer) = &self.issuer else {
            return Err(PkiError::Certificate {
                path: files.cert.clone(),
                reason: format!(
                    "missing, and this host has no ca.key to issue it: copy {name}.pem and {name}.key from the \
                     host that holds the cluster CA's key"
                ),
            });
        };
        let mut p =
            CertificateParams::new(vec![address.to_string(), name.to_string()]).map_err(cert_err(&files.cert))?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(cert_err(&files.key))?;
        let cert = p.signed_by(&key, issuer).map_err(cert_err(&files.cert))?;
        // A new key replaces an old one: write it whole, then the certificate.
        let _ = std::fs::remove_file(&files.key);
        private::ensure_file(&files.key, || key.serialize_pem()).map_err(io(&files.key))?;
        std::fs::write(&files.cert, cert.pem()).map_err(io(&files.cert))?;
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    fn roots(ca: &Path) -> Arc<rustls::RootCertStore> {
        let mut r = rustls::RootCertStore::empty();
        r.add(CertificateDer::from_pem_file(ca).unwrap()).unwrap();
        Arc::new(r)
    }

    fn chain(c: &RoleCertificate) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (vec![CertificateDer::from_pem_file(&c.cert).unwrap()], PrivateKeyDer::from_pem_file(&c.key).unwrap())
    }

    /// A TLS handshake over an in-memory pipe: the server requires a client
    /// certificate from `server_ca`, the client trusts `client_ca`.
    async fn handshake(
        server: &RoleCertificate,
        server_ca: &Path,
        client: &RoleCertificate,
        client_ca: &Path,
        name: &str,
    ) -> Result<(), String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(server_ca), provider.clone())
            .build()
            .unwrap();
        let (certs, key) = chain(server);
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        let (certs, key) = chain(client);
        let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(client_ca))
            .with_client_auth_cert(certs, key)
            .unwrap();
        let (a, b) = tokio::io::duplex(64 << 10);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
        let name = ServerName::try_from(name.to_string()).unwrap();
        let (s, c) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
        let (mut s, mut c) = (s.map_err(|e| format!("server: {e}"))?, c.map_err(|e| format!("client: {e}"))?);
        // TLS 1.3: the server's verdict on the client certificate arrives
        // with the first read; exchange a byte each way.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut byte = [0u8; 1];
        c.write_all(b"x").await.map_err(|e| format!("client write: {e}"))?;
        s.read_exact(&mut byte).await.map_err(|e| format!("server read: {e}"))?;
        s.write_all(b"y").await.map_err(|e| format!("server write: {e}"))?;
        c.read_exact(&mut byte).await.map_err(|e| format!("client read: {e}"))?;
        Ok(())
    }

    #[tokio::test]
    async fn role_certificates_carry_mutual_tls_and_a_foreign_ca_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let ca = ClusterCa::ensure(d.path(), "test").unwrap();
        let ip: IpAddr = "10.0.0.11".parse().unwrap();
        let db = ca.ensure_role("db1", ip).unwrap();
        let app = ca.ensure_role("app1", "10.0.0.12".parse().unwrap()).unwrap();
        assert_eq!(mode(&dir(d.path())), 0o700);
        for key in [d.path().join("tls/internal/ca.key"), db.key.clone(), app.key.clone()] {
            assert_eq!(mode(&key), 0o600, "{}", key.display());
        }
        let ca_pem = ca.cert_path();
        // app1 → db1 by address and by name, each side checking the other.
        handshake(&db, &ca_pem, &app, &ca_pem, "10.0.0.11").await.unwrap();
        handshake(&db, &ca_pem, &app, &ca_pem, "db1").await.unwrap();
        // Not for another address.
        assert!(handshake(&db, &ca_pem, &app, &ca_pem, "10.0.0.99").await.is_err());

        // Reopened, the CA issues certificates that chain to the same ca.pem.
        let again = ClusterCa::ensure(d.path(), "test").unwrap();
        assert_eq!(again.ensure_role("db1", ip).unwrap(), db, "an existing certificate is kept");
        let web = again.ensure_role("web1", "10.0.0.13".parse().unwrap()).unwrap();
        handshake(&db, &ca_pem, &web, &ca_pem, "db1").await.unwrap();

        // A client with a certificate of another CA is refused, and so is
        // a server of another CA.
        let other_dir = tempfile::tempdir().unwrap();
        let other = ClusterCa::ensure(other_dir.path(), "other").unwrap();
        let stranger = other.ensure_role("app9", "10.0.0.12".parse().unwrap()).unwrap();
        let err = handshake(&db, &ca_pem, &stranger, &ca_pem, "db1").await.unwrap_err();
        assert!(err.contains("server") || err.contains("client read"), "{err}");
        assert!(handshake(&stranger, &other.cert_path(), &app, &ca_pem, "app9").await.is_err());
    }

    /// A host given `ca.pem` and its roles' certificates without `ca.key`
    /// keeps them: it neither makes a CA of its own nor issues anything.
    #[test]
    fn a_host_without_the_ca_key_keeps_the_given_files_and_issues_nothing() {
        let d = tempfile::tempdir().unwrap();
        let ca = ClusterCa::ensure(d.path(), "test").unwrap();
        let lb = ca.ensure_role("lb1", "10.0.0.10".parse().unwrap()).unwrap();
        let ca_pem = std::fs::read(ca.cert_path()).unwrap();
        std::fs::remove_file(dir(d.path()).join("ca.key")).unwrap();
        let given = ClusterCa::ensure(d.path(), "test").unwrap();
        assert_eq!(std::fs::read(given.cert_path()).unwrap(), ca_pem, "the given CA is kept");
        assert_eq!(given.ensure_role("lb1", "10.0.0.10".parse().unwrap()).unwrap(), lb);
        let e = given.ensure_role("web1", "10.0.0.11".parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("web1.pem") && e.contains("ca.key"), "{e}");
        assert!(!dir(d.path()).join("ca.key").exists());
    }
}
