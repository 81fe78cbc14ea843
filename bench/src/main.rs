//! bench-host: the drivers' data paths on the software device models of
//! vfio-models, for `cargo xtask bench-host`, which runs it under callgrind
//! and counts the instructions the drivers execute per I/O.
//!
//! ```text
//! bench-host [--count-mmio] WORKLOAD SPEC...
//!   nvme       BATCH:ITERATIONS   4 KiB reads: BATCH submitted, one doorbell, polled until all are back
//!   nic        BATCH:ITERATIONS   e1000, 60-byte frames: BATCH built, one tx_batch, one tx_clean
//!   virtio-tx  BATCH:ITERATIONS   virtio-net, 60-byte frames: as nic
//!   echo       BATCH:ITERATIONS   e1000, 60-byte frames: one rx_batch of BATCH, MACs swapped, one tx_batch, one tx_clean
//!   forward    CHUNKS             the forwarder's loop (examples::forward) over CHUNKS x 64 KiB
//! ```
//!
//! Each SPEC is one measurement: the workload runs inside
//! [`bench_host_measured`], which nothing else calls, so callgrind can zero
//! its counters when it is entered and dump them when it returns
//! (`--zero-before`, `--dump-after`), and the device models, reached only
//! through their registers, can be left out by toggling collection off
//! inside `RegisterModel::read` and `write` (`--toggle-collect`). The models
//! work synchronously inside those calls (the NVMe controller runs every
//! command when its doorbell is written, the e1000 sends every descriptor
//! when TDT is written), so the driver never waits and the counts are the
//! same from run to run. Before the measurements the workload runs once at
//! each batch size outside the measured function (warm-up). For each SPEC a
//! line `measured WORKLOAD BATCH ITERATIONS OPS NANOSECONDS` goes to stdout:
//! OPS is the I/Os, frames or datagrams done, NANOSECONDS the wall-clock
//! time (meaningful when not under valgrind; it includes the models' work).
//!
//! With `--count-mmio` every BAR's register model is wrapped in one that
//! counts the driver's accesses ([`CountingBar`]; config space is not
//! counted: it is no MMIO, and no data path touches it), and a line
//! `mmio WORKLOAD BATCH ITERATIONS READS WRITES` follows each `measured`
//! line: the BAR reads and writes inside the measured function only. Not
//! under callgrind: the wrapper is itself a `RegisterModel`, and nested
//! register calls would defeat `--toggle-collect`. The models being
//! synchronous, the counts are the same on every run.

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use examples::dmaf::Endpoints;
use examples::forward::{self, Forwarder, Options, CHUNK};
use nic_driver::e1000::E1000;
use nic_driver::virtio::VirtioNet;
use nic_driver::{NetDevice, Packet};
use nvme_driver::{Controller, IoQueuePair};
use vfio_core::dma::{Buffer, BufferPool};
use vfio_core::mmio::{RegisterModel, SharedModel};
use vfio_core::vfio::{Container, Device};
use vfio_models::e1000::{E1000Config, E1000Model};
use vfio_models::nvme::{Namespace, NvmeConfig, NvmeModel};
use vfio_models::virtio_net::{VirtioNetConfig, VirtioNetModel};

/// The namespace every workload reads.
const NSID: u32 = 1;
/// Bytes of one NVMe read in the `nvme` workload.
const READ: usize = 4096;
/// Largest batch the `nvme`, `nic`, `virtio-tx` and `echo` workloads take.
const MAX_BATCH: usize = 64;
/// Bytes of each frame of the `nic`, `virtio-tx` and `echo` workloads.
const FRAME: usize = 60;
/// Most 64 KiB chunks one `forward` measurement reads.
const MAX_CHUNKS: u64 = 1024;
/// The forwarder's default NVMe reads in flight (`forwarder --queue-depth`).
const FORWARD_DEPTH: usize = 16;

type Error = Box<dyn std::error::Error>;

/// A workload, set up: runs `iterations` rounds of `batch` operations and
/// returns how many operations it did.
trait Workload {
    fn run(&mut self, batch: usize, iterations: u64) -> u64;

    /// Before each measurement, outside it: empties what a model logs (its
    /// record of every command), so that the model's own figures do not
    /// depend on when its log last grew.
    fn settle(&mut self) {}

