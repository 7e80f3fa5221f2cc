//! The store of cached answers: keys, their variants (chosen by the
//! answer's `Vary`), the byte bound with least-recently-used eviction,
//! and purging.
use super::ResponseCache;
use crate::body::WebBody;
use bytes::Bytes;
use http::header::AGE;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One stored answer.
pub(super) struct Entry {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    /// Request header values the answer's `Vary` names.
    pub(super) vary: Vec<(HeaderName, Option<HeaderValue>)>,
    pub(super) stored: Instant,
    pub(super) fresh_for: Duration,
    pub(super) stale_while_revalidate: Duration,
    pub(super) stale_if_error: Duration,
    pub(super) bytes: u64,
}

impl Entry {
    pub(super) fn age(&self) -> Duration {
        self.stored.elapsed()
    }

    fn matches(&self, req: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| req.get(name) == value.as_ref())
    }

    pub(super) fn response(&self, head_only: bool, status: &'static str) -> Response<WebBody> {
        let body = if head_only { WebBody::Empty } else { WebBody::Bytes(Some(self.body.clone())) };
        let mut r = Response::new(body);
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers.clone();
        r.headers_mut().insert(AGE, HeaderValue::from(self.age().as_secs()));
        r.headers_mut().insert(X_CACHE, HeaderValue::from_static(status));
        r
    }
}

pub(super) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Entries of one key (its variants), in the LRU.
type Variants = Vec<Arc<Entry>>;

pub(super) struct Store {
    pub(super) lru: lru::LruCache<String, Variants>,
    pub(super) bytes: u64,
}

/// Variants kept per key, the oldest stored out first.
pub(crate) const MAX_VARIANTS: usize = 32;

/// What the cache found for a request.
pub(super) enum Found {
    Fresh(Arc<Entry>),
    Stale(Arc<Entry>),
    None,
}

impl ResponseCache {
    pub(super) fn lookup(&self, key: &str, req: &HeaderMap) -> Found {
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
    pub(super) fn insert(&self, key: String, entry: Entry) {
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
    pub(super) fn purge(&self, target: &str) -> usize {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response_cache::test_headers as headers;
    use bulwark_config::web::ResponseCache as Config;

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
