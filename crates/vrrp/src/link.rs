//! The interface the floating addresses live on, through rtnetlink: find
//! it (index, hardware address, own IPv4 addresses), add and remove the
//! virtual addresses.

use crate::VrrpError;
use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use std::net::{IpAddr, Ipv4Addr};

/// One network interface as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    /// Ethernet address (all zeros on interfaces without one).
    pub mac: [u8; 6],
    /// Its IPv4 addresses, in the kernel's order (primary first).
    pub addresses: Vec<Ipv4Addr>,
}

/// A netlink route socket, served by a task on the current runtime.
#[derive(Clone)]
pub struct Link {
    handle: rtnetlink::Handle,
}

const EEXIST: i32 = libc::EEXIST;
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;

fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

impl Link {
    /// Open the netlink socket; its connection runs as a tokio task until
    /// every handle is dropped.
    pub fn open() -> Result<Link, VrrpError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(VrrpError::Netlink)?;
        tokio::spawn(connection);
        Ok(Link { handle })
    }

    /// Look up `name`.
    pub async fn interface(&self, name: &str) -> Result<Interface, VrrpError> {
        let netlink = |e: rtnetlink::Error| VrrpError::Interface { name: name.to_string(), reason: e.to_string() };
        let link =
            self.handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_next()
                .await
                .map_err(netlink)?
                .ok_or_else(|| VrrpError::Interface { name: name.to_string(), reason: "no such interface".into() })?;
        let index = link.header.index;
        let mut mac = [0u8; 6];
        for a in &link.attributes {
            if let LinkAttribute::Address(bytes) = a {
                if bytes.len() == 6 {
                    mac.copy_from_slice(bytes);
                }
            }
        }
        let mut addresses = Vec::new();
        let mut found = self.handle.address().get().set_link_index_filter(index).execute();
        while let Some(msg) = found.try_next().await.map_err(netlink)? {
            for a in &msg.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = a {
                    addresses.push(*ip);
                }
            }
        }
        Ok(Interface { name: name.to_string(), index, mac, addresses })
    }

    /// Add `net` to interface `index`; already present is fine.
    pub async fn add(&self, index: u32, net: Ipv4Net) -> Result<(), VrrpError> {
        match self.handle.address().add(index, IpAddr::V4(net.addr()), net.prefix_len()).execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(EEXIST) => Ok(()),
            Err(e) => Err(VrrpError::Address { address: net, action: "adding", reason: e.to_string() }),
        }
    }

    /// Remove `net` from interface `index`; already absent is fine.
    pub async fn remove(&self, index: u32, net: Ipv4Net) -> Result<(), VrrpError> {
        let failed =
            |e: rtnetlink::Error| VrrpError::Address { address: net, action: "removing", reason: e.to_string() };
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(net.addr()))
            .set_prefix_length_filter(net.prefix_len())
            .execute();
        while let Some(msg) = found.try_next().await.map_err(failed)? {
            match self.handle.address().del(msg).execute().await {
                Ok(()) => {}
                Err(e) if netlink_errno(&e) == Some(EADDRNOTAVAIL) => {}
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(())
    }
}
