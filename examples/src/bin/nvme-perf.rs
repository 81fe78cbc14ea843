//! nvme-perf: IOPS, bandwidth and latency of the userspace NVMe driver, like
//! SPDK's spdk_nvme_perf; with `--baseline`, the same workload through the
//! kernel's nvme driver (io_uring, O_DIRECT) in the same run, interrupt-driven
//! and polled (`IORING_SETUP_IOPOLL` on nvme poll queues), and the ratios.
//!
//! ```text
//! nvme-perf --device BDF --pattern randread --io-size 4096 --queue-depth 32 --queues 1 --seconds 5 [--baseline] [--json]
//! ```
//!
//! One thread per queue pair, nothing shared on the I/O path. Each worker
//! counts the heap allocations its thread makes in the measured window (after
//! warm-up): the I/O path makes none.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use examples::cli;
use examples::perf::{self, Pattern, QueueStats, Summary, Workload};
use examples::syscount;
use examples::uring::Completions;
use examples::usage::Usage;
use nvme_driver::{Controller, Error, IoQueuePair, Result};
use vfio_core::dma::{Buffer, BufferPool};
use vfio_core::pci::{PciAddress, Sysfs};
use vfio_core::vfio::Container;

#[derive(Parser, Clone)]
#[command(
    about = "Benchmark the userspace NVMe driver (and the kernel's, with --baseline)",
    allow_negative_numbers = true
)]
struct Cli {
    /// PCI address of the controller, bound to vfio-pci.
    #[arg(long, value_name = "BDF")]
    device: PciAddress,
    #[arg(long, default_value_t = 1, value_parser = cli::u32_in(cli::NSID))]
    nsid: u32,
    #[arg(long, value_enum, default_value_t = Pattern::Randread)]
    pattern: Pattern,
    /// Bytes per I/O, a multiple of the block size (512 B to 1 MiB).
    #[arg(long, default_value_t = 4096, value_parser = cli::usize_in(512..=MAX_IO_SIZE))]
    io_size: usize,
    /// I/Os in flight per queue (1 to 1023: a queue has at most 1024 entries,
    /// one always empty).
    #[arg(long, default_value_t = 32, value_parser = cli::usize_in(1..=1023))]
    queue_depth: usize,
    /// Queue pairs, one thread each (1 to 64).
    #[arg(long, default_value_t = 1, value_parser = cli::usize_in(1..=64))]
    queues: usize,
    /// Seconds to measure (above 0, at most a week).
    #[arg(long, default_value = "5", value_parser = cli::seconds, allow_hyphen_values = true)]
    seconds: Duration,
    /// Refill the queue only when this many slots are free (one doorbell per
    /// batch); 1 refills after every completion. At most the queue depth.
    #[arg(long, default_value_t = 1, value_parser = cli::usize_in(1..=1023))]
    batch: usize,
    /// Seconds of warm-up before measuring (0 for none).
    #[arg(long, default_value = "0.5", value_parser = cli::seconds_or_zero, allow_hyphen_values = true)]
    warmup: Duration,
    /// Also run the kernel's nvme driver (io_uring, O_DIRECT) on the same
    /// device, twice: interrupt-driven, then polled (the nvme module's
    /// `poll_queues` is set to --queues for that run and restored after).
    #[arg(long)]
    baseline: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    nvme: cli::NvmeOptions,
}

/// The largest --io-size: 1 MiB, so the buffers of a queue (I/O size times
/// queue depth) stay under 1 GiB.
const MAX_IO_SIZE: u64 = 1 << 20;

impl Cli {
    /// Parses the command line; relations between arguments are clap errors too.
    fn parse_checked() -> Cli {
        let cli = Cli::parse();
        if cli.batch > cli.queue_depth {
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "--batch {} is larger than --queue-depth {}; give a batch from 1 to the queue depth",
                        cli.batch, cli.queue_depth
                    ),
                )
                .exit();
        }
        cli
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse_checked();
    if let Err(e) = examples::signals::install() {
        eprintln!("nvme-perf: {e}");
        return ExitCode::FAILURE;
    }
    let code = match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            examples::cli::report("nvme-perf", &e);
            ExitCode::FAILURE
        }
    };
    examples::signals::exit_code_or("nvme-perf", code)
}

