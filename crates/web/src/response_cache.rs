//! The in-memory cache of proxied responses (`[response_cache]`, nginx's
//! `proxy_cache`), bounded in bytes, least recently used out first.
//!
//! What is stored: answers to `GET` (a `HEAD` is served from them) with
//! status 200, 203, 301, 404 or 410 whose `Cache-Control` gives a lifetime
//! (`s-maxage`, else `max-age`, else `Expires` − `Date`) or a stale window,
//! no `no-store`, `private` or `no-cache`, no `Set-Cookie`, no `Vary: *`,
//! and a body of at most `max_object_bytes`. A request with
//! `Authorization` is cached only when the answer says `s-maxage` or
//! `public`; a request with `Cache-Control: no-cache` or `no-store` goes
//! to the server.
//!
//! Keys are `Host` + target; each key holds the variants its `Vary`
//! headers select, at most [`MAX_VARIANTS`] (the oldest stored out
//! first: a client choosing a varying header must not make one key's
//! list, scanned under the store's lock, grow without end). Answers carry `Age` and `X-Cache` (`HIT`, `MISS`,
//! `STALE`, `BYPASS`).
//!
//! Concurrent misses of one key are collapsed: the first goes to the
//! server, the others wait for it and are answered from what it stored
//! (or go themselves if it stored nothing). A `HEAD` miss is fetched as a
//! `GET`, so the whole answer is stored.
//!
//! A stale entry within `stale-while-revalidate` answers at once, the
//! first request that finds it included, while one background task (on
//! the worker's `LocalSet`) refreshes it; that refresh counts as the
//! key's fetch, so other misses of the key wait for it rather than go to
//! the server too. A failed refresh (a 5xx, or no answer) stores nothing
//! and the stale entry keeps answering; so does one whose answer, body
//! included, takes longer than the route's `server_timeout` (no client
//! gives up on it). At most [`MAX_REFRESHES`] run at
//! once: a client finding many stale keys quickly must not hold that many
//! requests (and their bodies, up to `max_object_bytes`) on the server at
//! once, so past the bound the request refreshes the entry itself and
//! waits, as past the window. Past the stale-while-revalidate window, a
//! stale entry is refreshed by the first request that finds it, which
//! waits; within
//! `stale-if-error` the stale entry answers when the server fails (a 5xx,
//! or no answer: 502/503/504) — the app down, cached pages still answer.
//!
//! `PURGE <path>` with `Authorization: Bearer <purge_token>` removes the
//! entries of that target (every host and variant); a path ending in `*`
//! removes every target it begins.
use crate::body::WebBody;
use bulwark_config::web::ResponseCache as Config;
use bytes::Bytes;
use http::header::{
    AGE, AUTHORIZATION, CACHE_CONTROL, DATE, EXPIRES, HOST, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, RANGE, SET_COOKIE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// What `Cache-Control` (and `Expires`) say of a response.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Directives {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl Directives {
    pub(crate) fn parse(h: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for v in h.get_all(CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()) {
            for item in v.split(',') {
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                    None => (item.trim(), None),
                };
                let secs = || value.and_then(|v| v.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "max-age" => d.max_age = secs(),
                    "s-maxage" => d.s_maxage = secs(),
                    "stale-while-revalidate" => d.stale_while_revalidate = secs(),
                    "stale-if-error" => d.stale_if_error = secs(),
                    _ => {}
                }
            }
        }
        d
    }
}

/// How long a response stays fresh, by `s-maxage`, `max-age` or
/// `Expires` − `Date`.
pub(crate) fn freshness(d: &Directives, h: &HeaderMap) -> Option<Duration> {
    if let Some(s) = d.s_maxage.or(d.max_age) {
        return Some(Duration::from_secs(s));
    }
    let date = |name| h.get(name).and_then(|v: &HeaderValue| httpdate::parse_http_date(v.to_str().ok()?).ok());
    let expires = date(EXPIRES)?;
    let now = date(DATE).unwrap_or_else(SystemTime::now);
    Some(expires.duration_since(now).unwrap_or_default())
}

