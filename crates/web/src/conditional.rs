//! Conditional requests (RFC 9110 §13): `If-Match`, `If-Unmodified-Since`,
//! `If-None-Match`, `If-Modified-Since` evaluated in the order of §13.2.2,
//! and `If-Range`.
use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE};
use http::HeaderMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the preconditions say about serving the representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve it (200 / 206).
    Serve,
    /// The client's copy is current (304).
    NotModified,
    /// A state-changing precondition failed (412).
    Failed,
}

/// The validators of one representation.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// The ETag, quotes included (`"5f3a-400"`); always a strong tag here.
    pub etag: &'a [u8],
    /// Modification time, whole seconds since the epoch.
    pub modified: u64,
}

/// Split an entity-tag list (`"a", W/"b"`) into (weak, opaque-tag) pairs;
/// `None` for `*`. Malformed members are skipped.
fn tags(list: &[u8]) -> Option<Vec<(bool, &[u8])>> {
    let trimmed = list.trim_ascii();
    if trimmed == b"*" {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = trimmed;
    loop {
        rest = rest.trim_ascii_start();
        while let Some(r) = rest.strip_prefix(b",") {
            rest = r.trim_ascii_start();
        }
        if rest.is_empty() {
            break;
        }
        let weak = rest.starts_with(b"W/");
        if weak {
            rest = &rest[2..];
        }
        if rest.first() != Some(&b'"') {
            // Not an entity-tag: skip to the next comma.
            match rest.iter().position(|&b| b == b',') {
                Some(i) => rest = &rest[i..],
                None => break,
            }
            continue;
        }
        match rest[1..].iter().position(|&b| b == b'"') {
            Some(i) => {
                out.push((weak, &rest[..i + 2]));
                rest = &rest[i + 2..];
            }
            None => break,
        }
    }
    Some(out)
}

/// Weak comparison: opaque tags equal, W/ ignored (If-None-Match).
fn matches_weak(list: &[u8], etag: &[u8]) -> bool {
    match tags(list) {
        None => true,
        Some(t) => t.iter().any(|(_, tag)| *tag == etag),
    }
}

/// Strong comparison: both strong and equal (If-Match, If-Range).
fn matches_strong(list: &[u8], etag: &[u8]) -> bool {
    match tags(list) {
        None => true,
        Some(t) => t.iter().any(|(weak, tag)| !*weak && *tag == etag),
    }
}

fn http_date_secs(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    Some(t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs())
}

/// Seconds since the epoch of a file time (times before 1970 count as 0).
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

/// Evaluate the preconditions of a GET or HEAD request.
pub fn evaluate(headers: &HeaderMap, v: Validators<'_>) -> Precondition {
    // Step 1 / 2: If-Match, else If-Unmodified-Since.
    if let Some(im) = headers.get(IF_MATCH) {
        if !matches_strong(im.as_bytes(), v.etag) {
            return Precondition::Failed;
        }
    } else if let Some(ius) = headers.get(IF_UNMODIFIED_SINCE) {
        if let Some(date) = http_date_secs(ius.as_bytes()) {
            if v.modified > date {
                return Precondition::Failed;
            }
        }
    }
    // Step 3 / 4: If-None-Match, else If-Modified-Since (GET/HEAD only).
    if let Some(inm) = headers.get(IF_NONE_MATCH) {
        if matches_weak(inm.as_bytes(), v.etag) {
            return Precondition::NotModified;
        }
    } else if let Some(ims) = headers.get(IF_MODIFIED_SINCE) {
        if let Some(date) = http_date_secs(ims.as_bytes()) {
            if v.modified <= date {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Serve
}

/// `If-Range`: true when the Range header may be honoured (the client's
/// validator is still current). An entity-tag must match strongly; a date
/// must equal Last-Modified exactly.
pub fn if_range_allows(value: &[u8], v: Validators<'_>) -> bool {
    let t = value.trim_ascii();
    if t.starts_with(b"\"") || t.starts_with(b"W/") {
        return matches_strong(t, v.etag) && t != b"*";
    }
    http_date_secs(t) == Some(v.modified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const V: Validators<'static> = Validators { etag: b"\"abc-10\"", modified: 1_700_000_000 };

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn eval(pairs: &[(http::HeaderName, &str)]) -> Precondition {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        evaluate(&h, V)
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        assert_eq!(eval(&[]), Precondition::Serve);
        assert_eq!(eval(&[(IF_NONE_MATCH, "\"abc-10\"")]), Precondition::NotModified);
        assert_eq!(eval(&[(IF_NONE_MATCH, "W/\"abc-10\"")]), Precondition::NotModified);
        assert_eq!(eval(&[(IF_NONE_MATCH, "\"x\", \"abc-10\"")]), Precondition::NotModified);
        assert_eq!(eval(&[(IF_NONE_MATCH, "*")]), Precondition::NotModified);
        assert_eq!(eval(&[(IF_NONE_MATCH, "\"abc-11\"")]), Precondition::Serve);
        assert_eq!(eval(&[(IF_NONE_MATCH, "abc-10")]), Precondition::Serve);
    }

    #[test]
    fn if_modified_since_compares_seconds() {
        assert_eq!(eval(&[(IF_MODIFIED_SINCE, &date(V.modified))]), Precondition::NotModified);
        assert_eq!(eval(&[(IF_MODIFIED_SINCE, &date(V.modified + 60))]), Precondition::NotModified);
        assert_eq!(eval(&[(IF_MODIFIED_SINCE, &date(V.modified - 1))]), Precondition::Serve);
        assert_eq!(eval(&[(IF_MODIFIED_SINCE, "not a date")]), Precondition::Serve);
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        // A stale tag wins over a current date: the client's copy differs.
        let stale = [(IF_NONE_MATCH, "\"old\""), (IF_MODIFIED_SINCE, &*date(V.modified))];
        assert_eq!(eval(&stale), Precondition::Serve);
        let current = [(IF_NONE_MATCH, "\"abc-10\""), (IF_MODIFIED_SINCE, &*date(V.modified - 100))];
        assert_eq!(eval(&current), Precondition::NotModified);
    }

    #[test]
    fn if_match_and_if_unmodified_since_fail_with_412() {
        assert_eq!(eval(&[(IF_MATCH, "\"nope\"")]), Precondition::Failed);
        assert_eq!(eval(&[(IF_MATCH, "W/\"abc-10\"")]), Precondition::Failed);
        assert_eq!(eval(&[(IF_MATCH, "\"abc-10\"")]), Precondition::Serve);
        assert_eq!(eval(&[(IF_MATCH, "*")]), Precondition::Serve);
        assert_eq!(eval(&[(IF_UNMODIFIED_SINCE, &date(V.modified - 1))]), Precondition::Failed);
        assert_eq!(eval(&[(IF_UNMODIFIED_SINCE, &date(V.modified))]), Precondition::Serve);
    }

    #[test]
    fn if_range_needs_a_strong_match_or_the_exact_date() {
        assert!(if_range_allows(b"\"abc-10\"", V));
        assert!(!if_range_allows(b"W/\"abc-10\"", V));
        assert!(!if_range_allows(b"\"other\"", V));
        assert!(if_range_allows(date(V.modified).as_bytes(), V));
        assert!(!if_range_allows(date(V.modified + 1).as_bytes(), V));
        assert!(!if_range_allows(b"garbage", V));
    }
}
