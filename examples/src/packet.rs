//! The kernel baseline for NIC transmit: an AF_PACKET socket on the kernel's
//! driver, frames handed over in batches with sendmmsg — all through nix's
//! safe socket API (the interface's link-layer address comes from
//! getifaddrs, so no `sockaddr_ll` is built by hand).

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::ifaddrs::getifaddrs;
use nix::sys::socket::{
    bind, sendmmsg, socket, AddressFamily, LinkAddr, MsgFlags, MultiHeaders, SockFlag,
    SockProtocol, SockType,
};

/// A raw packet socket bound to one interface, sending batches of frames.
pub struct PacketSocket {
    fd: OwnedFd,
    /// Message headers for one sendmmsg of up to `batch` frames, allocated
    /// once. No addresses: the socket is bound, which implies the interface.
    headers: MultiHeaders<()>,
    batch: usize,
}

impl PacketSocket {
    /// Opens a socket for every protocol and binds it to interface `ifindex`,
    /// for batches of up to `batch` frames.
    pub fn bind(ifindex: u32, batch: usize) -> io::Result<PacketSocket> {
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )?;
        bind(fd.as_raw_fd(), &link_address(ifindex)?)?;
        Ok(PacketSocket {
            fd,
            headers: MultiHeaders::preallocate(batch, None),
            batch,
        })
    }

    /// Sends `count` (at most the batch size) copies of `frame` with one
    /// sendmmsg; returns how many the kernel took.
    pub fn send_batch(&mut self, frame: &[u8], count: usize) -> io::Result<usize> {
        let count = count.min(self.batch);
        let iov = [IoSlice::new(frame)];
        let addrs = vec![None::<()>; count]; // zero-sized: no allocation
        let sent = sendmmsg(
            self.fd.as_raw_fd(),
            &mut self.headers,
            std::iter::repeat_n(&iov, count),
            addrs,
            [],
            MsgFlags::empty(),
        )?;
        Ok(sent.count())
    }
}

/// The link-layer address (a `sockaddr_ll`) of interface `ifindex`, as the
/// kernel reports it in getifaddrs.
fn link_address(ifindex: u32) -> io::Result<LinkAddr> {
    getifaddrs()?
        .filter_map(|ifa| ifa.address?.as_link_addr().copied())
        .find(|link| link.ifindex() == ifindex as usize)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface with index {ifindex} has a link-layer address"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the loopback interface (needs CAP_NET_RAW, as the baseline does).
    #[test]
    fn a_batch_goes_out_on_loopback() {
        let lo = nix::net::if_::if_nametoindex("lo").expect("every Linux has lo");
        let mut sock = match PacketSocket::bind(lo, 8) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                eprintln!("no CAP_NET_RAW: skipped");
                return;
            }
            other => other.expect("bind an AF_PACKET socket to lo"),
        };
        let mut frame = vec![0u8; 60];
        frame[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental EtherType
        assert_eq!(sock.send_batch(&frame, 5).expect("sendmmsg"), 5);
        assert_eq!(
            sock.send_batch(&frame, 100).expect("sendmmsg"),
            8,
            "at most the batch"
        );
        let err = PacketSocket::bind(u32::MAX, 1)
            .err()
            .expect("no such interface");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }
}
