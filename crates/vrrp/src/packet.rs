//! The VRRPv3 advertisement for IPv4 (RFC 5798 section 5): a checked
//! parser for what a raw IP socket receives, and the encoder for what this
//! router sends.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! |                       IPv4 Address(es)                        |
//! ```
//!
//! The checksum covers the IPv4 pseudo-header (source, destination, zero,
//! protocol 112, VRRP length) and the whole VRRP message, as RFC 5798 section
//! 5.2.8 says and keepalived does by default. Every check of section 7.1 that
//! needs only the datagram is made here; a datagram that fails one is an
//! error to count, never a panic.

use std::net::Ipv4Addr;

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// The IPv4 multicast group advertisements are sent to.
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The only TTL an advertisement may arrive with: it never crossed a router.
pub const TTL: u8 = 255;
/// The largest advertisement interval the 12-bit field holds, in centiseconds.
pub const MAX_INTERVAL_CS: u16 = 0x0fff;

const VERSION: u8 = 3;
const TYPE_ADVERTISEMENT: u8 = 1;
const HEADER_LEN: usize = 8;
const IPV4_MIN_HEADER: usize = 20;

/// One advertisement: what a master says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// Virtual router id, 1 to 255.
    pub vrid: u8,
    /// 255: the owner of the addresses; 1-254: a backup; 0: the master stops.
    pub priority: u8,
    /// Interval between the sender's advertisements, in centiseconds (1-4095).
    pub interval_cs: u16,
    /// The virtual addresses (at least one).
    pub addresses: Vec<Ipv4Addr>,
}

/// An advertisement as received: the IP header's fields the protocol uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The sender's primary address (used to break priority ties).
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub advertisement: Advertisement,
}

/// Why a received datagram is not a valid advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("shorter than its headers")]
    Truncated,
    #[error("not an IPv4 packet")]
    NotIpv4,
    #[error("IP protocol {0}, not VRRP")]
    WrongProtocol(u8),
    #[error("TTL {0} instead of 255: sent from beyond this link")]
    WrongTtl(u8),
    #[error("VRRP version {0}; only version 3 is spoken")]
    WrongVersion(u8),
    #[error("VRRP type {0} is not an advertisement")]
    WrongType(u8),
    #[error("virtual router id 0")]
    ZeroVrid,
    #[error("advertisement interval 0")]
    ZeroInterval,
    #[error("no virtual address")]
    NoAddress,
    #[error("length does not match the address count")]
    BadLength,
    #[error("bad checksum")]
    BadChecksum,
}

