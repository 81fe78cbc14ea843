//! forwarder: reads a range of an NVMe namespace with the userspace NVMe
//! driver into pool buffers and sends it as UDP/IPv4 datagrams with the
//! userspace NIC driver. Each datagram is two transmit descriptors: a small
//! header buffer and a slice of the very buffer the NVMe controller wrote. The
//! CPU copies no payload byte; the NIC inserts the checksums.
//!
//! ```text
//! forwarder --nvme BDF --nic BDF --dst-mac MAC --dst-ip IP --dst-port PORT
//!           [--src-ip IP] [--src-port PORT] [--nsid N] [--lba L] [--blocks N]
//!           [--bytes N] [--mtu 1500|9000] [--queue-depth Q] [--max-mbps R] [--json]
//! ```
//! Wire format: see `examples::dmaf`.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use examples::cli::{self, MacAddress};
use examples::dmaf::{self, Endpoints, FRAME_OVERHEAD};
use examples::perf::print_json;
use examples::progress::Progress;
use examples::signals;
use examples::syscount::{self, Syscalls};
use examples::usage::Usage;
use nic_driver::{e1000::Config, ChecksumOffload, NetDevice, Segment, TxFrame};
use nvme_driver::{Controller, IoQueuePair};
use vfio_core::dma::{Buffer, BufferPool, SharedBuffer};
use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

/// Bytes per NVMe read (each read's buffer is sliced into datagrams).
const CHUNK: usize = 64 << 10;
/// Most bytes sent back to back under --max-mbps.
const PACING_BURST: f64 = 32.0 * 1024.0;

#[derive(Parser)]
#[command(
    about = "Forward an NVMe namespace range to the network by DMA, with no CPU copy",
    allow_negative_numbers = true
)]
struct Cli {
    /// PCI address of the NVMe controller, bound to vfio-pci.
    #[arg(long, value_name = "BDF")]
    nvme: PciAddress,
    /// PCI address of the NIC, bound to vfio-pci.
    #[arg(long, value_name = "BDF")]
    nic: PciAddress,
    #[arg(long, value_name = "MAC")]
    dst_mac: MacAddress,
    #[arg(long)]
    dst_ip: Ipv4Addr,
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    dst_port: u16,
    #[arg(long, default_value = "198.51.100.1")]
    src_ip: Ipv4Addr,
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u16).range(1..))]
    src_port: u16,
    #[arg(long, default_value_t = 1, value_parser = cli::u32_in(cli::NSID))]
    nsid: u32,
    #[arg(long, default_value_t = 0)]
    lba: u64,
    /// Blocks to forward (default: from --lba to the end of the namespace).
    #[arg(long, value_parser = cli::u64_in(1..=u64::MAX))]
    blocks: Option<u64>,
    /// Bytes to forward from --lba instead (need not be a multiple of the block size).
    #[arg(long, conflicts_with = "blocks", value_parser = cli::u64_in(1..=u64::MAX))]
    bytes: Option<u64>,
    /// 1500, or 9000 for jumbo frames.
    #[arg(long, default_value_t = 1500, value_parser = mtu)]
    mtu: usize,
    /// NVMe reads in flight (1 to 256; each holds a 64 KiB buffer, and four
    /// buffers per read are pooled).
    #[arg(long, default_value_t = 16, value_parser = cli::usize_in(1..=256))]
    queue_depth: usize,
    /// Pace the stream to at most this many MB/s (UDP has no flow control: a
    /// slow receiver drops what it cannot take).
    #[arg(long, value_parser = cli::megabytes_per_second, allow_hyphen_values = true)]
    max_mbps: Option<f64>,
    /// Copy each datagram's payload into its frame buffer with the CPU
    /// instead of sending it from the NVMe read buffer: what zero copy saves,
    /// for comparison (the summary's copied bytes then count it).
    #[arg(long)]
    copy_payload: bool,
    #[arg(long)]
    json: bool,
}