    /// Before each run (warm-up or measurement), outside it: what the run
    /// needs from outside the driver (`echo`: its frames delivered to the
    /// model), so that no model work is done in the measured function but
    /// inside register accesses.
    fn prepare(&mut self, _batch: usize, _iterations: u64) {}
}

/// The driver's BAR accesses, counted by [`CountingBar`].
#[derive(Debug, Default)]
struct MmioCounts {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl MmioCounts {
    fn take(&self) -> (u64, u64) {
        (
            self.reads.swap(0, Ordering::Relaxed),
            self.writes.swap(0, Ordering::Relaxed),
        )
    }
}

/// A BAR's register model that counts each access and passes it on to the
/// device model (`--count-mmio`).
#[derive(Debug)]
struct CountingBar {
    model: SharedModel,
    counts: Arc<MmioCounts>,
}

impl RegisterModel for CountingBar {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        self.counts.reads.fetch_add(1, Ordering::Relaxed);
        self.model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read(offset, size)
    }

    fn write(&mut self, offset: usize, size: usize, value: u64) {
        self.counts.writes.fetch_add(1, Ordering::Relaxed);
        self.model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(offset, size, value);
    }
}

/// `device` with its BARs counted into `counts`, if given.
fn counted(mut device: Device, counts: Option<&Arc<MmioCounts>>) -> Result<Device, Error> {
    if let Some(counts) = counts {
        device.wrap_model_bars(|_, model| {
            Arc::new(Mutex::new(CountingBar {
                model,
                counts: Arc::clone(counts),
            }))
        })?;
    }
    Ok(device)
}

/// The one function `cargo xtask bench-host` measures (callgrind:
/// `--zero-before` and `--dump-after` match its name). Never inlined, and
/// called only for measurements.
#[inline(never)]
fn bench_host_measured(work: &mut dyn Workload, batch: usize, iterations: u64) -> u64 {
    work.run(batch, iterations)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-host: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), Error> {
    let count_mmio = args.first().is_some_and(|a| a == "--count-mmio");
    let args = &args[count_mmio as usize..];
    let (workload, specs) = args
        .split_first()
        .ok_or("usage: bench-host [--count-mmio] nvme|nic|virtio-tx|echo|forward SPEC...")?;
    let specs: Vec<(usize, u64)> = specs
        .iter()
        .map(|s| parse_spec(workload, s))
        .collect::<Result<_, _>>()?;
    if specs.is_empty() {
        return Err("no measurement asked for (SPEC...)".into());
    }
    let counts = count_mmio.then(|| Arc::new(MmioCounts::default()));
    let c = counts.as_ref();
    let mut work: Box<dyn Workload> = match workload.as_str() {
        "nvme" => Box::new(NvmeReads::new(c)?),
        "nic" => Box::new(NicTx::new(c)?),
        "virtio-tx" => Box::new(NicTx::virtio(c)?),
        "echo" => Box::new(Echo::new(c)?),
        "forward" => Box::new(Forward::new(c)?),
        other => {
            return Err(
                format!("unknown workload {other:?} (nvme, nic, virtio-tx, echo, forward)").into(),
            )
        }
    };
    let mut batches: Vec<usize> = specs.iter().map(|s| s.0).collect();
    batches.dedup();
    for &batch in &batches {
        // Warm-up: one forwarder run of 4 chunks, or 4 rounds of the batch.
        work.prepare(batch, 4);
        work.run(batch, 4);
    }
    for (batch, iterations) in specs {
        work.prepare(batch, iterations);
        work.settle();
        if let Some(c) = &counts {
            c.take();
        }
        let start = Instant::now();
        let ops = bench_host_measured(work.as_mut(), batch, iterations);
        let ns = start.elapsed().as_nanos();
        println!("measured {workload} {batch} {iterations} {ops} {ns}");
        if let Some(c) = &counts {
            let (reads, writes) = c.take();
            println!("mmio {workload} {batch} {iterations} {reads} {writes}");
        }
    }
    Ok(())
}

