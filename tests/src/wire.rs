//! The host's side of a guest NIC's wire: every Ethernet frame the NIC sends
//! arrives as one UDP datagram on the test's socket, and every datagram the
//! test sends to QEMU is a frame the NIC receives.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Collects frames from a socket on a thread until stopped.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Vec<u8>>>,
}

impl Capture {
    /// Starts collecting what arrives on (a clone of) `socket`.
    pub fn start(socket: &UdpSocket) -> Capture {
        let socket = socket.try_clone().expect("clone the NIC's UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set a read timeout");
        // A deep receive queue, so a burst from the guest is not lost on the host
        // (FORCE can pass rmem_max as root; otherwise the default stays).
        let _ = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::RcvBufForce,
            &(128 << 20),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    frames.push(buf[..n].to_vec());
                }
            }
            frames
        });
        Capture { stop, thread }
    }

    /// Stops and returns every frame received, in order.
    pub fn stop(self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("capture thread")
    }
}

/// Sends `frame` every `every` on a thread until stopped; returns how many were sent.
pub struct Repeater {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<usize>,
}

impl Repeater {
    /// Starts sending `frame` to the NIC behind `socket`.
    pub fn start(socket: &UdpSocket, frame: Vec<u8>, every: Duration) -> Repeater {
        let socket = socket.try_clone().expect("clone the NIC's UDP socket");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut sent = 0;
            while !flag.load(Ordering::Relaxed) {
                // QEMU's port refuses datagrams until it is listening; that is not an error here.
                if socket.send(&frame).is_ok() {
                    sent += 1;
                }
                std::thread::sleep(every);
            }
            sent
        });
        Repeater { stop, thread }
    }

    /// Stops; returns how many frames were sent.
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("repeater thread")
    }
}
