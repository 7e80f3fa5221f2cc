//! `GET /api/ws/echo`: a WebSocket (RFC 6455) that sends back every text
//! and binary message it receives, so the tunnels of the tiers in front
//! (lb and web) can be checked end to end with any WebSocket client. The
//! `101` names the server in `X-Served-By`.
//!
//! The handshake is checked here (hyper hands the connection over after
//! the 101); the frames are tungstenite's. Messages are at most
//! [`MAX_MESSAGE_BYTES`]; a connection with no frame for [`IDLE`] is
//! closed.
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Largest message accepted (a larger one closes the connection).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// A connection with no message for this long is closed.
const IDLE: Duration = Duration::from_secs(300);

fn refuse(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": why }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::UPGRADE_REQUIRED {
        r.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    r
}

fn has_token(req: &hyper::Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .any(|v| v.to_str().unwrap_or("").split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Answer the handshake and, when it is valid, echo on the connection in
/// a task of its own.
pub(crate) fn echo(server: &str, mut req: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    if !has_token(&req, header::UPGRADE, "websocket") || !has_token(&req, header::CONNECTION, "upgrade") {
        return refuse(StatusCode::UPGRADE_REQUIRED, "this endpoint speaks WebSocket only");
    }
    if req.headers().get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut r = refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Version must be 13");
        r.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return r;
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::info!("websocket: the connection was not handed over: {e}");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        loop {
            let next = match tokio::time::timeout(IDLE, ws.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => {
                    tracing::debug!("websocket: {e}");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    let _ = ws.close(None).await;
                    break;
                }
            };
            let reply = match next {
                Message::Text(_) | Message::Binary(_) => next,
                // Pings are answered by tungstenite; a close is echoed by it.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(_) => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Ok(v) = HeaderValue::from_str(server) {
        h.insert("x-served-by", v);
    }
    r
}