impl Advertisement {
    /// The VRRP message (no IP header: the kernel adds it) sent from
    /// `source` to `destination`, with its checksum.
    ///
    /// # Panics
    /// If the advertisement could not be parsed back: more than 255
    /// addresses, none, a zero vrid or an interval outside 1..=4095. Those
    /// come from configuration, which is validated before a router starts.
    pub fn encode(&self, source: Ipv4Addr, destination: Ipv4Addr) -> Vec<u8> {
        assert!(self.vrid != 0 && !self.addresses.is_empty() && self.addresses.len() <= 255);
        assert!((1..=MAX_INTERVAL_CS).contains(&self.interval_cs));
        let mut out = Vec::with_capacity(HEADER_LEN + 4 * self.addresses.len());
        out.push((VERSION << 4) | TYPE_ADVERTISEMENT);
        out.push(self.vrid);
        out.push(self.priority);
        out.push(self.addresses.len() as u8);
        out.extend_from_slice(&self.interval_cs.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        for a in &self.addresses {
            out.extend_from_slice(&a.octets());
        }
        let sum = checksum(source, destination, &out);
        out[6..8].copy_from_slice(&sum.to_be_bytes());
        out
    }

    /// Parse a VRRP message (no IP header) that came from `source` to
    /// `destination`.
    pub fn parse(message: &[u8], source: Ipv4Addr, destination: Ipv4Addr) -> Result<Advertisement, PacketError> {
        if message.len() < HEADER_LEN {
            return Err(PacketError::Truncated);
        }
        let version = message[0] >> 4;
        if version != VERSION {
            return Err(PacketError::WrongVersion(version));
        }
        let kind = message[0] & 0x0f;
        if kind != TYPE_ADVERTISEMENT {
            return Err(PacketError::WrongType(kind));
        }
        let count = message[3] as usize;
        if message.len() != HEADER_LEN + 4 * count {
            return Err(PacketError::BadLength);
        }
        if checksum(source, destination, message) != 0 {
            return Err(PacketError::BadChecksum);
        }
        let vrid = message[1];
        if vrid == 0 {
            return Err(PacketError::ZeroVrid);
        }
        if count == 0 {
            return Err(PacketError::NoAddress);
        }
        let interval_cs = u16::from_be_bytes([message[4], message[5]]) & MAX_INTERVAL_CS;
        if interval_cs == 0 {
            return Err(PacketError::ZeroInterval);
        }
        let addresses = message[HEADER_LEN..].chunks_exact(4).map(|o| Ipv4Addr::new(o[0], o[1], o[2], o[3])).collect();
        Ok(Advertisement { vrid, priority: message[2], interval_cs, addresses })
    }
}

impl Received {
    /// Parse what a raw IPv4 socket of protocol 112 receives: the IP header
    /// (checked: version 4, protocol 112, TTL 255, lengths) and the VRRP
    /// message after it.
    pub fn parse(datagram: &[u8]) -> Result<Received, PacketError> {
        if datagram.len() < IPV4_MIN_HEADER {
            return Err(PacketError::Truncated);
        }
        if datagram[0] >> 4 != 4 {
            return Err(PacketError::NotIpv4);
        }
        let header_len = usize::from(datagram[0] & 0x0f) * 4;
        if header_len < IPV4_MIN_HEADER || datagram.len() < header_len {
            return Err(PacketError::Truncated);
        }
        // Linux hands raw sockets the total length as sent; never trust it
        // beyond what arrived.
        let total = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
        if total < header_len || total > datagram.len() {
            return Err(PacketError::BadLength);
        }
        if datagram[9] != PROTOCOL {
            return Err(PacketError::WrongProtocol(datagram[9]));
        }
        if datagram[8] != TTL {
            return Err(PacketError::WrongTtl(datagram[8]));
        }
        let source = Ipv4Addr::new(datagram[12], datagram[13], datagram[14], datagram[15]);
        let destination = Ipv4Addr::new(datagram[16], datagram[17], datagram[18], datagram[19]);
        let advertisement = Advertisement::parse(&datagram[header_len..total], source, destination)?;
        Ok(Received { source, destination, advertisement })
    }
}

/// The Internet checksum of the IPv4 pseudo-header and `message`: the value
/// to store (with the checksum field zero), or 0 when checking a message
/// whose field is filled in.
fn checksum(source: Ipv4Addr, destination: Ipv4Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        let mut words = bytes.chunks_exact(2);
        for w in &mut words {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u32::from(*last) << 8;
        }
    };
    add(&source.octets());
    add(&destination.octets());
    add(&[0, PROTOCOL]);
    add(&(message.len() as u16).to_be_bytes());
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn ad() -> Advertisement {
        Advertisement { vrid: 51, priority: 100, interval_cs: 100, addresses: vec![Ipv4Addr::new(10, 0, 0, 100)] }
    }

