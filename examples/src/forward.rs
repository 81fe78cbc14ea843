//! The forwarder's data path (the `forwarder` binary's, and the one
//! `cargo xtask bench-host` counts the instructions of on the device models):
//! NVMe reads of up to 64 KiB into pool buffers, each cut into datagrams of a
//! header buffer and a slice of the very buffer the controller wrote, handed
//! to the NIC with no payload copy. Wire format: see [`crate::dmaf`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nic_driver::{ChecksumOffload, Config, NetDevice, TxFrame};
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
    /// Frames the NIC driver took (`tx_fill_payload`, `tx_batch` for the
    /// end marker), each with one header.
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
/// the reads land in, and the chunks on their way.
///
/// **A datagram's life.** An NVMe read lands in a chunk buffer, which joins
/// `queue` (in the order the reads complete). The front chunks are cut
/// into datagrams in place: [`NetDevice::tx_fill_payload`] writes each
/// header into a NIC buffer and points a second descriptor at the slice of
/// the chunk, the NIC holding a share of the chunk (one per batch on the
/// e1000). A chunk stays in `queue` (the forwarder's own share) until every datagram of
/// it is known to be on the wire: the NIC done with it (counted by
/// `tx_clean`, in order) and a link report afterwards
/// ([`NetDevice::link_news`]) showing the link did not go down. When the link
/// goes down, every datagram handed over and not yet known sent is sent
/// again from its chunk, with its sequence number.
pub struct Forwarder {
    qp: IoQueuePair<Buffer>,
    nic: Box<dyn NetDevice + Send>,
    chunks: std::sync::Arc<BufferPool>,
    /// The datagrams' headers with the stream's addresses filled in.
    template: HeaderTemplate,
    nsid: u32,
    block: u64,
    payload: usize,
    /// Read chunks whose datagrams are not all known sent, in the order
    /// their datagrams go out.
    queue: VecDeque<Chunk>,
    /// Chunks at the front of `queue` handed to the NIC whole.
    handed: usize,
    /// The end marker: handed to the NIC (and not yet known sent).
    marker_out: bool,
    /// The end marker: known sent.
    marker_sent: bool,
    /// Frames the NIC reported done and not yet known sent (no link report
    /// since).
    waiting: usize,
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

/// Checksums the NIC inserts into every datagram (IPv4 after a plain
/// Ethernet header, then UDP).
const OFFLOAD: ChecksumOffload = ChecksumOffload {
    ip_start: 14,
    l4_start: 34,
    tcp: false,
};

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
            queue: VecDeque::with_capacity(64),
            handed: 0,
            marker_out: false,
            marker_sent: false,
            waiting: 0,
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
        let (mut next, mut read) = (0u64, 0u64);
        let mut progress = self.progress.then(|| Progress::new("forwarder", total));
        while read < total || self.handed < self.queue.len() {
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
                let blocks = len.div_ceil(self.block) * self.block;
                self.qp
                    .submit_read(
                        self.nsid,
                        lba + next / self.block,
                        buf,
                        0,
                        blocks as usize,
                        next,
                    )
                    .map_err(|(e, _)| e)?;
                next += len;
            }
            self.qp.ring();
            let mut failed = None;
            let (queue, chunk) = (&mut self.queue, self.chunks.buf_size() as u64);
            self.qp.poll(usize::MAX, |c| match (c.result, c.buf) {
                (Ok(()), Some(buf)) => {
                    let end = total.min(c.tag + chunk);
                    read += end - c.tag;
                    queue.push_back(Chunk {
                        start: c.tag,
                        confirmed: c.tag,
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
            let handed = self.send()?;
            if self.pace.is_some() && handed == 0 && self.handed < self.queue.len() {
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
        self.marker_sent = false;
        while !self.marker_sent {
            if !self.marker_out && self.handed == self.queue.len() && !self.link_lost {
                self.send_marker(total)?;
            }
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
        Numbering::new(self.chunks.buf_size(), self.payload).wide(offset)
    }

    /// Hands datagrams of the chunks not yet handed over to the NIC while
    /// the ring, the NIC's buffers and the pacing allow, and counts what
    /// the NIC is done with; how many it handed over. While the link is
    /// down, waits; when it is back, first sends again what may have been
    /// lost when it went down.
    fn send(&mut self) -> Result<usize, Error> {
        if self.link_lost {
            // Reports news as well as the link: the change that brought it
            // back up is not reported again below.
            if !self.nic.link_news()?.link.up {
                self.saw_link_down();
                self.summary.link_down_waits += 1;
                std::thread::sleep(Duration::from_millis(10));
                return Ok(0);
            }
            if let Some(since) = self.link_down_since.take() {
                self.summary.link_down_events += 1;
                self.summary.link_down_seconds += since.elapsed().as_secs_f64();
            }
            self.resend();
        }
        let mut handed = 0;
        while self.handed < self.queue.len() {
            match self.hand_over(self.handed) {
                Ok((n, whole)) => {
                    handed += n;
                    if !whole {
                        break;
                    }
                    self.handed += 1;
                }
                Err(nic_driver::Error::LinkDown { .. }) => {
                    self.summary.frames_sent += handed as u64;
                    self.lost_link();
                    return Ok(handed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.summary.frames_sent += handed as u64;
        // Frames the NIC is done with are known sent once a link report
        // after that shows no loss: asked here, once per call (the e1000
        // reads ICR, whose latched link change shows a flap between two
        // calls). The link state the driver last read would miss such a
        // flap, and with it the frames a NIC reports done while its link
        // is down (QEMU's e1000 drops them): the host test with the cable
        // pulled mid-run found exactly that.
        self.waiting += self.nic.tx_clean();
        let news = self.nic.link_news()?;
        self.known_sent(news);
        Ok(handed)
    }

    /// Hands the datagrams left of chunk `i` to the NIC in one batch (one
    /// doorbell); how many, and whether that was all of them (not when the
    /// ring, the NIC's buffers or the pacing took fewer).
    fn hand_over(&mut self, i: usize) -> nic_driver::Result<(usize, bool)> {
        let numbering = Numbering::new(self.chunks.buf_size(), self.payload);
        let c = &mut self.queue[i];
        let left = (c.end - c.next).div_ceil(self.payload as u64) as usize;
        let mut cut = Cut {
            start: c.start,
            end: c.end,
            next: c.next,
            seq: numbering.seq(c.next),
            payload: self.payload,
            template: &self.template,
            pace: &mut self.pace,
            summary: &mut self.summary,
        };
        let (nic, buf) = (&mut self.nic, &c.buf);
        let sent = if self.copy_payload {
            // The payload copied behind the header: one buffer, sent alone.
            let data = buf.as_slice();
            nic.tx_fill_payload(buf, Some(OFFLOAD), left, &mut |room| {
                let Some(at) = cut.datagram(room) else {
                    return (0, 0..0);
                };
                let len = at.len();
                room[FRAME_OVERHEAD..FRAME_OVERHEAD + len].copy_from_slice(&data[at]);
                (FRAME_OVERHEAD + len, 0..0)
            })
        } else {
            nic.tx_fill_payload(buf, Some(OFFLOAD), left, &mut |room| {
                cut.datagram(room)
                    .map_or((0, 0..0), |at| (FRAME_OVERHEAD, at))
            })
        };
        c.next = cut.next;
        Ok((sent?, cut.next == cut.end))
    }

    /// Hands the end marker (datagram `seq_of(total)`, no data) to the NIC;
    /// tried again at the next call when the ring or its buffers are full.
    fn send_marker(&mut self, total: u64) -> Result<(), Error> {
        let Some(mut header) = self.nic.alloc_packet() else {
            return Ok(());
        };
        self.template
            .write(header.buffer_mut(), self.seq_of(total), total, 0);
        header.set_len(FRAME_OVERHEAD);
        let mut frame = TxFrame::packet(header);
        frame.offload = Some(OFFLOAD);
        match self.nic.tx_batch(&mut VecDeque::from([frame])) {
            Ok(1) => {
                self.marker_out = true;
                self.summary.datagrams += 1;
                self.summary.frames_sent += 1;
            }
            Ok(_) => {}
            Err(nic_driver::Error::LinkDown { .. }) => self.lost_link(),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// A link report came after the `waiting` frames were counted: with no
    /// loss, they are known sent; with a loss, every frame not known sent
    /// may be lost, and is sent again once the link is back.
    fn known_sent(&mut self, news: nic_driver::LinkNews) {
        if news.went_down {
            self.lost_link();
        } else {
            let done = std::mem::take(&mut self.waiting);
            self.confirm(done);
        }
    }

    /// Counts `done` frames as sent, in the order they went out: a chunk
    /// whose datagrams are all sent leaves the queue (its buffer goes back
    /// to the pool with the NIC's last share), the end marker last.
    fn confirm(&mut self, mut done: usize) {
        let payload = self.payload as u64;
        while done > 0 {
            let Some(c) = self.queue.front_mut() else {
                break;
            };
            let k = done.min(c.unconfirmed(payload));
            c.confirmed = (c.confirmed + k as u64 * payload).min(c.next);
            done -= k;
            if c.confirmed < c.end {
                return;
            }
            self.queue.pop_front();
            self.handed -= 1;
        }
        if done > 0 && self.marker_out {
            (self.marker_out, self.marker_sent) = (false, true);
        }
    }

    /// The link went down: note when, and wait for it.
    fn lost_link(&mut self) {
        if !self.link_lost {
            eprintln!("forwarder: link down, waiting for it");
        }
        self.saw_link_down();
        self.link_lost = true;
    }

    /// Notes when the link was first seen down (not again while it stays down).
    fn saw_link_down(&mut self) {
        self.link_down_since.get_or_insert_with(Instant::now);
    }

    /// Takes back every datagram handed to the NIC and not known sent, to
    /// be handed over again from its chunk with the same sequence number
    /// (the end marker too).
    fn resend(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.nic.tx_pending() > 0 && Instant::now() < deadline {
            self.nic.tx_clean();
        }
        self.waiting = 0;
        let payload = self.payload as u64;
        for c in &mut self.queue {
            let again = c.unconfirmed(payload) as u64;
            self.summary.datagrams -= again;
            self.summary.resent += again;
            self.summary.bytes -= c.next - c.confirmed;
            c.next = c.confirmed;
        }
        if std::mem::take(&mut self.marker_out) {
            self.summary.datagrams -= 1;
            self.summary.resent += 1;
        }
        self.handed = 0;
        self.link_lost = false;
    }
}

/// A chunk the NVMe controller wrote: bytes `start..end` of the range, of
/// which `start..confirmed` are known sent and `confirmed..next` are with
/// the NIC.
struct Chunk {
    start: u64,
    confirmed: u64,
    next: u64,
    end: u64,
    buf: SharedBuffer,
}

impl Chunk {
    /// Its datagrams (of `payload` bytes, the last one shorter) with the
    /// NIC and not known sent.
    fn unconfirmed(&self, payload: u64) -> usize {
        (self.next - self.confirmed).div_ceil(payload) as usize
    }
}

/// Sequence numbers: datagrams numbered in the order of the range (see
/// [`Forwarder::seq_of`]).
struct Numbering {
    chunk: u64,
    payload: u64,
}

impl Numbering {
    fn new(chunk: usize, payload: usize) -> Numbering {
        Numbering {
            chunk: chunk as u64,
            payload: payload as u64,
        }
    }

    /// The wide number of the datagram at `offset`.
    fn wide(&self, offset: u64) -> u64 {
        let per_chunk = self.chunk.div_ceil(self.payload);
        let within = (offset % self.chunk).div_ceil(self.payload);
        offset / self.chunk * per_chunk + within
    }

    /// The number of the datagram at `offset` (the forwarder checked that
    /// the end marker's fits in 32 bits, and numbers grow with offsets).
    fn seq(&self, offset: u64) -> u32 {
        self.wide(offset) as u32
    }
}

/// A chunk being cut into datagrams: the next one's offset and number.
struct Cut<'a> {
    start: u64,
    end: u64,
    next: u64,
    seq: u32,
    payload: usize,
    template: &'a HeaderTemplate,
    pace: &'a mut Option<Pacer>,
    summary: &'a mut Summary,
}

impl Cut<'_> {
    /// Writes the next datagram's headers into `room` and returns where its
    /// data lies in the chunk; None at the chunk's end or when the pacing
    /// says wait.
    #[inline]
    fn datagram(&mut self, room: &mut [u8]) -> Option<std::ops::Range<usize>> {
        let len = ((self.end - self.next) as usize).min(self.payload);
        if len == 0 || self.pace.as_mut().is_some_and(|p| !p.take(len)) {
            return None;
        }
        self.template.write(room, self.seq, self.next, len);
        let at = (self.next - self.start) as usize;
        self.next += len as u64;
        self.seq = self.seq.wrapping_add(1);
        self.summary.bytes += len as u64;
        self.summary.datagrams += 1;
        Some(at..at + len)
    }
}