/// Whether a request may be answered from, or stored in, the cache.
fn request_cacheable(req: &Request<hyper::body::Incoming>) -> bool {
    let m = req.method();
    if *m != Method::GET && *m != Method::HEAD {
        return false;
    }
    let d = Directives::parse(req.headers());
    !(d.no_cache || d.no_store)
}

/// One stored answer.
struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// Request header values the answer's `Vary` names.
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
    stored: Instant,
    fresh_for: Duration,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    bytes: u64,
}

impl Entry {
    fn age(&self) -> Duration {
        self.stored.elapsed()
    }

    fn matches(&self, req: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| req.get(name) == value.as_ref())
    }

    fn response(&self, head_only: bool, status: &'static str) -> Response<WebBody> {
        let body = if head_only { WebBody::Empty } else { WebBody::Bytes(Some(self.body.clone())) };
        let mut r = Response::new(body);
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers.clone();
        r.headers_mut().insert(AGE, HeaderValue::from(self.age().as_secs()));
        r.headers_mut().insert(X_CACHE, HeaderValue::from_static(status));
        r
    }
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Entries of one key (its variants), in the LRU.
type Variants = Vec<Arc<Entry>>;

struct Store {
    lru: lru::LruCache<String, Variants>,
    bytes: u64,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    stores: AtomicU64,
    evictions: AtomicU64,
    collapsed: AtomicU64,
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
}

/// The cache of proxied responses, shared by every worker thread.
pub struct ResponseCache {
    max_bytes: u64,
    max_object_bytes: u64,
    purge_token: Option<String>,
    store: Mutex<Store>,
    /// Keys being fetched now: later misses wait on it.
    inflight: Mutex<HashMap<String, Arc<Notify>>>,
    /// Background refreshes under way (at most [`MAX_REFRESHES`]).
    refreshing: AtomicUsize,
    stats: CacheStats,
}

/// Variants kept per key, the oldest stored out first.
pub(crate) const MAX_VARIANTS: usize = 32;

/// Background refreshes that may run at once, over all keys and workers.
pub(crate) const MAX_REFRESHES: usize = 64;

/// One of the [`MAX_REFRESHES`] places, given back when dropped.
struct RefreshSlot {
    cache: Arc<ResponseCache>,
}

impl RefreshSlot {
    fn take(cache: &Arc<ResponseCache>) -> Option<RefreshSlot> {
        cache
            .refreshing
            .fetch_update(Relaxed, Relaxed, |n| (n < MAX_REFRESHES).then_some(n + 1))
            .ok()
            .map(|_| RefreshSlot { cache: cache.clone() })
    }
}

impl Drop for RefreshSlot {
    fn drop(&mut self) {
        self.cache.refreshing.fetch_sub(1, Relaxed);
    }
}

/// Marks a key as being fetched; the requests waiting for it are woken
/// when it is dropped (the fetch ended, or was abandoned).
struct Fetching {
    cache: Arc<ResponseCache>,
    key: String,
}

impl Drop for Fetching {
    fn drop(&mut self) {
        self.cache.done(&self.key);
    }
}

/// What a request does after looking in the cache.
enum Step {
    /// Take the stale entry (a refresh is under way or starts now).
    Stale,
    /// Wait for the fetch under way.
    Wait(tokio::sync::futures::OwnedNotified),
    /// Fetch for this request (marking the key when `Some`).
    Fetch(Option<Fetching>),
    /// Start a background refresh, then take the stale entry.
    Refresh(Fetching, RefreshSlot),
}

/// What the cache found for a request.
enum Found {
    Fresh(Arc<Entry>),
    Stale(Arc<Entry>),
    None,
}

