//! What a request or a response says of caching: `Cache-Control`
//! directives, how long an answer stays fresh, whether a request may use
//! the cache at all.
use http::header::{CACHE_CONTROL, DATE, EXPIRES};
use http::{HeaderMap, HeaderValue, Method, Request};
use std::time::{Duration, SystemTime};

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
pub(super) fn request_cacheable(req: &Request<hyper::body::Incoming>) -> bool {
    let m = req.method();
    if *m != Method::GET && *m != Method::HEAD {
        return false;
    }
    let d = Directives::parse(req.headers());
    !(d.no_cache || d.no_store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response_cache::test_headers as headers;

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
}
