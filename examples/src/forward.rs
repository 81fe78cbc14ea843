//! The forwarder's data path (the `forwarder` binary's, and the one
//! `cargo xtask bench-host` counts the instructions of on the device models):
//! NVMe reads of up to 64 KiB into pool buffers, each cut into datagrams of a
//! header buffer and a slice of the very buffer the controller wrote, handed
//! to the NIC with no payload copy. Wire format: see [`crate::dmaf`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nic_driver::{ChecksumOffload, Config, NetDevice, Segment, TxFrame};
use nvme_driver::IoQueuePair;
use vfio_core::dma::{Buffer, BufferPool, SharedBuffer};

use crate::dmaf::{self, Endpoints, HeaderTemplate, FRAME_OVERHEAD};
use crate::progress::Progress;
use crate::signals;
use crate::syscount::Syscalls;

/// Bytes per NVMe read (each read's buffer is sliced into datagrams).
pub const CHUNK: usize = 64 << 10;
/// Most bytes sent back to back under --max-mbps.
const PACING_BURST: f64 = 32.0 * 1024.0;

/// The NIC set-up the forwarder runs with for frames of `mtu` bytes (1500,
/// or 9000 for jumbo frames): a 512-descriptor TX ring and 2,048 spare
/// buffers for headers.
pub fn nic_config(mtu: usize) -> Config {
    Config::default()
        .jumbo(mtu == 9000)
        .tx_ring(512)
        .spare_buffers(2048)
}

/// Payload bytes per datagram for `mtu`: what is left after the IPv4, UDP
/// and DMAF headers (1,456 at 1500).
pub fn payload(mtu: usize) -> usize {
    mtu - 20 - 8 - dmaf::HEADER
}

/// How a [`Forwarder`] runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// NVMe reads in flight (each holds a chunk buffer).
    pub queue_depth: usize,
    /// Payload bytes per datagram ([`payload`]).
    pub payload: usize,
    /// Pace the stream to at most this many bytes per second.
    pub max_bytes_per_second: Option<f64>,
    /// Copy each payload into its frame with the CPU (for comparison).
    pub copy_payload: bool,
    /// Show progress on stderr (a bar on a terminal, a line a second
    /// otherwise).
    pub progress: bool,
}

type Error = Box<dyn std::error::Error>;

/// What a run did.
#[derive(serde::Serialize, Default)]
pub struct Summary {
    pub bytes: u64,
    pub datagrams: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub cpu_seconds: f64,
    /// Bytes the NIC driver was given to send from memory a device wrote
    /// (the NVMe read buffers), counted per segment by the driver
    /// (`nic_driver::Stats::tx_from`).
    pub bytes_sent_from_device_memory: u64,
    /// Bytes it was given from memory the CPU wrote: the frame headers, and
    /// any payload copied.
    pub bytes_sent_from_cpu_memory: u64,
    /// Frames the NIC driver took (`tx_batch`), each with one header.
    pub frames_sent: u64,
    /// `bytes_sent_from_cpu_memory` beyond the frames' headers
    /// (`frames_sent` x the header length): payload the CPU wrote.
    pub payload_bytes_copied_by_cpu: u64,
    /// System calls the transfer loop made, measured (`syscount`; null and
    /// `syscalls_not_measured` where the kernel does not permit it).
    #[serde(flatten)]
    pub syscalls: Syscalls,
    pub context_switches: u64,
    /// 10 ms sleeps while waiting for the link to come back.
    pub link_down_waits: u64,
    /// Times the forwarder saw the link down and then up again.
    pub link_down_events: u64,
    /// Time from seeing the link down to seeing it up again, summed.
    pub link_down_seconds: f64,
    /// Datagrams sent again because the link went down around their transmission.
    pub resent: u64,
    /// Chunk buffers not back in their pool after the run (a leak if not 0).
    pub chunk_buffers_outstanding: usize,
}