fn run(cli: &Cli) -> Result<()> {
    let addr = cli.device;
    examples::cli::require_devices(&[addr]).map_err(Error::Vfio)?;
    let (user, units, features) = userspace(cli, addr)?;
    let user_rows = perf::summarize(&user);
    let mut kernel_rows = Vec::new();
    if cli.baseline {
        for completions in [Completions::Interrupt, Completions::Polled] {
            let stats = kernel(cli, addr, units, completions)?;
            kernel_rows.push((completions, perf::summarize(&stats)));
        }
    }
    report(cli, &user_rows, &kernel_rows, features);
    Ok(())
}

/// What the userspace driver's queues used, as the driver reports it.
#[derive(Clone, Copy)]
struct Features {
    /// Shadow doorbells (Doorbell Buffer Config).
    shadow: bool,
    /// How data is described (PRPs, SGLs, or both by size).
    data_pointer: nvme_driver::DataPointer,
    /// Interrupt mode (else polled).
    interrupts: bool,
}

/// The userspace driver: returns per-queue statistics, the namespace size
/// in I/O units, and what the queues used.
fn userspace(cli: &Cli, addr: PciAddress) -> Result<(Vec<QueueStats>, u64, Features)> {
    let container = Container::new()?;
    let mut nvme = Controller::open_with(&container, addr, cli.nvme.config())?;
    let ns = nvme.namespace(cli.nsid)?;
    if !cli.io_size.is_multiple_of(ns.block_size as usize) {
        return Err(Error::InvalidArgument(format!(
            "--io-size {} is not a multiple of the {}-byte block",
            cli.io_size, ns.block_size
        )));
    }
    let units = ns.bytes() / cli.io_size as u64;
    let entries = u16::try_from(cli.queue_depth + 1)
        .map_err(|_| Error::InvalidArgument("queue depth too large".into()))?;
    let mut workers = Vec::new();
    let mut features = Features {
        shadow: true,
        data_pointer: nvme.data_pointer(),
        interrupts: true,
    };
    for q in 0..cli.queues {
        let qp = nvme.create_io_queue_pair::<Buffer>(entries)?;
        features.shadow &= qp.uses_shadow_doorbells();
        features.interrupts &= qp.interrupt_vector().is_some();
        let pool = BufferPool::new(&container, cli.io_size, cli.queue_depth)?;
        let (cli, wl) = (
            cli.clone(),
            Workload::new(cli.pattern, units, q as u64 * 7919 + 1),
        );
        workers.push(thread::spawn(move || user_worker(qp, pool, wl, &cli)));
    }
    let stats = workers
        .into_iter()
        .map(|w| w.join().expect("worker thread"))
        .collect::<Result<Vec<_>>>()?;
    Ok((stats, units, features))
}

fn user_worker(
    mut qp: IoQueuePair<Buffer>,
    pool: Arc<BufferPool>,
    mut wl: Workload,
    cli: &Cli,
) -> Result<QueueStats> {
    let epoch = Instant::now();
    let mut stats = QueueStats::new();
    let warm_until = epoch + cli.warmup;
    drive(
        &mut qp,
        &pool,
        &mut wl,
        cli,
        epoch,
        warm_until,
        &mut QueueStats::new(),
    )?;
    let start = Instant::now();
    let mut result = Ok(());
    let cpu_at_start = Usage::thread_now();
    let counting = syscount::start();
    let info = allocation_counter::measure(|| {
        result = drive(
            &mut qp,
            &pool,
            &mut wl,
            cli,
            epoch,
            start + cli.seconds,
            &mut stats,
        );
    });
    stats.syscalls = counting.finish();
    stats.elapsed = start.elapsed();
    stats.cpu = Some(Duration::from_secs_f64(
        cpu_at_start.thread_since().cpu_seconds,
    ));
    stats.allocations = Some(info.count_total);
    result?;
    // The commands still in flight after the measurement are not counted,
    // but a failed one is still an error.
    let mut failure = None;
    while qp.in_flight() > 0 {
        qp.poll(usize::MAX, |c| {
            if let Err(e) = c.result {
                failure.get_or_insert(e);
            }
        })?;
    }
    failure.map_or(Ok(stats), Err)
}

