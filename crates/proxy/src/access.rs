//! Access records of forwarded requests, written through
//! [`bulwark_telemetry::AccessLog`] when a frontend has a written format
//! (`combined`, `json`, a template): what the client asked
//! ([`RequestLine`], taken before the head is rewritten), what the phases
//! saw ([`Trace`]: the server, retries, time to pick a server, to connect,
//! to the answer's head), and what was sent back ([`LoggedBody`]: the
//! status and the body bytes, counted until the body ends or the client
//! goes away, when the line is written).
//!
//! None of this exists for a frontend without a written format: the
//! forwarder then keeps no copy of the request and reads no extra clock.
use crate::body::ProxyBody;
use bulwark_telemetry::clock::monotonic_us;
use bulwark_telemetry::{AccessLog, AccessRecord};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

/// What the forwarding phases record for the access line. Clock readings
/// are taken only when `timed`.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub timed: bool,
    /// Index of the server that answered (or was tried last).
    pub server: Option<usize>,
    pub attempts: u32,
    /// When the first server was picked (µs on [`monotonic_us`]'s clock).
    pub picked_us: Option<u64>,
    /// Time spent opening connections.
    pub connect_us: u64,
    /// Time from the last send to the answer's head.
    pub upstream_header_us: Option<u64>,
    /// The id the edge set (inner tiers log the incoming header).
    pub request_id: Option<HeaderValue>,
}

impl Trace {
    pub(crate) fn new(timed: bool) -> Self {
        Trace { timed, ..Trace::default() }
    }

    /// A clock reading when timed.
    pub(crate) fn now(&self) -> Option<u64> {
        self.timed.then(monotonic_us)
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The client's request as it arrived.
pub(crate) struct RequestLine {
    log: Arc<AccessLog>,
    time: SystemTime,
    client: IpAddr,
    method: http::Method,
    uri: String,
    protocol: &'static str,
    headers: HeaderMap,
}

impl RequestLine {
    pub(crate) fn new<B>(log: &Arc<AccessLog>, req: &Request<B>, client: IpAddr) -> Self {
        let uri = match req.uri().path_and_query() {
            Some(pq) => pq.as_str().to_owned(),
            None => req.uri().to_string(),
        };
        let mut headers = HeaderMap::new();
        for name in [http::header::REFERER, http::header::USER_AGENT, http::header::HOST, crate::X_REQUEST_ID] {
            if let Some(v) = req.headers().get(&name) {
                headers.insert(name, v.clone());
            }
        }
        if !headers.contains_key(http::header::HOST) {
            if let Some(a) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                headers.insert(http::header::HOST, a);
            }
        }
        RequestLine {
            log: log.clone(),
            time: SystemTime::now(),
            client,
            method: req.method().clone(),
            uri,
            protocol: protocol(req.version()),
            headers,
        }
    }

    /// Wrap the response so that its line is written when its body ends.
    pub(crate) fn finish(
        self,
        resp: Response<ProxyBody>,
        trace: Trace,
        route: &str,
        upstream: Option<&str>,
        start_us: u64,
    ) -> Response<ProxyBody> {
        let (parts, body) = resp.into_parts();
        let pending = Finished {
            line: self,
            status: parts.status.as_u16(),
            route: route.to_owned(),
            upstream: upstream.map(str::to_owned),
            retries: trace.attempts.saturating_sub(1),
            queue_us: trace.picked_us.map(|p| p.saturating_sub(start_us)),
            connect_us: trace.picked_us.map(|_| trace.connect_us),
            upstream_header_us: trace.upstream_header_us,
            request_id: trace.request_id,
            start_us,
        };
        let logged = LoggedBody { inner: body, bytes: 0, pending: Some(Box::new(pending)) };
        Response::from_parts(parts, ProxyBody::Logged(Box::new(logged)))
    }
}

struct Finished {
    line: RequestLine,
    status: u16,
    route: String,
    upstream: Option<String>,
    retries: u32,
    queue_us: Option<u64>,
    connect_us: Option<u64>,
    upstream_header_us: Option<u64>,
    request_id: Option<HeaderValue>,
    start_us: u64,
}

impl Finished {
    fn write(&self, bytes: u64) {
        let l = &self.line;
        let header = |name: http::header::HeaderName| l.headers.get(name).and_then(|v| v.to_str().ok());
        let request_id = self.request_id.as_ref().and_then(|v| v.to_str().ok()).or(header(crate::X_REQUEST_ID));
        l.log.write(&AccessRecord {
            remote_addr: l.client,
            time: l.time,
            method: l.method.as_str(),
            uri: &l.uri,
            protocol: l.protocol,
            status: self.status,
            body_bytes: Some(bytes),
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            host: header(http::header::HOST),
            request_id,
            route: &self.route,
            upstream: self.upstream.as_deref(),
            retries: self.retries,
            queue_us: self.queue_us,
            connect_us: self.connect_us,
            upstream_header_us: self.upstream_header_us,
            request_time_us: monotonic_us().saturating_sub(self.start_us),
        });
    }
}

/// A response body that writes its access line once it ends, fails, or is
/// dropped (the client went away), counting the bytes handed over.
pub struct LoggedBody {
    inner: ProxyBody,
    bytes: u64,
    pending: Option<Box<Finished>>,
}

impl LoggedBody {
    fn done(&mut self) {
        if let Some(f) = self.pending.take() {
            f.write(self.bytes);
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.done();
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.done();
                }
            }
            Poll::Ready(_) => this.done(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
