//! The raw IP socket (protocol 112) advertisements travel on: multicast to
//! 224.0.0.18 on one interface, or unicast to configured peers.

use crate::link::Interface;
use crate::packet::{self, Advertisement};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use tokio::io::unix::AsyncFd;

/// Where advertisements go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Multicast,
    Unicast(Vec<Ipv4Addr>),
}

/// One virtual router's advertisement socket, bound to its interface.
pub struct AdvertSocket {
    socket: AsyncFd<Socket>,
    source: Ipv4Addr,
    destination: Destination,
}

impl AdvertSocket {
    /// Open the socket on `interface`, sending from `source`.
    pub fn open(interface: &Interface, source: Ipv4Addr, destination: Destination) -> io::Result<AdvertSocket> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(i32::from(packet::PROTOCOL))))?;
        socket.bind_device(Some(interface.name.as_bytes()))?;
        // RFC 5798 section 5.1.1.3: TTL 255 on every advertisement.
        socket.set_ttl(u32::from(packet::TTL))?;
        socket.set_multicast_ttl_v4(u32::from(packet::TTL))?;
        socket.set_multicast_loop_v4(false)?;
        // Internetwork control, as keepalived sends it.
        socket.set_tos(0xc0)?;
        if destination == Destination::Multicast {
            socket.set_multicast_if_v4(&source)?;
            socket.join_multicast_v4_n(&packet::MULTICAST_GROUP, &InterfaceIndexOrAddress::Index(interface.index))?;
        }
        socket.set_nonblocking(true)?;
        // SAFETY: the AsyncFd owns the socket, whose descriptor stays open
        // and the same until the AsyncFd is dropped.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)?;
        Ok(AdvertSocket { socket, source, destination })
    }

    /// The address advertisements are sent from.
    pub fn source(&self) -> Ipv4Addr {
        self.source
    }

    /// Whether advertisements from `from` are expected here: any sender on
    /// the link in multicast mode, only the configured peers in unicast.
    pub fn expects(&self, from: Ipv4Addr) -> bool {
        match &self.destination {
            Destination::Multicast => true,
            Destination::Unicast(peers) => peers.contains(&from),
        }
    }

    /// Send `ad` to the group or to every peer.
    pub fn send(&self, ad: &Advertisement) -> io::Result<()> {
        let to: Vec<Ipv4Addr> = match &self.destination {
            Destination::Multicast => vec![packet::MULTICAST_GROUP],
            Destination::Unicast(peers) => peers.clone(),
        };
        let mut first_error = None;
        for dst in to {
            let bytes = ad.encode(self.source, dst);
            let addr = SockAddr::from(SocketAddrV4::new(dst, 0));
            if let Err(e) = self.socket.get_ref().send_to(&bytes, &addr) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Receive one datagram (IP header included) into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.socket.readable().await?;
            match ready.try_io(|s| s.get_ref().read(buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}