/// `BATCH:ITERATIONS` (`CHUNKS` for `forward`, whose batches are the
/// forwarder's own).
fn parse_spec(workload: &str, spec: &str) -> Result<(usize, u64), Error> {
    let bad = || format!("{spec:?} is not BATCH:ITERATIONS (BATCH 1 to {MAX_BATCH})");
    if workload == "forward" {
        let chunks = spec
            .parse()
            .map_err(|_| format!("{spec:?} is not CHUNKS"))?;
        return Ok((0, chunks));
    }
    let (b, n) = spec.split_once(':').ok_or_else(bad)?;
    let batch: usize = b.parse().map_err(|_| bad())?;
    let iterations = n.parse().map_err(|_| bad())?;
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(bad().into());
    }
    Ok((batch, iterations))
}

/// 4 KiB reads at batch `batch`: `batch` reads submitted into pool
/// buffers, one doorbell, then polled until all are back (on the model
/// they are all complete by then), the buffers reused for the next round.
/// LBAs walk the namespace 4 KiB at a time.
struct NvmeReads {
    // Field order is drop order: the queue pair (deleted at the controller)
    // before the buffers, the pool and the controller.
    qp: IoQueuePair<Buffer>,
    free: Vec<Buffer>,
    _pool: Arc<BufferPool>,
    _nvme: Controller,
    model: Arc<Mutex<NvmeModel>>,
    lba: u64,
    blocks: u64,
}

impl NvmeReads {
    fn new(counts: Option<&Arc<MmioCounts>>) -> Result<NvmeReads, Error> {
        let container = Container::unbacked();
        let blocks = 16384; // 8 MiB of 512-byte blocks
        let config = NvmeConfig {
            namespaces: vec![Namespace::zeroed(NSID, 512, blocks)],
            ..NvmeConfig::default()
        };
        let (model, device) = NvmeModel::new(&container, config);
        let mut nvme = Controller::new(counted(device, counts)?)?;
        let qp = nvme.create_io_queue_pair::<Buffer>(2 * MAX_BATCH as u16)?;
        let pool = BufferPool::new(&container, READ, MAX_BATCH)?;
        let mut free = Vec::with_capacity(MAX_BATCH);
        pool.alloc_batch(MAX_BATCH, &mut free);
        Ok(NvmeReads {
            qp,
            free,
            _pool: pool,
            _nvme: nvme,
            model,
            lba: 0,
            blocks: blocks as u64,
        })
    }
}

impl Workload for NvmeReads {
    fn run(&mut self, batch: usize, iterations: u64) -> u64 {
        let step = (READ / 512) as u64;
        for _ in 0..iterations {
            for _ in 0..batch {
                let buf = self.free.pop().expect("a buffer per read in flight");
                let lba = self.lba;
                self.lba = if lba + step < self.blocks {
                    lba + step
                } else {
                    0
                };
                // The namespace, offset and size as a program has them: values
                // it read at run time, which the compiler cannot fold into
                // the driver's checks (nvme-perf takes them from its command line).
                let (nsid, offset, bytes) = black_box((NSID, 0, READ));
                if let Err((e, _)) = self.qp.submit_read(nsid, lba, buf, offset, bytes, lba) {
                    panic!("submitting a read: {e}");
                }
            }
            self.qp.ring();
            let mut done = 0;
            while done < batch {
                let free = &mut self.free;
                done += self
                    .qp
                    .poll(batch, |c| {
                        if let Err(e) = c.result {
                            panic!("read of LBA {}: {e}", c.tag);
                        }
                        free.push(c.buf.expect("an asynchronous read's buffer"));
                    })
                    .expect("polling the completion queue");
            }
        }
        iterations * batch as u64
    }

    fn settle(&mut self) {
        self.model.lock().expect("the model").io.clear();
    }
}

/// 60-byte transmit at batch `batch`, as nic-pktgen's send loop does it:
/// one `tx_fill` of `batch` frames built in fresh pool buffers where the
/// NIC sends them from (the 60 bytes copied in; one TDT write on the
/// e1000, one notification on virtio-net), one `tx_clean` returning the
/// buffers the NIC is done with. Through `dyn NetDevice`, as nic-pktgen
/// holds the NIC. The `nic` workload on the e1000, `virtio-tx` on
/// virtio-net.
struct NicTx {
    nic: Box<dyn NetDevice + Send>,
    frame: [u8; FRAME],
    _model: Box<dyn std::any::Any>,
}