/// Keeps the queue full until `until`, recording completions into `stats`.
fn drive(
    qp: &mut IoQueuePair<Buffer>,
    pool: &Arc<BufferPool>,
    wl: &mut Workload,
    cli: &Cli,
    epoch: Instant,
    until: Instant,
    stats: &mut QueueStats,
) -> Result<()> {
    let blocks_per_unit = cli.io_size as u64 / qp.namespace(cli.nsid)?.block_size as u64;
    let mut failure = None;
    let refill_at = cli.queue_depth.saturating_sub(cli.batch.max(1));
    while Instant::now() < until && failure.is_none() && examples::signals::requested().is_none() {
        let refill = qp.in_flight() <= refill_at;
        while refill && qp.in_flight() < cli.queue_depth {
            let Some(buf) = pool.alloc() else { break };
            let (unit, read) = wl.next_io();
            let tag = epoch.elapsed().as_nanos() as u64;
            let lba = unit * blocks_per_unit;
            let submitted = if read {
                qp.submit_read(cli.nsid, lba, buf, 0, cli.io_size, tag)
            } else {
                qp.submit_write(cli.nsid, lba, buf, 0, cli.io_size, tag)
            };
            submitted.map_err(|(e, _)| e)?;
        }
        qp.ring();
        if qp.interrupt_vector().is_some() {
            // Interrupt mode: sleep until the controller posts a completion.
            qp.wait(until.saturating_duration_since(Instant::now()))?;
        }
        // An NVMe command moves all its blocks or fails: only a successful
        // one is counted.
        qp.poll(cli.queue_depth, |c| match c.result {
            Ok(()) => stats.record(
                cli.io_size,
                (epoch.elapsed().as_nanos() as u64).saturating_sub(c.tag),
            ),
            Err(e) => {
                failure.get_or_insert(e);
            }
        })?;
    }
    failure.map_or(Ok(()), Err)
}

