//! The guestbook's HTTP API.
use crate::App;
use bulwark_db_api::{ClientError, Consistency, Params, Statement, Token, Value};
use bulwark_telemetry::metrics::{self, Exposition, STATUS_CLASSES};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// Name of the read-your-writes cookie (`term.index` of the poster's last
/// write, signed: see [`crate::CookieKey`]).
pub const COOKIE: &str = "bulwark_rw";

/// Headers on every answer: JSON that no browser may render as a page,
/// frame, or sniff into something else.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

/// Request header of a post that must be stored at most once however often
/// it is sent (draft-ietf-httpapi-idempotency-key-header): the page sets a
/// fresh one per message, the proxies replay a keyed post when the server
/// they sent it to died, and the database remembers the outcome per key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Longest accepted `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;

/// Prefix that scopes the guestbook's keys in the database's request ids,
/// so they cannot collide with another user of the same database.
const REQUEST_ID_SCOPE: &str = "guestbook:";

/// Request counters for `/metrics`: per route, by status class.
#[derive(Default)]
pub struct AppStats {
    /// [route][class]: route 0 = list, 1 = post, 2 = other; class 1..=5.
    requests: [[std::sync::atomic::AtomicU64; 6]; 3],
    latency: [bulwark_telemetry::LatencyHistogram; 3],
    /// Posts answered with the stored outcome of an earlier post with the
    /// same `Idempotency-Key`.
    replayed_posts: std::sync::atomic::AtomicU64,
}

const ROUTES: [&str; 3] = ["list_messages", "post_message", "other"];

impl AppStats {
    fn record(&self, route: usize, status: u16, took: std::time::Duration) {
        let class = usize::from(status / 100).min(5);
        self.requests[route][class].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.latency[route].observe(took);
    }

    /// `/metrics`: requests and latency by route, replayed posts.
    fn encode_metrics(&self, app: &str, out: &mut Exposition<'_>) -> std::fmt::Result {
        use std::sync::atomic::Ordering::Relaxed;
        let requests = ROUTES.iter().enumerate().flat_map(|(r, &route)| {
            (1..=5).map(move |class| {
                (
                    [("app", app), ("route", route), ("code", STATUS_CLASSES[class])],
                    self.requests[r][class].load(Relaxed),
                )
            })
        });
        out.counters("bulwark_app_requests", "Requests answered, by route and status class.", requests)?;
        out.histograms(
            "bulwark_app_request_duration_seconds",
            "Request latency (database included).",
            ROUTES.iter().zip(&self.latency).map(|(&route, h)| ([("app", app), ("route", route)], h)),
        )?;
        out.counters(
            "bulwark_app_replayed_posts",
            "Posts answered with the stored outcome of an earlier post with the same Idempotency-Key.",
            [([("app", app)], self.replayed_posts.load(Relaxed))],
        )
    }
}

/// A new message as posted.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    pub author: String,
    pub text: String,
}

/// Why a client's input is refused: the message of the answer's `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("{0} must not contain control characters")]
    ControlCharacters(&'static str),
    #[error("send one Idempotency-Key header, not several")]
    SeveralIdempotencyKeys,
    #[error("Idempotency-Key must not be empty")]
    EmptyIdempotencyKey,
    #[error("Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY_BYTES} bytes")]
    LongIdempotencyKey,
    #[error("Idempotency-Key must be printable ASCII, without control characters")]
    UnprintableIdempotencyKey,
}

/// Trim and check a message; returns (author, text) or the reason.
pub fn validate_message(m: &MessageInput, max_author: usize, max_text: usize) -> Result<(String, String), InputError> {
    let author = m.author.trim();
    let text = m.text.trim();
    if author.is_empty() {
        return Err(InputError::Empty("author"));
    }
    if text.is_empty() {
        return Err(InputError::Empty("text"));
    }
    if author.chars().count() > max_author {
        return Err(InputError::TooLong { field: "author", max: max_author });
    }
    if text.chars().count() > max_text {
        return Err(InputError::TooLong { field: "text", max: max_text });
    }
    if author.chars().any(char::is_control) {
        return Err(InputError::ControlCharacters("author"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(InputError::ControlCharacters("text"));
    }
    Ok((author.to_string(), text.to_string()))
}

/// The client's `Idempotency-Key`, if it sent one: printable ASCII, 1 to
/// [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes, optionally quoted (the draft's
/// structured-field string; most clients send it bare).
pub fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<String>, InputError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(InputError::SeveralIdempotencyKeys);
    }
    let raw = value.as_bytes();
    let key = match raw {
        [b'"', inner @ .., b'"'] => inner,
        _ => raw,
    };
    if key.is_empty() {
        return Err(InputError::EmptyIdempotencyKey);
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(InputError::LongIdempotencyKey);
    }
    if !key.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err(InputError::UnprintableIdempotencyKey);
    }
    Ok(Some(String::from_utf8_lossy(key).into_owned()))
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": msg.into() }))
}