    /// An IPv4 header as the kernel writes it in front of `message`.
    fn ip(ttl: u8, proto: u8, message: &[u8]) -> Vec<u8> {
        let total = (20 + message.len()) as u16;
        let mut h = vec![0x45, 0xc0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0, ttl, proto, 0, 0]);
        h.extend_from_slice(&SRC.octets());
        h.extend_from_slice(&MULTICAST_GROUP.octets());
        h.extend_from_slice(message);
        h
    }

    #[test]
    fn an_advertisement_matches_the_bytes_keepalived_sends() {
        // Captured from keepalived 2.2.7 (vrid 51, priority 100, version 3,
        // advert_int 1, 10.0.0.100) on a veth pair with tcpdump. From 10.0.0.1 to
        // 224.0.0.18: checksum computed by hand over the pseudo-header
        // (0x0a00+0x0001+0xe000+0x0012+0x0070+0x000c) and the message
        // (0x3133+0x6401+0x0064+0x0a00+0x0064) = 0x1_8a8b -> 0x8a8c -> !0x7573.
        let bytes = ad().encode(SRC, MULTICAST_GROUP);
        assert_eq!(bytes, [0x31, 51, 100, 1, 0x00, 0x64, 0x75, 0x73, 10, 0, 0, 100]);
        assert_eq!(Advertisement::parse(&bytes, SRC, MULTICAST_GROUP), Ok(ad()));
    }

    #[test]
    fn a_datagram_from_a_raw_socket_is_checked_and_parsed() {
        let msg = ad().encode(SRC, MULTICAST_GROUP);
        let got = Received::parse(&ip(255, PROTOCOL, &msg)).unwrap();
        assert_eq!(got.source, SRC);
        assert_eq!(got.destination, MULTICAST_GROUP);
        assert_eq!(got.advertisement, ad());
        assert_eq!(Received::parse(&ip(254, PROTOCOL, &msg)), Err(PacketError::WrongTtl(254)));
        assert_eq!(Received::parse(&ip(255, 17, &msg)), Err(PacketError::WrongProtocol(17)));
        assert_eq!(Received::parse(&ip(255, PROTOCOL, &msg)[..25]), Err(PacketError::BadLength));
    }

    #[test]
    fn what_rfc_5798_forbids_is_refused() {
        let good = ad().encode(SRC, MULTICAST_GROUP);
        let parse = |b: &[u8]| Advertisement::parse(b, SRC, MULTICAST_GROUP);
        let mut v2 = good.clone();
        v2[0] = 0x21;
        assert_eq!(parse(&v2), Err(PacketError::WrongVersion(2)));
        let mut t2 = good.clone();
        t2[0] = 0x32;
        assert_eq!(parse(&t2), Err(PacketError::WrongType(2)));
        let mut flipped = good.clone();
        flipped[11] ^= 1;
        assert_eq!(parse(&flipped), Err(PacketError::BadChecksum));
        // The checksum covers the pseudo-header: another sender fails it.
        assert_eq!(
            Advertisement::parse(&good, Ipv4Addr::new(10, 0, 0, 2), MULTICAST_GROUP),
            Err(PacketError::BadChecksum)
        );
        assert_eq!(parse(&good[..11]), Err(PacketError::BadLength));
        assert_eq!(parse(&good[..7]), Err(PacketError::Truncated));
        let with_checksum = |mut m: Vec<u8>| {
            m[6] = 0;
            m[7] = 0;
            let sum = checksum(SRC, MULTICAST_GROUP, &m);
            m[6..8].copy_from_slice(&sum.to_be_bytes());
            m
        };
        assert_eq!(parse(&with_checksum(vec![0x31, 0, 100, 1, 0, 100, 0, 0, 10, 0, 0, 1])), Err(PacketError::ZeroVrid));
        assert_eq!(
            parse(&with_checksum(vec![0x31, 1, 100, 1, 0xf0, 0, 0, 0, 10, 0, 0, 1])),
            Err(PacketError::ZeroInterval)
        );
        assert_eq!(parse(&with_checksum(vec![0x31, 1, 100, 0, 0, 100, 0, 0])), Err(PacketError::NoAddress));
    }

    proptest! {
        #[test]
        fn no_datagram_panics_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Received::parse(&bytes);
            let _ = Advertisement::parse(&bytes, SRC, MULTICAST_GROUP);
        }

        #[test]
        fn every_advertisement_survives_encoding(
            vrid in 1u8..,
            priority in any::<u8>(),
            interval_cs in 1..=MAX_INTERVAL_CS,
            addrs in proptest::collection::vec(any::<u32>(), 1..20),
        ) {
            let ad = Advertisement { vrid, priority, interval_cs, addresses: addrs.into_iter().map(Ipv4Addr::from).collect() };
            let msg = ad.encode(SRC, MULTICAST_GROUP);
            prop_assert_eq!(Received::parse(&ip(255, PROTOCOL, &msg)).map(|r| r.advertisement), Ok(ad));
        }

        #[test]
        fn any_flipped_bit_is_refused(bit in 0usize..96) {
            let mut msg = ad().encode(SRC, MULTICAST_GROUP);
            msg[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Advertisement::parse(&msg, SRC, MULTICAST_GROUP).is_err());
        }
    }
}
