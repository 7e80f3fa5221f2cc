//! Answering one request: limits, proxy routes, then static files with
//! conditional requests, ranges and precompressed variants.
use crate::body::WebBody;
use crate::conditional::{self, Precondition, Validators};
use crate::encoding::{self, Coding};
use crate::files::{FileCache, FileEntry, FileSource, Representation, Resolved};
use crate::path::{sanitize, CleanPath};
use crate::proxy_route::ProxyRoute;
use crate::range::{self, ByteRange};
use bulwark_telemetry::metrics::{self, Exposition};
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, IF_RANGE, LAST_MODIFIED, LOCATION, RANGE, REFERRER_POLICY, SERVER, VARY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, CONTROLS};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings and routes shared by every worker thread.
pub struct Shared {
    pub source: FileSource,
    pub dotfiles: bool,
    pub access_log: bool,
    /// Access lines in a written format (`access_log_format`).
    pub access_writer: Option<Arc<bulwark_telemetry::AccessLog>>,
    /// `[response_cache]` of proxied responses, when on.
    pub response_cache: Option<Arc<crate::response_cache::ResponseCache>>,
    /// `[compression]` of proxied responses, when on.
    pub compression: Option<bulwark_proxy::Compressor>,
    /// `[security_headers]`, when on.
    pub security_headers: Option<crate::security_headers::SecurityPreset>,
    pub max_body_bytes: u64,
    pub body_timeout: Duration,
    pub revalidate: Duration,
    pub cache_bytes: u64,
    /// `(prefix, route)`, in config order; the first matching prefix wins.
    pub proxies: Vec<(String, Arc<dyn ProxyRoute>)>,
    /// Path prefixes served as static files before any proxy route.
    pub static_prefixes: Vec<String>,
    /// Required `X-Bulwark-Cluster` value (the lb→web credential) on every
    /// request but `/health` and `/metrics`.
    pub secret: Option<String>,
    /// The read-only monitoring token `/metrics` requires as
    /// `Authorization: Bearer`.
    pub monitor_token: Option<String>,
    pub firewall: bulwark_firewall::Firewall,
    pub stats: WebStats,
}

/// Counters for `/metrics`: responses by kind (static or proxied) and
/// status class, and bytes of static bodies sent.
#[derive(Default)]
pub struct WebStats {
    /// [static, proxied][class 1..=5]
    responses: [[std::sync::atomic::AtomicU64; 6]; 2],
    static_bytes: std::sync::atomic::AtomicU64,
}

impl WebStats {
    fn record(&self, proxied: bool, resp: &Response<WebBody>) {
        use std::sync::atomic::Ordering::Relaxed;
        let class = usize::from(resp.status().as_u16() / 100).min(5);
        self.responses[usize::from(proxied)][class].fetch_add(1, Relaxed);
        if !proxied {
            let len =
                resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(0);
            self.static_bytes.fetch_add(len, Relaxed);
        }
    }

    fn encode_metrics(&self, out: &mut Exposition<'_>) -> std::fmt::Result {
        use std::sync::atomic::Ordering::Relaxed;
        let by_kind = ["static", "proxy"].into_iter().enumerate().flat_map(|(k, kind)| {
            (1..=5).map(move |class| {
                ([("kind", kind), ("code", metrics::STATUS_CLASSES[class])], self.responses[k][class].load(Relaxed))
            })
        });
        out.counters("bulwark_web_responses", "Responses, by kind and status class.", by_kind)?;
        out.counter("bulwark_web_static_bytes", "Bytes of static file bodies sent.", self.static_bytes.load(Relaxed))
    }
}

/// One worker thread's view: the shared settings plus its own file cache.
pub struct Site {
    shared: Arc<Shared>,
    cache: RefCell<FileCache>,
}

const SERVER_NAME: HeaderValue = HeaderValue::from_static("bulwark");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");
const VARY_ENCODING: HeaderValue = HeaderValue::from_static("Accept-Encoding");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Characters escaped when a path is echoed into a `Location` header.
const LOCATION_ESCAPES: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'<').add(b'>').add(b'?').add(b'`').add(b'{').add(b'}');

