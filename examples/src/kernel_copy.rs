//! The kernel's classic paths from a block device to a UDP socket, for
//! `copy-bench`: each sends a range of the device as DMAF datagrams sliced
//! exactly as the forwarder slices them (64 KiB chunks, `payload` bytes per
//! datagram), through the kernel's nvme and NIC drivers. The mmap route maps
//! the block device with `sys::map_device`.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use nix::sys::socket::{send, sendmsg, MsgFlags, SockaddrIn};

use crate::dmaf;
use crate::syscount::{self, Syscalls};
use crate::usage::Usage;

/// Bytes per read, as the forwarder's NVMe reads.
pub const CHUNK: usize = 64 << 10;

/// A way to move bytes from a file to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// read() into a user buffer, then sendmsg() of header + slice.
    ReadSend,
    /// mmap() the device, sendmsg() of header + a slice of the map.
    MmapSend,
    /// send(MSG_MORE) of the header, then sendfile() of the data.
    Sendfile,
    /// O_DIRECT read() (the NVMe DMAs into the user buffer), then sendmsg().
    DirectSend,
}

impl Route {
    pub const ALL: [Route; 4] = [
        Route::ReadSend,
        Route::MmapSend,
        Route::Sendfile,
        Route::DirectSend,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Route::ReadSend => "read+send",
            Route::MmapSend => "mmap+send",
            Route::Sendfile => "sendfile",
            Route::DirectSend => "O_DIRECT read+send",
        }
    }

    /// CPU copies of each payload byte as the route is built (a design
    /// statement, not a measurement: the copies happen inside the kernel):
    /// page cache to user and user to socket buffer for read+send; one of
    /// them for mmap and O_DIRECT; none for sendfile when the NIC does
    /// scatter-gather (the kernel's e1000 does: the page-cache pages become
    /// fragments of the skb).
    pub fn copies_by_design(self) -> &'static str {
        match self {
            Route::ReadSend => "2 CPU copies per byte by construction: page cache -> user, user -> socket buffer",
            Route::MmapSend => "1 CPU copy per byte by construction: mapped page cache -> socket buffer",
            Route::DirectSend => "1 CPU copy per byte by construction: (device DMA to user) user -> socket buffer",
            Route::Sendfile => "0 CPU copies by construction with a scatter-gather NIC: page-cache pages become skb fragments",
        }
    }
}

/// What one run did and cost.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub bytes: u64,
    pub datagrams: u64,
    /// System calls the run made, measured (see `syscount`): opening the
    /// device, the reads and sends, the end marker.
    pub syscalls: Syscalls,
    pub seconds: f64,
    pub usage: Usage,
}

/// Sends bytes `0..bytes` of `disk` to the connected socket `sock` by `route`,
/// then the end marker. Drop the page cache first (see [`drop_caches`]).
pub fn run(
    route: Route,
    disk: &Path,
    bytes: u64,
    sock: &UdpSocket,
    payload: usize,
) -> io::Result<Run> {
    let start = (Instant::now(), Usage::now());
    let counting = syscount::start();
    let mut s = Sender {
        sock,
        payload,
        run: Run::default(),
    };
    match route {
        Route::ReadSend => s.by_read(&File::open(disk)?, bytes, vec![0u8; CHUNK])?,
        Route::DirectSend => {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(disk)?;
            // O_DIRECT needs an aligned buffer: an anonymous map is page-aligned.
            s.by_read(&file, bytes, memmap2::MmapMut::map_anon(CHUNK)?)?
        }
        Route::MmapSend => {
            let file = File::open(disk)?;
            // Nothing writes the benchmark's device while it runs.
            let len = usize::try_from(bytes).map_err(|_| io::Error::other("range too large"))?;
            let map = crate::sys::map_device(&file, len)?;
            s.by_chunks(bytes, |s, at, len| {
                s.datagrams_from(&map[at as usize..][..len], at)
            })?
        }
        Route::Sendfile => {
            let file = File::open(disk)?;
            s.by_chunks(bytes, |s, at, len| s.sendfile(&file, at, len))?
        }
    }
    s.end(bytes)?;
    let mut run = s.run;
    run.syscalls = counting.finish();
    run.bytes = bytes;
    run.seconds = start.0.elapsed().as_secs_f64();
    run.usage = start.1.since();
    Ok(run)
}

/// Empties the page cache, so every path reads from the device: asks the
/// kernel to drop `disk`'s cached pages, then all clean pages (needs root;
/// skipped otherwise).
pub fn drop_caches(disk: &Path) -> io::Result<()> {
    let file = File::open(disk)?;
    nix::fcntl::posix_fadvise(
        file.as_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )?;
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    Ok(())
}

