//! The database's plain HTTP API as docs/db.md describes it, nothing else:
//! `POST /v1/execute`, `POST /v1/query`, `GET /v1/status`, one request per
//! fresh connection with a bounded timeout, answers read as JSON. The
//! checker never uses `bulwark_db_api::Client`, so what it finds is what any
//! client of the API would see.
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

/// How one request ended, as a client of the API can tell.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with its JSON body.
    Ok(Value),
    /// 307 to the primary (the `Location` header's host:port).
    Redirect(SocketAddr),
    /// Any other status: the error body's `code`, `retryable` and `leader`.
    Refused { status: u16, code: String, retryable: bool, leader: Option<SocketAddr>, message: String },
    /// No answer: connect, write or read failed or timed out. For a write
    /// the outcome is unknown.
    NoAnswer(String),
}

impl Reply {
    /// One line for the history.
    pub fn describe(&self) -> String {
        match self {
            Reply::Ok(_) => "200".into(),
            Reply::Redirect(a) => format!("307 -> {a}"),
            Reply::Refused { status, code, message, .. } => {
                let m: String = message.chars().take(120).collect();
                format!("{status} {code}: {m}")
            }
            Reply::NoAnswer(e) => format!("no answer: {e}"),
        }
    }
}

/// The API of one cluster: its secret and the per-request timeout.
#[derive(Debug, Clone)]
pub struct Api {
    auth: String,
    timeout: Duration,
}

impl Api {
    pub fn new(secret: &str, timeout: Duration) -> Api {
        Api { auth: format!("Bearer {secret}"), timeout }
    }

    fn post(&self, addr: SocketAddr, path: &str, body: &Value) -> Reply {
        let body = body.to_string();
        let headers = [("Authorization", self.auth.as_str()), ("Content-Type", "application/json")];
        classify(crate::http(addr, "POST", path, &headers, body.as_bytes(), self.timeout))
    }

    /// `POST /v1/execute` of `statements` (`[{"sql", "params"}]`) with a
    /// request id.
    pub fn execute(&self, addr: SocketAddr, statements: Value, request_id: &str) -> Reply {
        self.post(addr, "/v1/execute", &json!({ "statements": statements, "request_id": request_id }))
    }

    /// `POST /v1/query` with `consistency` (`none|bounded|strong`).
    pub fn query(&self, addr: SocketAddr, sql: &str, params: Value, consistency: &str) -> Reply {
        self.post(addr, "/v1/query", &json!({ "sql": sql, "params": params, "consistency": consistency }))
    }

    /// `GET /v1/status` (None when the node does not answer 200 in time).
    pub fn status(&self, addr: SocketAddr, timeout: Duration) -> Option<Value> {
        let r = crate::http(addr, "GET", "/v1/status", &[("Authorization", &self.auth)], b"", timeout).ok()?;
        (r.status == 200).then(|| serde_json::from_slice(&r.body).ok()).flatten()
    }
}

fn classify(r: std::io::Result<crate::HttpResponse>) -> Reply {
    let r = match r {
        Ok(r) => r,
        Err(e) => return Reply::NoAnswer(e.to_string()),
    };
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    match r.status {
        200 => Reply::Ok(body),
        307 => match r.header("location").and_then(location_addr) {
            Some(a) => Reply::Redirect(a),
            None => Reply::Refused {
                status: 307,
                code: "redirect".into(),
                retryable: true,
                leader: None,
                message: format!("307 without a usable Location: {:?}", r.header("location")),
            },
        },
        status => Reply::Refused {
            status,
            code: body["code"].as_str().unwrap_or("").to_string(),
            retryable: body["retryable"].as_bool().unwrap_or(false),
            leader: body["leader"].as_str().and_then(|a| a.parse().ok()),
            message: body["error"].as_str().map(str::to_string).unwrap_or_else(|| r.text()),
        },
    }
}

/// `http://host:port/path` -> host:port.
fn location_addr(loc: &str) -> Option<SocketAddr> {
    let rest = loc.strip_prefix("http://")?;
    rest.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_is_read_as_an_address() {
        assert_eq!(location_addr("http://127.0.0.1:7001/v1/query"), Some("127.0.0.1:7001".parse().unwrap()));
        assert_eq!(location_addr("https://127.0.0.1:7001/v1/query"), None);
        assert_eq!(location_addr("http://db1:7001/v1/query"), None);
    }
}
