//! The answer of a plain-HTTP frontend that redirects to HTTPS
//! (`redirect_https_port`): a 308 to the same host and path, after the
//! request passed the same checks as on any frontend
//! ([`crate::request_checks`]) and its body, if any, was read.
//!
//! Must not touch: forwarding; nothing here reaches a server.

use bulwark_proxy::ProxyBody;
use hyper::body::Incoming;
use std::time::Duration;

/// The 308 of a plain-HTTP frontend to its HTTPS twin. The host comes from
/// the client's `Host` (or HTTP/2 `:authority`), so it is checked to be a
/// DNS name or an IP literal (anything else, or no host: 400) before it is
/// echoed into `Location`. The redirect may be cached by the browser that
/// asked (`private`), never by a shared cache, which would otherwise replay
/// one client's `Host` to others.
pub(crate) async fn to_https(
    req: hyper::Request<Incoming>,
    port: u16,
    body_time: Duration,
) -> hyper::Response<ProxyBody> {
    let raw = match req.headers().get(http::header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    };
    let Some(host) = raw.and_then(redirect_host) else {
        return bulwark_proxy::error_response(
            http::StatusCode::BAD_REQUEST,
            "the Host header is missing or not a valid host name",
        );
    };
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = if port == 443 { format!("https://{host}{path}") } else { format!("https://{host}:{port}{path}") };
    let Ok(value) = http::HeaderValue::from_str(&location) else {
        return bulwark_proxy::error_response(http::StatusCode::BAD_REQUEST, "the request target cannot be redirected");
    };
    // The body is read (and dropped) so that a malformed one gets its 400
    // and the connection stays in step; one too large or too slow to read
    // ends the connection after the 308.
    let close = match read_body(req.into_body(), body_time).await {
        Ok(all_read) => !all_read,
        Err(why) => {
            let mut resp = bulwark_proxy::error_response(http::StatusCode::BAD_REQUEST, why);
            resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            return resp;
        }
    };
    let mut resp = hyper::Response::new(ProxyBody::full(format!("moved to {location}\n")));
    *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    let h = resp.headers_mut();
    h.insert(http::header::LOCATION, value);
    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("private, max-age=3600"));
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    if close {
        h.insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    resp
}

/// Largest request body a redirecting frontend reads to stay in step with
/// the client; past it the connection is closed after the answer.
const REDIRECT_BODY_BYTES: usize = 64 * 1024;

/// Reads and drops a request body: `Ok(true)` when all of it was read,
/// `Ok(false)` when it is larger than [`REDIRECT_BODY_BYTES`] or slower than
/// `within`, `Err` when its framing is broken (a bad chunk, a short body).
async fn read_body(mut body: Incoming, within: Duration) -> Result<bool, &'static str> {
    use http_body::Body;
    use http_body_util::BodyExt;
    if body.is_end_stream() {
        return Ok(true);
    }
    let read = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| "the request body is malformed")?;
            if let Some(d) = frame.data_ref() {
                seen += d.len();
                if seen > REDIRECT_BODY_BYTES {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    };
    tokio::time::timeout(within, read).await.unwrap_or(Ok(false))
}

/// The host part of a `Host` value that is a valid authority (RFC 3986:
/// `host[:port]`, no user info): a DNS name of letters, digits, `-` and
/// `.`, an IPv4 address, or a bracketed IPv6 address. The port is dropped.
fn redirect_host(raw: &str) -> Option<&str> {
    let authority: http::uri::Authority = raw.parse().ok()?;
    if raw.contains('@') {
        return None;
    }
    let host = authority.host();
    // `host()` borrows from `authority`; find the same text in `raw`.
    let (host, rest) = raw.split_at(host.len());
    if !rest.is_empty() && rest.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).is_none() {
        return None;
    }
    let valid = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    valid.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::redirect_host;

    #[test]
    fn redirect_hosts_are_names_or_ip_literals() {
        assert_eq!(redirect_host("example.com:8080"), Some("example.com"));
        assert_eq!(redirect_host("Example.COM"), Some("Example.COM"));
        assert_eq!(redirect_host("127.0.0.1:80"), Some("127.0.0.1"));
        assert_eq!(redirect_host("[::1]:8080"), Some("[::1]"));
        for bad in [
            "",
            "evil.com/x",
            "user@evil.com",
            "evil.com:80@good.com",
            "a..b",
            "-a.com",
            "evil.com\\x",
            "[zz]",
            "exa mple.com",
            "evil.com%2f",
            "evil.com:notaport",
        ] {
            assert_eq!(redirect_host(bad), None, "{bad:?}");
        }
    }
}
