//! nvme-io: identify an NVMe controller and move data between files and its
//! namespaces with the userspace driver.
//!
//! ```text
//! nvme-io --device BDF identify
//! nvme-io --device BDF [--nsid N] read --lba L --blocks N --output FILE|-
//! nvme-io --device BDF [--nsid N] write --lba L --input FILE|-
//! nvme-io --device BDF [--nsid N] zero|trim --lba L --blocks N
//! nvme-io --device BDF smart
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use examples::cli;
use nvme_driver::{Controller, Error, IoQueuePair, Result};
use vfio_core::dma::{Backing, DmaMemory};
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
    let mut nvme = Controller::open(&container, cli.device)?;
    match &cli.command {
        Cmd::Identify => identify(&mut nvme),
        Cmd::Smart => smart(&mut nvme),
        cmd => {
            let mut qp = nvme.create_io_queue_pair::<DmaMemory>(64)?;
            let mut buf = DmaMemory::new(&container, CHUNK, Backing::Auto)?;
            match cmd {
                Cmd::Read {
                    lba,
                    blocks,
                    output,
                } => read(&mut qp, &mut buf, cli.nsid, *lba, *blocks, output),
                Cmd::Write { lba, input } => write(&mut qp, &buf, cli.nsid, *lba, input),
                Cmd::Zero { lba, blocks } => qp.write_zeroes(cli.nsid, *lba, *blocks),
                Cmd::Trim { lba, blocks } => qp.deallocate(cli.nsid, *lba, *blocks),
                Cmd::Identify | Cmd::Smart => unreachable!("handled above"),
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
    println!("sgl support: {}", info.sgls != 0);
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
    let bs = qp.namespace(nsid)?.block_size as u64;
    let total = blocks
        .checked_mul(bs)
        .ok_or_else(|| Error::InvalidArgument(format!("{blocks} blocks is too many")))?;
    // Check the whole range first, so a bad request writes no file.
    let end = qp.namespace(nsid)?.blocks;
    if blocks == 0 || lba.checked_add(blocks).is_none_or(|e| e > end) {
        return Err(Error::InvalidArgument(format!(
            "blocks {lba}..{} are not inside namespace {nsid} (1 to {end} blocks from 0)",
            lba.saturating_add(blocks)
        )));
    }
    let mut out: Box<dyn Write> = if output == "-" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(File::create(output).map_err(|e| io_err(output, e))?)
    };
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
