//! Header rewriting at the proxy boundary: hop-by-hop removal (RFC 9110
//! §7.6.1) and the forwarded headers (`X-Forwarded-For`,
//! `X-Forwarded-Proto`, RFC 7239 `Forwarded`, `Via`).
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == "keep-alive" || name == "proxy-connection"
}

/// Remove hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Fast path: one pass over the (few) headers instead of a hash lookup
    // per hop-by-hop name; most requests carry none.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    if h.contains_key(header::CONNECTION) {
        // Every Connection header line counts, not just the first.
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in HOP_BY_HOP.iter() {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

/// The header one tier presents to the next (`X-Bulwark-Cluster`).
pub const TIER_CREDENTIAL: &str = "x-bulwark-cluster";

/// Remove the tier credential a request arrived with: each hop has its own
/// secret, so the value the lb gave the web tier must never reach the app
/// servers (nor a client's guess reach anyone). The forwarder then adds
/// this hop's own value, if it has one.
pub fn strip_tier_credential(h: &mut HeaderMap) {
    h.remove(TIER_CREDENTIAL);
}

/// The forwarded-header values for one client, computed once per
/// connection and cloned (a reference-count bump) into each request.
#[derive(Debug, Clone)]
pub struct ForwardedValues {
    /// The client IP as text (`X-Forwarded-For` element).
    pub ip: HeaderValue,
    /// `for=<ip>;proto=<proto>` (`Forwarded` element, RFC 7239).
    pub forwarded: HeaderValue,
    pub proto: &'static str,
}

impl ForwardedValues {
    pub fn new(client: IpAddr, proto: &'static str) -> Self {
        let ip = client.to_string();
        // RFC 7239: IPv6 addresses are quoted and bracketed.
        let node = match client {
            IpAddr::V4(_) => ip.clone(),
            IpAddr::V6(_) => format!("\"[{ip}]\""),
        };
        ForwardedValues {
            ip: HeaderValue::from_str(&ip).expect("an IP is a valid header value"),
            forwarded: HeaderValue::from_str(&format!("for={node};proto={proto}")).expect("valid header value"),
            proto,
        }
    }
}

fn append_list(h: &mut HeaderMap, name: HeaderName, element: &HeaderValue) {
    let merged = match h.get(&name) {
        Some(prev) if !prev.is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + element.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(element.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        _ => None,
    };
    h.insert(name, merged.unwrap_or_else(|| element.clone()));
}

/// Append the client to `X-Forwarded-For` and `Forwarded`, set
/// `X-Forwarded-Proto`.
pub fn add_forwarded(h: &mut HeaderMap, values: &ForwardedValues, keep_proto: bool) {
    append_list(h, HeaderName::from_static("x-forwarded-for"), &values.ip);
    let proto = HeaderName::from_static("x-forwarded-proto");
    if !(keep_proto && h.contains_key(&proto)) {
        h.insert(proto, HeaderValue::from_static(values.proto));
    }
    append_list(h, header::FORWARDED, &values.forwarded);
}

/// Append this proxy to `Via`.
pub fn add_via(h: &mut HeaderMap, version: http::Version) {
    let element = HeaderValue::from_static(match version {
        http::Version::HTTP_10 => "1.0 bulwark",
        http::Version::HTTP_2 => "2 bulwark",
        _ => "1.1 bulwark",
    });
    append_list(h, header::VIA, &element);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tier_credential_is_never_passed_on() {
        let mut h = HeaderMap::new();
        h.insert("x-bulwark-cluster", HeaderValue::from_static("the-previous-hops-secret"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_tier_credential(&mut h);
        assert!(!h.contains_key("x-bulwark-cluster"));
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn honours_every_connection_header_line() {
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("close"));
        h.append("connection", HeaderValue::from_static("X-Hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn appends_forwarded_chain() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        add_forwarded(&mut h, &ForwardedValues::new("2001:db8::1".parse().unwrap(), "https"), false);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "for=\"[2001:db8::1]\";proto=https");
        add_via(&mut h, http::Version::HTTP_11);
        add_via(&mut h, http::Version::HTTP_11);
        assert_eq!(h["via"], "1.1 bulwark, 1.1 bulwark");
    }
}
