//! receiver: the forwarder's reverse path. Datagrams of a DMAF stream that the
//! userspace NIC driver receives are written to an NVMe namespace at their
//! offsets by the userspace NVMe driver.
//!
//! ```text
//! receiver --nic BDF --nvme BDF --port PORT [--nsid N] [--lba L]
//!          [--idle-seconds S] [--staging-mib M] [--json]
//! ```
//!
//! - Where the controller takes SGLs with no alignment rule (SGLS 01b, as
//!   QEMU's does) and the queue pair uses them (`--data-pointer auto` or
//!   `sgl`), nothing is copied: each datagram's receive buffer is held until
//!   every byte of its 64 KiB region of the range has arrived, and the region
//!   is written by DMA straight from those buffers, one Write gathering many
//!   of them through an SGL (`IoQueuePair::submit_write_gather`).
//! - Otherwise (PRPs) a datagram whose data covers whole blocks at a
//!   block-aligned offset is written by DMA straight from the receive buffer
//!   the NIC wrote (the e1000 driver leaves 2 bytes of headroom, so the data
//!   is 4-byte aligned as NVMe PRPs need), and any other datagram is copied
//!   into a staging buffer for its 64 KiB region, written once every byte of
//!   the region has arrived.
//! - A last block that the stream fills only in part is read first (by DMA),
//!   so the bytes after the end of the stream stay as they were.
//! - Duplicates (by sequence number) are ignored, reordering is harmless, and
//!   anything malformed (checksums, lengths, magic) is counted and dropped.
//! - Peers are untrusted: data is accepted only inside the range (from --lba
//!   to the end of the namespace, or --max-bytes), sequence numbers only
//!   inside a fixed window (see `examples::stream`), and regions in progress
//!   only as many as the staging memory holds; anything else is refused and
//!   counted, so memory does not grow with what peers send, and nothing is
//!   written outside the stream's blocks.
//! - It ends at the end marker once every datagram before it has arrived, or
//!   after --idle-seconds without a datagram of the stream, reporting what is
//!   missing.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use examples::cli;
use examples::dmaf::{self, Datagram};
use examples::gather::{self, Piece, Write};
use examples::perf::print_json;
use examples::signals;
use examples::stream::{Tracker, Verdict};
use examples::syscount::Syscalls;
use nic_driver::{Config, NetDevice, Packet};
use nvme_driver::{Controller, IoQueuePair, MAX_GATHER_PIECES};
use vfio_core::dma::{Buffer, BufferPool, SharedBuffer};
use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

/// Bytes of the range one staging buffer collects.
const CHUNK: usize = 64 << 10;
/// NVMe writes in flight.
const DEPTH: usize = 64;
/// Receive buffers kept free for the NIC's ring while datagrams are held.
const RX_RESERVE: usize = 1024;
/// The NIC driver's receive buffer size (its default), for the budget.
const RX_BUFFER: usize = 2048;

#[derive(Parser)]
#[command(
    about = "Receive a DMAF stream with the userspace NIC driver into an NVMe namespace",
    allow_negative_numbers = true
)]
struct Cli {
    /// PCI address of the NIC, bound to vfio-pci.
    #[arg(long, value_name = "BDF")]
    nic: PciAddress,
    /// PCI address of the NVMe controller, bound to vfio-pci.
    #[arg(long, value_name = "BDF")]
    nvme: PciAddress,
    /// UDP port the stream is sent to.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    #[arg(long, default_value_t = 1, value_parser = cli::u32_in(cli::NSID))]
    nsid: u32,
    /// Where offset 0 of the stream goes.
    #[arg(long, default_value_t = 0)]
    lba: u64,
    /// Accept data only in bytes 0..N of the stream (default: from --lba to
    /// the end of the namespace); datagrams beyond are refused.
    #[arg(long, value_parser = cli::u64_in(1..=u64::MAX))]
    max_bytes: Option<u64>,
    /// Sequence numbers tracked ahead of the first one missing (64 to 2^28;
    /// window/8 bytes of memory): a datagram further ahead is refused.
    #[arg(long, default_value_t = 1 << 20, value_parser = cli::u32_in(64..=1 << 28))]
    window: u32,
    /// Give up this long after the last datagram of the stream (above 0, at
    /// most a week).
    #[arg(long, default_value = "5", value_parser = cli::seconds, allow_hyphen_values = true)]
    idle_seconds: Duration,
    /// Memory for regions received in part, 1 to 1024 MiB: staging buffers,
    /// or receive buffers held for gather writes (a datagram that would need
    /// more than this holds is refused).
    #[arg(long, default_value_t = 64, value_parser = cli::usize_in(1..=1024))]
    staging_mib: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    nvme_options: examples::cli::NvmeOptions,
}

