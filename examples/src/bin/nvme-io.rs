//! nvme-io: identify an NVMe controller and move data between files and its
//! namespaces with the userspace driver.
//!
//! ```text
//! nvme-io --device BDF identify
//! nvme-io --device BDF [--nsid N] read --lba L --blocks N --output FILE|- [--io-size BYTES]
//! nvme-io --device BDF [--nsid N] write --lba L --input FILE|-
//! nvme-io --device BDF [--nsid N] zero|trim --lba L --blocks N
//! nvme-io --device BDF smart
//! ```
//!
//! Options before the command: `--queue-depth N` (default 63),
//! `--interrupts`, `--data-pointer auto|prp|sgl`, `--no-shadow-doorbells`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use examples::cli;
use nvme_driver::{Controller, Error, IoQueuePair, Result};
use vfio_core::dma::{Backing, Buffer, BufferPool, DmaMemory, DmaTarget};
use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

/// Bytes moved per round trip between the file and the device.
const CHUNK: usize = 4 << 20;

#[derive(Parser)]
#[command(
    about = "Identify an NVMe controller and read or write its namespaces (userspace driver)",
    allow_negative_numbers = true,
    arg_required_else_help = false
)]
struct Cli {
    /// PCI address of the controller, bound to vfio-pci.
    #[arg(long, value_name = "BDF")]
    device: PciAddress,
    /// Namespace ID.
    #[arg(long, default_value_t = 1, value_parser = cli::u32_in(cli::NSID))]
    nsid: u32,
    /// Commands in flight at most (the I/O queue has one entry more).
    #[arg(long, default_value_t = 63, value_parser = clap::value_parser!(u16).range(1..=1023))]
    queue_depth: u16,
    #[command(flatten)]
    nvme: cli::NvmeOptions,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Controller and namespace facts.
    Identify,
    /// Read blocks into a file ("-" for standard output).
    #[command(allow_negative_numbers = true)]
    Read {
        #[arg(long)]
        lba: u64,
        #[arg(long)]
        blocks: u64,
        #[arg(long)]
        output: String,
        /// Bytes per command (whole blocks): read into pool buffers with up
        /// to --queue-depth commands in flight. Without it, the driver's
        /// blocking read in 4 MiB pieces (commands of the controller's
        /// largest transfer).
        #[arg(long, value_parser = examples::cli::u64_in(1..=1 << 30))]
        io_size: Option<u64>,
    },
    /// Write a file ("-" for standard input) at an LBA; its size must be whole blocks.
    #[command(allow_negative_numbers = true)]
    Write {
        #[arg(long)]
        lba: u64,
        #[arg(long)]
        input: String,
    },
    /// Write Zeroes.
    #[command(allow_negative_numbers = true)]
    Zero {
        #[arg(long)]
        lba: u64,
        /// Any count: the driver splits it into commands of at most 65,536 blocks.
        #[arg(long, value_parser = examples::cli::u64_in(1..=u64::MAX))]
        blocks: u64,
    },
    /// Deallocate (trim).
    #[command(allow_negative_numbers = true)]
    Trim {
        #[arg(long)]
        lba: u64,
        /// Any count: the driver splits it into ranges and commands.
        #[arg(long, value_parser = examples::cli::u64_in(1..=u64::MAX))]
        blocks: u64,
    },
    /// The SMART / health log.
    Smart,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Err(e) = examples::signals::install() {
        eprintln!("nvme-io: {e}");
        return ExitCode::FAILURE;
    }
    let code = match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            examples::cli::report("nvme-io", &e);
            ExitCode::FAILURE
        }
    };
    examples::signals::exit_code_or("nvme-io", code)
}