struct Sender<'a> {
    sock: &'a UdpSocket,
    payload: usize,
    run: Run,
}

impl Sender<'_> {
    /// Calls `f(self, offset, len)` for each 64 KiB chunk of `0..bytes`.
    fn by_chunks(
        &mut self,
        bytes: u64,
        mut f: impl FnMut(&mut Self, u64, usize) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut at = 0;
        while at < bytes {
            let len = (bytes - at).min(CHUNK as u64) as usize;
            f(self, at, len)?;
            at += len as u64;
        }
        Ok(())
    }

    /// read() each chunk into `buf`, then send it.
    fn by_read(&mut self, file: &File, bytes: u64, mut buf: impl AsMut<[u8]>) -> io::Result<()> {
        let buf = buf.as_mut();
        self.by_chunks(bytes, |s, at, len| {
            // Whole 512-byte sectors (O_DIRECT); the device holds them.
            let want = len.div_ceil(512) * 512;
            let mut got = 0;
            while got < want {
                match file.read_at(&mut buf[got..want], at + got as u64)? {
                    0 => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the device ended early",
                        ))
                    }
                    n => got += n,
                }
            }
            s.datagrams_from(&buf[..len], at)
        })
    }

    /// One sendmsg() per datagram: the header and a slice of `data`.
    fn datagrams_from(&mut self, data: &[u8], at: u64) -> io::Result<()> {
        for (i, piece) in data.chunks(self.payload).enumerate() {
            let offset = at + (i * self.payload) as u64;
            let header = dmaf::header(self.run.datagrams as u32, offset);
            let iov = [IoSlice::new(&header), IoSlice::new(piece)];
            sendmsg::<SockaddrIn>(self.sock.as_raw_fd(), &iov, &[], MsgFlags::empty(), None)?;
            self.run.datagrams += 1;
        }
        Ok(())
    }

    /// Per datagram: the header with MSG_MORE (the socket holds it), then
    /// sendfile() of the data, which completes the datagram.
    fn sendfile(&mut self, file: &File, at: u64, len: usize) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            let n = self.payload.min(len - done);
            let offset = at + done as u64;
            let header = dmaf::header(self.run.datagrams as u32, offset);
            send(
                self.sock.as_raw_fd(),
                &header,
                MsgFlags::from_bits_retain(libc::MSG_MORE),
            )?;
            let mut from = offset as libc::off_t;
            let mut sent = 0;
            while sent < n {
                sent += nix::sys::sendfile::sendfile(
                    self.sock.as_fd(),
                    file.as_fd(),
                    Some(&mut from),
                    n - sent,
                )?;
            }
            self.run.datagrams += 1;
            done += n;
        }
        Ok(())
    }

    fn end(&mut self, total: u64) -> io::Result<()> {
        self.sock
            .send(&dmaf::header(self.run.datagrams as u32, total))?;
        self.run.datagrams += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each route over a file to a local UDP socket: the system calls are
    /// measured where the kernel permits (root with tracefs mounted), at
    /// least one per datagram sent (two for sendfile's header and data) and
    /// one per chunk read; elsewhere the reason is given, never a count.
    #[test]
    fn each_route_counts_at_least_its_reads_and_sends_where_measured() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let disk = dir.path().join("disk");
        let bytes = 3 * CHUNK as u64 + 1000;
        // Whole sectors, as a device has (the reads are of whole sectors).
        let size = bytes.div_ceil(512) * 512;
        std::fs::write(&disk, vec![0x5a; size as usize]).expect("write the file");
        let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.connect(sink.local_addr().expect("address"))
            .expect("connect");
        let payload = 1456;
        let chunks = bytes.div_ceil(CHUNK as u64);
        for route in [Route::ReadSend, Route::MmapSend, Route::Sendfile] {
            let r = run(route, &disk, bytes, &sock, payload).expect("the route runs");
            // Datagrams per chunk, and the end marker.
            let want = bytes / CHUNK as u64 * CHUNK.div_ceil(payload) as u64
                + (bytes % CHUNK as u64).div_ceil(payload as u64)
                + 1;
            assert_eq!(r.datagrams, want, "{}", route.name());
            let least = match route {
                Route::ReadSend | Route::DirectSend => r.datagrams + chunks,
                Route::MmapSend => r.datagrams,
                Route::Sendfile => 2 * (r.datagrams - 1) + 1,
            };
            match &r.syscalls {
                Syscalls::Measured(n) => assert!(
                    *n >= least && *n < least + 100,
                    "{}: {n} system calls, {least} reads and sends",
                    route.name()
                ),
                Syscalls::NotMeasured(why) => assert!(!why.is_empty()),
            }
        }
    }
}
