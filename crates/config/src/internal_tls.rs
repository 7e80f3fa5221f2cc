//! Mutual TLS between tiers: one key, the same in every role that has it
//! (web, app, db, and an lb's `[[backend]]` and `[admin]` tables):
//!
//! ```toml
//! mutual_tls = { cert = "/var/lib/bulwark/tls/internal/db1.pem", key = "/var/lib/bulwark/tls/internal/db1.key", ca = "/var/lib/bulwark/tls/internal/ca.pem" }
//! ```
//!
//! - `cert`: this role's certificate (PEM chain);
//! - `key`: its private key (PEM);
//! - `ca`: the cluster CA: the other side must chain to it.
//!
//! All three are required. With them a role's listener speaks TLS only
//! and requires a client certificate issued by `ca`; its connections to
//! the tier behind present `cert` and check that the server's certificate
//! chains to `ca` and names the address dialled. `bulwark up` sets them
//! when the topology's `internal_tls` is on.
use crate::Validator;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A role's certificate, key and the CA it trusts (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Report empty paths in `mutual_tls`.
pub fn check(v: &mut Validator, tls: Option<&TlsFiles>) {
    let Some(t) = tls else { return };
    for (name, p) in [("mutual_tls.cert", &t.cert), ("mutual_tls.key", &t.key), ("mutual_tls.ca", &t.ca)] {
        if p.as_os_str().is_empty() {
            v.error(name, "must not be empty");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_required_and_none_may_be_empty() {
        let t = |cert: &str| TlsFiles { cert: cert.into(), key: "k".into(), ca: "c".into() };
        let mut v = Validator::default();
        check(&mut v, None);
        check(&mut v, Some(&t("x")));
        assert!(v.is_empty());
        check(&mut v, Some(&t("")));
        let e = v.into_result("role.toml", "").unwrap_err();
        let keys: Vec<&str> = e.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["mutual_tls.cert"]);
        let missing: Result<TlsFiles, _> = toml::from_str(
            r#"cert = "a"
ca = "c""#,
        );
        assert!(missing.unwrap_err().to_string().contains("missing field `key`"));
        let unknown: Result<TlsFiles, _> = toml::from_str(
            r#"cert = "a"
key = "b"
ca = "c"
crt = "d""#,
        );
        assert!(unknown.unwrap_err().to_string().contains("unknown field `crt`"));
    }
}