/// The forwarder: one NVMe queue pair, one NIC, the pool of chunk buffers
/// the reads land in, and the datagrams on their way.
pub struct Forwarder {
    qp: IoQueuePair<Buffer>,
    nic: Box<dyn NetDevice + Send>,
    chunks: std::sync::Arc<BufferPool>,
    /// The datagrams' headers with the stream's addresses filled in.
    template: HeaderTemplate,
    nsid: u32,
    block: u64,
    payload: usize,
    tx: VecDeque<TxFrame>,
    /// What each frame in `tx` carries, in the same order.
    queued: VecDeque<Sent>,
    /// Datagrams handed to the NIC and not yet known to be on the wire: a
    /// frame counts as sent once the NIC is done with it and the link is seen
    /// up afterwards. When the link goes down, these are sent again.
    window: VecDeque<Sent>,
    /// Frames of `window` (from its front) the NIC reported done.
    window_done: usize,
    link_lost: bool,
    /// When the link was first seen down, until it is seen up again.
    link_down_since: Option<Instant>,
    summary: Summary,
    /// --max-mbps.
    pace: Option<Pacer>,
    /// --copy-payload.
    copy_payload: bool,
    depth: usize,
    progress: bool,
}

/// A token bucket: `rate` bytes per second, bursts of at most `burst` bytes
/// (a receiver that falls behind for a moment is not then flooded).
struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    fn new(rate: f64, burst: f64) -> Pacer {
        Pacer {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes `bytes` tokens if there are that many.
    fn take(&mut self, bytes: usize) -> bool {
        let now = Instant::now();
        let earned = self.rate * now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
        let ok = self.tokens >= bytes as f64;
        if ok {
            self.tokens -= bytes as f64;
        }
        ok
    }
}

/// A datagram: its sequence number, offset and data (a slice of a chunk the
/// NVMe controller wrote; none for the end marker).
#[derive(Clone)]
struct Sent {
    seq: u32,
    offset: u64,
    data: Option<(SharedBuffer, usize, usize)>,
}

impl Forwarder {
    /// A forwarder reading namespace `nsid` (of `block_size`-byte blocks)
    /// through `qp` into buffers of `chunks` and sending to `ends` through
    /// `nic`.
    pub fn new(
        qp: IoQueuePair<Buffer>,
        nic: Box<dyn NetDevice + Send>,
        chunks: std::sync::Arc<BufferPool>,
        ends: Endpoints,
        nsid: u32,
        block_size: u64,
        options: Options,
    ) -> Forwarder {
        Forwarder {
            qp,
            nic,
            chunks,
            template: HeaderTemplate::new(&ends),
            nsid,
            block: block_size,
            payload: options.payload,
            tx: VecDeque::with_capacity(1024),
            queued: VecDeque::with_capacity(1024),
            window: VecDeque::with_capacity(1024),
            window_done: 0,
            link_lost: false,
            link_down_since: None,
            summary: Summary::default(),
            pace: options
                .max_bytes_per_second
                .map(|rate| Pacer::new(rate, PACING_BURST)),
            copy_payload: options.copy_payload,
            depth: options.queue_depth,
            progress: options.progress,
        }
    }

    /// What the runs so far did.
    pub fn summary(&mut self) -> &mut Summary {
        &mut self.summary
    }

    /// The NIC.
    pub fn nic(&mut self) -> &mut (dyn NetDevice + Send) {
        self.nic.as_mut()
    }

    /// The pool of chunk buffers.
    pub fn chunks(&self) -> &std::sync::Arc<BufferPool> {
        &self.chunks
    }

    /// Reads `total` bytes from `lba` with up to [`Options::queue_depth`]
    /// reads in flight and sends each chunk as it lands; then the end
    /// marker. False when a signal stopped it (the reads in flight drained
    /// first).
    ///
    /// # Errors
    ///
    /// More datagrams than 32-bit sequence numbers count (nothing sent), a
    /// failed NVMe read, or a NIC error other than the link going down.
    pub fn forward(&mut self, lba: u64, total: u64) -> Result<bool, Error> {
        let depth = self.depth;
        if self.wide_seq_of(total) > u32::MAX as u64 {
            return Err(format!(
                "{total} bytes are more datagrams than the wire format's 32-bit sequence numbers count; forward the range in parts (--lba, --blocks): nothing sent"
            )
            .into());
        }
        let (mut next, mut done) = (0u64, 0u64);
        let mut ready: VecDeque<Chunk> = VecDeque::new();
        let mut progress = self.progress.then(|| Progress::new("forwarder", total));
        while done < total || !ready.is_empty() || !self.tx.is_empty() {
            if signals::requested().is_some() {
                if let Some(p) = &progress {
                    p.finish();
                }
                while self.qp.in_flight() > 0 {
                    self.qp.poll(usize::MAX, |_| {})?;
                }
                return Ok(false);
            }
            while next < total && self.qp.in_flight() < depth {
                let Some(buf) = self.chunks.alloc() else {
                    break;
                };
                let len = (total - next).min(buf.capacity() as u64);
                // Whole blocks: the last read may go past `total` within its block.
                let read = len.div_ceil(self.block) * self.block;
                self.qp
                    .submit_read(
                        self.nsid,
                        lba + next / self.block,
                        buf,
                        0,
                        read as usize,
                        next,
                    )
                    .map_err(|(e, _)| e)?;
                next += len;
            }
            self.qp.ring();
            let mut failed = None;
            self.qp.poll(usize::MAX, |c| match (c.result, c.buf) {
                (Ok(()), Some(buf)) => {
                    let end = total.min(c.tag + buf.capacity() as u64);
                    done += end - c.tag;
                    ready.push_back(Chunk {
                        start: c.tag,
                        next: c.tag,
                        end,
                        buf: buf.into_shared(),
                    });
                }
                (Err(e), _) => failed = Some(e),
                (Ok(()), None) => {}
            })?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            self.slice(&mut ready);
            self.send()?;
            if self.pace.is_some() && !ready.is_empty() && self.tx.is_empty() {
                // Held back by --max-mbps: give the CPU away rather than spin.
                std::thread::sleep(Duration::from_micros(500));
            }
            if let Some(p) = &mut progress {
                p.update(self.summary.bytes);
            }
        }
        if let Some(p) = &progress {
            p.finish();
        }
        self.queue(Sent {
            seq: self.seq_of(total),
            offset: total,
            data: None,
        })
        .ok_or("no buffer for the end marker")?;
        while !self.tx.is_empty() || !self.window.is_empty() {
            self.send()?;
        }
        Ok(true)
    }

    /// The sequence number of the datagram starting at `offset`: datagrams
    /// are numbered in the order of the range, whatever order the NVMe reads
    /// complete in, so a datagram sent again keeps its number.
    fn seq_of(&self, offset: u64) -> u32 {
        // `forward` checked that the end marker's number fits, and numbers
        // grow with the offset.
        self.wide_seq_of(offset) as u32
    }

    /// [`Forwarder::seq_of`] before it is cut to the wire's 32 bits.
    fn wide_seq_of(&self, offset: u64) -> u64 {
        let chunk = self.chunks.buf_size() as u64;
        let per_chunk = chunk.div_ceil(self.payload as u64);
        let within = (offset % chunk).div_ceil(self.payload as u64);
        offset / chunk * per_chunk + within
    }

    /// Turns ready chunks into datagrams (a header packet and a slice of the
    /// chunk each) while header buffers last.
    fn slice(&mut self, ready: &mut VecDeque<Chunk>) {
        while let Some(c) = ready.front_mut() {
            let n = ((c.end - c.next) as usize).min(self.payload);
            if self.tx.len() >= 512 || self.pace.as_mut().is_some_and(|p| !p.take(n)) {
                return;
            }
            let sent = Sent {
                seq: self.seq_of(c.next),
                offset: c.next,
                data: Some((c.buf.clone(), (c.next - c.start) as usize, n)),
            };
            if self.queue(sent).is_none() {
                return;
            }
            self.summary.bytes += n as u64;
            c.next += n as u64;
            if c.next == c.end {
                ready.pop_front();
            }
        }
    }

    /// Queues a datagram for the NIC: a header buffer, then the data (none
    /// for the end marker), checksums left to the NIC. None when the NIC's
    /// pool has no buffer for the header right now.
    fn queue(&mut self, sent: Sent) -> Option<()> {
        let mut header = self.nic.alloc_packet()?;
        let len = sent.data.as_ref().map_or(0, |d| d.2);
        self.template
            .write(header.buffer_mut(), sent.seq, sent.offset, len);
        header.set_len(FRAME_OVERHEAD);
        if let (true, Some((buf, offset, len))) = (self.copy_payload, &sent.data) {
            let data = &buf.as_slice()[*offset..offset + len];
            header.buffer_mut()[FRAME_OVERHEAD..FRAME_OVERHEAD + len].copy_from_slice(data);
            header.set_len(FRAME_OVERHEAD + len);
        }
        let mut frame = TxFrame::packet(header);
        if let (false, Some((buf, offset, len))) = (self.copy_payload, &sent.data) {
            let slice = Segment::Shared {
                buf: buf.clone(),
                offset: *offset,
                len: *len,
            };
            frame.push(slice).expect("two segments fit");
        }
        frame.offload = Some(ChecksumOffload {
            ip_start: 14,
            l4_start: 34,
            tcp: false,
        });
        self.summary.datagrams += 1;
        self.tx.push_back(frame);
        self.queued.push_back(sent);
        Some(())
    }

    /// Hands queued frames to the NIC and reclaims sent ones. While the link
    /// is down, waits; when it is back, first sends again what may have been
    /// lost when it went down.
    fn send(&mut self) -> Result<(), Error> {
        if self.link_lost {
            if !self.nic.link().up {
                self.saw_link_down();
                self.summary.link_down_waits += 1;
                std::thread::sleep(Duration::from_millis(10));
                return Ok(());
            }
            if let Some(since) = self.link_down_since.take() {
                self.summary.link_down_events += 1;
                self.summary.link_down_seconds += since.elapsed().as_secs_f64();
            }
            self.resend();
        }
        match self.nic.tx_batch(&mut self.tx) {
            Ok(n) => {
                self.summary.frames_sent += n as u64;
                self.window.extend(self.queued.drain(..n));
            }
            Err(nic_driver::Error::LinkDown { .. }) => {
                if !self.link_lost {
                    eprintln!("forwarder: link down, waiting for it");
                }
                self.saw_link_down();
                self.link_lost = true;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        self.window_done += self.nic.tx_clean();
        if self.nic.link().up {
            let n = self.window_done.min(self.window.len());
            self.window.drain(..n);
            self.window_done -= n;
        } else {
            self.saw_link_down();
            self.link_lost = true;
        }
        Ok(())
    }

    /// Notes when the link was first seen down (not again while it stays down).
    fn saw_link_down(&mut self) {
        self.link_down_since.get_or_insert_with(Instant::now);
    }

    /// Puts every datagram of the window back at the front of the queue
    /// (new header buffers, the same data slices and sequence numbers).
    fn resend(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.nic.tx_pending() > 0 && Instant::now() < deadline {
            self.nic.tx_clean();
        }
        self.window_done = 0;
        let (tx, queued) = (
            std::mem::take(&mut self.tx),
            std::mem::take(&mut self.queued),
        );
        let again: Vec<Sent> = self.window.drain(..).collect();
        self.summary.datagrams -= again.len() as u64;
        self.summary.resent += again.len() as u64;
        for sent in again {
            if self.queue(sent.clone()).is_none() {
                // No header buffer: keep it for the next try.
                self.window.push_back(sent);
            }
        }
        self.link_lost = !self.window.is_empty();
        self.tx.extend(tx);
        self.queued.extend(queued);
    }
}

/// A chunk the NVMe controller wrote: bytes `start..end` of the range, of
/// which `next..end` are still to be sent.
struct Chunk {
    start: u64,
    next: u64,
    end: u64,
    buf: SharedBuffer,
}