impl ResponseCache {
    /// `None` when the cache is off (nothing is done per request).
    pub fn new(cfg: &Config) -> Option<Arc<ResponseCache>> {
        cfg.enabled.then(|| {
            Arc::new(ResponseCache {
                max_bytes: cfg.max_bytes,
                max_object_bytes: cfg.max_object_bytes,
                purge_token: cfg.purge_token.as_ref().map(|t| t.expose().to_string()),
                store: Mutex::new(Store { lru: lru::LruCache::unbounded(), bytes: 0 }),
                inflight: Mutex::new(HashMap::new()),
                refreshing: AtomicUsize::new(0),
                stats: CacheStats::default(),
            })
        })
    }

    fn key(req: &Request<hyper::body::Incoming>) -> String {
        let host = req.headers().get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        format!("{host}\n{target}")
    }

    fn lookup(&self, key: &str, req: &HeaderMap) -> Found {
        let mut store = self.store.lock().unwrap();
        let Some(variants) = store.lru.get(key) else { return Found::None };
        let Some(e) = variants.iter().find(|e| e.matches(req)).cloned() else { return Found::None };
        if e.age() < e.fresh_for {
            Found::Fresh(e)
        } else {
            Found::Stale(e)
        }
    }

    /// Store an answer (replacing the variant it matches, and dropping
    /// the oldest past [`MAX_VARIANTS`]) and evict the least recently used
    /// keys down to `max_bytes`.
    fn insert(&self, key: String, entry: Entry) {
        let entry = Arc::new(entry);
        let mut store = self.store.lock().unwrap();
        let mut freed = 0;
        let variants = store.lru.get_or_insert_mut(key, Vec::new);
        variants.retain(|e| {
            let same = e.vary.iter().map(|(n, _)| n).eq(entry.vary.iter().map(|(n, _)| n))
                && e.vary.iter().zip(&entry.vary).all(|(a, b)| a.1 == b.1);
            if same {
                freed += e.bytes;
            }
            !same
        });
        variants.push(entry.clone());
        // A header the client chooses (`Vary: Origin`) must not grow the
        // list every lookup of the key scans under this lock.
        if variants.len() > MAX_VARIANTS {
            let extra = variants.len() - MAX_VARIANTS;
            freed += variants.drain(..extra).map(|e| e.bytes).sum::<u64>();
        }
        store.bytes = store.bytes.saturating_sub(freed) + entry.bytes;
        self.stats.stores.fetch_add(1, Relaxed);
        while store.bytes > self.max_bytes {
            let Some((_, gone)) = store.lru.pop_lru() else { break };
            store.bytes = store.bytes.saturating_sub(gone.iter().map(|e| e.bytes).sum());
            self.stats.evictions.fetch_add(1, Relaxed);
        }
    }

    /// `PURGE` of `target` (`*` at the end: every target it begins).
    fn purge(&self, target: &str) -> usize {
        let mut store = self.store.lock().unwrap();
        let doomed: Vec<String> = store
            .lru
            .iter()
            .map(|(k, _)| k)
            .filter(|k| {
                let t = k.split_once('\n').map_or(k.as_str(), |(_, t)| t);
                match target.strip_suffix('*') {
                    Some(prefix) => t.starts_with(prefix),
                    None => t == target,
                }
            })
            .cloned()
            .collect();
        for k in &doomed {
            if let Some(v) = store.lru.pop(k) {
                store.bytes = store.bytes.saturating_sub(v.iter().map(|e| e.bytes).sum());
            }
        }
        doomed.len()
    }

