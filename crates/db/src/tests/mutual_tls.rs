//! A cluster whose nodes require mutual TLS (`mutual_tls`): Raft,
//! membership changes and the SQL API all go over it with certificates of
//! one cluster CA, and a client without a certificate of that CA is
//! refused at the handshake, whatever secret it sends.
use super::{config, stop_all, wait_for, TestNode, SECRET};
use bulwark_cluster::pki::{ClusterCa, RoleCertificate};
use bulwark_config::internal_tls::TlsFiles;
use bulwark_db_api::api::Statement;
use bulwark_db_api::http_client::HttpClient;
use bulwark_db_api::{Client, Consistency, Params};
use bulwark_mtls::MutualTls;
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

fn files(role: &RoleCertificate, ca: &Path) -> TlsFiles {
    TlsFiles { cert: role.cert.clone(), key: role.key.clone(), ca: ca.to_path_buf() }
}

fn tls_config(
    id: u64,
    data: &Path,
    bootstrap: bool,
    role: &RoleCertificate,
    ca: &Path,
) -> bulwark_config::db::DbConfig {
    let mut c = config(id, data, bootstrap);
    c.mutual_tls = Some(files(role, ca));
    c
}

async fn status_of(http: &HttpClient, addr: SocketAddr) -> Option<serde_json::Value> {
    let addr = addr.to_string();
    let r = http.send(http::Method::GET, &addr, "/v1/status", Bytes::new(), &[], Duration::from_secs(2));
    let r = r.await.ok().filter(|r| r.status == 200)?;
    serde_json::from_slice(&r.body).ok()
}

/// What a TLS client that trusts the cluster CA but has no certificate of
/// its own gets from `addr`: the bytes of the answer (none when refused).
async fn without_a_certificate(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(ca).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = bulwark_mtls::server_name(&addr.to_string()).unwrap();
    let mut answer = Vec::new();
    let Ok(mut s) = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await else { return answer };
    let req = format!("GET /v1/status HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {SECRET}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_ok() {
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut answer)).await;
    }
    answer
}

/// What plain HTTP gets from `addr` (none when refused).
async fn in_plain_http(addr: SocketAddr) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /v1/status HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {SECRET}\r\n\r\n");
    let mut answer = Vec::new();
    if s.write_all(req.as_bytes()).await.is_ok() {
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut answer)).await;
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_mutual_tls_replicates_and_refuses_other_certificates() {
    let pki = tempfile::tempdir().unwrap();
    let ca = ClusterCa::ensure(pki.path(), "test").unwrap();
    let ca_pem = ca.cert_path();
    let local = "127.0.0.1".parse().unwrap();
    let roles: Vec<RoleCertificate> = (1..=3).map(|i| ca.ensure_role(&format!("db{i}"), local).unwrap()).collect();
    let app = MutualTls::load(&files(&ca.ensure_role("app1", local).unwrap(), &ca_pem)).unwrap();

    // A missing file stops the node at start, named.
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut broken = tls_config(1, dirs[0].path(), true, &roles[0], &ca_pem);
    broken.mutual_tls.as_mut().expect("TLS files").ca = pki.path().join("nowhere.pem");
    let e = crate::DbNode::bind(broken).await.err().expect("a node without its CA file does not start");
    assert!(e.to_string().contains("nowhere.pem"), "{e}");

    let n1 = TestNode::start(tls_config(1, dirs[0].path(), true, &roles[0], &ca_pem));
    let http = HttpClient::new(SECRET, None, Some(app.clone()));
    wait_for("node 1 leads alone", WAIT, || async {
        status_of(&http, n1.addr).await.is_some_and(|s| s["role"] == "primary")
    })
    .await;
    let n2 = TestNode::start(tls_config(2, dirs[1].path(), false, &roles[1], &ca_pem));
    let n3 = TestNode::start(tls_config(3, dirs[2].path(), false, &roles[2], &ca_pem));
    // Membership changes and Raft between the nodes go over mutual TLS.
    let client = Client::with_tls([n1.addr.to_string()], SECRET, Some(app.clone()));
    for (id, n) in [(2, &n2), (3, &n3)] {
        client.add_node(id, &n.addr.to_string(), &n.raft_addr.to_string(), true).await.unwrap();
    }
    client.execute(&[Statement::new("CREATE TABLE t (id INTEGER PRIMARY KEY)")]).await.unwrap();
    let mut token = None;
    for i in 0..5 {
        token = Some(client.execute(&[Statement::new(format!("INSERT INTO t VALUES ({i})"))]).await.unwrap().token);
    }
    // Every node has every write: read each one directly.
    for n in [&n1, &n2, &n3] {
        let one = Client::with_tls([n.addr.to_string()], SECRET, Some(app.clone()));
        let applied = status_of(&http, n.addr).await.unwrap();
        assert_eq!(applied["members"].as_array().map(Vec::len), Some(3), "{applied}");
        let rows = one.query("SELECT count(*) FROM t", Params::None, Consistency::None, token).await.unwrap();
        assert_eq!(serde_json::to_value(&rows.rows).unwrap(), serde_json::json!([[5]]), "{}", n.addr);
    }

    // The right secret without the right certificate opens nothing.
    let other_dir = tempfile::tempdir().unwrap();
    let other = ClusterCa::ensure(other_dir.path(), "other").unwrap();
    let stranger = other.ensure_role("app9", local).unwrap();
    // A certificate of another CA (the client itself trusts the cluster
    // CA, so only the node's verdict counts).
    let foreign = HttpClient::new(SECRET, None, Some(MutualTls::load(&files(&stranger, &ca_pem)).unwrap()));
    let refused = foreign.send(http::Method::GET, &n1.addr.to_string(), "/v1/status", Bytes::new(), &[], WAIT).await;
    assert!(refused.is_err(), "a certificate of another CA is accepted: {refused:?}");
    let c = Client::with_tls([n1.addr.to_string()], SECRET, Some(MutualTls::load(&files(&stranger, &ca_pem)).unwrap()))
        .with_deadline(Duration::from_millis(500));
    assert!(c.execute(&[Statement::new("INSERT INTO t VALUES (100)")]).await.is_err());
    // No certificate at all, and plain HTTP.
    for n in [&n1, &n2] {
        let answer = without_a_certificate(n.addr, &ca_pem).await;
        assert!(!answer.starts_with(b"HTTP/"), "answered without a certificate: {}", String::from_utf8_lossy(&answer));
        let answer = in_plain_http(n.addr).await;
        assert!(!answer.starts_with(b"HTTP/"), "answered plain HTTP: {}", String::from_utf8_lossy(&answer));
    }
    // A node of another CA is not trusted by the client either.
    let wrong_server = HttpClient::new(
        SECRET,
        None,
        Some(MutualTls::load(&files(&ca.ensure_role("app2", local).unwrap(), &other.cert_path())).unwrap()),
    );
    let n1_addr = n1.addr.to_string();
    let refused = wrong_server.send(http::Method::GET, &n1_addr, "/v1/status", Bytes::new(), &[], WAIT);
    assert!(matches!(refused.await, Err(bulwark_db_api::http_client::TransportError::Connect(..))));
    // Nothing of the refused write arrived.
    let rows = client.query("SELECT count(*) FROM t", Params::None, Consistency::Strong, None).await.unwrap();
    assert_eq!(serde_json::to_value(&rows.rows).unwrap(), serde_json::json!([[5]]));
    stop_all(vec![n1, n2, n3]);
}