fn db_error(e: ClientError) -> Response<Full<Bytes>> {
    match e {
        ClientError::Sql(m) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("database error: {m}")),
        ClientError::Rejected { message, .. } => error(StatusCode::BAD_GATEWAY, format!("database refused: {message}")),
        ClientError::Unavailable(m) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable, try again: {m}"));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        ClientError::Ambiguous(m) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database failed over during your write; check whether it was saved: {m}"),
        ),
    }
}

/// The token of the read-your-writes cookie, if it is there and signed
/// with `key` (an unsigned or forged one is ignored: a plain read).
fn token_from_cookie(headers: &http::HeaderMap, key: &crate::CookieKey) -> Option<Token> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .and_then(|(_, v)| key.verify(v))
}

/// The request reached the site over HTTPS: the first `X-Forwarded-Proto`
/// the proxies in front set (the request came through them: it carries the
/// cluster secret, or this server is configured to trust its clients).
fn came_over_https(headers: &http::HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// Why a post may not come from this request, if it may not: the body must
/// be JSON (a cross-site HTML form can send only form encodings and plain
/// text, and a cross-site script sending JSON needs a CORS preflight this
/// server never grants), and a browser that says the request is
/// cross-site is refused outright.
fn refuse_cross_site_post(headers: &http::HeaderMap) -> Option<Response<Full<Bytes>>> {
    let site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    if matches!(site, Some(b"cross-site" | b"same-site")) {
        return Some(error(StatusCode::FORBIDDEN, "posts are accepted only from this site's own page"));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Some(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the message as Content-Type: application/json"));
    }
    None
}

fn query_param<'a>(q: &'a str, key: &str) -> Option<&'a str> {
    q.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

pub(crate) async fn handle(app: &App, req: hyper::Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let mut resp = route(app, req, peer).await;
    for (name, value) in SECURITY_HEADERS {
        resp.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    resp
}

async fn route(app: &App, req: hyper::Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let ip = app.firewall.client_ip(peer.ip(), req.headers());
    if let Err(r) = app.firewall.check_rate(ip) {
        let mut resp = error(r.status(), r.reason());
        if let Some(s) = r.retry_after() {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        return resp;
    }
    let path = req.uri().path().to_string();
    // Health is open (the tiers in front probe it); metrics need the
    // monitoring token; everything else needs the secret the web tier adds.
    if path == "/metrics" {
        if let Some(token) = &app.monitor_token {
            if !bulwark_firewall::bearer_matches(req.headers(), token) {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "/metrics needs the monitoring token as `Authorization: Bearer`",
                );
            }
        }
    } else if path != "/health" && path != "/api/health" && app.config.require_secret {
        let ok = app
            .secret
            .as_deref()
            .is_some_and(|secret| bulwark_firewall::header_matches(req.headers(), "x-bulwark-cluster", secret));
        if !ok {
            return error(StatusCode::UNAUTHORIZED, "this tier accepts requests only through the web tier");
        }
    }
    if req.method() == Method::GET && path == "/metrics" {
        // Not counted nor logged as a request.
        let (stats, name) = (Arc::clone(&app.stats), app.config.name.clone());
        let text = metrics::render(vec![metrics::from_fn(move |out| stats.encode_metrics(&name, out))]);
        let mut r = Response::new(Full::new(Bytes::from(text)));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
        return r;
    }
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let request_id = request_id(req.headers()).to_owned();
    // The database requests made for this request carry its id too.
    let traced = (request_id != "-").then_some(request_id.as_str());
    let resp = bulwark_db_api::with_x_request_id(traced, async {
        match (req.method(), path.as_str()) {
            (&Method::GET, "/health") | (&Method::GET, "/api/health") => {
                json_response(StatusCode::OK, json!({ "status": "ok", "app": app.config.name }))
            }
            (&Method::GET, "/api/ws/echo") => crate::websocket::echo(&app.config.name, req),
            (&Method::GET, "/api/messages") => list(app, &req).await,
            (&Method::POST, "/api/messages") => post(app, req).await,
            (_, "/api/messages") => {
                let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST");
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
                r
            }
            _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        }
    })
    .await;
    let route = match path.as_str() {
        "/api/messages" if method == Method::GET => 0,
        "/api/messages" if method == Method::POST => 1,
        _ => 2,
    };
    app.stats.record(route, resp.status().as_u16(), started.elapsed());
    tracing::info!(target: "access", client = %ip, method = %method, path = %path, status = resp.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0, request_id = %request_id);
    resp
}

/// The request's `X-Request-Id` (set by the lb, passed on by the web
/// tier) for the access line, or `-`: 1 to 128 characters of letters,
/// digits, `-`, `_` and `.`, as the lb makes and keeps them.
fn request_id(headers: &http::HeaderMap) -> &str {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        })
        .unwrap_or("-")
}