type Error = Box<dyn std::error::Error>;

/// What a run did.
#[derive(serde::Serialize, Default)]
struct Summary {
    complete: bool,
    /// The stream's length, from its end marker.
    total: Option<u64>,
    datagrams: u64,
    duplicates: u64,
    /// Frames dropped: `malformed` + `out_of_range` + `no_staging_room`.
    refused: u64,
    /// Not IPv4/UDP to our port, bad checksums, not DMAF.
    malformed: u64,
    /// Outside the accepted range or the window, overflowing, or
    /// contradicting the end marker.
    out_of_range: u64,
    /// Data for a region when as many regions as the staging memory holds
    /// were in progress (the datagram stays missing: a resend is accepted).
    no_staging_room: u64,
    /// Bytes written to the namespace from memory a device wrote (the NIC's
    /// receive buffers, by DMA), counted per Write command by the NVMe
    /// driver from the buffers it was given (`IoQueuePair::written_from`).
    written_from_device_memory: u64,
    /// Bytes written from memory the CPU wrote: the staging buffers the
    /// payload was copied into (whole blocks).
    written_from_cpu_memory: u64,
    /// How datagrams reached the disk: "gather" (receive buffers, SGLs) or
    /// "staging" (PRPs: whole blocks from receive buffers, the rest copied).
    mode: &'static str,
    /// Payload bytes the CPU copied (into staging buffers), counted where
    /// the copy is made.
    payload_bytes_copied: u64,
    /// Staging buffers not back in their pool after the run (a leak if not 0).
    staging_buffers_outstanding: usize,
    missing: u64,
    first_missing: Vec<u32>,
    seconds: f64,
    mb_per_s: f64,
    /// System calls of the receive loop, measured (`syscount`; null and
    /// `syscalls_not_measured` where the kernel does not permit it).
    #[serde(flatten)]
    syscalls: Syscalls,
    /// Peak address space of this process, KiB.
    vm_peak_kib: Option<u64>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok((s, stopped)) => {
            report(&cli, &s);
            match stopped {
                Some((signal, code)) => {
                    eprintln!("receiver: stopped by {signal}; writes in flight completed, namespace flushed, devices shut down");
                    ExitCode::from(code)
                }
                None if s.complete => ExitCode::SUCCESS,
                None => ExitCode::FAILURE,
            }
        }
        Err(e) => {
            examples::cli::report("receiver", &*e);
            ExitCode::FAILURE
        }
    }
}