impl NicTx {
    /// On the e1000.
    fn new(counts: Option<&Arc<MmioCounts>>) -> Result<NicTx, Error> {
        let container = Container::unbacked();
        let config = E1000Config {
            record: false,
            ..E1000Config::default()
        };
        let (model, device) = E1000Model::new(&container, config);
        let nic: Box<dyn NetDevice + Send> =
            Box::new(E1000::new(counted(device, counts)?, pktgen_config())?);
        Ok(NicTx::with(nic, Box::new(model)))
    }

    /// On virtio-net (its queues as large as the driver's rings).
    fn virtio(counts: Option<&Arc<MmioCounts>>) -> Result<NicTx, Error> {
        let container = Container::unbacked();
        let config = VirtioNetConfig {
            record: false,
            queue_size: 512,
            ..VirtioNetConfig::default()
        };
        let (model, device) = VirtioNetModel::new(&container, config);
        let nic: Box<dyn NetDevice + Send> =
            Box::new(VirtioNet::new(counted(device, counts)?, pktgen_config())?);
        Ok(NicTx::with(nic, Box::new(model)))
    }

    fn with(nic: Box<dyn NetDevice + Send>, model: Box<dyn std::any::Any>) -> NicTx {
        // Broadcast, from the NIC, IPv4 EtherType, zeros.
        let mut frame = [0u8; FRAME];
        frame[..6].fill(0xff);
        frame[6..12].copy_from_slice(&nic.mac());
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        NicTx {
            nic,
            frame,
            _model: model,
        }
    }
}

/// nic-pktgen's set-up for batches up to 512, but for the link poll: the
/// drivers read the link register at most once per
/// [`nic_driver::Config::link_poll`] (5 ms by default) in steady state,
/// and whether such a read falls inside a measurement depends on the
/// clock; the bench trusts the link for an hour so that its counts repeat
/// exactly (one read per 5 ms is 0.0000 per packet at any rate the bench
/// could print).
fn pktgen_config() -> nic_driver::Config {
    nic_driver::Config::default()
        .tx_ring(512)
        .spare_buffers(1024)
        .link_poll(STEADY_LINK)
}

/// How long the bench's NICs trust the link they last read (see
/// [`pktgen_config`]).
const STEADY_LINK: std::time::Duration = std::time::Duration::from_secs(3600);

impl Workload for NicTx {
    fn run(&mut self, batch: usize, iterations: u64) -> u64 {
        let mut sent = 0;
        let frame = &self.frame;
        let mut fill = |room: &mut [u8]| {
            room[..FRAME].copy_from_slice(frame);
            FRAME
        };
        for _ in 0..iterations {
            let got = self.nic.tx_fill(batch, &mut fill).expect("transmit");
            assert_eq!(got, batch, "a free buffer and descriptor per frame");
            sent += got as u64;
            self.nic.tx_clean();
        }
        sent
    }
}

/// e1000 echo at batch `batch`: one `rx_batch` of `batch` received 60-byte
/// frames, each one's MAC addresses swapped in its receive buffer, the
/// batch sent back from those buffers with one `tx_batch`, then one
/// `tx_clean`. The frames are delivered to the model before the run
/// ([`Workload::prepare`]): it holds them in its receive FIFO and writes
/// them into the ring as the driver gives descriptors back (inside the RDT
/// write), so the measured function does no model work outside the
/// registers.
struct Echo {
    nic: Box<dyn NetDevice + Send>,
    rx: Vec<Packet>,
    /// The frame delivered: to the NIC, from a peer, IPv4 EtherType, zeros.
    frame: Vec<u8>,
    model: Arc<Mutex<E1000Model>>,
}

impl Echo {
    fn new(counts: Option<&Arc<MmioCounts>>) -> Result<Echo, Error> {
        let container = Container::unbacked();
        let config = E1000Config {
            record: false,
            // Room for every frame of a measurement (4,096 of them).
            rx_fifo: 16 << 20,
            ..E1000Config::default()
        };
        let (model, device) = E1000Model::new(&container, config);
        let config = nic_driver::Config::default()
            .rx_ring(512)
            .tx_ring(512)
            .spare_buffers(1024)
            .link_poll(STEADY_LINK);
        let nic: Box<dyn NetDevice + Send> =
            Box::new(E1000::new(counted(device, counts)?, config)?);
        let mut frame = vec![0u8; FRAME];
        frame[..6].copy_from_slice(&nic.mac());
        frame[6..12].copy_from_slice(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x57]);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        Ok(Echo {
            nic,
            rx: Vec::with_capacity(MAX_BATCH),
            frame,
            model,
        })
    }
}

