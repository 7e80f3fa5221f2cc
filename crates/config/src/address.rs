//! Network addresses as configs give them, parsed once at load.
//!
//! A listener binds an IP literal with a port: a `SocketAddr`, read with
//! [`ip_port`] (or [`ip_ports`] for a list) so that a bad one is reported as
//! `file:line: key: ...` like every other config problem. An address a
//! role dials may name a host instead (`db3.internal:7003`): a [`HostPort`],
//! checked at load and resolved through [`HostPort::resolve`] only.
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// What is wrong with an address in a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("`{0}` is not a valid host:port (e.g. 127.0.0.1:8080, db3.internal:7003)")]
    HostPort(String),
    #[error("`{0}` is not an ip:port listen address (e.g. 127.0.0.1:8080, [::]:443)")]
    IpPort(String),
    #[error("`{0}` is not an IPv4 address with a prefix (192.0.2.10/24)")]
    Ipv4Net(String),
    #[error("`{0}` is not an IPv4 address")]
    Ipv4(String),
    #[error("`{0}` is not a CIDR, an address or `all`")]
    Networks(String),
}

/// `host:port` of a server a role connects to: an IP literal (`10.0.0.5:80`,
/// `[::1]:80`) or a DNS name (`app2:9002`), with a port (0 allowed).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The text as written (what logs, metrics and derived configs show).
    text: String,
    /// The address itself when the host is an IP literal.
    ip: Option<SocketAddr>,
    port: u16,
}

impl HostPort {
    /// The address as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host part without the port (and without brackets around IPv6).
    pub fn host(&self) -> &str {
        let host = self.text.rsplit_once(':').map_or(self.text.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The address when the host is an IP literal: no lookup needed.
    pub fn ip(&self) -> Option<SocketAddr> {
        self.ip
    }

    /// The socket address to connect to: the IP literal itself, or the
    /// first address the system resolver gives for the name.
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        if let Some(a) = self.ip {
            return Ok(a);
        }
        (self.host(), self.port).to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("{}: the name has no address", self.text))
        })
    }
}

impl FromStr for HostPort {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<HostPort, AddressError> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(HostPort { text: s.to_string(), ip: Some(a), port: a.port() });
        }
        let bad = || AddressError::HostPort(s.to_string());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        let name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if host.is_empty() || !host.chars().all(name) {
            return Err(bad());
        }
        Ok(HostPort { text: s.to_string(), ip: None, port })
    }
}

