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
//! headers select, at most [`store::MAX_VARIANTS`] (the oldest stored out
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
    AGE, AUTHORIZATION, HOST, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
    SET_COOKIE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

mod directives;
mod metrics;
mod store;

use directives::request_cacheable;
pub(crate) use directives::{freshness, Directives};
use metrics::CacheStats;
use store::{Entry, Found, Store, X_CACHE};

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

/// A header map of `pairs`, for the tests of the cache's parts.
#[cfg(test)]
fn test_headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}
