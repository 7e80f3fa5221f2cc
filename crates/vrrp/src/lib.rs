//! VRRP version 3 (RFC 5798) for IPv4: the floating address in front of the
//! load balancer hosts, so that losing an lb's machine does not take the
//! site down.
//!
//! Owns: the advertisement format ([`packet`]: a checked parser and an
//! encoder whose checksum covers the IPv4 pseudo-header, byte-compatible
//! with keepalived) and the protocol's state machine ([`router`]: Initialize,
//! Backup and Master with the RFC's timers, skew time, preemption and
//! priority 0 on shutdown). Both are free of I/O: the router is driven by
//! events and the current time, and answers with the actions to take, so
//! every transition is tested without sockets or clocks.
//!
//! Around them, the I/O of one floating address group ([`instance::run`]):
//! the raw IP protocol 112 socket ([`socket`]), the interface and its
//! addresses through rtnetlink ([`link`]), gratuitous ARP ([`arp`]).
//!
//! Must not touch: the lb's listeners and health checks. The lb role tells
//! an instance whether its proxy can serve (a `watch` of bool), and reads
//! [`instance::InstanceStatus`] for status pages and metrics.
//!
//! Layout: a received datagram goes through [`packet::Advertisement::parse`]
//! (IP header checks: TTL 255, protocol 112, then version, type, length and
//! checksum); a valid one becomes [`router::Event::Advertisement`] for the
//! [`router::Router`] of its virtual router id, which returns
//! [`router::Action`]s (send an advertisement, take or release the
//! addresses) and the instant of its next timer.

pub mod arp;
pub mod instance;
pub mod link;
pub mod packet;
pub mod router;
pub mod socket;

/// What keeps a floating address group from working.
#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    #[error("netlink: {0}")]
    Netlink(std::io::Error),
    #[error("interface {name}: {reason}")]
    Interface { name: String, reason: String },
    #[error("{action} {address}: {reason}")]
    Address { address: ipnet::Ipv4Net, action: &'static str, reason: String },
    #[error("{action}: {source}")]
    Socket { action: &'static str, source: std::io::Error },
}
