//! A guestbook post with an `Idempotency-Key` is stored at most once: the
//! same post sent again (as a proxy replays it after a server died, or the
//! page resends it) gets the first answer back — same message, same
//! read-your-writes token — and adds no row; different keys add rows.
//! A real `bulwark db` node and a real `bulwark app` process on port 0.
mod db_common;

use bulwark_db_api::DbRole;
use bulwark_testkit::config::AppConfig;
use bulwark_testkit::{request, wait_until, HttpResponse, Process};
use db_common::*;
use serde_json::Value;

fn app(db: &DbProc) -> Process {
    Process::start("app", &AppConfig::new("app1", &[db.addr], SECRET).to_toml())
}

fn post(app: &Process, key: Option<&str>, body: &str) -> HttpResponse {
    let mut h = vec![("X-Bulwark-Cluster", SECRET), ("Content-Type", "application/json")];
    if let Some(k) = key {
        h.push(("Idempotency-Key", k));
    }
    request(app.addr("http"), "POST", "/api/messages", &h, body.as_bytes()).unwrap()
}

fn json(r: &HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// Rows of `messages` whose text is `text`, read on the primary.
fn rows_with_text(db: &DbProc, text: &str) -> u64 {
    let q = serde_json::json!({
        "sql": "SELECT count(*) FROM messages WHERE text = ?",
        "params": [text],
        "consistency": "strong",
    });
    let r = db.post("/v1/query", &q.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    json(&r)["rows"][0][0].as_u64().unwrap()
}

#[test]
fn the_same_post_twice_with_one_key_is_stored_once_and_answered_alike() {
    let db = DbProc::start(1, "127.0.0.1", true);
    wait_until("db primary", || db.status().is_some_and(|s| s.role == DbRole::Primary));
    let app = app(&db);

    let body = r#"{"author":"ann","text":"once only"}"#;
    let first = post(&app, Some("4d1c9a52-0d55-4e4e-9d0b-6f7f3c2b1a00"), body);
    assert_eq!(first.status, 201, "{}", first.text());
    let again = post(&app, Some("4d1c9a52-0d55-4e4e-9d0b-6f7f3c2b1a00"), body);
    assert_eq!(again.status, 201, "{}", again.text());
    let (a, b) = (json(&first), json(&again));
    assert_eq!(a["message"], b["message"], "same message: id, time and app of the first post");
    assert_eq!(a["token"], b["token"], "same read-your-writes token");
    assert_eq!(first.header("set-cookie"), again.header("set-cookie"), "same cookie");
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(rows_with_text(&db, "once only"), 1);

    // Different keys: two messages.
    let body = r#"{"author":"bob","text":"twice"}"#;
    let one = json(&post(&app, Some("key-one"), body));
    let two = json(&post(&app, Some("key-two"), body));
    assert_ne!(one["message"]["id"], two["message"]["id"]);
    assert_eq!(rows_with_text(&db, "twice"), 2);
    // No key: every post is a new message, as before.
    let body = r#"{"author":"cy","text":"unkeyed"}"#;
    assert_eq!(post(&app, None, body).status, 201);
    assert_eq!(post(&app, None, body).status, 201);
    assert_eq!(rows_with_text(&db, "unkeyed"), 2);

    // A key already used for another message is refused, and stores nothing.
    let r = post(&app, Some("key-one"), r#"{"author":"bob","text":"something else"}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(rows_with_text(&db, "something else"), 0);

    // Bad keys: 400 before anything is written.
    let long = "k".repeat(201);
    for bad in [long.as_str(), "", "tab\there"] {
        let r = post(&app, Some(bad), r#"{"author":"dee","text":"bad key"}"#);
        assert_eq!(r.status, 400, "key {bad:?}: {}", r.text());
    }
    assert_eq!(rows_with_text(&db, "bad key"), 0);
    let max = "k".repeat(200);
    assert_eq!(post(&app, Some(&max), r#"{"author":"dee","text":"long key"}"#).status, 201);

    let metrics = request(app.addr("http"), "GET", "/metrics", &[("Authorization", &format!("Bearer {SECRET}"))], b"")
        .unwrap()
        .text();
    assert!(metrics.contains("bulwark_app_replayed_posts_total{app=\"app1\"} 1"), "{metrics}");
}