impl From<SocketAddr> for HostPort {
    fn from(a: SocketAddr) -> HostPort {
        HostPort { text: a.to_string(), ip: Some(a), port: a.port() }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl PartialEq<str> for HostPort {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for HostPort {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HostPort, D::Error> {
        d.deserialize_str(Parsed("a host:port string", |s: &str| s.parse::<HostPort>()))
    }
}

/// A visitor that parses the string it is given with its function. The
/// error is raised while the deserializer still holds the value, so it
/// carries the value's position (and so its line and key).
struct Parsed<F>(&'static str, F);

impl<'de, T, F: FnOnce(&str) -> Result<T, AddressError>> serde::de::Visitor<'de> for Parsed<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
        (self.1)(s).map_err(E::custom)
    }
}

/// A source or destination entry of a firewall rule as written: a CIDR
/// (`192.0.2.0/24`), an address (a /32 or /128) or `all` (every IPv4 and
/// IPv6 address), with the networks it stands for.
#[derive(Clone, PartialEq, Eq)]
pub struct Networks {
    text: String,
    nets: Vec<IpNet>,
}

impl Networks {
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Networks {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Networks, AddressError> {
        let nets = if s == "all" {
            let any = |a: IpAddr| IpNet::new(a, 0).expect("a prefix of 0 is valid");
            vec![any(IpAddr::from([0u8; 4])), any(IpAddr::from([0u16; 8]))]
        } else if let Ok(n) = s.parse::<IpNet>() {
            vec![n]
        } else {
            vec![IpNet::from(s.parse::<IpAddr>().map_err(|_| AddressError::Networks(s.to_string()))?)]
        };
        Ok(Networks { text: s.to_string(), nets })
    }
}

impl fmt::Debug for Networks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl Serialize for Networks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Networks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Networks, D::Error> {
        d.deserialize_str(Parsed("a CIDR, an address or `all`", |s: &str| s.parse::<Networks>()))
    }
}

/// Parse a listen address: an IP literal and a port (0 = any free port).
pub fn parse_ip_port(s: &str) -> Result<SocketAddr, AddressError> {
    s.parse().map_err(|_| AddressError::IpPort(s.to_string()))
}

/// Parse a floating address: IPv4 with its prefix length.
pub fn parse_ipv4_net(s: &str) -> Result<Ipv4Net, AddressError> {
    s.parse().map_err(|_| AddressError::Ipv4Net(s.to_string()))
}

/// Parse an IPv4 address.
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, AddressError> {
    s.parse().map_err(|_| AddressError::Ipv4(s.to_string()))
}

/// A list of strings, each read with `parse` (its error names the element).
fn parse_list<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, AddressError>,
) -> Result<Vec<T>, D::Error> {
    struct Seed<T>(&'static str, fn(&str) -> Result<T, AddressError>);
    impl<'de, T> serde::de::DeserializeSeed<'de> for Seed<T> {
        type Value = T;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
            d.deserialize_str(Parsed(self.0, self.1))
        }
    }
    struct List<T>(&'static str, fn(&str) -> Result<T, AddressError>);
    impl<'de, T> serde::de::Visitor<'de> for List<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of {}", self.0)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(x) = seq.next_element_seed(Seed(self.0, self.1))? {
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(List(expecting, parse))
}

/// Serialize a list as the strings its elements display as.
fn display_list<S: Serializer, T: fmt::Display>(list: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(|x| x.to_string()))
}

/// `#[serde(with = "crate::address::ip_port")]` on a listen address.
pub mod ip_port {
    use serde::{Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        d.deserialize_str(super::Parsed("an ip:port string", super::parse_ip_port))
    }
}

/// `#[serde(with = "crate::address::ip_ports")]` on a list of listen
/// addresses.
pub mod ip_ports {
    use serde::{Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(list: &[SocketAddr], s: S) -> Result<S::Ok, S::Error> {
        super::display_list(list, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
        super::parse_list(d, "ip:port strings", super::parse_ip_port)
    }
}

/// `#[serde(with = "crate::address::ipv4_nets")]` on a list of floating
/// addresses (`192.0.2.10/24`).
pub mod ipv4_nets {
    use ipnet::Ipv4Net;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Ipv4Net], s: S) -> Result<S::Ok, S::Error> {
        super::display_list(list, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ipv4Net>, D::Error> {
        super::parse_list(d, "IPv4 addresses with a prefix", super::parse_ipv4_net)
    }
}

/// `#[serde(with = "crate::address::ipv4s")]` on a list of IPv4 addresses.
pub mod ipv4s {
    use serde::{Deserializer, Serializer};
    use std::net::Ipv4Addr;

    pub fn serialize<S: Serializer>(list: &[Ipv4Addr], s: S) -> Result<S::Ok, S::Error> {
        super::display_list(list, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ipv4Addr>, D::Error> {
        super::parse_list(d, "IPv4 addresses", super::parse_ipv4)
    }
}

/// `#[serde(default, with = "crate::address::ipv4_option")]` on an
/// optional IPv4 address.
pub mod ipv4_option {
    use serde::{Deserializer, Serializer};
    use std::net::Ipv4Addr;

    pub fn serialize<S: Serializer>(a: &Option<Ipv4Addr>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.collect_str(a),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Addr>, D::Error> {
        d.deserialize_str(super::Parsed("an IPv4 address", super::parse_ipv4)).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_port_is_an_ip_literal_or_a_name() {
        let ip: HostPort = "10.0.0.5:80".parse().unwrap();
        assert_eq!((ip.ip(), ip.port(), ip.host()), (Some("10.0.0.5:80".parse().unwrap()), 80, "10.0.0.5"));
        let v6: HostPort = "[::1]:8080".parse().unwrap();
        assert_eq!((v6.host(), v6.port(), v6.as_str()), ("::1", 8080, "[::1]:8080"));
        let name: HostPort = "db3.internal:7003".parse().unwrap();
        assert_eq!((name.ip(), name.host(), name.port()), (None, "db3.internal", 7003));
        assert_eq!(name, "db3.internal:7003");
        assert_eq!(name.to_string(), "db3.internal:7003");
        assert_eq!(format!("{name:?}"), "\"db3.internal:7003\"");
    }

    #[test]
    fn a_bad_host_port_says_what_is_expected() {
        for bad in ["", "nope", "host:", ":80", "a b:80", "host:99999", "host:-1", "[::1]"] {
            let e = bad.parse::<HostPort>().unwrap_err();
            assert_eq!(e, AddressError::HostPort(bad.to_string()));
            assert!(e.to_string().starts_with(&format!("`{bad}` is not a valid host:port")), "{e}");
        }
    }

    #[test]
    fn an_ip_literal_resolves_without_a_lookup_and_localhost_with_one() {
        let ip: HostPort = "127.0.0.1:9".parse().unwrap();
        assert_eq!(ip.resolve().unwrap(), "127.0.0.1:9".parse::<SocketAddr>().unwrap());
        let name: HostPort = "localhost:9".parse().unwrap();
        let a = name.resolve().unwrap();
        assert!(a.ip().is_loopback() && a.port() == 9, "{a}");
    }

    #[test]
    fn a_firewall_entry_is_a_cidr_an_address_or_all() {
        let nets = |s: &str| s.parse::<Networks>().map(|n| n.nets().iter().map(|n| n.to_string()).collect::<Vec<_>>());
        assert_eq!(nets("all").unwrap(), ["0.0.0.0/0", "::/0"]);
        assert_eq!(nets("192.0.2.0/24").unwrap(), ["192.0.2.0/24"]);
        assert_eq!(nets("2001:db8::1").unwrap(), ["2001:db8::1/128"]);
        assert_eq!(nets("10.0.0.0/33").unwrap_err().to_string(), "`10.0.0.0/33` is not a CIDR, an address or `all`");
        assert_eq!(format!("{:?}", "all".parse::<Networks>().unwrap()), "\"all\"");
    }

    #[test]
    fn a_listen_address_must_be_an_ip_literal() {
        assert_eq!(parse_ip_port("[::]:443").unwrap(), "[::]:443".parse::<SocketAddr>().unwrap());
        let e = parse_ip_port("localhost:80").unwrap_err();
        assert_eq!(e.to_string(), "`localhost:80` is not an ip:port listen address (e.g. 127.0.0.1:8080, [::]:443)");
    }
}