/// The summary, and the signal (name, exit code) if one stopped the run.
type Stopped = Option<(&'static str, u8)>;

fn run(cli: &Cli) -> Result<(Summary, Stopped), Error> {
    signals::install()?;
    let (nvme_addr, nic_addr) = (cli.nvme, cli.nic);
    examples::cli::require_devices(&[nvme_addr, nic_addr])?;
    let container = Container::new()?;
    let mut nvme = Controller::open_with(&container, nvme_addr, cli.nvme_options.config())?;
    let ns = nvme.namespace(cli.nsid)?;
    if cli.lba >= ns.blocks {
        return Err(format!(
            "--lba {} is past the end of namespace {} ({} blocks)",
            cli.lba, cli.nsid, ns.blocks
        )
        .into());
    }
    // Saturating: the namespace's size is the device's word.
    let capacity = (ns.blocks - cli.lba).saturating_mul(ns.block_size as u64);
    let limit = match cli.max_bytes {
        Some(max) if max > capacity => {
            return Err(format!(
                "--max-bytes {max} is past the end of namespace {}: {capacity} bytes from --lba {}",
                cli.nsid, cli.lba
            )
            .into())
        }
        Some(max) => max,
        None => capacity,
    };
    let qp = nvme.create_io_queue_pair::<SharedBuffer>(DEPTH as u16 + 1)?;
    let bs = ns.block_size as usize;
    let chunk = CHUNK.min(qp.max_transfer()) / bs * bs;
    let gather = qp.gather_supported();
    let budget = cli.staging_mib << 20;
    // Gather: the receive buffers hold the regions in progress (and a few
    // staging buffers serve last blocks and over-fragmented ones); staging:
    // the staging buffers do.
    let (staging_count, spare) = if gather {
        (4, budget / RX_BUFFER + RX_RESERVE)
    } else {
        (budget / chunk + 1, 1024)
    };
    let staging = BufferPool::new(&container, chunk, staging_count)?;
    let nic = nic_driver::open(
        &container,
        nic_addr,
        Config::default().rx_ring(1024).spare_buffers(spare),
    )?;
    let mut r = Receiver {
        nic,
        qp,
        staging,
        nsid: cli.nsid,
        lba: cli.lba,
        bs,
        chunk,
        port: cli.port,
        stream: Tracker::new(limit, cli.window),
        stages: HashMap::new(),
        gather,
        summary: Summary {
            mode: if gather { "gather" } else { "staging" },
            ..Summary::default()
        },
    };
    println!("receiver: listening on port {}", cli.port);
    let start = Instant::now();
    let (received, syscalls) = Syscalls::count(|| r.receive(cli.idle_seconds));
    received?;
    let mut s = r.finish()?;
    s.syscalls = syscalls;
    s.seconds = start.elapsed().as_secs_f64();
    // Bytes the NVMe controller was given to write, not the total the
    // peer's end marker claims.
    let written = s.written_from_device_memory + s.written_from_cpu_memory;
    s.mb_per_s = written as f64 / s.seconds.max(1e-9) / 1e6;
    Ok((
        s,
        signals::requested().map(|sig| (sig, signals::exit_code())),
    ))
}

/// A region of the range being collected.
struct Stage {
    /// Staging memory, taken when the first copied byte arrives.
    buf: Option<Buffer>,
    /// One bit per byte present (copied here, or written directly).
    have: Vec<u64>,
    count: usize,
    /// Blocks already written straight from receive buffers.
    direct: Vec<bool>,
    /// Gather mode: the receive buffers holding the region's bytes, with
    /// where in the region each piece goes.
    held: Vec<(usize, Piece<SharedBuffer>)>,
}

struct Receiver {
    nic: Box<dyn NetDevice + Send>,
    qp: IoQueuePair<SharedBuffer>,
    staging: Arc<BufferPool>,
    nsid: u32,
    lba: u64,
    bs: usize,
    chunk: usize,
    port: u16,
    /// What has arrived, in the accepted range.
    stream: Tracker,
    /// Regions in progress: at most as many as the staging pool has buffers.
    stages: HashMap<u64, Stage>,
    /// Datagrams are held and written by gather writes (SGLs).
    gather: bool,
    summary: Summary,
}

impl Receiver {
    fn receive(&mut self, idle: Duration) -> Result<(), Error> {
        let mut packets = Vec::with_capacity(64);
        let mut last = Instant::now();
        while !self.done() && last.elapsed() < idle && signals::requested().is_none() {
            self.nic.rx_batch(&mut packets, 64)?;
            for p in packets.drain(..) {
                if self.accept(p)? {
                    last = Instant::now();
                }
            }
            self.reap()?;
        }
        Ok(())
    }

    /// Every datagram up to the end marker has arrived and been written.
    fn done(&self) -> bool {
        self.stream.complete() && self.stages.is_empty() && self.qp.in_flight() == 0
    }

    /// Takes one frame; true when it was a datagram of the stream (new, a
    /// duplicate or the end marker), which keeps the run from going idle.
    fn accept(&mut self, p: Packet) -> Result<bool, Error> {
        let Some(d) = dmaf::parse_frame(p.data(), self.port) else {
            self.summary.malformed += 1;
            return Ok(false);
        };
        let verdict = self.stream.check(d.seq, d.offset, d.len);
        if verdict == Verdict::Data && !self.room_for(&d) {
            // Staging buffers of regions being written come back first.
            while self.qp.in_flight() > 0 && !self.room_for(&d) {
                self.reap()?;
            }
            if !self.room_for(&d) {
                self.summary.no_staging_room += 1;
                return Ok(false);
            }
        }
        self.stream.record(d.seq, d.offset, d.len, verdict);
        match verdict {
            Verdict::Refused(_) => return Ok(false),
            Verdict::Duplicate => return Ok(true),
            Verdict::End => {
                self.summary.total = Some(d.offset);
                let regions: Vec<u64> = self.stages.keys().copied().collect();
                for region in regions {
                    self.flush_if_whole(region)?;
                }
                return Ok(true);
            }
            Verdict::Data => {}
        }
        if self.gather {
            return self.hold(p, &d).map(|()| true);
        }
        let bs = self.bs as u64;
        let aligned = d.offset.is_multiple_of(bs)
            && (d.len as u64).is_multiple_of(bs)
            && (p.iova() + d.at as u64).is_multiple_of(4)
            && d.len <= self.qp.max_transfer();
        if aligned {
            self.direct(p, &d)?;
        } else {
            self.copy(&p.data()[d.at..d.at + d.len], d.offset)?;
        }
        Ok(true)
    }

    /// Whether the regions `d` falls in can be tracked: those not in
    /// progress yet must fit beside the ones that are (one per staging
    /// buffer), and each may need a staging buffer of its own; one buffer
    /// stays free for reading the last block (`keep_tail`).
    fn room_for(&self, d: &Datagram) -> bool {
        if self.gather {
            // The receive buffer stays out of the NIC's pool until its
            // region is written; the ring must still be refilled.
            return self.nic.free_buffers() > RX_RESERVE;
        }
        let new = pieces(self.chunk, d.offset, d.len)
            .filter(|(region, ..)| !self.stages.contains_key(region))
            .count();
        let unstaged = pieces(self.chunk, d.offset, d.len)
            .filter(|(region, ..)| self.stages.get(region).is_none_or(|s| s.buf.is_none()))
            .count();
        self.stages.len() + new < self.staging.capacity() && unstaged < self.staging.free_count()
    }

    /// Writes whole blocks straight from the receive buffer.
    fn direct(&mut self, p: Packet, d: &Datagram) -> Result<(), Error> {
        self.mark(d.offset, d.len, true);
        let at = p.offset() + d.at;
        let buf = p.into_buffer().into_shared();
        self.write(d.offset, buf, at, d.len)?;
        self.flush_regions(d.offset, d.len)
    }

    /// Keeps the receive buffer for the regions the datagram falls in: the
    /// bytes not present yet are recorded as pieces to gather.
    fn hold(&mut self, p: Packet, d: &Datagram) -> Result<(), Error> {
        let at = p.offset() + d.at;
        let buf = p.into_buffer().into_shared();
        for (region, within, from, n) in pieces(self.chunk, d.offset, d.len) {
            let stage = stage(&mut self.stages, self.chunk, self.bs, region);
            for (start, len) in clear_runs(&stage.have, within, n) {
                let piece = (buf.clone(), at + from + (start - within), len);
                stage.held.push((start, piece));
            }
            stage.count += set_bits(&mut stage.have, within, n);
        }
        self.flush_regions(d.offset, d.len)
    }

    /// Copies data into the staging buffers of the regions it falls in.
    fn copy(&mut self, data: &[u8], offset: u64) -> Result<(), Error> {
        for (region, within, from, n) in pieces(self.chunk, offset, data.len()) {
            let stage = stage(&mut self.stages, self.chunk, self.bs, region);
            if stage.buf.is_none() {
                stage.buf = Some(self.staging.alloc().ok_or(
                    "the stream is reordered across more regions than --staging-mib holds",
                )?);
            }
            let buf = stage.buf.as_mut().expect("allocated above");
            buf.as_mut_slice()[within..within + n].copy_from_slice(&data[from..from + n]);
            self.summary.payload_bytes_copied += n as u64;
        }
        self.mark(offset, data.len(), false);
        self.flush_regions(offset, data.len())
    }

    /// Records bytes `offset..offset+len` as present.
    fn mark(&mut self, offset: u64, len: usize, direct: bool) {
        let bs = self.bs;
        for (region, within, _, n) in pieces(self.chunk, offset, len) {
            let stage = stage(&mut self.stages, self.chunk, bs, region);
            stage.count += set_bits(&mut stage.have, within, n);
            if direct {
                stage.direct[within / bs..(within + n) / bs].fill(true);
            }
        }
    }

    fn flush_regions(&mut self, offset: u64, len: usize) -> Result<(), Error> {
        let chunk = self.chunk as u64;
        for region in offset / chunk..=(offset + len as u64 - 1) / chunk {
            self.flush_if_whole(region)?;
        }
        Ok(())
    }

    /// Bytes of `region` the stream has: a whole region until the end marker
    /// says otherwise.
    fn expected(&self, region: u64) -> usize {
        let start = region * self.chunk as u64;
        match self.stream.end() {
            Some((_, total)) => total.saturating_sub(start).min(self.chunk as u64) as usize,
            None => self.chunk,
        }
    }

    /// Writes the staged blocks of `region` once all its bytes are present.
    fn flush_if_whole(&mut self, region: u64) -> Result<(), Error> {
        let expected = self.expected(region);
        let whole = self
            .stages
            .get(&region)
            .is_some_and(|s| expected > 0 && s.count >= expected);
        if !whole {
            return Ok(());
        }
        let stage = self.stages.remove(&region).expect("checked above");
        let start = region * self.chunk as u64;
        if self.gather {
            return self.write_gathered(start, expected, stage.held);
        }
        let blocks = expected.div_ceil(self.bs);
        let Some(mut buf) = stage.buf else {
            return Ok(()); // every block was written directly
        };
        if !expected.is_multiple_of(self.bs) {
            self.keep_tail(&mut buf, start, expected)?;
        }
        let buf = buf.into_shared();
        let mut b = 0;
        while b < blocks {
            if stage.direct[b] {
                b += 1;
                continue;
            }
            let run = stage.direct[b..blocks]
                .iter()
                .position(|&d| d)
                .unwrap_or(blocks - b);
            let at = b * self.bs;
            self.write(start + at as u64, buf.clone(), at, run * self.bs)?;
            b += run;
        }
        Ok(())
    }

    /// Writes the `expected` bytes of the region at `start` from the
    /// receive buffers that hold them (and, when the stream ends inside a
    /// block, the rest of that block as the namespace holds it now).
    fn write_gathered(
        &mut self,
        start: u64,
        expected: usize,
        mut held: Vec<(usize, Piece<SharedBuffer>)>,
    ) -> Result<(), Error> {
        held.sort_unstable_by_key(|(within, _)| *within);
        let mut pieces: Vec<Piece<SharedBuffer>> = held.into_iter().map(|(_, p)| p).collect();
        if !expected.is_multiple_of(self.bs) {
            pieces.push(self.old_tail(start, expected)?);
        }
        let same = |a: &SharedBuffer, b: &SharedBuffer| a.iova() == b.iova();
        let mut offset = start;
        for w in gather::plan(&pieces, self.bs, MAX_GATHER_PIECES, same) {
            let bytes = w.blocks() * self.bs;
            match w {
                Write::Gather { pieces, .. } => self.write_pieces(offset, pieces)?,
                Write::Copy { pieces } => self.write_copied(offset, &pieces)?,
            }
            offset += bytes as u64;
        }
        Ok(())
    }

    /// The bytes after `expected` in the region's last block, as the
    /// namespace holds them now: read by DMA into a staging buffer.
    fn old_tail(&mut self, start: u64, expected: usize) -> Result<Piece<SharedBuffer>, Error> {
        while self.qp.in_flight() > 0 {
            self.reap()?;
        }
        let block_at = expected / self.bs * self.bs;
        let mut old = self
            .staging
            .alloc()
            .ok_or("no staging buffer for the last block")?;
        let lba = self.lba + (start + block_at as u64) / self.bs as u64;
        self.qp.read(self.nsid, lba, &mut old, 0, self.bs)?;
        let keep = expected - block_at;
        Ok((old.into_shared(), keep, self.bs - keep))
    }

    /// Queues one gather Write of `pieces` at `offset` of the stream.
    fn write_pieces(&mut self, offset: u64, pieces: Vec<Piece<SharedBuffer>>) -> Result<(), Error> {
        while self.qp.in_flight() >= DEPTH {
            self.reap()?;
        }
        let lba = self.lba + offset / self.bs as u64;
        self.qp
            .submit_write_gather(self.nsid, lba, pieces, offset)
            .map_err(|(e, _)| e)?;
        self.qp.ring();
        Ok(())
    }

    /// A block in more pieces than one Write gathers (tiny datagrams):
    /// copied into a staging buffer and written from there.
    fn write_copied(&mut self, offset: u64, pieces: &[Piece<SharedBuffer>]) -> Result<(), Error> {
        let mut buf = self
            .staging
            .alloc()
            .ok_or("no staging buffer for a block of tiny datagrams")?;
        let mut at = 0;
        for (from, off, len) in pieces {
            buf.as_mut_slice()[at..at + len].copy_from_slice(&from.as_slice()[*off..off + len]);
            at += len;
        }
        self.summary.payload_bytes_copied += at as u64;
        self.write(offset, buf.into_shared(), 0, self.bs)
    }

    /// The stream ends inside a block: fills the rest of that block in the
    /// staging buffer with what the namespace holds there now.
    fn keep_tail(&mut self, buf: &mut Buffer, start: u64, expected: usize) -> Result<(), Error> {
        let (old, keep, n) = self.old_tail(start, expected)?;
        buf.as_mut_slice()[expected..expected + n].copy_from_slice(&old.as_slice()[keep..keep + n]);
        Ok(())
    }

    /// Queues a write of `len` bytes at `offset` of the stream from `buf`.
    fn write(
        &mut self,
        offset: u64,
        buf: SharedBuffer,
        at: usize,
        len: usize,
    ) -> Result<(), Error> {
        while self.qp.in_flight() >= DEPTH {
            self.reap()?;
        }
        let lba = self.lba + offset / self.bs as u64;
        self.qp
            .submit_write(self.nsid, lba, buf, at, len, offset)
            .map_err(|(e, _)| e)?;
        self.qp.ring();
        Ok(())
    }

    /// Takes completions; buffers go back to their pools.
    fn reap(&mut self) -> Result<(), Error> {
        let mut failed = None;
        self.qp.poll(usize::MAX, |c| {
            if let Err(e) = c.result {
                failed = Some(format!("writing stream offset {}: {e}", c.tag));
            }
        })?;
        failed.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Waits for the writes in flight, flushes the namespace, and reports.
    fn finish(mut self) -> Result<Summary, Error> {
        while self.qp.in_flight() > 0 {
            self.reap()?;
        }
        self.qp.flush(self.nsid)?;
        let mut s = std::mem::take(&mut self.summary);
        s.datagrams = self.stream.received();
        s.duplicates = self.stream.duplicates();
        s.out_of_range = self.stream.refused();
        s.refused = s.malformed + s.out_of_range + s.no_staging_room;
        s.missing = self.stream.missing();
        s.first_missing = self.stream.first_missing(20);
        s.complete = self.stream.complete() && self.stages.is_empty();
        s.vm_peak_kib = examples::usage::vm_peak_kib();
        s.staging_buffers_outstanding = self.staging.capacity() - self.staging.free_count();
        let from = self.qp.written_from();
        s.written_from_device_memory = from.device;
        s.written_from_cpu_memory = from.cpu;
        Ok(s)
    }
}

/// The stage of `region` (regions of `chunk` bytes, blocks of `bs`),
/// created empty if new.
fn stage(stages: &mut HashMap<u64, Stage>, chunk: usize, bs: usize, region: u64) -> &mut Stage {
    stages.entry(region).or_insert_with(|| Stage {
        buf: None,
        have: vec![0; chunk.div_ceil(64)],
        count: 0,
        direct: vec![false; chunk / bs],
        held: Vec::new(),
    })
}

/// Splits bytes `offset..offset+len` of the stream at the boundaries of
/// `chunk`-byte regions: (region, offset in it, offset in the range, length).
fn pieces(
    chunk: usize,
    offset: u64,
    len: usize,
) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let mut done = 0;
    std::iter::from_fn(move || {
        (done < len).then(|| {
            let at = offset + done as u64;
            let (region, within) = (at / chunk as u64, (at % chunk as u64) as usize);
            let n = (chunk - within).min(len - done);
            let piece = (region, within, done, n);
            done += n;
            piece
        })
    })
}

/// Sets bits `start..start+len`; returns how many were clear before.
fn set_bits(bits: &mut [u64], start: usize, len: usize) -> usize {
    let (mut i, end, mut newly) = (start, start + len, 0);
    while i < end {
        let (word, bit) = (i / 64, i % 64);
        let n = (64 - bit).min(end - i);
        let mask = if n == 64 {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << bit
        };
        newly += (mask & !bits[word]).count_ones() as usize;
        bits[word] |= mask;
        i += n;
    }
    newly
}

/// The runs of clear bits in `start..start+len`: (start, length).
fn clear_runs(bits: &[u64], start: usize, len: usize) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for i in start..start + len {
        if bits[i / 64] & (1 << (i % 64)) != 0 {
            continue;
        }
        match runs.last_mut() {
            Some((s, n)) if *s + *n == i => *n += 1,
            _ => runs.push((i, 1)),
        }
    }
    runs
}

