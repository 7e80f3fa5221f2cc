//! The first phases of forwarding a request, before any server is chosen:
//! rewrite the request head for the server ([`Forwarder::rewrite_head`]),
//! and take the body in hand ([`Forwarder::take_body`]): refuse one
//! declared over the limit, and read ahead the body of a request carrying
//! an `Idempotency-Key` so that it can be replayed on another server.
//!
//! What comes out is an [`Outgoing`] request: the request to send first,
//! and what is kept to send it again ([`Replay`]).
use crate::body::{self, BufferedBody, LimitedBody, ReadAhead, RequestBody};
use crate::error::{ErrorKind, ProxyError};
use crate::forward::{ClientContext, Forwarder, IDEMPOTENCY_KEY};
use crate::headers;
use crate::request_id::{self, RequestIdMode};
use http::{HeaderValue, Method, Request, Uri, Version};
use hyper::body::Incoming;

/// What the later phases need to know about the client's request once its
/// head was rewritten for the server.
#[derive(Debug)]
pub(crate) struct RequestFacts {
    pub method: Method,
    /// The target as the client sent it, kept only when the access log is on.
    pub uri_for_log: Option<Uri>,
    /// The HTTP version the client spoke (the request goes out as 1.1).
    pub client_version: Version,
    /// The `X-Request-Id` this forwarder set or kept (the edge tells the
    /// client the id to quote); None when the forwarder does not manage ids.
    pub request_id: Option<HeaderValue>,
    /// The request carries an `Idempotency-Key`.
    pub keyed: bool,
    /// The server a valid sticky cookie names (index into the upstream).
    pub sticky_server: Option<usize>,
}

/// What is kept of a request to replay it: the head, and the body when it
/// was read ahead (`None`: bodiless).
pub(crate) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
    body: Option<BufferedBody>,
}

impl Replay {
    fn new(parts: &http::request::Parts, body: Option<BufferedBody>) -> Replay {
        Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body,
        }
    }

    fn build(&self) -> Request<RequestBody> {
        let body = match &self.body {
            Some(b) => RequestBody::Buffered(b.clone()),
            None => RequestBody::Empty,
        };
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// The request on its way to a server: the one to send next (the original,
/// or one handed back unsent), and the copy to replay when it may be sent
/// again after it left.
pub(crate) struct Outgoing {
    pending: Option<Request<RequestBody>>,
    replay: Option<Replay>,
}

impl Outgoing {
    pub(crate) fn new(request: Request<RequestBody>, replay: Option<Replay>) -> Self {
        Outgoing { pending: Some(request), replay }
    }

    /// The request to send now: the pending one, else a fresh replay.
    pub(crate) fn take(&mut self) -> Result<Request<RequestBody>, ProxyError> {
        match self.pending.take() {
            Some(r) => Ok(r),
            None => self.replay.as_ref().map(Replay::build).ok_or_else(ProxyError::not_replayable),
        }
    }

    /// Keep a request that never left, to send it again.
    pub(crate) fn put_back(&mut self, request: Request<RequestBody>) {
        self.pending = Some(request);
    }

    /// Whether the request can still be sent (again).
    pub(crate) fn resendable(&self) -> bool {
        self.pending.is_some() || self.replay.is_some()
    }

    /// The request to send, for a path that sends it at most once
    /// (upgrades).
    pub(crate) fn into_request(self) -> Option<Request<RequestBody>> {
        self.pending
    }
}

/// Methods a server must treat as safe to receive twice (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// A declared `Content-Length` over `max` bytes.
pub(crate) fn declared_too_large(headers: &http::HeaderMap, max: u64) -> bool {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|l| l.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|l| l > max)
}

