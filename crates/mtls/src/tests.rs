use super::*;

#[test]
fn a_server_is_named_by_the_host_it_is_dialled_at() {
    let ip = |s: &str| ServerName::IpAddress(s.parse::<std::net::IpAddr>().unwrap().into());
    assert_eq!(server_name("10.0.0.11:7001").unwrap(), ip("10.0.0.11"));
    assert_eq!(server_name("[fd00::1]:7001").unwrap(), ip("fd00::1"));
    assert_eq!(server_name("10.0.0.11").unwrap(), ip("10.0.0.11"));
    assert_eq!(server_name("db1.internal:7001").unwrap(), ServerName::try_from("db1.internal").unwrap());
    assert!(matches!(server_name("bad name:1"), Err(MtlsError::ServerName(_))));
}

#[test]
fn files_that_do_not_make_a_configuration_are_named() {
    let d = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a".into()]).unwrap().self_signed(&key).unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let write = |name: &str, text: &str| {
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let files = TlsFiles {
        cert: write("a.pem", &cert.pem()),
        key: write("a.key", &key.serialize_pem()),
        ca: write("ca.pem", &cert.pem()),
    };
    MutualTls::load(&files).unwrap();
    let missing = TlsFiles { ca: d.path().join("nowhere.pem"), ..files.clone() };
    let e = MutualTls::load(&missing).unwrap_err().to_string();
    assert!(e.contains("nowhere.pem"), "{e}");
    let empty = TlsFiles { cert: write("empty.pem", ""), ..files.clone() };
    let e = MutualTls::load(&empty).unwrap_err().to_string();
    assert!(e.contains("empty.pem") && e.contains("no certificate"), "{e}");
    let mismatched = TlsFiles { key: write("other.key", &other_key.serialize_pem()), ..files };
    assert!(matches!(MutualTls::load(&mismatched), Err(MtlsError::Config(_))));
}
