//! forwarder: reads a range of an NVMe namespace with the userspace NVMe
//! driver into pool buffers and sends it as UDP/IPv4 datagrams with the
//! userspace NIC driver. Each datagram is two transmit descriptors: a small
//! header buffer and a slice of the very buffer the NVMe controller wrote. The
//! CPU copies no payload byte; the NIC inserts the checksums.
//!
//! ```text
//! forwarder --nvme BDF --nic BDF --dst-mac MAC --dst-ip IP --dst-port PORT
//!           [--src-ip IP] [--src-port PORT] [--nsid N] [--lba L] [--blocks N]
//!           [--mtu 1500|9000] [--queue-depth Q] [--json]
//! ```
//! Wire format: see `examples::dmaf`.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use examples::dmaf::{self, Endpoints, FRAME_OVERHEAD};
use nic_driver::{e1000::Config, ChecksumOffload, NetDevice, Segment, TxFrame};
use nvme_driver::{Controller, IoQueuePair};
use vfio_core::dma::{Buffer, BufferPool, SharedBuffer};
use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

/// Bytes per NVMe read (each read's buffer is sliced into datagrams).
const CHUNK: usize = 64 << 10;

#[derive(Parser)]
#[command(about = "Forward an NVMe namespace range to the network by DMA, with no CPU copy")]
struct Cli {
    #[arg(long)]
    nvme: String,
    #[arg(long)]
    nic: String,
    #[arg(long)]
    dst_mac: String,
    #[arg(long)]
    dst_ip: Ipv4Addr,
    #[arg(long)]
    dst_port: u16,
    #[arg(long, default_value = "198.51.100.1")]
    src_ip: Ipv4Addr,
    #[arg(long, default_value_t = 4000)]
    src_port: u16,
    #[arg(long, default_value_t = 1)]
    nsid: u32,
    #[arg(long, default_value_t = 0)]
    lba: u64,
    /// Blocks to forward (default: from --lba to the end of the namespace).
    #[arg(long)]
    blocks: Option<u64>,
    #[arg(long, default_value_t = 1500)]
    mtu: usize,
    /// NVMe reads in flight.
    #[arg(long, default_value_t = 16)]
    queue_depth: usize,
    /// Pace the stream to at most this many MB/s (UDP has no flow control: a
    /// slow receiver drops what it cannot take).
    #[arg(long)]
    max_mbps: Option<f64>,
    #[arg(long)]
    json: bool,
}

type Error = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
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
    payload_bytes_copied_by_cpu: u64,
    link_down_waits: u64,
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
    summary: Summary,
    /// Bytes per second allowed, and when sending began.
    pace: Option<(f64, Instant)>,
}

fn run(cli: &Cli) -> Result<(), Error> {
    if cli.mtu != 1500 && cli.mtu != 9000 {
        return Err(format!("--mtu must be 1500 or 9000, not {}", cli.mtu).into());
    }
    let (nvme_addr, nic_addr): (PciAddress, PciAddress) = (cli.nvme.parse()?, cli.nic.parse()?);
    let dst_mac = parse_mac(&cli.dst_mac)?;
    let container = Container::new()?;
    let mut nvme = Controller::open(&container, nvme_addr)?;
    let ns = nvme.namespace(cli.nsid)?;
    let blocks = cli.blocks.unwrap_or(ns.blocks.saturating_sub(cli.lba));
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
    let chunk = CHUNK.min(qp.max_transfer()) / ns.block_size as usize * ns.block_size as usize;
    let chunks = BufferPool::new(&container, chunk, cli.queue_depth * 4)?;
    let config = Config {
        jumbo: cli.mtu == 9000,
        tx_ring: 512,
        spare_buffers: 2048,
        ..Config::default()
    };
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
        block: ns.block_size as u64,
        payload: cli.mtu - 20 - 8 - dmaf::HEADER,
        tx: VecDeque::with_capacity(1024),
        summary: Summary::default(),
        pace: None,
    };
    let start = Instant::now();
    f.pace = cli.max_mbps.map(|m| (m * 1e6, start));
    let cpu_start = cpu_seconds();
    f.forward(cli.lba, blocks * ns.block_size as u64, cli.queue_depth)?;
    let s = &mut f.summary;
    s.seconds = start.elapsed().as_secs_f64();
    s.mb_per_s = s.bytes as f64 / s.seconds.max(1e-9) / 1e6;
    s.cpu_seconds = cpu_seconds() - cpu_start;
    report(cli, s);
    Ok(())
}