impl Shared {
    /// `/metrics`: response counters, tunnels and server availability
    /// per proxy route (what `bulwark deploy` waits on to know an app
    /// server is out of rotation), the response cache's counters.
    fn encode_metrics(&self, out: &mut Exposition<'_>) -> std::fmt::Result {
        self.stats.encode_metrics(out)?;
        let routes = || self.proxies.iter().map(|(prefix, route)| ([("route", prefix.as_str())], route.tunnels()));
        out.counters(
            "bulwark_web_tunnels",
            "Tunnels (e.g. WebSockets) opened, by proxy route.",
            routes().map(|(l, t)| (l, t.0)),
        )?;
        out.gauges("bulwark_web_tunnels_open", "Tunnels open now, by proxy route.", routes().map(|(l, t)| (l, t.1)))?;
        let servers = self.proxies.iter().flat_map(|(prefix, route)| {
            route
                .servers()
                .into_iter()
                .map(move |(server, up)| ([("route", prefix.clone()), ("server", server)], i64::from(up)))
        });
        out.gauges(
            "bulwark_web_upstream_available",
            "Whether requests of the route may go to the server now (health checks pass, not ejected).",
            servers,
        )?;
        match &self.response_cache {
            Some(cache) => cache.encode_metrics(out),
            None => Ok(()),
        }
    }

    /// The proxy route of a request path: the first matching `[[proxy]]`
    /// prefix, unless a static prefix claims the path. (A static path
    /// cannot leave its prefix once cleaned: the prefix is plain segments,
    /// and `sanitize` refuses `..`.)
    fn proxy_for(&self, path: &str) -> Option<&Arc<dyn ProxyRoute>> {
        if self.static_prefixes.iter().any(|p| path.starts_with(p.as_str())) {
            return None;
        }
        self.proxies.iter().find(|(prefix, _)| path.starts_with(prefix.as_str())).map(|(_, route)| route)
    }
}

impl Site {
    pub fn new(shared: Arc<Shared>) -> Site {
        let cache = RefCell::new(FileCache::new(shared.cache_bytes));
        Site { shared, cache }
    }

    /// The listener's firewall (connection limits are counted at accept).
    pub fn firewall(&self) -> &bulwark_firewall::Firewall {
        &self.shared.firewall
    }

    /// Answer one request; counts it and writes the access-log line when
    /// enabled.
    pub async fn respond(&self, req: Request<Incoming>, client: SocketAddr) -> Response<WebBody> {
        let proxied = self.shared.proxy_for(req.uri().path()).is_some();
        let mut resp = self.respond_logged(req, client).await;
        if let Some(preset) = &self.shared.security_headers {
            preset.apply(resp.headers_mut());
        }
        self.shared.stats.record(proxied, &resp);
        resp
    }