    /// Answer `req` from the cache or through `fetch` (the proxy route),
    /// storing what may be stored. A background refresh runs `fetch` on
    /// the current `LocalSet` (the web worker's), hence `'static`, and is
    /// abandoned after `refresh_deadline` (the route's server timeout).
    pub async fn serve<F, Fut>(
        self: &Arc<Self>,
        req: Request<hyper::body::Incoming>,
        refresh_deadline: Duration,
        fetch: F,
    ) -> Response<WebBody>
    where
        F: Fn(Request<hyper::body::Incoming>) -> Fut + 'static,
        Fut: Future<Output = Response<WebBody>> + 'static,
    {
        if req.method().as_str() == "PURGE" {
            return self.purge_request(&req);
        }
        if !request_cacheable(&req) {
            let mut r = fetch(req).await;
            r.headers_mut().insert(X_CACHE, HeaderValue::from_static("BYPASS"));
            return r;
        }
        let key = Self::key(&req);
        let head_only = req.method() == Method::HEAD;
        let mut waited = false;
        loop {
            let stale = match self.lookup(&key, req.headers()) {
                Found::Fresh(e) => {
                    self.stats.hits.fetch_add(1, Relaxed);
                    return e.response(head_only, "HIT");
                }
                Found::Stale(e) => Some(e),
                Found::None => None,
            };
            let revalidating = stale.as_ref().filter(|e| e.age() < e.fresh_for + e.stale_while_revalidate);
            // Collapse: the first miss fetches; the others wait for it, or
            // take the stale entry within its stale-while-revalidate
            // window. There, the first request takes it too and the
            // refresh runs in the background.
            let step = {
                let mut inflight = self.inflight.lock().unwrap();
                match inflight.get(&key) {
                    Some(_) if revalidating.is_some() => Step::Stale,
                    // Already waited once: the fetch it waited for stored
                    // nothing for this request; go alone.
                    Some(_) if waited => Step::Fetch(None),
                    Some(n) => Step::Wait(n.clone().notified_owned()),
                    None => {
                        inflight.insert(key.clone(), Arc::new(Notify::new()));
                        let guard = Fetching { cache: self.clone(), key: key.clone() };
                        let slot = (revalidating.is_some() && req.body().is_end_stream())
                            .then(|| RefreshSlot::take(self))
                            .flatten();
                        match slot {
                            Some(slot) => Step::Refresh(guard, slot),
                            None => Step::Fetch(Some(guard)),
                        }
                    }
                }
            };
            match step {
                Step::Stale => {}
                Step::Wait(notified) => {
                    self.stats.collapsed.fetch_add(1, Relaxed);
                    let _ = tokio::time::timeout(Duration::from_secs(60), notified).await;
                    waited = true;
                    continue;
                }
                Step::Fetch(guard) => return self.miss(guard, req, stale, head_only, fetch).await,
                Step::Refresh(guard, slot) => {
                    let refresh = guard.cache.clone().refresh(guard, slot, req, refresh_deadline, fetch);
                    tokio::task::spawn_local(refresh);
                }
            }
            self.stats.stale.fetch_add(1, Relaxed);
            return revalidating.expect("within stale-while-revalidate").response(head_only, "STALE");
        }
    }

    /// Fetch `req` for the waiting client and store the answer; a server
    /// failure within `stale-if-error` is answered by `stale`.
    async fn miss<F, Fut>(
        self: &Arc<Self>,
        guard: Option<Fetching>,
        req: Request<hyper::body::Incoming>,
        stale: Option<Arc<Entry>>,
        head_only: bool,
        fetch: F,
    ) -> Response<WebBody>
    where
        F: Fn(Request<hyper::body::Incoming>) -> Fut,
        Fut: Future<Output = Response<WebBody>>,
    {
        self.stats.misses.fetch_add(1, Relaxed);
        let key = Self::key(&req);
        let req_headers = req.headers().clone();
        let authorized = req.headers().contains_key(AUTHORIZATION);
        let mut req = req;
        // A HEAD is fetched as a GET so that the whole answer is stored.
        *req.method_mut() = Method::GET;
        let resp = fetch(req).await;
        if resp.status().is_server_error() {
            if let Some(e) = stale.filter(|e| e.age() < e.fresh_for + e.stale_if_error) {
                self.stats.stale.fetch_add(1, Relaxed);
                return e.response(head_only, "STALE");
            }
        }
        let mut resp = self.store_if_cacheable(&key, &req_headers, authorized, resp).await;
        drop(guard);
        resp.headers_mut().insert(X_CACHE, HeaderValue::from_static("MISS"));
        if head_only {
            *resp.body_mut() = WebBody::Empty;
        }
        resp
    }

