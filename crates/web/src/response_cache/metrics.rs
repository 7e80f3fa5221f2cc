//! The cache's counters and their exposition on the web server's
//! `/metrics`.
use super::ResponseCache;
use bulwark_telemetry::metrics::Exposition;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters for `/metrics`.
#[derive(Default)]
pub struct CacheStats {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) stale: AtomicU64,
    pub(super) stores: AtomicU64,
    pub(super) evictions: AtomicU64,
    pub(super) collapsed: AtomicU64,
    pub(super) refreshes: AtomicU64,
    pub(super) refresh_failures: AtomicU64,
}

impl ResponseCache {
    /// The `bulwark_web_cache_*` families.
    pub fn encode_metrics(&self, out: &mut Exposition<'_>) -> std::fmt::Result {
        let s = &self.stats;
        let bytes = self.store.lock().unwrap_or_else(|e| e.into_inner()).bytes;
        let outcomes = [("hit", &s.hits), ("miss", &s.misses), ("stale", &s.stale), ("collapsed", &s.collapsed)];
        out.counters(
            "bulwark_web_cache_requests",
            "Proxied requests by cache outcome.",
            outcomes.map(|(outcome, n)| ([("outcome", outcome)], n.load(Relaxed))),
        )?;
        out.counter("bulwark_web_cache_stores", "Responses stored.", s.stores.load(Relaxed))?;
        out.counter("bulwark_web_cache_evictions", "Keys evicted to stay under max_bytes.", s.evictions.load(Relaxed))?;
        out.gauge("bulwark_web_cache_bytes", "Bytes held.", bytes)?;
        out.counters(
            "bulwark_web_cache_refreshes",
            "Background refreshes of stale entries, by result.",
            [
                ([("result", "done")], s.refreshes.load(Relaxed)),
                ([("result", "failed")], s.refresh_failures.load(Relaxed)),
            ],
        )
    }
}
