//! Gratuitous ARP: tell the link that a floating address now lives at this
//! host's hardware address, so switches and neighbours stop sending its
//! traffic to the old master.
//!
//! Written by hand on an `AF_PACKET` socket: the frame is 42 fixed bytes,
//! and the crates that build link-layer frames (pnet and the like) would
//! bring a packet library for one `sendto`.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// The Ethernet frame of a gratuitous ARP request for `address` from `mac`:
/// sender and target protocol address both `address` (RFC 5227 section 3).
pub fn frame(mac: [u8; 6], address: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // Ethernet, IPv4, 6-byte and 4-byte addresses, request.
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&address.octets());
    // Target hardware address: unknown (zeros).
    f[38..42].copy_from_slice(&address.octets());
    f
}

/// Broadcast one gratuitous ARP for `address` on interface `index`.
pub fn announce(index: u32, mac: [u8; 6], address: Ipv4Addr) -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd =
        unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(ETH_P_ARP.to_be())) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&BROADCAST);
    let f = frame(mac, address);
    // SAFETY: the buffer and address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            f.as_ptr().cast(),
            f.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_announces_the_address_as_its_own() {
        let mac = [2, 0, 0, 0, 0, 7];
        let f = frame(mac, Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(&f[..14], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 7, 0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..32], &[2, 0, 0, 0, 0, 7, 10, 0, 0, 100]);
        assert_eq!(&f[32..42], &[0, 0, 0, 0, 0, 0, 10, 0, 0, 100]);
    }
}
