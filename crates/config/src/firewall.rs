//! Schema of the firewall every listener can carry (`[frontend.firewall]`
//! on the lb, `[firewall]` on web, app and db).
//!
//! ```toml
//! [frontend.firewall]
//! acl = ["deny 10.9.0.0/16", "allow 10.0.0.0/8", "allow 127.0.0.1", "deny all"]
//! rate_limit = { per_second = 100, burst = 200 }
//! max_connections = 10000
//! max_connections_per_ip = 200
//! trusted_proxies = ["127.0.0.1/32"]
//! ```
use crate::Validator;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Rules `allow CIDR`, `deny CIDR`, `allow all`, `deny all`; the first
    /// rule that matches the client decides; no match = allowed.
    #[serde(default)]
    pub acl: Vec<String>,
    /// Per client (an IPv4 address or an IPv6 /64), GCRA: a steady
    /// `per_second` with bursts of `burst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Concurrent connections in total on this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Concurrent connections from one client (an IPv4 address or an
    /// IPv6 /64: every address of a /64 counts as the same client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<u32>,
    /// Peers whose `X-Forwarded-For` is believed: the client is the
    /// right-most address that is not a trusted proxy. Empty = the socket
    /// peer is the client (the lb facing the internet).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// Why a firewall rule or address does not parse. Each message names the
/// text at fault; the config is wrong, so retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("`{0}`: a rule starts with `allow` or `deny`")]
    NoAction(String),
    #[error("`{0}`: missing address (CIDR, IP or `all`)")]
    NoAddress(String),
    #[error("`{0}`: one address per rule")]
    TwoAddresses(String),
    #[error("`{rule}`: {source}")]
    Address {
        rule: String,
        #[source]
        source: Box<RuleError>,
    },
    #[error("`{0}` is not a CIDR or IP address")]
    NotAnAddress(String),
}

/// Parse `"allow 10.0.0.0/8"`, `"deny 192.0.2.7"`, `"deny all"`.
pub fn parse_rule(rule: &str) -> Result<(Action, IpNet), RuleError> {
    let mut parts = rule.split_whitespace();
    let action = match parts.next() {
        Some("allow") => Action::Allow,
        Some("deny") => Action::Deny,
        _ => return Err(RuleError::NoAction(rule.to_string())),
    };
    let target = parts.next().ok_or_else(|| RuleError::NoAddress(rule.to_string()))?;
    if parts.next().is_some() {
        return Err(RuleError::TwoAddresses(rule.to_string()));
    }
    let net = parse_net(target).map_err(|e| RuleError::Address { rule: rule.to_string(), source: Box::new(e) })?;
    Ok((action, net))
}

/// A CIDR, a bare IP (a /32 or /128), or `all` (0.0.0.0/0; IPv6 clients
/// are matched by their IPv4-mapped form too).
pub fn parse_net(s: &str) -> Result<IpNet, RuleError> {
    if s == "all" {
        return Ok("0.0.0.0/0".parse().unwrap());
    }
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| RuleError::NotAnAddress(s.to_string()))
}

impl FirewallConfig {
    pub fn validate_in(&self, v: &mut Validator) {
        for (i, r) in self.acl.iter().enumerate() {
            if let Err(e) = parse_rule(r) {
                v.scope("acl", |v| v.index(i, |v| v.error("", e.to_string())));
            }
        }
        for (i, r) in self.trusted_proxies.iter().enumerate() {
            if let Err(e) = parse_net(r) {
                v.scope("trusted_proxies", |v| v.index(i, |v| v.error("", e.to_string())));
            }
        }
        if let Some(r) = &self.rate_limit {
            v.scope("rate_limit", |v| {
                if r.per_second == 0 {
                    v.error("per_second", "must be at least 1");
                }
                if r.burst == Some(0) {
                    v.error("burst", "must be at least 1");
                }
            });
        }
        if self.max_connections == Some(0) {
            v.error("max_connections", "must be at least 1");
        }
        if self.max_connections_per_ip == Some(0) {
            v.error("max_connections_per_ip", "must be at least 1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules() {
        assert_eq!(parse_rule("allow 10.0.0.0/8").unwrap().0, Action::Allow);
        assert_eq!(parse_rule("deny 192.0.2.7").unwrap().1.prefix_len(), 32);
        assert_eq!(parse_rule("deny all").unwrap().1.prefix_len(), 0);
        assert!(parse_rule("permit 1.2.3.4").is_err());
        assert!(parse_rule("allow 1.2.3.4/40").is_err());
        assert!(parse_rule("allow").is_err());
    }
}
