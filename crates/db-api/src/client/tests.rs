use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn location_header_gives_the_primary_address() {
    assert_eq!(addr_of_location("http://127.0.0.1:7001/v1/execute").as_deref(), Some("127.0.0.1:7001"));
    assert_eq!(addr_of_location("https://10.0.0.2:7001/v1/query").as_deref(), Some("10.0.0.2:7001"));
    assert_eq!(addr_of_location("ftp://x/"), None);
}

#[tokio::test]
async fn unreachable_cluster_is_unavailable_not_ambiguous() {
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = Client::new([format!("127.0.0.1:{port}")], "0123456789abcdef").with_deadline(Duration::from_millis(300));
    let e = c.execute(&[Statement::new("SELECT 1")]).await.unwrap_err();
    assert!(matches!(e, ClientError::Unavailable(_)), "{e:?}");
    let e = c.query("SELECT 1", Params::None, Consistency::None, None).await.unwrap_err();
    assert!(matches!(e, ClientError::Unavailable(_)), "{e:?}");
}

/// A node on a real socket that says it is the primary (`GET /v1/status`)
/// and answers every other request with `status` and the JSON error
/// `body`, keeping the head of every POST it was sent (lowercased).
async fn fake_primary(status: &'static str, body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let node_status = serde_json::json!({
        "node_id": 1, "address": addr, "role": "primary", "term": 1, "leader_id": 1,
        "leader_address": addr, "applied_index": 1, "last_log_index": 1, "snapshot_index": null,
        "purged_index": null, "quorum": true, "lag": {"entries": 0, "seconds": 0.0, "known": true},
        "members": [{"id": 1, "address": addr, "voter": true}],
    })
    .to_string();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let (kept, node_status) = (kept.clone(), node_status.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                    let (code, body) = if text.starts_with("get /v1/status") {
                        ("200 OK", node_status.as_str())
                    } else {
                        if text.starts_with("post ") {
                            kept.lock().unwrap().push(text);
                        }
                        (status, body)
                    };
                    let reply = format!(
                        "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// As a primary that lost its majority mid-write answers: not committed
/// in time, outcome unknown.
const OUTCOME_UNKNOWN: &str =
    r#"{"error":"the write was not committed in time; the outcome is unknown","code":"timeout","retryable":false}"#;

#[tokio::test]
async fn an_ambiguous_write_names_its_request_id() {
    let (addr, _) = fake_primary("503 Service Unavailable", OUTCOME_UNKNOWN).await;
    let c = Client::new([addr], "0123456789abcdef").with_deadline(Duration::from_millis(300));
    let stmts = [Statement::new("INSERT INTO t VALUES (1)")];
    let Err(ClientError::Ambiguous(a)) = c.execute(&stmts).await else { panic!("expected an ambiguous write") };
    let id = a.request_id.clone().expect("the generated request id");
    assert!(id.starts_with("c-"), "{id}");
    assert!(a.to_string().contains(&id), "{a}");
    // The caller's own id comes back as given.
    let Err(ClientError::Ambiguous(a)) = c.execute_once("order-17", &stmts).await else { panic!("ambiguous") };
    assert_eq!(a.request_id.as_deref(), Some("order-17"));
}

#[tokio::test]
async fn requests_made_in_scope_carry_the_x_request_id_and_others_do_not() {
    let refused = r#"{"error":"refused","code":"bad_request","retryable":false}"#;
    let (addr, heads) = fake_primary("400 Bad Request", refused).await;
    let c = Client::new([addr], "0123456789abcdef").with_deadline(Duration::from_millis(500));
    let stmts = [Statement::new("INSERT INTO t VALUES (1)")];
    with_x_request_id(Some("4f2a-id.1"), async {
        assert!(c.execute(&stmts).await.is_err());
        assert!(c.query("SELECT 1", Params::None, Consistency::Strong, None).await.is_err());
        assert!(c.query("SELECT 1", Params::None, Consistency::None, None).await.is_err());
    })
    .await;
    let traced = std::mem::take(&mut *heads.lock().unwrap());
    assert_eq!(traced.len(), 3, "{traced:?}");
    assert!(traced.iter().all(|h| h.contains("\r\nx-request-id: 4f2a-id.1\r\n")), "{traced:?}");

    assert!(c.execute(&stmts).await.is_err());
    with_x_request_id(Some("a b\"c"), async { assert!(c.execute(&stmts).await.is_err()) }).await;
    let untraced = heads.lock().unwrap().clone();
    assert_eq!(untraced.len(), 2, "{untraced:?}");
    assert!(untraced.iter().all(|h| !h.contains("x-request-id")), "out of scope or invalid: {untraced:?}");
}