fn run(cli: &Cli) -> Result<()> {
    examples::cli::require_devices(&[cli.device]).map_err(Error::Vfio)?;
    let container = Container::new()?;
    let mut nvme = Controller::open_with(&container, cli.device, cli.nvme.config())?;
    match &cli.command {
        Cmd::Identify => identify(&mut nvme),
        Cmd::Smart => smart(&mut nvme),
        Cmd::Read {
            lba,
            blocks,
            output,
            io_size: Some(io_size),
        } => {
            let depth = usize::from(cli.queue_depth);
            let pool = BufferPool::new(&container, *io_size as usize, depth)?;
            let mut qp = nvme.create_io_queue_pair::<Buffer>(cli.queue_depth + 1)?;
            let range = (cli.nsid, *lba, *blocks);
            read_queued(&mut qp, &pool, range, *io_size, depth, output)
        }
        cmd => {
            let mut qp = nvme.create_io_queue_pair::<DmaMemory>(cli.queue_depth + 1)?;
            let mut buf = DmaMemory::new(&container, CHUNK, Backing::Auto)?;
            match cmd {
                Cmd::Read {
                    lba,
                    blocks,
                    output,
                    io_size: None,
                } => read(&mut qp, &mut buf, cli.nsid, *lba, *blocks, output),
                Cmd::Write { lba, input } => write(&mut qp, &buf, cli.nsid, *lba, input),
                Cmd::Zero { lba, blocks } => qp.write_zeroes(cli.nsid, *lba, *blocks),
                Cmd::Trim { lba, blocks } => qp.deallocate(cli.nsid, *lba, *blocks),
                Cmd::Identify | Cmd::Smart | Cmd::Read { .. } => unreachable!("handled above"),
            }
        }
    }
}

fn identify(nvme: &mut Controller) -> Result<()> {
    let info = nvme.info().clone();
    println!("controller: {}", nvme.address());
    println!("model: {}", info.model);
    println!("serial: {}", info.serial);
    println!("firmware: {}", info.firmware);
    println!("vendor: {:04x}", info.vendor_id);
    println!("mdts: {}", info.mdts);
    println!("max transfer: {}", nvme.max_transfer());
    println!("io queues: {}", nvme.io_queue_limit());
    println!("write zeroes: {}", info.supports_write_zeroes());
    println!("deallocate: {}", info.supports_deallocate());
    println!("volatile write cache: {}", info.volatile_write_cache);
    println!("sgl support: {}", info.supports_sgl());
    println!("sgls: {:#x}", info.sgls);
    println!(
        "data pointer: {}",
        cli::data_pointer_name(nvme.data_pointer())
    );
    println!("shadow doorbells: {}", nvme.uses_shadow_doorbells());
    for nsid in nvme.active_namespaces()? {
        let ns = nvme.namespace(nsid)?;
        println!(
            "namespace {nsid}: {} blocks of {} bytes ({} bytes)",
            ns.blocks,
            ns.block_size,
            ns.bytes()
        );
    }
    Ok(())
}

fn smart(nvme: &mut Controller) -> Result<()> {
    let s = nvme.smart_log()?;
    println!("critical warning: {:#x}", s.critical_warning);
    println!("temperature: {} K", s.temperature_kelvin);
    println!("available spare: {}%", s.available_spare_percent);
    println!("percentage used: {}%", s.percentage_used);
    println!("data units read: {}", s.data_units_read);
    println!("data units written: {}", s.data_units_written);
    println!("host read commands: {}", s.host_read_commands);
    println!("host write commands: {}", s.host_write_commands);
    println!("media errors: {}", s.media_errors);
    println!("error log entries: {}", nvme.error_count()?);
    Ok(())
}

fn io_err(what: &str, e: io::Error) -> Error {
    Error::InvalidArgument(format!("{what}: {e}"))
}

fn read(
    qp: &mut IoQueuePair<DmaMemory>,
    buf: &mut DmaMemory,
    nsid: u32,
    lba: u64,
    blocks: u64,
    output: &str,
) -> Result<()> {
    let (bs, total) = check_range(qp, nsid, lba, blocks)?;
    let mut out = open_output(output)?;
    let mut host = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < total && examples::signals::requested().is_none() {
        let n = (total - done).min(CHUNK as u64) as usize;
        qp.read(nsid, lba + done / bs, buf, 0, n)?;
        buf.read_bytes(0, &mut host[..n]);
        out.write_all(&host[..n]).map_err(|e| io_err(output, e))?;
        done += n as u64;
    }
    out.flush().map_err(|e| io_err(output, e))
}

