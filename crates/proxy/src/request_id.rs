//! `X-Request-Id`: one id per request, set at the edge (the lb) and passed
//! on by every tier, so one id finds one request in every access log.
//!
//! The edge makes a fresh id (128 random bits, 32 hex digits) for every
//! request, replacing whatever the client sent, unless it is configured to
//! trust incoming ids ([`RequestIdMode::Trust`]): then a valid incoming id
//! (1 to 128 characters of `A-Z a-z 0-9 - _ .`) is kept and only an invalid
//! or missing one is replaced. Inner tiers ([`RequestIdMode::Off`]) leave
//! the header as it came.
use http::{HeaderMap, HeaderName, HeaderValue};

/// The request (and response) header carrying the id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming id kept.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// What the forwarder does with `X-Request-Id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestIdMode {
    /// Leave the header as it came (inner tiers; no cost per request).
    #[default]
    Off,
    /// Always set a fresh id.
    Generate,
    /// Keep a valid incoming id, set a fresh one otherwise.
    Trust,
}

/// Whether `v` is an id worth keeping: 1 to [`MAX_REQUEST_ID_BYTES`]
/// characters of letters, digits, `-`, `_` and `.` (nothing a log reader
/// could mistake for a field separator or an escape).
pub fn is_valid(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_REQUEST_ID_BYTES
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// A fresh id: 128 random bits as 32 lowercase hex digits.
pub fn generate() -> HeaderValue {
    let id = format!("{:032x}", rand::random::<u128>());
    HeaderValue::from_str(&id).expect("hex digits are a valid header value")
}

/// Apply `mode` to a request's headers; returns the id the request now
/// carries (None with [`RequestIdMode::Off`] and no header).
pub fn apply(mode: RequestIdMode, headers: &mut HeaderMap) -> Option<HeaderValue> {
    match mode {
        RequestIdMode::Off => headers.get(X_REQUEST_ID).cloned(),
        RequestIdMode::Trust if headers.get(X_REQUEST_ID).is_some_and(is_valid) => headers.get(X_REQUEST_ID).cloned(),
        RequestIdMode::Trust | RequestIdMode::Generate => {
            let id = generate();
            headers.insert(X_REQUEST_ID, id.clone());
            Some(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_str(id).unwrap());
        h
    }

    #[test]
    fn the_edge_replaces_an_incoming_id_unless_it_trusts_it() {
        let mut h = with("client-chosen.1");
        let id = apply(RequestIdMode::Generate, &mut h).unwrap();
        assert_ne!(id, "client-chosen.1");
        assert_eq!(id.len(), 32);
        assert_eq!(h[X_REQUEST_ID], id);
        let mut h = with("client-chosen.1");
        assert_eq!(apply(RequestIdMode::Trust, &mut h).unwrap(), "client-chosen.1");
        let mut h = HeaderMap::new();
        assert_eq!(apply(RequestIdMode::Trust, &mut h).unwrap().len(), 32);
        assert!(apply(RequestIdMode::Off, &mut HeaderMap::new()).is_none());
    }

    #[test]
    fn invalid_incoming_ids_are_replaced_even_when_trusted() {
        for bad in ["", "has space", "quote\"", "semi;colon", &"x".repeat(129)] {
            let mut h = with(bad);
            let id = apply(RequestIdMode::Trust, &mut h).unwrap();
            assert_eq!(id.len(), 32, "{bad:?} kept");
        }
        assert!(is_valid(&HeaderValue::from_static("0f3a-B_9.z")));
        assert_ne!(generate(), generate());
    }
}