async fn list(app: &App, req: &hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    let q = req.uri().query().unwrap_or("");
    let limit = match query_param(q, "limit").map(|v| v.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) if (1..=app.config.max_page_size).contains(&n) => n,
        Some(_) => {
            return error(StatusCode::BAD_REQUEST, format!("limit must be between 1 and {}", app.config.max_page_size))
        }
    };
    let before = match query_param(q, "before").map(|v| v.parse::<i64>()) {
        None => i64::MAX,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "before must be a message id"),
    };
    let token = token_from_cookie(req.headers(), &app.cookie_key);
    let rows = app
        .db
        .query(
            "SELECT id, author, text, created_at, app FROM messages WHERE id < ? ORDER BY id DESC LIMIT ?",
            Params::Positional(vec![Value::Integer(before), Value::Integer(limit as i64)]),
            Consistency::None,
            token,
        )
        .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return db_error(e),
    };
    let messages: Vec<serde_json::Value> = rows
        .rows
        .iter()
        .map(|r| {
            json!({
                "id": r.first().and_then(Value::as_i64),
                "author": r.get(1).and_then(Value::as_str),
                "text": r.get(2).and_then(Value::as_str),
                "created_at": r.get(3).and_then(Value::as_i64),
                "app": r.get(4).and_then(Value::as_str),
            })
        })
        .collect();
    let next_before = if messages.len() == limit { messages.last().and_then(|m| m["id"].as_i64()) } else { None };
    json_response(
        StatusCode::OK,
        json!({
            "messages": messages,
            "next_before": next_before,
            "served_by": app.config.name,
            "db_node": rows.node_id,
            "db_applied_index": rows.applied_index,
            "read_your_writes": token.map(|t| t.encode()),
        }),
    )
}

