//! nic-echo: sends every received frame back with the MAC addresses swapped —
//! the forwarding loop of ixy and of DPDK's testpmd — and prints rates.
//!
//! ```text
//! nic-echo --device BDF [--count N] [--seconds S] [--interrupts] [--batch B]
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use examples::cli;
use nic_driver::{Config, Error, Result};
use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

#[derive(Parser)]
#[command(
    about = "Echo frames back with the MACs swapped (userspace NIC driver)",
    allow_negative_numbers = true
)]
struct Cli {
    /// PCI address of the NIC, bound to vfio-pci.
    #[arg(long, value_name = "BDF")]
    device: PciAddress,
    /// Stop after echoing this many frames (at least 1).
    #[arg(long, value_parser = cli::u64_in(1..=u64::MAX))]
    count: Option<u64>,
    /// Stop after this many seconds (above 0, at most a week).
    #[arg(long, value_parser = cli::seconds, allow_hyphen_values = true)]
    seconds: Option<Duration>,
    /// Sleep until the NIC interrupts instead of polling.
    #[arg(long)]
    interrupts: bool,
    /// Frames taken from the receive ring at once (1 to 256, the ring's size).
    #[arg(long, default_value_t = 32, value_parser = cli::usize_in(1..=256))]
    batch: usize,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Err(e) = examples::signals::install() {
        eprintln!("nic-echo: {e}");
        return ExitCode::FAILURE;
    }
    let code = match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            examples::cli::report("nic-echo", &e);
            ExitCode::FAILURE
        }
    };
    examples::signals::exit_code_or("nic-echo", code)
}

fn run(cli: &Cli) -> Result<()> {
    examples::cli::require_devices(&[cli.device]).map_err(Error::Vfio)?;
    let container = Container::new()?;
    let config = Config::default().interrupts(cli.interrupts);
    let mut nic = nic_driver::open(&container, cli.device, config)?;
    println!(
        "echo.ready mac={:02x?} driver={}",
        nic.mac(),
        nic.driver_name()
    );
    let mut rx = Vec::with_capacity(cli.batch);
    let start = Instant::now();
    let until = cli.seconds.map(|s| start + s);
    let (mut echoed, mut bytes, mut wakeups) = (0u64, 0u64, 0u64);
    let mut result = Ok(());
    let info = allocation_counter::measure(|| {
        result = (|| -> Result<()> {
            while cli.count.is_none_or(|c| echoed < c)
                && until.is_none_or(|u| Instant::now() < u)
                && examples::signals::requested().is_none()
            {
                if cli.interrupts && nic.wait_rx(Duration::from_millis(100))? {
                    wakeups += 1;
                }
                nic.rx_batch(&mut rx, cli.batch)?;
                for p in &mut rx {
                    swap_macs(p.data_mut());
                    bytes += p.len() as u64;
                }
                echoed += rx.len() as u64;
                // Sent back from the buffers they arrived in.
                while !rx.is_empty() {
                    nic.tx_packets(&mut rx)?;
                }
            }
            Ok(())
        })();
    });
    result?;
    while nic.tx_pending() > 0 {
        nic.tx_clean();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("echo.frames={echoed}");
    println!(
        "echo.rate={:.0} frames/s, {:.3} Gbit/s",
        echoed as f64 / secs,
        bytes as f64 * 8.0 / secs / 1e9
    );
    println!("echo.interrupt_wakeups={wakeups}");
    println!("echo.allocations={}", info.count_total);
    let s = nic.stats();
    println!(
        "echo.stats rx={} tx={} dropped={} errors={}",
        s.rx_packets, s.tx_packets, s.rx_dropped, s.rx_errors
    );
    Ok(())
}

fn swap_macs(f: &mut [u8]) {
    if f.len() >= 12 {
        let (dst, src) = f.split_at_mut(6);
        dst.swap_with_slice(&mut src[..6]);
    }
}
