//! Access control at every listener: the firewall of the classic site's picture.
//!
//! Owns: CIDR allow/deny lists (first match wins), per-client rate
//! limiting (GCRA, via `governor`), total and per-client concurrent
//! connection limits, finding the real client IP behind trusted proxies,
//! and constant-time checking of bearer secrets.
//!
//! A "client" for the rate and connection limits is a [`ClientKey`]: one
//! IPv4 address, or one IPv6 /64 network. An IPv6 host is usually given a
//! whole /64 and can pick any of its 2^64 addresses, so keying by the full
//! address would hand it a fresh allowance per address.
//!
//! Must not touch: sockets, HTTP serving or responses' bodies; listeners
//! ask here and turn a [`Refusal`] into a 403/429/503 or a closed socket.

use bulwark_config::firewall::{parse_net, parse_rule, Action, FirewallConfig, RuleError};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why a firewall cannot be built from its config: the config is wrong,
/// so retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewallError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("rate_limit.per_second must be at least 1")]
    ZeroRate,
    #[error("rate_limit.burst must be at least 1")]
    ZeroBurst,
}

/// Why a client is turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The ACL denies this address (→ 403 or closed socket).
    Denied,
    /// The listener is at `max_connections` (→ 503).
    ListenerFull,
    /// This client is at `max_connections_per_ip` (→ 429).
    TooManyConnections,
    /// Over the rate limit; may retry after this long (→ 429 + Retry-After).
    RateLimited(Duration),
}

impl Refusal {
    pub fn status(&self) -> http::StatusCode {
        match self {
            Refusal::Denied => http::StatusCode::FORBIDDEN,
            Refusal::ListenerFull => http::StatusCode::SERVICE_UNAVAILABLE,
            Refusal::TooManyConnections | Refusal::RateLimited(_) => http::StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Refusal::Denied => "access from your address is not allowed".into(),
            Refusal::ListenerFull => "the server is at its connection limit; try again shortly".into(),
            Refusal::TooManyConnections => "too many concurrent connections from your address".into(),
            Refusal::RateLimited(d) => format!("rate limit exceeded; retry in {} s", retry_after_secs(*d)),
        }
    }

    /// Seconds for `Retry-After`, when it applies.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::RateLimited(d) => Some(retry_after_secs(*d)),
            Refusal::ListenerFull | Refusal::TooManyConnections => Some(1),
            Refusal::Denied => None,
        }
    }
}

fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A listener's firewall. Share it between worker threads behind an `Arc`.
pub struct Firewall {
    acl: Vec<(Action, IpNet)>,
    limiter: Option<DefaultKeyedRateLimiter<ClientKey>>,
    checks: AtomicU64,
    max_total: Option<u32>,
    max_per_ip: Option<u32>,
    total: Arc<AtomicU32>,
    per_ip: Arc<DashMap<ClientKey, u32>>,
    trusted: Vec<IpNet>,
}

impl std::fmt::Debug for Firewall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Firewall").field("acl", &self.acl).field("trusted", &self.trusted).finish_non_exhaustive()
    }
}

/// Holds one connection slot; released on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    key: ClientKey,
    total: Option<Arc<AtomicU32>>,
    per_ip: Option<Arc<DashMap<ClientKey, u32>>>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(t) = &self.total {
            t.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(m) = &self.per_ip {
            m.remove_if_mut(&self.key, |_, n| {
                *n -= 1;
                *n == 0
            });
        }
    }
}

/// Addresses compared in their canonical form (`::ffff:1.2.3.4` is 1.2.3.4).
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Who the rate and connection limits count: an IPv4 address, or the /64
/// network of an IPv6 address (the smallest block a site is normally given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(Ipv4Addr),
    /// The /64 prefix; the interface identifier is zeroed.
    V6Net64(Ipv6Addr),
}

impl ClientKey {
    /// Length of the IPv6 prefix that counts as one client.
    pub const IPV6_PREFIX_LEN: u8 = 64;

    pub fn of(ip: IpAddr) -> ClientKey {
        match canonical(ip) {
            IpAddr::V4(a) => ClientKey::V4(a),
            IpAddr::V6(a) => ClientKey::V6Net64(Ipv6Addr::from(a.to_bits() & (u128::MAX << 64))),
        }
    }
}

