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

    /// CPU copies of each payload byte, by the path's design: page cache to
    /// user and user to socket buffer for read+send; one of them for mmap and
    /// O_DIRECT; none for sendfile when the NIC does scatter-gather (the
    /// kernel's e1000 does: the page-cache pages become fragments of the skb).
    pub fn copies_per_byte(self) -> u64 {
        match self {
            Route::ReadSend => 2,
            Route::MmapSend | Route::DirectSend => 1,
            Route::Sendfile => 0,
        }
    }
}

/// What one run did and cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Run {
    pub bytes: u64,
    pub datagrams: u64,
    /// read, sendmsg, send and sendfile calls made.
    pub syscalls: u64,
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
                s.run.syscalls += 1;
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
            self.run.syscalls += 1;
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
            self.run.syscalls += 1;
            send(
                self.sock.as_raw_fd(),
                &header,
                MsgFlags::from_bits_retain(libc::MSG_MORE),
            )?;
            let mut from = offset as libc::off_t;
            let mut sent = 0;
            while sent < n {
                self.run.syscalls += 1;
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
        self.run.syscalls += 1;
        self.sock
            .send(&dmaf::header(self.run.datagrams as u32, total))?;
        self.run.datagrams += 1;
        Ok(())
    }
}