/// --mtu: the two frame sizes the NICs are set up for.
fn mtu(s: &str) -> Result<usize, String> {
    match s {
        "1500" => Ok(1500),
        "9000" => Ok(9000),
        _ => Err(format!("{s:?} is not 1500 or 9000 (jumbo frames)")),
    }
}

type Error = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("forwarder: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a run did.
#[derive(serde::Serialize, Default)]
struct Summary {
    bytes: u64,
    datagrams: u64,
    seconds: f64,
    mb_per_s: f64,
    cpu_seconds: f64,
    /// Bytes the NIC driver was given to send from memory a device wrote
    /// (the NVMe read buffers), counted per segment by the driver
    /// (`nic_driver::Stats::tx_from`).
    bytes_sent_from_device_memory: u64,
    /// Bytes it was given from memory the CPU wrote: the frame headers, and
    /// any payload copied.
    bytes_sent_from_cpu_memory: u64,
    /// Frames the NIC driver took (`tx_batch`), each with one header.
    frames_sent: u64,
    /// `bytes_sent_from_cpu_memory` beyond the frames' headers
    /// (`frames_sent` x the header length): payload the CPU wrote.
    payload_bytes_copied_by_cpu: u64,
    /// System calls the transfer loop made, measured (`syscount`; null and
    /// `syscalls_not_measured` where the kernel does not permit it).
    #[serde(flatten)]
    syscalls: Syscalls,
    context_switches: u64,
    /// 10 ms sleeps while waiting for the link to come back.
    link_down_waits: u64,
    /// Times the forwarder saw the link down and then up again.
    link_down_events: u64,
    /// Time from seeing the link down to seeing it up again, summed.
    link_down_seconds: f64,
    /// Datagrams sent again because the link went down around their transmission.
    resent: u64,
    /// Chunk buffers not back in their pool after the run (a leak if not 0).
    chunk_buffers_outstanding: usize,
}

struct Forwarder {
    qp: IoQueuePair<Buffer>,
    nic: Box<dyn NetDevice + Send>,
    chunks: std::sync::Arc<BufferPool>,
    ends: Endpoints,
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

fn run(cli: &Cli) -> Result<ExitCode, Error> {
    signals::install()?;
    let (nvme_addr, nic_addr, dst_mac) = (cli.nvme, cli.nic, cli.dst_mac.octets());
    examples::cli::require_devices(&[nvme_addr, nic_addr])?;
    let container = Container::new()?;
    let mut nvme = Controller::open(&container, nvme_addr)?;
    let ns = nvme.namespace(cli.nsid)?;
    let bs = ns.block_size as u64;
    let total = match (cli.bytes, cli.blocks) {
        (Some(bytes), _) => bytes,
        (None, Some(blocks)) => blocks.saturating_mul(bs),
        (None, None) => ns.blocks.saturating_sub(cli.lba).saturating_mul(bs),
    };
    let blocks = total.div_ceil(bs);
    if blocks == 0
        || cli
            .lba
            .checked_add(blocks)
            .is_none_or(|end| end > ns.blocks)
    {
        return Err(format!(
            "blocks {}..{} are not inside namespace {} ({} blocks): nothing sent",
            cli.lba,
            cli.lba.saturating_add(blocks),
            cli.nsid,
            ns.blocks
        )
        .into());
    }
    let qp = nvme.create_io_queue_pair::<Buffer>(cli.queue_depth as u16 + 1)?;
    let chunk = CHUNK.min(qp.max_transfer()) / bs as usize * bs as usize;
    let chunks = BufferPool::new(&container, chunk, cli.queue_depth * 4)?;
    let config = Config::default()
        .jumbo(cli.mtu == 9000)
        .tx_ring(512)
        .spare_buffers(2048);
    let nic = nic_driver::open(&container, nic_addr, config)?;
    let ends = Endpoints {
        src_mac: nic.mac(),
        dst_mac,
        src_ip: cli.src_ip.octets(),
        dst_ip: cli.dst_ip.octets(),
        src_port: cli.src_port,
        dst_port: cli.dst_port,
    };
    let mut f = Forwarder {
        qp,
        nic,
        chunks,
        ends,
        nsid: cli.nsid,
        block: bs,
        payload: cli.mtu - 20 - 8 - dmaf::HEADER,
        tx: VecDeque::with_capacity(1024),
        queued: VecDeque::with_capacity(1024),
        window: VecDeque::with_capacity(1024),
        window_done: 0,
        link_lost: false,
        link_down_since: None,
        summary: Summary::default(),
        pace: cli.max_mbps.map(|m| Pacer::new(m * 1e6, PACING_BURST)),
        copy_payload: cli.copy_payload,
    };
    let start = Instant::now();
    let usage = Usage::now();
    let counting = syscount::start();
    let finished = f.forward(cli.lba, total, cli.queue_depth)?;
    f.summary.syscalls = counting.finish();
    let s = &mut f.summary;
    s.seconds = start.elapsed().as_secs_f64();
    s.mb_per_s = s.bytes as f64 / s.seconds.max(1e-9) / 1e6;
    let usage = usage.since();
    s.cpu_seconds = usage.cpu_seconds;
    s.context_switches = usage.context_switches;
    s.chunk_buffers_outstanding = f.chunks.capacity() - f.chunks.free_count();
    let from = f.nic.stats().tx_from;
    s.bytes_sent_from_device_memory = from.device;
    s.bytes_sent_from_cpu_memory = from.cpu;
    s.payload_bytes_copied_by_cpu = from
        .cpu
        .saturating_sub(s.frames_sent * FRAME_OVERHEAD as u64);
    report(cli, s);
    if let (false, Some(signal)) = (finished, signals::requested()) {
        eprintln!(
            "forwarder: stopped by {signal} after {} of {total} bytes; reads in flight drained, NIC and NVMe controller shut down",
            s.bytes
        );
        return Ok(ExitCode::from(signals::exit_code()));
    }
    Ok(ExitCode::SUCCESS)
}

impl Forwarder {
    /// Reads `total` bytes from `lba` with up to `depth` reads in flight and
    /// sends each chunk as it lands; then the end marker. False when a signal
    /// stopped it (the reads in flight drained first).
    fn forward(&mut self, lba: u64, total: u64, depth: usize) -> Result<bool, Error> {
        if self.wide_seq_of(total) > u32::MAX as u64 {
            return Err(format!(
                "{total} bytes are more datagrams than the wire format's 32-bit sequence numbers count; forward the range in parts (--lba, --blocks): nothing sent"
            )
            .into());
        }
        let (mut next, mut done) = (0u64, 0u64);
        let mut ready: VecDeque<Chunk> = VecDeque::new();
        let mut progress = Progress::new("forwarder", total);
        while done < total || !ready.is_empty() || !self.tx.is_empty() {
            if signals::requested().is_some() {
                progress.finish();
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
            progress.update(self.summary.bytes);
        }
        progress.finish();
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
        dmaf::write_header(header.buffer_mut(), &self.ends, sent.seq, sent.offset, len);
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

fn report(cli: &Cli, s: &Summary) {
    if cli.json {
        print_json(s);
        return;
    }
    println!(
        "forwarded {} bytes in {} datagrams, {:.2} s, {:.1} MB/s, {:.2} CPU s",
        s.bytes, s.datagrams, s.seconds, s.mb_per_s, s.cpu_seconds
    );
    println!(
        "sent from memory a device wrote: {} bytes; from memory the CPU wrote: {} bytes ({} frame headers); payload bytes copied by the CPU: {}",
        s.bytes_sent_from_device_memory,
        s.bytes_sent_from_cpu_memory,
        s.frames_sent,
        s.payload_bytes_copied_by_cpu
    );
    println!("system calls of the transfer loop: {}", s.syscalls);
    if s.link_down_events > 0 {
        println!(
            "link down {} times, {:.2} s in all ({} waits of 10 ms)",
            s.link_down_events, s.link_down_seconds, s.link_down_waits
        );
    }
}