impl Forwarder {
    /// Phase 1: rewrite the request head for the server. Hop-by-hop
    /// headers go (an upgrade's two are put back), the incoming tier
    /// credential goes, the request id, forwarded headers and `Via` are
    /// set, the header rules applied, this hop's credential set, and the request goes out as HTTP/1.1 in
    /// origin-form with a `Host`.
    pub(crate) fn rewrite_head(
        &self,
        parts: &mut http::request::Parts,
        ctx: &ClientContext,
        upgrade: Option<&HeaderValue>,
    ) -> RequestFacts {
        let options = &self.options;
        let uri_for_log = options.access_log.then(|| parts.uri.clone());
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = upgrade {
            crate::upgrade::restore_headers(&mut parts.headers, protocol.clone());
        }
        headers::strip_tier_credential(&mut parts.headers);
        let sticky_server = self.upstream.sticky.as_ref().and_then(|cookie| {
            let up = &self.upstream;
            let idx = cookie
                .server_named(&parts.headers, up.name())
                .and_then(|name| up.servers.iter().position(|s| s.name == name));
            cookie.strip(&mut parts.headers);
            idx
        });
        let request_id = match options.request_id {
            RequestIdMode::Off => None,
            mode => request_id::apply(mode, &mut parts.headers),
        };
        if options.forwarded_headers {
            headers::add_forwarded(&mut parts.headers, &ctx.forwarded, options.keep_forwarded_proto);
        }
        if options.via {
            headers::add_via(&mut parts.headers, parts.version);
        }
        if let Some(rules) = &options.header_rules {
            rules.apply_request(&mut parts.headers, ctx);
        }
        for (k, v) in &options.set_headers {
            parts.headers.insert(k.clone(), v.clone());
        }
        // Requests go out as HTTP/1.1 whatever the client spoke. HTTP/2
        // clients send `:authority` (absolute-form here) instead of `Host`;
        // HTTP/1.1 requires `Host`, so it is set from the authority before
        // the target is cut down to origin-form.
        let client_version = parts.version;
        parts.version = Version::HTTP_11;
        if !parts.headers.contains_key(http::header::HOST) {
            if let Some(auth) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                parts.headers.insert(http::header::HOST, auth);
            }
        }
        if parts.uri.scheme().is_some() {
            let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            parts.uri = pq.parse().unwrap_or_else(|_| Uri::from_static("/"));
        }
        RequestFacts {
            method: parts.method.clone(),
            uri_for_log,
            client_version,
            request_id,
            keyed: parts.headers.contains_key(IDEMPOTENCY_KEY),
            sticky_server,
        }
    }

    /// Phase 2: take the body in hand. A declared length over the limit is
    /// the client's 413; the body is held to the size and time limits; a
    /// keyed request's body is read ahead (up to the backend's
    /// `retries.max_replay_body_bytes`) so that it can be replayed; an
    /// idempotent or keyed request without a body is always replayable.
    pub(crate) async fn take_body(
        &self,
        parts: http::request::Parts,
        body: Incoming,
        facts: &RequestFacts,
    ) -> Result<Outgoing, ProxyError> {
        let max_body = self.options.max_body_bytes;
        if declared_too_large(&parts.headers, max_body) {
            let detail = format!("the request body is larger than {max_body} bytes");
            return Err(ProxyError::client_body(ErrorKind::BodyTooLarge, detail));
        }
        if http_body::Body::is_end_stream(&body) {
            let replay = (facts.keyed || is_idempotent(&facts.method)).then(|| Replay::new(&parts, None));
            return Ok(Outgoing::new(Request::from_parts(parts, RequestBody::Empty), replay));
        }
        let limited = LimitedBody::new(body, max_body, self.options.body_timeout);
        let max_replay = self.upstream.config.retries.max_replay_body_bytes;
        let declared = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|l| l.to_str().ok()?.parse().ok());
        if !(facts.keyed && max_replay > 0 && declared.is_none_or(|l: u64| l <= max_replay)) {
            return Ok(Outgoing::new(Request::from_parts(parts, RequestBody::Incoming(limited)), None));
        }
        match body::read_ahead(limited, max_replay).await {
            ReadAhead::Whole(b) => {
                let replay = Replay::new(&parts, Some(b.clone()));
                Ok(Outgoing::new(Request::from_parts(parts, RequestBody::Buffered(b)), Some(replay)))
            }
            ReadAhead::TooLong(rest) => Ok(Outgoing::new(Request::from_parts(parts, rest), None)),
            ReadAhead::Failed(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::ForwardOptions;
    use crate::upstream::Upstream;
    use std::sync::Arc;

    fn forwarder(options: ForwardOptions) -> Forwarder {
        let backend = toml::from_str("name = \"b\"\n[[server]]\nname = \"s\"\naddress = \"127.0.0.1:9\"\n").unwrap();
        Forwarder::new(Arc::new(Upstream::new(backend, None).unwrap()), options)
    }

    fn parts(req: Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    #[test]
    fn the_head_goes_out_as_http_1_1_origin_form_with_a_host() {
        let f = forwarder(ForwardOptions::default());
        let ctx = ClientContext::new("192.0.2.7:5000".parse().unwrap(), "https");
        let mut p = parts(
            Request::get("https://example.test/a?b=1")
                .version(Version::HTTP_2)
                .header("connection", "x-secret")
                .header("x-secret", "1")
                .header("x-bulwark-cluster", "guess")
                .header("idempotency-key", "k1")
                .body(())
                .unwrap(),
        );
        let facts = f.rewrite_head(&mut p, &ctx, None);
        assert_eq!((p.version, p.uri.to_string()), (Version::HTTP_11, "/a?b=1".to_string()));
        assert_eq!(p.headers["host"], "example.test");
        assert!(!p.headers.contains_key("x-secret"), "named in Connection: hop-by-hop");
        assert!(!p.headers.contains_key("x-bulwark-cluster"), "the incoming tier credential never passes");
        assert_eq!(p.headers["x-forwarded-for"], "192.0.2.7");
        assert_eq!(p.headers["x-forwarded-proto"], "https");
        assert!(p.headers.contains_key("via"));
        assert_eq!((facts.client_version, facts.keyed, facts.request_id), (Version::HTTP_2, true, None));
        assert_eq!(facts.uri_for_log.unwrap(), "https://example.test/a?b=1");
    }

    #[test]
    fn an_upgrade_keeps_its_two_headers_and_the_edge_sets_an_id() {
        let f = forwarder(ForwardOptions {
            request_id: RequestIdMode::Generate,
            access_log: false,
            ..ForwardOptions::default()
        });
        let ctx = ClientContext::new("192.0.2.7:5000".parse().unwrap(), "http");
        let mut p =
            parts(Request::get("/ws").header("connection", "upgrade").header("upgrade", "websocket").body(()).unwrap());
        let facts = f.rewrite_head(&mut p, &ctx, Some(&HeaderValue::from_static("websocket")));
        assert_eq!(
            (p.headers["connection"].as_bytes(), p.headers["upgrade"].as_bytes()),
            (&b"upgrade"[..], &b"websocket"[..])
        );
        let id = facts.request_id.expect("the edge sets an id");
        assert_eq!(p.headers[crate::X_REQUEST_ID], id);
        assert!(facts.uri_for_log.is_none(), "no copy of the target with the access log off");
    }

    #[test]
    fn declared_lengths_over_the_limit_are_refused_before_reading() {
        let mut h = http::HeaderMap::new();
        assert!(!declared_too_large(&h, 10));
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert!(declared_too_large(&h, 10));
        assert!(!declared_too_large(&h, 11));
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("junk"));
        assert!(!declared_too_large(&h, 10), "hyper refuses a bad length before this");
    }

    #[test]
    fn an_outgoing_request_is_resent_only_from_its_replay() {
        let head = parts(Request::get("/").body(()).unwrap());
        let mut once = Outgoing::new(Request::new(RequestBody::Empty), None);
        assert!(once.resendable());
        let sent = once.take().unwrap();
        assert!(!once.resendable());
        assert_eq!(once.take().err().map(|e| e.kind), Some(ErrorKind::NotReplayable));
        once.put_back(sent);
        assert!(once.take().is_ok(), "a request handed back unsent goes again");

        let mut replayable = Outgoing::new(Request::new(RequestBody::Empty), Some(Replay::new(&head, None)));
        replayable.take().unwrap();
        assert!(replayable.resendable());
        assert_eq!(replayable.take().unwrap().uri(), "/");
        assert!(is_idempotent(&Method::PUT) && !is_idempotent(&Method::POST));
    }
}