    async fn respond_logged(&self, req: Request<Incoming>, client: SocketAddr) -> Response<WebBody> {
        if !self.shared.access_log {
            return self.route(req, client).await;
        }
        if let Some(log) = &self.shared.access_writer {
            let arrival = crate::access::Arrival::new(&req, client);
            let resp = self.route(req, client).await;
            arrival.write(log, &resp);
            return resp;
        }
        let start = Instant::now();
        let method = req.method().clone();
        let target = req.uri().path_and_query().map_or_else(|| req.uri().to_string(), |p| p.as_str().to_owned());
        let version = req.version();
        let request_id =
            req.headers().get(bulwark_proxy::X_REQUEST_ID).filter(|v| bulwark_proxy::request_id::is_valid(v)).cloned();
        let resp = self.route(req, client).await;
        let bytes = resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).unwrap_or("-");
        let id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info!(
            target: "access",
            "{client} \"{method} {target} {version:?}\" {} {bytes} {}us id={id}",
            resp.status().as_u16(),
            start.elapsed().as_micros()
        );
        resp
    }

    async fn route(&self, req: Request<Incoming>, client: SocketAddr) -> Response<WebBody> {
        let s = &*self.shared;
        if req.uri().path() == "/health" {
            return health(&s.proxies);
        }
        if req.uri().path() == "/metrics" && req.method() == Method::GET {
            // Metrics need the monitoring token as a bearer token, a
            // credential the lb never adds: the lb puts `X-Bulwark-Cluster`
            // on every request it forwards, so that header alone would open
            // `/metrics` to anyone on the internet.
            if let Some(token) = &s.monitor_token {
                if !bulwark_firewall::bearer_matches(req.headers(), token) {
                    let mut r = Response::new(WebBody::bytes(
                        "401 Unauthorized: /metrics needs the monitoring token as `Authorization: Bearer`\n",
                    ));
                    *r.status_mut() = StatusCode::UNAUTHORIZED;
                    r.headers_mut().insert(CONTENT_TYPE, TEXT_PLAIN);
                    return r;
                }
            }
            let shared = Arc::clone(&self.shared);
            let text = metrics::render(vec![metrics::from_fn(move |out| shared.encode_metrics(out))]);
            let mut r = Response::new(WebBody::bytes(text));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
            return r;
        }
        if let Some(secret) = &s.secret {
            if !bulwark_firewall::header_matches(req.headers(), "x-bulwark-cluster", secret) {
                let mut r = Response::new(WebBody::bytes(
                    "401 Unauthorized: this tier accepts requests only through the load balancer\n",
                ));
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                r.headers_mut().insert(CONTENT_TYPE, TEXT_PLAIN);
                return r;
            }
        }
        if !s.firewall.is_open() {
            let ip = s.firewall.client_ip(client.ip(), req.headers());
            let verdict =
                if s.firewall.allows(ip) { s.firewall.check_rate(ip) } else { Err(bulwark_firewall::Refusal::Denied) };
            if let Err(refusal) = verdict {
                let mut r = Response::new(WebBody::bytes(format!("{} {}\n", refusal.status(), refusal.reason())));
                *r.status_mut() = refusal.status();
                r.headers_mut().insert(CONTENT_TYPE, TEXT_PLAIN);
                if let Some(secs) = refusal.retry_after() {
                    r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
                }
                return r;
            }
        }
        if let Some(len) = declared_length(req.headers()) {
            if len > s.max_body_bytes {
                return closing(status_page(StatusCode::PAYLOAD_TOO_LARGE));
            }
        }
        let path = req.uri().path();
        if let Some(route) = s.proxy_for(path) {
            let compress = s
                .compression
                .as_ref()
                .map(|c| (c, req.method().clone(), bulwark_proxy::compress::accept_encoding(req.headers())));
            let resp = match &s.response_cache {
                None => route.forward(req, client).await,
                Some(cache) => {
                    // Owned: a background refresh outlives this request.
                    let route = route.clone();
                    cache
                        .serve(req, route.server_timeout(), move |req| {
                            let route = route.clone();
                            async move { route.forward(req, client).await }
                        })
                        .await
                }
            };
            return match compress {
                None => resp,
                Some((c, method, accept)) => c.apply(&method, accept.as_ref(), resp, WebBody::other),
            };
        }
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let mut r = status_page(StatusCode::METHOD_NOT_ALLOWED);
                r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                return r;
            }
        };
        let (parts, body) = req.into_parts();
        if !body.is_end_stream() {
            if let Some(refusal) = self.discard_body(body).await {
                return refusal;
            }
        }
        let clean = match sanitize(parts.uri.path(), s.dotfiles) {
            Ok(c) => c,
            Err(refusal) => return status_page(refusal.status()),
        };
        // A large file that changed since it was cached is found stale when
        // opened; look it up again once.
        for _ in 0..2 {
            let entry = match self.lookup(&clean) {
                Ok(e) => e,
                Err(Resolved::Directory) => return redirect_to_directory(&clean, parts.uri.query()),
                Err(Resolved::Forbidden) => return status_page(StatusCode::FORBIDDEN),
                Err(_) => return status_page(StatusCode::NOT_FOUND),
            };
            match serve(&entry, &parts.headers, head) {
                Some(resp) => return resp,
                None => self.cache.borrow_mut().remove(&clean.key()),
            }
        }
        status_page(StatusCode::SERVICE_UNAVAILABLE)
    }

    /// Read and drop a request body that a static file does not need,
    /// within the size and time limits. Returns the refusal, if any.
    async fn discard_body(&self, body: Incoming) -> Option<Response<WebBody>> {
        use http_body_util::BodyExt;
        let s = &*self.shared;
        let limited = http_body_util::Limited::new(body, usize::try_from(s.max_body_bytes).unwrap_or(usize::MAX));
        match tokio::time::timeout(s.body_timeout, limited.collect()).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Some(closing(status_page(StatusCode::PAYLOAD_TOO_LARGE)))
            }
            Ok(Err(_)) => Some(closing(status_page(StatusCode::BAD_REQUEST))),
            Err(_) => Some(closing(status_page(StatusCode::REQUEST_TIMEOUT))),
        }
    }

    fn lookup(&self, clean: &CleanPath<'_>) -> Result<Rc<FileEntry>, Resolved> {
        let key = clean.key();
        if let Some(e) = self.cache.borrow_mut().get(&key, self.shared.revalidate) {
            return Ok(e);
        }
        match self.shared.source.resolve(clean) {
            Resolved::File(e) => {
                let e = Rc::new(*e);
                self.cache.borrow_mut().insert(&key, e.clone());
                Ok(e)
            }
            other => Err(other),
        }
    }
}