impl Firewall {
    /// Build from an already validated config.
    pub fn new(cfg: &FirewallConfig) -> Result<Firewall, FirewallError> {
        let acl = cfg.acl.iter().map(|r| parse_rule(r)).collect::<Result<Vec<_>, _>>()?;
        let trusted = cfg.trusted_proxies.iter().map(|r| parse_net(r)).collect::<Result<Vec<_>, _>>()?;
        let limiter = match &cfg.rate_limit {
            None => None,
            Some(r) => {
                let per = NonZeroU32::new(r.per_second).ok_or(FirewallError::ZeroRate)?;
                let burst = NonZeroU32::new(r.burst.unwrap_or(r.per_second)).ok_or(FirewallError::ZeroBurst)?;
                Some(RateLimiter::keyed(Quota::per_second(per).allow_burst(burst)))
            }
        };
        Ok(Firewall {
            acl,
            limiter,
            checks: AtomicU64::new(0),
            max_total: cfg.max_connections,
            max_per_ip: cfg.max_connections_per_ip,
            total: Arc::new(AtomicU32::new(0)),
            per_ip: Arc::new(DashMap::new()),
            trusted,
        })
    }

    /// A firewall that lets everything through.
    pub fn open() -> Firewall {
        Firewall::new(&FirewallConfig::default()).expect("empty config is valid")
    }

    /// True when nothing is configured: callers may skip every check.
    pub fn is_open(&self) -> bool {
        self.acl.is_empty() && self.limiter.is_none() && self.max_total.is_none() && self.max_per_ip.is_none()
    }

    pub fn has_rate_limit(&self) -> bool {
        self.limiter.is_some()
    }

    /// The ACL verdict for `ip`: the first matching rule decides.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        for (action, net) in &self.acl {
            let hit =
                net.contains(&ip) || (net.prefix_len() == 0 && matches!((net, ip), (IpNet::V4(_), IpAddr::V6(_))));
            if hit {
                return *action == Action::Allow;
            }
        }
        true
    }

    /// Admit a new connection from `ip`: ACL, then connection limits (per
    /// [`ClientKey`]: an IPv6 /64 shares one allowance).
    pub fn admit(&self, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        if !self.allows(canonical(ip)) {
            return Err(Refusal::Denied);
        }
        self.count_connection(ip)
    }

    /// Connection limits alone, for a listener whose ACL judges each
    /// request's client (behind a trusted proxy, the socket peer is the
    /// proxy, not the client the ACL names).
    pub fn count_connection(&self, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let key = ClientKey::of(canonical(ip));
        let total = match self.max_total {
            Some(max) => {
                if self.total.fetch_add(1, Ordering::Relaxed) >= max {
                    self.total.fetch_sub(1, Ordering::Relaxed);
                    return Err(Refusal::ListenerFull);
                }
                Some(self.total.clone())
            }
            None => None,
        };
        let per_ip = match self.max_per_ip {
            Some(max) => {
                let mut n = self.per_ip.entry(key).or_insert(0);
                if *n >= max {
                    drop(n);
                    if let Some(t) = &total {
                        t.fetch_sub(1, Ordering::Relaxed);
                    }
                    return Err(Refusal::TooManyConnections);
                }
                *n += 1;
                Some(self.per_ip.clone())
            }
            None => None,
        };
        Ok(ConnectionPermit { key, total, per_ip })
    }

    /// Count one request from `ip` against its rate limit (per
    /// [`ClientKey`]: an IPv6 /64 shares one allowance).
    pub fn check_rate(&self, ip: IpAddr) -> Result<(), Refusal> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        // Forget idle clients now and then so memory stays bounded.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 8192 == 8191 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&ClientKey::of(ip))
            .map_err(|not_until| Refusal::RateLimited(not_until.wait_time_from(DefaultClock::default().now())))
    }

    /// The client address of a request: the socket peer, unless the peer is
    /// a trusted proxy, in which case the right-most `X-Forwarded-For`
    /// address that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .collect();
        for hop in hops.into_iter().rev() {
            client = canonical(hop);
            if !self.is_trusted(client) {
                break;
            }
        }
        client
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }
}

/// Constant-time check of `Authorization: Bearer <secret>`.
pub fn bearer_matches(headers: &http::HeaderMap, secret: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Some(v) = headers.get(http::header::AUTHORIZATION) else { return false };
    let Some(token) = v.as_bytes().strip_prefix(b"Bearer ") else { return false };
    token.ct_eq(secret.as_bytes()).into()
}