impl Workload for Echo {
    fn prepare(&mut self, batch: usize, iterations: u64) {
        let mut model = self.model.lock().expect("the model");
        for _ in 0..batch as u64 * iterations {
            model.deliver(self.frame.clone());
        }
    }

    fn run(&mut self, batch: usize, iterations: u64) -> u64 {
        let mut sent = 0;
        for _ in 0..iterations {
            let n = self.nic.rx_batch(&mut self.rx, batch).expect("receive");
            assert_eq!(n, batch, "fewer frames received than delivered");
            for p in &mut self.rx {
                // As nic-echo swaps them (its `swap_macs`).
                let f = p.data_mut();
                if f.len() >= 12 {
                    let (dst, src) = f.split_at_mut(6);
                    dst.swap_with_slice(&mut src[..6]);
                }
            }
            sent += self.nic.tx_packets(&mut self.rx).expect("transmit") as u64;
            assert!(self.rx.is_empty(), "every frame sent back");
            self.nic.tx_clean();
        }
        sent
    }
}

/// The forwarder's own loop ([`examples::forward::Forwarder::forward`],
/// what the `forwarder` binary runs) over `iterations` chunks of 64 KiB,
/// set up as the binary sets itself up by default: 16 NVMe reads in
/// flight, MTU 1500 (1,456-byte payloads, 46 datagrams a chunk), the NIC's
/// 512-descriptor TX ring, no pacing, no progress display; the link
/// trusted as in [`pktgen_config`]. Its operations
/// are the datagrams sent, the end marker included.
struct Forward {
    f: Forwarder,
    _nvme: Controller,
    _models: (Arc<Mutex<NvmeModel>>, Arc<Mutex<E1000Model>>),
}

impl Forward {
    fn new(counts: Option<&Arc<MmioCounts>>) -> Result<Forward, Error> {
        let container = Container::unbacked();
        let bs = 512u64;
        let blocks = (MAX_CHUNKS as usize * CHUNK) / bs as usize;
        let config = NvmeConfig {
            namespaces: vec![Namespace::zeroed(NSID, bs as u32, blocks)],
            ..NvmeConfig::default()
        };
        let (nvme_model, device) = NvmeModel::new(&container, config);
        let mut nvme = Controller::new(counted(device, counts)?)?;
        let qp = nvme.create_io_queue_pair::<Buffer>(FORWARD_DEPTH as u16 + 1)?;
        let chunk = CHUNK.min(qp.max_transfer()) / bs as usize * bs as usize;
        let chunks = BufferPool::new(&container, chunk, FORWARD_DEPTH * 4)?;
        let config = E1000Config {
            record: false,
            ..E1000Config::default()
        };
        let (nic_model, device) = E1000Model::new(&container, config);
        // The forwarder's own set-up, but for the link poll (see
        // `pktgen_config`).
        let nic: Box<dyn NetDevice + Send> = Box::new(E1000::new(
            counted(device, counts)?,
            forward::nic_config(1500).link_poll(STEADY_LINK),
        )?);
        let ends = Endpoints {
            src_mac: nic.mac(),
            dst_mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x57],
            src_ip: [198, 51, 100, 1],
            dst_ip: [192, 0, 2, 1],
            src_port: 4000,
            dst_port: 9000,
        };
        let options = Options {
            queue_depth: FORWARD_DEPTH,
            payload: forward::payload(1500),
            max_bytes_per_second: None,
            copy_payload: false,
            progress: false,
        };
        Ok(Forward {
            f: Forwarder::new(qp, nic, chunks, ends, NSID, bs, options),
            _nvme: nvme,
            _models: (nvme_model, nic_model),
        })
    }
}

impl Workload for Forward {
    fn run(&mut self, _batch: usize, chunks: u64) -> u64 {
        let before = self.f.summary().datagrams;
        let finished = self
            .f
            .forward(0, chunks * CHUNK as u64)
            .expect("forwarding");
        assert!(finished, "the forwarder stopped early");
        self.f.summary().datagrams - before
    }

    fn settle(&mut self) {
        self._models.0.lock().expect("the model").io.clear();
    }
}
