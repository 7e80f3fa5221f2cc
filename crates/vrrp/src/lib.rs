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
//! Must not touch: sockets, interface addresses, ARP, the lb's listeners.
//! The lb role owns the I/O around the router (raw IP protocol 112 socket,
//! netlink, gratuitous ARP) and decides the priority it advertises from the
//! health of its own proxy.
//!
//! Layout: a received datagram goes through [`packet::Advertisement::parse`]
//! (IP header checks: TTL 255, protocol 112, then version, type, length and
//! checksum); a valid one becomes [`router::Event::Advertisement`] for the
//! [`router::Router`] of its virtual router id, which returns
//! [`router::Action`]s (send an advertisement, take or release the
//! addresses) and the instant of its next timer.

pub mod packet;
pub mod router;