    /// Refresh a stale entry in the background (the client already has
    /// the stale answer). A failed refresh stores nothing and the stale
    /// entry keeps answering within its windows.
    async fn refresh<F, Fut>(
        self: Arc<Self>,
        guard: Fetching,
        slot: RefreshSlot,
        req: Request<hyper::body::Incoming>,
        deadline: Duration,
        fetch: F,
    ) where
        F: Fn(Request<hyper::body::Incoming>) -> Fut,
        Fut: Future<Output = Response<WebBody>>,
    {
        let req_headers = req.headers().clone();
        let authorized = req.headers().contains_key(AUTHORIZATION);
        let mut req = req;
        *req.method_mut() = Method::GET;
        // The client has its answer already: the refresh asks for the whole
        // page, unconditionally, so that what comes back (not a 206 or a
        // 304 meant for that client) can be stored.
        for h in [RANGE, IF_RANGE, IF_NONE_MATCH, IF_MODIFIED_SINCE, IF_MATCH, IF_UNMODIFIED_SINCE] {
            req.headers_mut().remove(h);
        }
        // No client gives up on a refresh: one whose answer never ends
        // would hold the key's fetch mark (later misses wait on it) and a
        // refresh place for good.
        let attempt = async {
            let resp = fetch(req).await;
            if resp.status().is_server_error() {
                return false;
            }
            // Read to the end (stored, or dropped when it may not be).
            let resp = self.store_if_cacheable(&guard.key, &req_headers, authorized, resp).await;
            resp.into_body().collect().await.is_ok()
        };
        let failed = !tokio::time::timeout(deadline, attempt).await.unwrap_or(false);
        if failed {
            tracing::info!(key = %guard.key.replace('\n', " "), "response cache: a background refresh failed");
        }
        let outcome = if failed { &self.stats.refresh_failures } else { &self.stats.refreshes };
        outcome.fetch_add(1, Relaxed);
        drop((guard, slot));
    }

    /// The fetch of `key` ended: wake the requests that waited for it.
    fn done(&self, key: &str) {
        if let Some(n) = self.inflight.lock().unwrap().remove(key) {
            n.notify_waiters();
        }
    }

