//! Schema of the floating addresses an lb holds with VRRP version 3:
//! `[[vrrp]]` entries of the lb config.
//!
//! ```toml
//! [[vrrp]]
//! name = "www"                      # shown in status, metrics and events
//! interface = "eth0"
//! vrid = 51                         # the same on every lb of the group
//! priority = 150                    # 1-254; 255 = owner, master at once
//! advert_interval = "1s"            # 50ms to 40.95s, in steps of 10ms
//! preempt = true                    # a higher priority takes the address back
//! preempt_delay = "0s"              # ... but only this long after start
//! addresses = ["192.0.2.10/24"]
//! unicast_peers = []                # empty: multicast to 224.0.0.18
//! track_weight = 50                 # taken off the priority while this lb
//!                                   # cannot serve (no healthy server)
//! ```
use crate::util::yes;
use crate::{Validate, Validator};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The shortest advertisement interval accepted (keepalived allows less;
/// below 50 ms a busy host's scheduling delays alone cause false takeovers).
pub const MIN_ADVERT_INTERVAL: Duration = Duration::from_millis(50);
/// The longest: the 12-bit field of centiseconds.
pub const MAX_ADVERT_INTERVAL: Duration = Duration::from_millis(40_950);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpInstance {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub advert_interval: Duration,
    #[serde(default = "yes")]
    pub preempt: bool,
    #[serde(default, with = "humantime_serde")]
    pub preempt_delay: Duration,
    /// Virtual addresses with their prefix length (`10.0.0.100/24`).
    #[serde(with = "crate::address::ipv4_nets")]
    pub addresses: Vec<Ipv4Net>,
    /// Peers' addresses for unicast advertisements; empty = multicast.
    #[serde(default, with = "crate::address::ipv4s")]
    pub unicast_peers: Vec<Ipv4Addr>,
    /// This lb's own address on the interface, used as the advertisements'
    /// source; by default the interface's first IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::address::ipv4_option")]
    pub source: Option<Ipv4Addr>,
    /// Taken off `priority` while the proxy behind this lb cannot serve.
    #[serde(default = "default_track_weight")]
    pub track_weight: u8,
}

fn default_priority() -> u8 {
    100
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_track_weight() -> u8 {
    50
}

impl VrrpInstance {
    /// The floating addresses themselves, without their prefix lengths.
    pub fn virtual_addresses(&self) -> Vec<Ipv4Addr> {
        self.addresses.iter().map(|n| n.addr()).collect()
    }

    /// The advertisement interval in centiseconds (validated at load).
    pub fn interval_cs(&self) -> u16 {
        (self.advert_interval.as_millis() / 10) as u16
    }
}

/// Validate every `[[vrrp]]` entry of one lb config.
pub fn validate_all(instances: &[VrrpInstance], v: &mut Validator) {
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    let mut addresses = HashSet::new();
    v.scope("vrrp", |v| {
        for (i, r) in instances.iter().enumerate() {
            v.index(i, |v| {
                crate::util::check_name(v, "name", &r.name);
                if !names.insert(r.name.as_str()) {
                    v.error("name", format!("duplicate vrrp name `{}`", r.name));
                }
                if r.interface.is_empty() || r.interface.len() > 15 || r.interface.contains(['/', ' ']) {
                    v.error("interface", format!("`{}` is not an interface name", r.interface));
                }
                if !ids.insert((r.interface.as_str(), r.vrid)) {
                    v.error("vrid", format!("vrid {} is used twice on `{}`", r.vrid, r.interface));
                }
                r.validate(v);
                for a in &r.addresses {
                    if !addresses.insert(a.addr()) {
                        v.error("addresses", format!("{} is in two [[vrrp]] entries", a.addr()));
                    }
                }
            });
        }
    });
}

impl Validate for VrrpInstance {
    fn validate(&self, v: &mut Validator) {
        if self.vrid == 0 {
            v.error("vrid", "must be between 1 and 255");
        }
        if self.priority == 0 {
            v.error("priority", "must be between 1 and 255 (0 is sent only when a master stops)");
        }
        let iv = self.advert_interval;
        let whole_centiseconds = Duration::from_millis(iv.as_millis() as u64 / 10 * 10) == iv;
        if iv < MIN_ADVERT_INTERVAL || iv > MAX_ADVERT_INTERVAL || !whole_centiseconds {
            v.error("advert_interval", "must be between 50ms and 40.95s, in steps of 10ms");
        }
        if self.addresses.is_empty() {
            v.error("addresses", "at least one address is required");
        }
        if self.addresses.len() > 255 {
            v.error("addresses", "at most 255 addresses per virtual router");
        }
        for a in &self.addresses {
            if a.addr().is_unspecified() || a.addr().is_multicast() || a.addr().is_broadcast() {
                v.error("addresses", format!("`{a}` cannot be a floating address"));
            }
        }
        if self.track_weight >= self.priority && self.priority != 0 {
            v.error("track_weight", "must be less than priority (the lowered priority must stay at least 1)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[[vrrp]]` tables of an lb config, read as the lb reads them.
    #[derive(Deserialize)]
    struct Entries {
        vrrp: Vec<VrrpInstance>,
    }

    impl Validate for Entries {
        fn validate(&self, v: &mut Validator) {
            validate_all(&self.vrrp, v);
        }
    }

    fn check(text: &str) -> Result<VrrpInstance, String> {
        let text = format!("[[vrrp]]\n{text}");
        let mut e: Entries = crate::from_str(&text, "test").map_err(|e| e.to_string())?;
        Ok(e.vrrp.remove(0))
    }

    fn instance(extra: &str) -> Result<VrrpInstance, String> {
        check(&format!("name = \"www\"\ninterface = \"eth0\"\nvrid = 51\naddresses = [\"10.0.0.100/24\"]\n{extra}"))
    }

    #[test]
    fn defaults_are_keepalived_like() {
        let r = instance("").unwrap();
        assert_eq!(r.priority, 100);
        assert_eq!(r.advert_interval, Duration::from_secs(1));
        assert_eq!(r.interval_cs(), 100);
        assert!(r.preempt);
        assert!(r.unicast_peers.is_empty());
        assert_eq!(r.addresses, ["10.0.0.100/24".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(r.virtual_addresses(), [Ipv4Addr::new(10, 0, 0, 100)]);
    }

    #[test]
    fn errors_name_the_key() {
        for (extra, key) in [
            ("advert_interval = \"20ms\"", "advert_interval"),
            ("advert_interval = \"105ms\"", "advert_interval"),
            ("priority = 0", "priority"),
            ("unicast_peers = [\"10.0.0\"]", "unicast_peers"),
            ("track_weight = 100", "track_weight"),
            ("source = \"::1\"", "source"),
        ] {
            let err = instance(extra).unwrap_err();
            assert!(err.contains(&format!("test:6: vrrp[0].{key}")), "{extra}: {err}");
        }
        let err = check("name = \"w\"\ninterface = \"eth0\"\nvrid = 0\naddresses = [\"0.0.0.0/24\"]").unwrap_err();
        assert!(err.contains("vrrp[0].vrid") && err.contains("vrrp[0].addresses"), "{err}");
        // An address without its prefix is not read at all.
        let err = check("name = \"w\"\ninterface = \"eth0\"\nvrid = 1\naddresses = [\"10.0.0.100\"]").unwrap_err();
        assert_eq!(
            err,
            "test:5: vrrp[0].addresses[0]: `10.0.0.100` is not an IPv4 address with a prefix (192.0.2.10/24)"
        );
    }
}