/// The kernel's nvme driver on the same device: unbind from vfio-pci, run the
/// workload with io_uring on the block device, bind back. For polled
/// completions the driver is given one poll queue per worker while it probes.
fn kernel(
    cli: &Cli,
    addr: PciAddress,
    units: u64,
    completions: Completions,
) -> Result<Vec<QueueStats>> {
    let sysfs = Sysfs::new();
    let poll_queues = match completions {
        Completions::Polled => Some(PollQueues::set(cli.queues)?),
        Completions::Interrupt => None,
    };
    sysfs.unbind_vfio(addr)?;
    let result = block_device(addr, cli.nsid).and_then(|dev| {
        let workers: Vec<_> = (0..cli.queues)
            .map(|q| {
                let (cli, dev) = (cli.clone(), dev.clone());
                let wl = Workload::new(cli.pattern, units, q as u64 * 7919 + 1);
                thread::spawn(move || {
                    examples::uring::run(
                        &dev,
                        wl,
                        cli.io_size,
                        cli.queue_depth,
                        cli.warmup,
                        cli.seconds,
                        completions,
                    )
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().expect("worker thread").map_err(|e| {
                    Error::InvalidArgument(format!("kernel baseline on {}: {e}", dev.display()))
                })
            })
            .collect()
    });
    sysfs.bind_vfio(addr)?;
    drop(poll_queues);
    result
}

/// The nvme module's `poll_queues` parameter, set for a polled run and
/// restored on drop; the kernel's driver reads it when it probes a controller.
struct PollQueues {
    old: String,
}

impl PollQueues {
    const PARAM: &'static str = "/sys/module/nvme/parameters/poll_queues";

    fn set(queues: usize) -> Result<PollQueues> {
        let fail = |what: &str, e: std::io::Error| {
            Error::InvalidArgument(format!(
                "{what} {} for the polled io_uring baseline: {e} (load the nvme module and run as root)",
                Self::PARAM
            ))
        };
        let old = std::fs::read_to_string(Self::PARAM).map_err(|e| fail("read", e))?;
        std::fs::write(Self::PARAM, queues.to_string()).map_err(|e| fail("write", e))?;
        Ok(PollQueues {
            old: old.trim().to_string(),
        })
    }
}

impl Drop for PollQueues {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(Self::PARAM, &self.old) {
            eprintln!(
                "nvme-perf: could not restore {} to {}: {e}",
                Self::PARAM,
                self.old
            );
        }
    }
}

/// /dev/nvmeXnN of the controller at `addr`, once the kernel has probed it.
fn block_device(addr: PciAddress, nsid: u32) -> Result<PathBuf> {
    let dir = PathBuf::from(format!("/sys/bus/pci/devices/{addr}/nvme"));
    for _ in 0..200 {
        let ctrl = std::fs::read_dir(&dir)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.file_name());
        if let Some(ctrl) = ctrl {
            let dev = PathBuf::from(format!("/dev/{}n{nsid}", ctrl.to_string_lossy()));
            if dev.exists() {
                return Ok(dev);
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(Error::InvalidArgument(format!("the kernel's nvme driver did not create a block device for {addr} namespace {nsid} within 10 s")))
}

fn report(cli: &Cli, user: &[Summary], kernel: &[(Completions, Vec<Summary>)], f: Features) {
    let u = user.last().expect("a total row");
    let side = |mode: Completions| {
        kernel
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, rows)| rows.as_slice())
    };
    let total = |mode| side(mode).and_then(|rows| rows.last());
    let ratio_iops = |mode| total(mode).map(|k: &Summary| u.iops / k.iops.max(1e-9));
    let ratio_lat = |mode| total(mode).map(|k: &Summary| u.avg_us / k.avg_us.max(1e-9));
    let (int, poll) = (Completions::Interrupt, Completions::Polled);
    if cli.json {
        let json = serde_json::json!({
            "machine": perf::machine_label(), "pattern": cli.pattern, "io_size": cli.io_size,
            "queue_depth": cli.queue_depth, "queues": cli.queues, "seconds": cli.seconds.as_secs_f64(),
            "shadow_doorbells": f.shadow, "data_pointer": format!("{:?}", f.data_pointer).to_lowercase(), "interrupts": f.interrupts, "userspace": user, "kernel": side(int), "kernel_polled": side(poll),
            "iops_ratio": ratio_iops(int), "avg_latency_ratio": ratio_lat(int),
            "iops_ratio_polled": ratio_iops(poll), "avg_latency_ratio_polled": ratio_lat(poll),
        });
        println!("{json}");
        return;
    }
    println!(
        "nvme-perf on {}: {:?}, {} bytes, queue depth {}, {} queue(s), {} s",
        perf::machine_label(),
        cli.pattern,
        cli.io_size,
        cli.queue_depth,
        cli.queues,
        cli.seconds.as_secs_f64()
    );
    perf::print_table("userspace driver (vfio)", user);
    println!(
        "userspace doorbells: {}",
        if f.shadow {
            "shadow (Doorbell Buffer Config; MMIO only when the event index asks)"
        } else {
            "MMIO"
        }
    );
    println!(
        "userspace data pointer: {}; completions: {}",
        cli::data_pointer_name(f.data_pointer),
        if f.interrupts {
            "interrupts (an MSI-X vector per queue, the thread sleeps in wait)"
        } else {
            "polled"
        }
    );
    for (mode, rows) in kernel {
        let name = match mode {
            Completions::Interrupt => "kernel nvme driver (io_uring, interrupts, O_DIRECT)",
            Completions::Polled => "kernel nvme driver (io_uring, IOPOLL, O_DIRECT)",
        };
        perf::print_table(name, rows);
        println!(
            "ratio userspace/kernel {mode:?}: IOPS {:.2}x, average latency {:.2}x",
            ratio_iops(*mode).unwrap_or(0.0),
            ratio_lat(*mode).unwrap_or(0.0)
        );
    }
    println!(
        "heap allocations on the userspace I/O path after warm-up: {}",
        u.allocations
            .map_or("not measured".into(), |n| n.to_string())
    );
    println!(
        "system calls in the measured window, all queues: userspace driver {}",
        u.syscalls
    );
    for (mode, rows) in kernel {
        if let Some(k) = rows.last() {
            println!(
                "system calls in the measured window, all queues: kernel io_uring {mode:?} {}",
                k.syscalls
            );
        }
    }
}