    async fn store_if_cacheable(
        &self,
        key: &str,
        req: &HeaderMap,
        authorized: bool,
        resp: Response<WebBody>,
    ) -> Response<WebBody> {
        let (parts, body) = resp.into_parts();
        let d = Directives::parse(&parts.headers);
        let storable_status = matches!(parts.status.as_u16(), 200 | 203 | 301 | 404 | 410);
        let fresh_for = freshness(&d, &parts.headers);
        let vary_all = parts
            .headers
            .get_all(VARY)
            .iter()
            .any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii() == b"*"));
        let storable = storable_status
            && !(d.no_store || d.private || d.no_cache || vary_all)
            && !parts.headers.contains_key(SET_COOKIE)
            && (!authorized || d.public || d.s_maxage.is_some())
            && (fresh_for.is_some() || d.stale_if_error.is_some() || d.stale_while_revalidate.is_some())
            && body.size_hint().upper().is_none_or(|u| u <= self.max_object_bytes);
        if !storable {
            return Response::from_parts(parts, body);
        }
        // Read the body whole, up to the object limit.
        let limit = self.max_object_bytes;
        let mut collected = bytes::BytesMut::new();
        let mut body = body;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        collected.extend_from_slice(&data);
                        if collected.len() as u64 > limit {
                            // Too large to keep: send what was read, then the rest.
                            let head = WebBody::Bytes(Some(collected.freeze()));
                            return Response::from_parts(parts, WebBody::other(Chain { head: Some(head), rest: body }));
                        }
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, "response cache: the server's body failed; not stored");
                    return Response::from_parts(parts, WebBody::Empty);
                }
            }
        }
        let body = collected.freeze();
        let vary = parts
            .headers
            .get_all(VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .map(|n| {
                let v = req.get(&n).cloned();
                (n, v)
            })
            .collect();
        let bytes =
            body.len() as u64 + parts.headers.iter().map(|(k, v)| (k.as_str().len() + v.len()) as u64).sum::<u64>();
        let mut headers = parts.headers.clone();
        headers.remove(AGE);
        self.insert(
            key.to_string(),
            Entry {
                status: parts.status,
                headers,
                body: body.clone(),
                vary,
                stored: Instant::now(),
                fresh_for: fresh_for.unwrap_or_default(),
                stale_while_revalidate: Duration::from_secs(d.stale_while_revalidate.unwrap_or(0)),
                stale_if_error: Duration::from_secs(d.stale_if_error.unwrap_or(0)),
                bytes,
            },
        );
        Response::from_parts(parts, WebBody::Bytes(Some(body)))
    }

    fn purge_request(&self, req: &Request<hyper::body::Incoming>) -> Response<WebBody> {
        let text = |status: StatusCode, msg: String| {
            let mut r = Response::new(WebBody::bytes(msg));
            *r.status_mut() = status;
            r
        };
        let Some(token) = &self.purge_token else {
            return text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed: purging is off\n".into());
        };
        if !bulwark_firewall::bearer_matches(req.headers(), token) {
            return text(StatusCode::UNAUTHORIZED, "401 Unauthorized: PURGE needs the purge token\n".into());
        }
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let n = self.purge(target);
        text(StatusCode::OK, format!("{{\"purged\":{n}}}\n"))
    }

    /// `/metrics` lines.
    pub fn prometheus(&self) -> String {
        let s = &self.stats;
        let store = self.store.lock().unwrap();
        let mut out = String::from(
            "# HELP bulwark_web_cache_requests_total Proxied requests by cache outcome.\n# TYPE bulwark_web_cache_requests_total counter\n",
        );
        for (outcome, n) in [("hit", &s.hits), ("miss", &s.misses), ("stale", &s.stale), ("collapsed", &s.collapsed)] {
            out.push_str(&format!("bulwark_web_cache_requests_total{{outcome=\"{outcome}\"}} {}\n", n.load(Relaxed)));
        }
        out.push_str(&format!(
            "# HELP bulwark_web_cache_stores_total Responses stored.\n# TYPE bulwark_web_cache_stores_total counter\nbulwark_web_cache_stores_total {}\n\
             # HELP bulwark_web_cache_evictions_total Keys evicted to stay under max_bytes.\n# TYPE bulwark_web_cache_evictions_total counter\nbulwark_web_cache_evictions_total {}\n\
             # HELP bulwark_web_cache_bytes Bytes held.\n# TYPE bulwark_web_cache_bytes gauge\nbulwark_web_cache_bytes {}\n\
             # HELP bulwark_web_cache_refreshes_total Background refreshes of stale entries, by result.\n# TYPE bulwark_web_cache_refreshes_total counter\n\
             bulwark_web_cache_refreshes_total{{result=\"done\"}} {}\nbulwark_web_cache_refreshes_total{{result=\"failed\"}} {}\n",
            s.stores.load(Relaxed),
            s.evictions.load(Relaxed),
            store.bytes,
            s.refreshes.load(Relaxed),
            s.refresh_failures.load(Relaxed),
        ));
        out
    }
}

/// A body read in part, then the rest still streaming.
struct Chain {
    head: Option<WebBody>,
    rest: WebBody,
}