/// The block size and byte count of `blocks` at `lba`, checked against the
/// namespace first, so a bad request writes no file.
fn check_range<B: DmaTarget>(
    qp: &IoQueuePair<B>,
    nsid: u32,
    lba: u64,
    blocks: u64,
) -> Result<(u64, u64)> {
    let ns = qp.namespace(nsid)?;
    let total = cli::namespace_range(ns, lba, blocks).map_err(Error::InvalidArgument)?;
    Ok((u64::from(ns.block_size), total))
}

fn open_output(output: &str) -> Result<Box<dyn Write>> {
    Ok(if output == "-" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(File::create(output).map_err(|e| io_err(output, e))?)
    })
}

/// `read --io-size`: commands of `io_size` bytes into pool buffers, up to
/// `depth` in flight (sleeping in `wait` between them in interrupt mode),
/// written out in LBA order as they complete, straight from the buffers.
fn read_queued(
    qp: &mut IoQueuePair<Buffer>,
    pool: &Arc<BufferPool>,
    (nsid, lba, blocks): (u32, u64, u64),
    io_size: u64,
    depth: usize,
    output: &str,
) -> Result<()> {
    let (bs, total) = check_range(qp, nsid, lba, blocks)?;
    if !io_size.is_multiple_of(bs) {
        return Err(Error::InvalidArgument(format!(
            "--io-size {io_size} is not a whole number of {bs}-byte blocks"
        )));
    }
    let mut out = open_output(output)?;
    let commands = total.div_ceil(io_size);
    let bytes = |k: u64| io_size.min(total - k * io_size) as usize;
    let (mut next, mut written) = (0u64, 0u64);
    let mut ready = BTreeMap::new();
    while written < commands && examples::signals::requested().is_none() {
        while next < commands && qp.in_flight() < depth {
            let Some(buf) = pool.alloc() else { break };
            let at = lba + next * io_size / bs;
            qp.submit_read(nsid, at, buf, 0, bytes(next), next)
                .map_err(|(e, _)| e)?;
            next += 1;
        }
        qp.ring();
        if qp.interrupt_vector().is_some() {
            qp.wait(Duration::from_secs(1))?;
        }
        let mut failure = None;
        qp.poll(usize::MAX, |c| match c.result {
            Ok(()) => drop(ready.insert(c.tag, c.buf)),
            Err(e) => drop(failure.get_or_insert(e)),
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        while let Some(Some(buf)) = ready.remove(&written) {
            let data = &buf.as_slice()[..bytes(written)];
            out.write_all(data).map_err(|e| io_err(output, e))?;
            written += 1;
        }
    }
    out.flush().map_err(|e| io_err(output, e))
}

fn write(
    qp: &mut IoQueuePair<DmaMemory>,
    buf: &DmaMemory,
    nsid: u32,
    lba: u64,
    input: &str,
) -> Result<()> {
    let bs = qp.namespace(nsid)?.block_size as usize;
    let mut data = Vec::new();
    let mut src: Box<dyn Read> = if input == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(input).map_err(|e| io_err(input, e))?)
    };
    src.read_to_end(&mut data).map_err(|e| io_err(input, e))?;
    if data.is_empty() || data.len() % bs != 0 {
        return Err(Error::InvalidArgument(format!(
            "{input} holds {} bytes, not a whole number (1 or more) of {bs}-byte blocks",
            data.len()
        )));
    }
    // Check the whole range first, so nothing is written when it does not fit.
    let end = qp.namespace(nsid)?.blocks;
    let blocks = (data.len() / bs) as u64;
    if lba.checked_add(blocks).is_none_or(|e| e > end) {
        return Err(Error::InvalidArgument(format!(
            "{blocks} blocks at {lba} are past the end of namespace {nsid} ({end} blocks)"
        )));
    }
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        if examples::signals::requested().is_some() {
            break;
        }
        buf.write_bytes(0, chunk);
        qp.write(nsid, lba + (i * CHUNK / bs) as u64, buf, 0, chunk.len())?;
    }
    qp.flush(nsid)
}
