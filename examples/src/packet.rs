//! The kernel baseline for NIC transmit: an AF_PACKET socket on the kernel's
//! driver, frames handed over in batches with sendmmsg. The socket calls take
//! raw pointers, so this one module of the examples allows `unsafe`.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A raw packet socket bound to one interface.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens and binds to interface `ifindex`.
    pub fn bind(ifindex: u32) -> io::Result<PacketSocket> {
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto as u16;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Sends `count` copies of `frame` with one sendmmsg; returns how many the kernel took.
    pub fn send_batch(
        &self,
        frame: &[u8],
        count: usize,
        iovs: &mut Vec<libc::iovec>,
        msgs: &mut Vec<libc::mmsghdr>,
    ) -> io::Result<usize> {
        iovs.clear();
        msgs.clear();
        for _ in 0..count {
            iovs.push(libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            });
        }
        for iov in iovs.iter_mut() {
            // SAFETY: mmsghdr is plain data; all-zero is a valid start.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            msgs.push(m);
        }
        // SAFETY: `msgs` holds `count` headers whose iovecs point at `frame`,
        // all alive for the call; the socket is bound (the address is implied).
        let n = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), count as u32, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}