async fn post(app: &App, req: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(refused) = refuse_cross_site_post(req.headers()) {
        // Read what was sent (a message's worth at most, briefly) before
        // refusing: a server that answers and closes with the body unread
        // makes the kernel reset the connection, and the reset can overtake
        // the answer on its way back through the web tier.
        let limit = (app.config.max_author_chars + app.config.max_text_chars) * 4 + 1024;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), Limited::new(req.into_body(), limit).collect())
            .await;
        return refused;
    }
    let secure = if came_over_https(req.headers()) { "; Secure" } else { "" };
    let key = match idempotency_key(req.headers()) {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let limit = (app.config.max_author_chars + app.config.max_text_chars) * 4 + 1024;
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {limit} bytes")),
    };
    let input: MessageInput = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("expected JSON {{\"author\": …, \"text\": …}}: {e}")),
    };
    let (author, text) = match validate_message(&input, app.config.max_author_chars, app.config.max_text_chars) {
        Ok(x) => x,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    // The timestamp is taken here, not by SQL, so every replica stores the
    // same value.
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let stmt = Statement::with_params(
        "INSERT INTO messages (author, text, created_at, app) VALUES (?, ?, ?, ?)",
        vec![author.clone().into(), text.clone().into(), Value::Integer(now), app.config.name.clone().into()],
    );
    let written = match &key {
        Some(k) => app.db.execute_once(&format!("{REQUEST_ID_SCOPE}{k}"), &[stmt]).await,
        None => app.db.execute(&[stmt]).await,
    };
    let result = match written {
        Ok(r) => r,
        Err(e) => return db_error(e),
    };
    let mut message = json!({
        "id": result.last_insert_id, "author": author, "text": text, "created_at": now, "app": app.config.name,
    });
    if result.replayed {
        // An earlier post with this key stored the message: answer with
        // that message as it was stored (its time and app), as the first
        // answer did.
        match stored_message(app, result.last_insert_id, result.token).await {
            Ok(Some(stored)) if stored["author"] == author && stored["text"] == text => message = stored,
            Ok(Some(_)) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "this Idempotency-Key was already used for a different message",
                )
            }
            // The row is gone (deleted since): the first answer's id stands.
            Ok(None) => {}
            Err(e) => return db_error(e),
        }
        app.stats.replayed_posts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            id = result.last_insert_id,
            "post replayed: answered with the message its Idempotency-Key stored"
        );
    }
    let token = result.token.encode();
    let mut r = json_response(
        StatusCode::CREATED,
        json!({
            "message": message,
            "served_by": app.config.name,
            "token": token,
        }),
    );
    if result.replayed {
        r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    let cookie = app.cookie_key.sign(result.token);
    if let Ok(v) =
        HeaderValue::from_str(&format!("{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600{secure}"))
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Message `id` as stored, read with the write's `token` so the replica
/// serving it has applied the write.
async fn stored_message(app: &App, id: i64, token: Token) -> Result<Option<serde_json::Value>, ClientError> {
    let rows = app
        .db
        .query(
            "SELECT author, text, created_at, app FROM messages WHERE id = ?",
            Params::Positional(vec![Value::Integer(id)]),
            Consistency::None,
            Some(token),
        )
        .await?;
    Ok(rows.rows.first().map(|r| {
        json!({
            "id": id,
            "author": r.first().and_then(Value::as_str),
            "text": r.get(1).and_then(Value::as_str),
            "created_at": r.get(2).and_then(Value::as_i64),
            "app": r.get(3).and_then(Value::as_str),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_messages() {
        let m = |a: &str, t: &str| MessageInput { author: a.into(), text: t.into() };
        assert_eq!(validate_message(&m(" ann ", " hi\nthere "), 10, 100).unwrap(), ("ann".into(), "hi\nthere".into()));
        assert!(validate_message(&m("", "x"), 10, 100).unwrap_err().to_string().contains("author"));
        assert!(validate_message(&m("a", "  "), 10, 100).unwrap_err().to_string().contains("text"));
        assert!(validate_message(&m("a".repeat(11).as_str(), "x"), 10, 100)
            .unwrap_err()
            .to_string()
            .contains("longer"));
        assert!(validate_message(&m("é".repeat(10).as_str(), "x"), 10, 100).is_ok(), "characters, not bytes");
        assert!(validate_message(&m("a\u{7}", "x"), 10, 100).is_err());
    }

    #[test]
    fn checks_idempotency_keys() {
        let key = |values: &[&[u8]]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(v).unwrap());
            }
            idempotency_key(&h)
        };
        assert_eq!(key(&[]), Ok(None));
        assert_eq!(
            key(&[b"8e03978e-40d5-43e8-bc93-6894a57f9324"]).unwrap().as_deref(),
            Some("8e03978e-40d5-43e8-bc93-6894a57f9324")
        );
        assert_eq!(key(&[b"\"quoted\""]).unwrap().as_deref(), Some("quoted"), "structured-field string form");
        assert_eq!(key(&["k".repeat(200).as_bytes()]).unwrap().map(|k| k.len()), Some(200));
        assert!(key(&["k".repeat(201).as_bytes()]).unwrap_err().to_string().contains("longer than 200"));
        assert!(key(&[b""]).unwrap_err().to_string().contains("empty"));
        assert!(key(&[b"\"\""]).unwrap_err().to_string().contains("empty"));
        assert!(key(&[b"tab\there"]).unwrap_err().to_string().contains("control"));
        assert!(key(&[b"caf\xc3\xa9"]).unwrap_err().to_string().contains("ASCII"));
        assert!(key(&[b"a", b"b"]).unwrap_err().to_string().contains("one"));
    }

    #[test]
    fn reads_only_signed_token_cookies() {
        let key = crate::CookieKey::from_secret("cluster-secret-0123456");
        let t = Token { term: 3, index: 42 };
        let mut h = http::HeaderMap::new();
        h.insert(header::COOKIE, format!("a=b; bulwark_rw={}; c=d", key.sign(t)).parse().unwrap());
        assert_eq!(token_from_cookie(&h, &key), Some(t));
        for forged in ["bulwark_rw=3.42", "bulwark_rw=1.18446744073709551615", "bulwark_rw=garbage"] {
            h.insert(header::COOKIE, forged.parse().unwrap());
            assert_eq!(token_from_cookie(&h, &key), None, "{forged}");
        }
    }

    #[test]
    fn posts_must_be_json_and_not_cross_site() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let status =
            |pairs: &[(&'static str, &'static str)]| refuse_cross_site_post(&headers(pairs)).map(|r| r.status());
        assert_eq!(status(&[("content-type", "application/json")]), None);
        assert_eq!(status(&[("content-type", "Application/JSON; charset=utf-8")]), None);
        assert_eq!(status(&[("content-type", "application/json"), ("sec-fetch-site", "same-origin")]), None);
        for form in ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"] {
            assert_eq!(status(&[("content-type", form)]), Some(StatusCode::UNSUPPORTED_MEDIA_TYPE), "{form}");
        }
        assert_eq!(status(&[]), Some(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        assert_eq!(
            status(&[("content-type", "application/json"), ("sec-fetch-site", "cross-site")]),
            Some(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn https_is_what_the_proxies_in_front_say() {
        let mut h = http::HeaderMap::new();
        assert!(!came_over_https(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(came_over_https(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        assert!(!came_over_https(&h));
    }
}
