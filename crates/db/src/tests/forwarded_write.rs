//! A replica passes a write on to the primary and says where the primary
//! is, so that a client that sent its write there sends the next one to
//! the primary itself.
use super::applied_hints::{cluster, quick_configs};
use super::http;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_passed_on_by_a_replica_names_the_primary() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(quick_configs(&dirs, 3)).await;
    let body = serde_json::json!({"statements": [{"sql": "INSERT INTO t VALUES (50)"}]});
    let wait = Duration::from_secs(20);
    let r = http().post_json(&nodes[1].addr.to_string(), "/v1/execute", &body, wait).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let primary = r.headers.get("x-bulwark-primary").and_then(|v| v.to_str().ok());
    assert_eq!(primary, Some(nodes[0].addr.to_string().as_str()));
    let r = http().post_json(&nodes[0].addr.to_string(), "/v1/execute", &body, wait).await.unwrap();
    assert_eq!(r.status, 400, "the same row again: {}", String::from_utf8_lossy(&r.body));
    assert!(r.headers.get("x-bulwark-primary").is_none(), "the primary answers itself");
    super::stop_all(nodes);
}