fn report(cli: &Cli, s: &Summary) {
    if cli.json {
        print_json(s);
        return;
    }
    match s.total {
        Some(total) if s.complete => println!(
            "received {total} bytes in {} datagrams ({} duplicates, {} refused), {:.2} s, {:.1} MB/s",
            s.datagrams, s.duplicates, s.refused, s.seconds, s.mb_per_s
        ),
        _ => println!(
            "incomplete: end marker {}, {} datagrams missing, first {:?}",
            if s.total.is_some() { "seen" } else { "not seen" },
            s.missing,
            s.first_missing
        ),
    }
    println!(
        "refused: {} malformed, {} outside the range or window, {} without staging room",
        s.malformed, s.out_of_range, s.no_staging_room
    );
    println!(
        "written to disk from memory the NIC wrote (receive buffers): {} bytes; from memory the CPU wrote (staging copies): {} bytes",
        s.written_from_device_memory, s.written_from_cpu_memory
    );
    println!(
        "mode: {}; payload bytes copied by the CPU: {}",
        s.mode, s.payload_bytes_copied
    );
    println!("system calls of the receive loop: {}", s.syscalls);
}

#[cfg(test)]
mod tests {
    use super::{clear_runs, pieces, set_bits};

    #[test]
    fn pieces_split_at_region_boundaries() {
        let got: Vec<_> = pieces(100, 250, 170).collect();
        assert_eq!(got, [(2, 50, 0, 50), (3, 0, 50, 100), (4, 0, 150, 20)]);
        assert_eq!(pieces(100, 0, 0).count(), 0);
    }

    #[test]
    fn clear_runs_are_the_bytes_not_present_yet() {
        let mut bits = vec![0u64; 4];
        assert_eq!(clear_runs(&bits, 10, 100), [(10, 100)]);
        set_bits(&mut bits, 20, 10);
        set_bits(&mut bits, 60, 10);
        assert_eq!(clear_runs(&bits, 10, 100), [(10, 10), (30, 30), (70, 40)]);
        set_bits(&mut bits, 0, 256);
        assert!(clear_runs(&bits, 0, 256).is_empty());
    }

    #[test]
    fn set_bits_counts_only_new_bits() {
        let mut bits = vec![0u64; 4];
        assert_eq!(set_bits(&mut bits, 3, 100), 100);
        assert_eq!(set_bits(&mut bits, 0, 64), 3);
        assert_eq!(set_bits(&mut bits, 100, 156), 153);
        assert!(bits.iter().all(|&w| w == u64::MAX));
    }
}