/// Constant-time check that header `name` carries exactly `secret`.
pub fn header_matches(headers: &http::HeaderMap, name: &str, secret: &str) -> bool {
    use subtle::ConstantTimeEq;
    headers.get(name).is_some_and(|v| bool::from(v.as_bytes().ct_eq(secret.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw(toml_text: &str) -> Firewall {
        let cfg: FirewallConfig = toml::from_str(toml_text).unwrap();
        Firewall::new(&cfg).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn first_matching_rule_wins() {
        let f = fw(r#"acl = ["deny 10.9.0.0/16", "allow 10.0.0.0/8", "allow 127.0.0.1", "deny all"]"#);
        assert!(!f.allows(ip("10.9.1.1")));
        assert!(f.allows(ip("10.1.1.1")));
        assert!(f.allows(ip("127.0.0.1")));
        assert!(f.allows(ip("::ffff:127.0.0.1")), "IPv4-mapped form matches too");
        assert!(!f.allows(ip("127.0.0.2")));
        assert!(!f.allows(ip("2001:db8::1")), "`deny all` covers IPv6 clients");
        assert!(fw("").allows(ip("1.2.3.4")));
        assert!(fw("").is_open());
        assert_eq!(f.admit(ip("10.9.0.1")).unwrap_err(), Refusal::Denied);
    }

    #[test]
    fn connection_limits_release_on_drop() {
        let f = fw("max_connections = 3\nmax_connections_per_ip = 2");
        let a1 = f.admit(ip("1.1.1.1")).unwrap();
        let _a2 = f.admit(ip("1.1.1.1")).unwrap();
        assert_eq!(f.admit(ip("1.1.1.1")).unwrap_err(), Refusal::TooManyConnections);
        let _b1 = f.admit(ip("2.2.2.2")).unwrap();
        assert_eq!(f.admit(ip("3.3.3.3")).unwrap_err(), Refusal::ListenerFull);
        drop(a1);
        let _c = f.admit(ip("3.3.3.3")).unwrap();
        assert_eq!(f.per_ip.get(&ClientKey::of(ip("1.1.1.1"))).map(|n| *n), Some(1));
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        // Every address of one /64 is one client: a host that owns the /64
        // cannot get a fresh allowance by changing its interface identifier.
        let f = fw("max_connections_per_ip = 2\nrate_limit = { per_second = 1, burst = 2 }");
        let _a = f.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = f.admit(ip("2001:db8:1:2:ffff:ffff:ffff:fffe")).unwrap();
        assert_eq!(f.admit(ip("2001:db8:1:2:dead:beef::7")).unwrap_err(), Refusal::TooManyConnections);
        f.check_rate(ip("2001:db8:1:2::10")).unwrap();
        f.check_rate(ip("2001:db8:1:2::11")).unwrap();
        assert!(matches!(f.check_rate(ip("2001:db8:1:2::12")), Err(Refusal::RateLimited(_))));
        // The neighbouring /64 is another client.
        let _c = f.admit(ip("2001:db8:1:3::1")).unwrap();
        f.check_rate(ip("2001:db8:1:3::1")).unwrap();
        // IPv4, also in its IPv6-mapped form, stays keyed by the address.
        let _d = f.admit(ip("192.0.2.1")).unwrap();
        let _e = f.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(f.admit(ip("192.0.2.1")).unwrap_err(), Refusal::TooManyConnections);
        f.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(ClientKey::of(ip("2001:db8:1:2:3:4:5:6")), ClientKey::V6Net64(ip6("2001:db8:1:2::")));
    }

    #[test]
    fn rate_limit_is_per_client_with_retry_after() {
        let f = fw("rate_limit = { per_second = 1, burst = 3 }");
        for _ in 0..3 {
            f.check_rate(ip("1.1.1.1")).unwrap();
        }
        let r = f.check_rate(ip("1.1.1.1")).unwrap_err();
        assert_eq!(r.status(), 429);
        assert_eq!(r.retry_after(), Some(1));
        f.check_rate(ip("2.2.2.2")).unwrap();
    }

    #[test]
    fn client_ip_trusts_only_configured_proxies() {
        let f = fw(r#"trusted_proxies = ["127.0.0.0/8", "10.0.0.0/8"]"#);
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.5, 10.0.0.2".parse().unwrap());
        assert_eq!(f.client_ip(ip("127.0.0.1"), &h), ip("203.0.113.5"));
        assert_eq!(f.client_ip(ip("8.8.8.8"), &h), ip("8.8.8.8"), "untrusted peer: header ignored");
        assert_eq!(fw("").client_ip(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn bearer_secret_check() {
        let mut h = http::HeaderMap::new();
        assert!(!bearer_matches(&h, "s3cret"));
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(bearer_matches(&h, "s3cret"));
        assert!(!bearer_matches(&h, "s3cre"));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rules_and_addresses_never_panic(rule in "\\PC{0,60}", xff in "[0-9a-f.:, ]{0,80}") {
            let _ = bulwark_config::firewall::parse_rule(&rule);
            let cfg = bulwark_config::firewall::FirewallConfig {
                trusted_proxies: vec!["127.0.0.0/8".into()],
                ..Default::default()
            };
            let f = super::Firewall::new(&cfg).unwrap();
            let mut h = http::HeaderMap::new();
            if let Ok(v) = xff.parse() {
                h.insert("x-forwarded-for", v);
            }
            let _ = f.client_ip("127.0.0.1".parse().unwrap(), &h);
        }
    }
}