impl Body for Chain {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, crate::BoxError>>> {
        let this = &mut *self;
        if let Some(head) = this.head.as_mut() {
            match std::pin::Pin::new(head).poll_frame(cx) {
                std::task::Poll::Ready(None) => this.head = None,
                other => return other,
            }
        }
        std::pin::Pin::new(&mut this.rest).poll_frame(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn directives_and_freshness() {
        let h = headers(&[("cache-control", "public, max-age=60, s-maxage=300, stale-if-error=\"86400\"")]);
        let d = Directives::parse(&h);
        assert!(d.public && !d.private);
        assert_eq!((d.max_age, d.s_maxage, d.stale_if_error), (Some(60), Some(300), Some(86400)));
        assert_eq!(freshness(&d, &h), Some(Duration::from_secs(300)), "s-maxage wins for a shared cache");
        let h = headers(&[("date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("expires", "Sun, 06 Nov 1994 08:50:37 GMT")]);
        assert_eq!(freshness(&Directives::parse(&h), &h), Some(Duration::from_secs(60)));
        let h = headers(&[("cache-control", "no-store")]);
        assert!(Directives::parse(&h).no_store);
        assert_eq!(freshness(&Directives::parse(&h), &h), None);
    }

    fn entry(bytes: u64, vary: Vec<(HeaderName, Option<HeaderValue>)>) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            vary,
            stored: Instant::now(),
            fresh_for: Duration::from_secs(60),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            bytes,
        }
    }

    fn cache(max_bytes: u64) -> Arc<ResponseCache> {
        ResponseCache::new(&Config { enabled: true, max_bytes, ..Config::default() }).unwrap()
    }

    #[test]
    fn bounded_in_bytes_least_recently_used_out_first() {
        let c = cache(300);
        c.insert("h\n/a".into(), entry(100, vec![]));
        c.insert("h\n/b".into(), entry(100, vec![]));
        c.insert("h\n/c".into(), entry(100, vec![]));
        assert!(matches!(c.lookup("h\n/a", &HeaderMap::new()), Found::Fresh(_)), "touch /a");
        c.insert("h\n/d".into(), entry(100, vec![]));
        assert!(matches!(c.lookup("h\n/b", &HeaderMap::new()), Found::None), "/b was least recently used");
        assert!(matches!(c.lookup("h\n/a", &HeaderMap::new()), Found::Fresh(_)));
        assert_eq!(c.store.lock().unwrap().bytes, 300);
        assert_eq!(c.purge("/*"), 3);
        assert_eq!(c.store.lock().unwrap().bytes, 0);
    }

    #[test]
    fn variants_of_one_key_are_bounded() {
        // `Vary: Origin` (or `User-Agent`, `Cookie`): a client choosing
        // the header makes a variant per request; each lookup of the key
        // scans them under the store's lock.
        let c = cache(u64::MAX);
        let origin = HeaderName::from_static("origin");
        for n in 0..1000 {
            let value = HeaderValue::from_str(&format!("https://{n}.example")).unwrap();
            c.insert("h\n/".into(), entry(10, vec![(origin.clone(), Some(value))]));
        }
        let store = c.store.lock().unwrap();
        let kept = store.lru.peek("h\n/").unwrap().len();
        assert_eq!(kept, MAX_VARIANTS);
        assert_eq!(store.bytes, 10 * MAX_VARIANTS as u64);
        drop(store);
        let newest = headers(&[("origin", "https://999.example")]);
        assert!(matches!(c.lookup("h\n/", &newest), Found::Fresh(_)), "the newest variants are kept");
        let oldest = headers(&[("origin", "https://0.example")]);
        assert!(matches!(c.lookup("h\n/", &oldest), Found::None));
    }

    #[test]
    fn variants_are_chosen_by_the_vary_headers() {
        let c = cache(10_000);
        let lang = HeaderName::from_static("accept-language");
        c.insert("h\n/".into(), entry(10, vec![(lang.clone(), Some(HeaderValue::from_static("fr")))]));
        c.insert("h\n/".into(), entry(10, vec![(lang.clone(), None)]));
        assert!(matches!(c.lookup("h\n/", &headers(&[("accept-language", "fr")])), Found::Fresh(_)));
        assert!(matches!(c.lookup("h\n/", &HeaderMap::new()), Found::Fresh(_)));
        assert!(matches!(c.lookup("h\n/", &headers(&[("accept-language", "de")])), Found::None));
        c.insert("h\n/".into(), entry(10, vec![(lang, None)]));
        assert_eq!(c.store.lock().unwrap().bytes, 20, "the same variant is replaced");
    }
}
