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
//! Wire format: see `examples::dmaf`. The data path is `examples::forward`
//! (shared with bench-host, which counts its instructions on the device models).

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use examples::cli::{self, MacAddress};
use examples::dmaf::{Endpoints, FRAME_OVERHEAD};
use examples::forward::{self, Forwarder, Options, Summary, CHUNK};
use examples::perf::print_json;
use examples::signals;
use examples::syscount;
use examples::usage::Usage;
use nvme_driver::Controller;
use vfio_core::dma::{Buffer, BufferPool};
use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

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
    #[command(flatten)]
    nvme_options: examples::cli::NvmeOptions,
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
            examples::cli::report("forwarder", &*e);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode, Error> {
    signals::install()?;
    let (nvme_addr, nic_addr, dst_mac) = (cli.nvme, cli.nic, cli.dst_mac.octets());
    examples::cli::require_devices(&[nvme_addr, nic_addr])?;
    let container = Container::new()?;
    let mut nvme = Controller::open_with(&container, nvme_addr, cli.nvme_options.config())?;
    let ns = nvme.namespace(cli.nsid)?;
    let bs = ns.block_size as u64;
    let total = match (cli.bytes, cli.blocks) {
        (Some(bytes), _) => bytes,
        (None, Some(blocks)) => blocks.saturating_mul(bs),
        (None, None) => ns.blocks.saturating_sub(cli.lba).saturating_mul(bs),
    };
    let blocks = total.div_ceil(bs);
    examples::cli::namespace_range(&ns, cli.lba, blocks)
        .map_err(|e| format!("{e}: nothing sent"))?;
    let qp = nvme.create_io_queue_pair::<Buffer>(cli.queue_depth as u16 + 1)?;
    let chunk = CHUNK.min(qp.max_transfer()) / bs as usize * bs as usize;
    let chunks = BufferPool::new(&container, chunk, cli.queue_depth * 4)?;
    let nic = nic_driver::open(&container, nic_addr, forward::nic_config(cli.mtu))?;
    let ends = Endpoints {
        src_mac: nic.mac(),
        dst_mac,
        src_ip: cli.src_ip.octets(),
        dst_ip: cli.dst_ip.octets(),
        src_port: cli.src_port,
        dst_port: cli.dst_port,
    };
    let options = Options {
        queue_depth: cli.queue_depth,
        payload: forward::payload(cli.mtu),
        max_bytes_per_second: cli.max_mbps.map(|m| m * 1e6),
        copy_payload: cli.copy_payload,
        progress: true,
    };
    let mut f = Forwarder::new(qp, nic, chunks, ends, cli.nsid, bs, options);
    let start = Instant::now();
    let usage = Usage::now();
    let counting = syscount::start();
    let finished = f.forward(cli.lba, total)?;
    let syscalls = counting.finish();
    let seconds = start.elapsed().as_secs_f64();
    let usage = usage.since();
    let outstanding = f.chunks().capacity() - f.chunks().free_count();
    let from = f.nic().stats().tx_from;
    let s = f.summary();
    s.syscalls = syscalls;
    s.seconds = seconds;
    s.mb_per_s = s.bytes as f64 / s.seconds.max(1e-9) / 1e6;
    s.cpu_seconds = usage.cpu_seconds;
    s.context_switches = usage.context_switches;
    s.chunk_buffers_outstanding = outstanding;
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
