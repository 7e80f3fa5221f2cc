//! What every request on an lb frontend must satisfy before it is
//! redirected or forwarded: the Host rules of RFC 9112 that hyper leaves
//! to the server. (hyper applies the body framing rules itself: a bad
//! chunk is a body error, and a request with both Content-Length and
//! Transfer-Encoding has its Content-Length dropped and its connection
//! closed after the answer, as RFC 9112 §6.1 asks of an intermediary.) A request that breaks one is answered 400 by the
//! lb itself, without touching a server, and its connection is closed, as
//! its body's framing cannot be trusted.
//!
//! Must not touch: routing, forwarding or the body itself (a malformed
//! chunked body surfaces as a body error while it is read, and the
//! forwarding path answers 400 for it).

use bulwark_proxy::ProxyBody;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};

/// Why `req` must be refused with 400, if it must.
pub(crate) fn framing_error<B>(req: &Request<B>) -> Option<&'static str> {
    let h = req.headers();
    if req.version() >= Version::HTTP_2 {
        // HTTP/2 has `:authority` instead of Host and no Transfer-Encoding.
        return None;
    }
    let hosts = h.get_all(header::HOST).iter().count();
    // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host and for any
    // request with more than one.
    if hosts == 0 && req.version() == Version::HTTP_11 {
        return Some("an HTTP/1.1 request needs a Host header");
    }
    if hosts > 1 {
        return Some("more than one Host header");
    }
    None
}

/// The 400 for a request refused by [`framing_error`]; HTTP/1 connections
/// are closed after it.
pub(crate) fn bad_request(version: Version, why: &str) -> Response<ProxyBody> {
    let mut resp = bulwark_proxy::error_response(StatusCode::BAD_REQUEST, why);
    if version < Version::HTTP_2 {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::framing_error;
    use http::{Request, Version};

    fn req(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("/").version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_is_required_once_on_http_1_1() {
        assert!(framing_error(&req(Version::HTTP_11, &[])).is_some());
        assert!(framing_error(&req(Version::HTTP_11, &[("host", "a"), ("host", "b")])).is_some());
        assert!(framing_error(&req(Version::HTTP_10, &[("host", "a"), ("host", "b")])).is_some());
        assert!(framing_error(&req(Version::HTTP_11, &[("host", "a")])).is_none());
        assert!(framing_error(&req(Version::HTTP_10, &[])).is_none(), "HTTP/1.0 may omit Host");
        assert!(framing_error(&req(Version::HTTP_2, &[])).is_none(), "HTTP/2 has :authority");
    }
}