/// `/health`: 200 whenever this server can serve its static files. A
/// `[[proxy]]` route without an available server makes it `degraded`
/// (still 200, the body names the route): the lb keeps sending traffic
/// here, and static files keep being served while every app is down,
/// instead of the whole site going dark with its app tier.
fn health(proxies: &[(String, Arc<dyn ProxyRoute>)]) -> Response<WebBody> {
    let degraded: Vec<&str> =
        proxies.iter().filter(|(_, route)| !route.has_available_server()).map(|(p, _)| p.as_str()).collect();
    let text = if degraded.is_empty() {
        "ok\n".to_string()
    } else {
        format!("degraded: no server available for {}\n", degraded.join(", "))
    };
    let mut r = Response::new(WebBody::bytes(text));
    r.headers_mut().insert(CONTENT_TYPE, TEXT_PLAIN);
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `Content-Length` of the request, if declared and valid.
fn declared_length(h: &HeaderMap) -> Option<u64> {
    h.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Build the response for a file entry. `None` when a streamed file no
/// longer matches the entry (the caller drops it and looks again).
fn serve(e: &FileEntry, headers: &HeaderMap, head: bool) -> Option<Response<WebBody>> {
    let coding = if e.has_variants() {
        encoding::negotiate(
            headers.get(ACCEPT_ENCODING).map(HeaderValue::as_bytes),
            e.brotli.is_some(),
            e.gzip.is_some(),
        )
    } else {
        Coding::Identity
    };
    let rep = e.representation(coding);
    let v = Validators { etag: rep.etag.as_bytes(), modified: rep.modified };
    match conditional::evaluate(headers, v) {
        Precondition::Serve => {}
        Precondition::NotModified => {
            let mut resp = Response::new(WebBody::Empty);
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            validator_headers(resp.headers_mut(), e, rep);
            return Some(resp);
        }
        Precondition::Failed => return Some(status_page(StatusCode::PRECONDITION_FAILED)),
    }
    let mut range = ByteRange::Whole;
    if let Some(r) = headers.get(RANGE) {
        if headers.get(IF_RANGE).is_none_or(|ir| conditional::if_range_allows(ir.as_bytes(), v)) {
            range = range::parse(r.as_bytes(), rep.len);
        }
    }
    let (status, start, len) = match range {
        ByteRange::Whole => (StatusCode::OK, 0, rep.len),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => {
            let mut resp = status_page(StatusCode::RANGE_NOT_SATISFIABLE);
            let h = resp.headers_mut();
            h.insert(CONTENT_RANGE, header_value(format!("bytes */{}", rep.len)));
            h.insert(ACCEPT_RANGES, BYTES);
            return Some(resp);
        }
    };
    let body = if head {
        WebBody::Empty
    } else if let Some(bytes) = &rep.bytes {
        WebBody::Bytes(Some(bytes.slice(start as usize..(start + len) as usize)))
    } else {
        WebBody::file(open_region(rep, start)?, len)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.reserve(10);
    h.insert(CONTENT_TYPE, e.content_type.clone());
    h.insert(
        CONTENT_LENGTH,
        if status == StatusCode::OK { rep.content_length.clone() } else { HeaderValue::from(len) },
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(CONTENT_RANGE, header_value(format!("bytes {start}-{}/{}", start + len - 1, rep.len)));
    }
    h.insert(ACCEPT_RANGES, BYTES);
    if let Some(token) = rep.coding.token() {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static(token));
    }
    validator_headers(h, e, rep);
    Some(resp)
}

const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const SAMEORIGIN: HeaderValue = HeaderValue::from_static("SAMEORIGIN");
const STRICT_ORIGIN: HeaderValue = HeaderValue::from_static("strict-origin-when-cross-origin");

/// Headers shared by 200, 206 and 304 answers. Every file is sent with
/// `X-Content-Type-Options: nosniff` (the type is the one its extension
/// names, never a browser's guess); HTML pages also with `X-Frame-Options:
/// SAMEORIGIN` and `Referrer-Policy: strict-origin-when-cross-origin`, so
/// another site cannot frame them (clickjacking) or read their paths.
fn validator_headers(h: &mut HeaderMap, e: &FileEntry, rep: &Representation) {
    h.insert(SERVER, SERVER_NAME);
    h.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    if e.content_type.as_bytes().starts_with(b"text/html") {
        h.insert(X_FRAME_OPTIONS, SAMEORIGIN);
        h.insert(REFERRER_POLICY, STRICT_ORIGIN);
    }
    h.insert(ETAG, rep.etag.clone());
    h.insert(LAST_MODIFIED, rep.last_modified.clone());
    if let Some(cc) = &e.cache_control {
        h.insert(CACHE_CONTROL, cc.clone());
    }
    if e.has_variants() {
        h.insert(VARY, VARY_ENCODING);
    }
}

/// Open a streamed file and seek to `start`; `None` when the file on disk
/// is no longer the one the entry describes.
fn open_region(rep: &Representation, start: u64) -> Option<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(&rep.real_path).ok()?;
    let meta = f.metadata().ok()?;
    if crate::files::Stamp::of(&meta) != rep.stamp {
        return None;
    }
    f.seek(SeekFrom::Start(start)).ok()?;
    Some(f)
}

fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("ASCII digits and punctuation")
}

/// A small plain-text answer for an error or refusal.
pub fn status_page(status: StatusCode) -> Response<WebBody> {
    let text = format!("{} {}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let mut resp = Response::new(WebBody::bytes(text.clone()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(SERVER, SERVER_NAME);
    h.insert(CONTENT_TYPE, TEXT_PLAIN);
    h.insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    resp
}

/// Ask the connection to close after this response.
fn closing(mut resp: Response<WebBody>) -> Response<WebBody> {
    resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// 301 to the same path with a trailing slash (query kept).
fn redirect_to_directory(clean: &CleanPath<'_>, query: Option<&str>) -> Response<WebBody> {
    let mut location = String::from("/");
    location.extend(percent_encoding::percent_encode(&clean.rel, LOCATION_ESCAPES));
    location.push('/');
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = status_page(StatusCode::MOVED_PERMANENTLY);
    match HeaderValue::try_from(location) {
        Ok(v) => {
            resp.headers_mut().insert(LOCATION, v);
        }
        Err(_) => return status_page(StatusCode::BAD_REQUEST),
    }
    resp
}