impl Forwarder {
    /// Reads `total` bytes from `lba` with up to `depth` reads in flight and
    /// sends each chunk as it lands; then the end marker.
    fn forward(&mut self, lba: u64, total: u64, depth: usize) -> Result<(), Error> {
        let (mut next, mut done) = (0u64, 0u64);
        let mut ready: VecDeque<Chunk> = VecDeque::new();
        let mut last_report = Instant::now();
        while done < total || !ready.is_empty() || !self.tx.is_empty() {
            while next < total && self.qp.in_flight() < depth {
                let Some(buf) = self.chunks.alloc() else {
                    break;
                };
                let len = (total - next).min(buf.capacity() as u64) as usize;
                self.qp
                    .submit_read(self.nsid, lba + next / self.block, buf, 0, len, next)
                    .map_err(|(e, _)| e)?;
                next += len as u64;
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
            if self.ahead_of_pace() {
                // Ahead of --max-mbps: give the CPU away rather than spin.
                std::thread::sleep(Duration::from_micros(500));
            }
            if last_report.elapsed() > Duration::from_secs(1) {
                eprintln!(
                    "forwarder: {} of {total} bytes sent, {} datagrams",
                    self.summary.bytes, self.summary.datagrams
                );
                last_report = Instant::now();
            }
        }
        self.end_marker(total)?;
        while self.nic.tx_pending() > 0 {
            self.nic.tx_clean();
        }
        Ok(())
    }

    /// Turns ready chunks into datagrams (a header packet and a slice of the
    /// chunk each) while header buffers last.
    fn slice(&mut self, ready: &mut VecDeque<Chunk>) {
        while let Some(c) = ready.front_mut() {
            if self.tx.len() >= 512 || self.ahead_of_pace() {
                return;
            }
            let n = ((c.end - c.next) as usize).min(self.payload);
            let slice = Segment::Shared {
                buf: c.buf.clone(),
                offset: (c.next - c.start) as usize,
                len: n,
            };
            let Some(frame) = self.datagram(c.next, Some(slice)) else {
                return;
            };
            self.tx.push_back(frame);
            self.summary.datagrams += 1;
            self.summary.bytes += n as u64;
            c.next += n as u64;
            if c.next == c.end {
                ready.pop_front();
            }
        }
    }

    /// One datagram: a header buffer for the next sequence number at `offset`,
    /// then `data` (none for the end marker), checksums left to the NIC.
    /// None when the NIC's pool has no buffer for the header right now.
    fn datagram(&self, offset: u64, data: Option<Segment>) -> Option<TxFrame> {
        let mut header = self.nic.alloc_packet()?;
        let len = data.as_ref().map_or(0, |d| d.dma().1);
        dmaf::write_header(
            header.buffer_mut(),
            &self.ends,
            self.summary.datagrams as u32,
            offset,
            len,
        );
        header.set_len(FRAME_OVERHEAD);
        let mut frame = TxFrame::packet(header);
        if let Some(d) = data {
            frame.push(d).expect("two segments fit");
        }
        frame.offload = Some(ChecksumOffload {
            ip_start: 14,
            l4_start: 34,
            tcp: false,
        });
        Some(frame)
    }

    /// True while more bytes have been queued than `--max-mbps` allows by now.
    fn ahead_of_pace(&self) -> bool {
        self.pace.is_some_and(|(rate, start)| {
            self.summary.bytes as f64 > rate * start.elapsed().as_secs_f64()
        })
    }

    /// Hands queued frames to the NIC; while the link is down, waits for it.
    fn send(&mut self) -> Result<(), Error> {
        match self.nic.tx_batch(&mut self.tx) {
            Ok(_) => {}
            Err(nic_driver::Error::LinkDown { .. }) => {
                self.summary.link_down_waits += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
        self.nic.tx_clean();
        Ok(())
    }

    fn end_marker(&mut self, total: u64) -> Result<(), Error> {
        let frame = self
            .datagram(total, None)
            .ok_or("no buffer for the end marker")?;
        self.tx.push_back(frame);
        self.summary.datagrams += 1;
        while !self.tx.is_empty() {
            self.send()?;
        }
        Ok(())
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

fn parse_mac(s: &str) -> Result<[u8; 6], Error> {
    let bytes: Vec<u8> = s
        .split(':')
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    bytes
        .try_into()
        .map_err(|_| format!("--dst-mac {s:?} is not a MAC like 52:54:00:12:34:56").into())
}

fn cpu_seconds() -> f64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0)
}

fn report(cli: &Cli, s: &Summary) {
    if cli.json {
        println!(
            "{}",
            serde_json::to_string(s).expect("a summary serializes")
        );
        return;
    }
    println!(
        "forwarded {} bytes in {} datagrams, {:.2} s, {:.1} MB/s, {:.2} CPU s",
        s.bytes, s.datagrams, s.seconds, s.mb_per_s, s.cpu_seconds
    );
    println!(
        "payload bytes copied by the CPU: {}",
        s.payload_bytes_copied_by_cpu
    );
}
