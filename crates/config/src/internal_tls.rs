//! The three keys of mutual TLS between tiers, the same in every role:
//!
//! ```toml
//! tls_cert = "/var/lib/bulwark/tls/internal/db1.pem"  # this role's certificate (PEM chain)
//! tls_key = "/var/lib/bulwark/tls/internal/db1.key"   # its private key (PEM)
//! tls_ca = "/var/lib/bulwark/tls/internal/ca.pem"     # the cluster CA: the other side must chain to it
//! ```
//!
//! All three or none. With them a role's listener speaks TLS only and
//! requires a client certificate issued by `tls_ca`; its connections to
//! the tier behind present `tls_cert` and check that the server's
//! certificate chains to `tls_ca` and names the address dialled. `bulwark
//! up` sets them when the topology's `internal_tls` is on.
use crate::Validator;
use std::path::PathBuf;

/// A role's certificate, key and the CA it trusts (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The files named by `tls_cert`, `tls_key` and `tls_ca` (validated: all
/// three or none).
pub fn files(cert: Option<&PathBuf>, key: Option<&PathBuf>, ca: Option<&PathBuf>) -> Option<TlsFiles> {
    Some(TlsFiles { cert: cert?.clone(), key: key?.clone(), ca: ca?.clone() })
}

/// Report unless `tls_cert`, `tls_key` and `tls_ca` are all set or all
/// unset, and empty paths.
pub fn check(v: &mut Validator, cert: Option<&PathBuf>, key: Option<&PathBuf>, ca: Option<&PathBuf>) {
    let keys = [("tls_cert", cert), ("tls_key", key), ("tls_ca", ca)];
    let set = keys.iter().filter(|(_, p)| p.is_some()).count();
    for (name, p) in keys {
        match p {
            Some(p) if p.as_os_str().is_empty() => v.error(name, "must not be empty"),
            None if set > 0 => v.error(name, "mutual TLS needs all of tls_cert, tls_key and tls_ca"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_three_or_none() {
        let p = PathBuf::from("/x");
        let mut v = Validator::default();
        check(&mut v, None, None, None);
        check(&mut v, Some(&p), Some(&p), Some(&p));
        assert!(v.is_empty());
        let mut v = Validator::default();
        check(&mut v, Some(&p), None, Some(&PathBuf::new()));
        let e = v.into_result("role.toml", "").unwrap_err();
        let keys: Vec<&str> = e.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["tls_key", "tls_ca"]);
        assert_eq!(files(Some(&p), Some(&p), None), None);
    }
}
