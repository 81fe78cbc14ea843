//! copy-bench: moves the same range from an NVMe device to the network by the
//! kernel's classic paths (read+send, mmap+send, sendfile, O_DIRECT
//! read+send, through the kernel's nvme and NIC drivers) and by the
//! forwarder (userspace drivers, DMA in and out of one buffer), and prints
//! throughput, CPU seconds per GB, system calls, context switches and payload
//! copies side by side, with how many times faster the forwarder is.
//!
//! ```text
//! copy-bench --disk /dev/nvme1n1 --bytes N --dst-ip IP --port P
//!            [--forwarder "ARGS"] [--json]
//! ```
//! Route `k` sends to port P+k (P+4 is the forwarder's), so a receiver can
//! check each stream. The page cache is dropped before each kernel route.
//! `--forwarder` gives the forwarder's device arguments (--nvme, --nic,
//! --dst-mac, --dst-ip ...); it is run from this program's directory.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;
use examples::cli;
use examples::dmaf;
use examples::kernel_copy::{self, Route};
use examples::syscount::Syscalls;

#[derive(Parser)]
#[command(
    about = "The kernel's copy paths beside the zero-copy forwarder",
    allow_negative_numbers = true
)]
struct Cli {
    /// The block device of an NVMe namespace on the kernel's nvme driver.
    #[arg(long)]
    disk: PathBuf,
    /// Bytes to move from the start of the device (at least 1).
    #[arg(long, value_parser = cli::u64_in(1..=u64::MAX))]
    bytes: u64,
    #[arg(long)]
    dst_ip: Ipv4Addr,
    /// First UDP port; route k uses port + k (k up to 4, so at most 65531).
    #[arg(long, default_value_t = 9300, value_parser = clap::value_parser!(u16).range(1..=65531))]
    port: u16,
    /// Arguments of the forwarder run (its devices and destination).
    #[arg(long, allow_hyphen_values = true)]
    forwarder: Option<String>,
    #[arg(long)]
    json: bool,
}

type Error = Box<dyn std::error::Error>;

/// One row of the table.
#[derive(serde::Serialize, Clone, Debug)]
struct Row {
    route: String,
    bytes: u64,
    datagrams: u64,
    seconds: f64,
    mb_per_s: f64,
    cpu_seconds_per_gb: f64,
    /// Measured (`syscount`); `null` and `syscalls_not_measured` where the
    /// kernel did not permit it.
    #[serde(flatten)]
    syscalls: Syscalls,
    context_switches: u64,
    /// Payload bytes the CPU copied, measured: the forwarder's figure (from
    /// what its NIC driver counted by who wrote each byte it was given).
    /// `null` for the kernel's routes, whose copies happen inside the
    /// kernel where nothing here counts them.
    payload_bytes_copied_by_cpu: Option<u64>,
    /// The kernel routes' CPU copies as the route is built, not measured
    /// (`null` for the forwarder, whose copies are measured).
    cpu_copies_by_design: Option<&'static str>,
    /// The forwarder's MB/s over this route's.
    forwarder_speedup: Option<f64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            examples::cli::report("copy-bench", &*e);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), Error> {
    let payload = 1500 - 20 - 8 - dmaf::HEADER;
    let mut rows = Vec::new();
    for (k, route) in Route::ALL.into_iter().enumerate() {
        kernel_copy::drop_caches(&cli.disk).map_err(|e| format!("{}: {e}", cli.disk.display()))?;
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.connect((cli.dst_ip, cli.port + k as u16))?;
        let r = kernel_copy::run(route, &cli.disk, cli.bytes, &sock, payload)
            .map_err(|e| format!("{}: {e}", route.name()))?;
        rows.push(Row {
            route: route.name().into(),
            bytes: r.bytes,
            datagrams: r.datagrams,
            seconds: r.seconds,
            mb_per_s: r.bytes as f64 / r.seconds / 1e6,
            cpu_seconds_per_gb: r.usage.cpu_seconds / (r.bytes as f64 / 1e9),
            syscalls: r.syscalls.clone(),
            context_switches: r.usage.context_switches,
            payload_bytes_copied_by_cpu: None,
            cpu_copies_by_design: Some(route.copies_by_design()),
            forwarder_speedup: None,
        });
    }
    if let Some(args) = &cli.forwarder {
        let f = forwarder(args, cli.bytes, cli.port + 4)?;
        for r in &mut rows {
            r.forwarder_speedup = Some(f.mb_per_s / r.mb_per_s);
        }
        rows.push(Row {
            forwarder_speedup: Some(1.0),
            ..f
        });
    }
    if cli.json {
        examples::perf::print_json(&rows);
    } else {
        print_table(cli, &rows);
    }
    Ok(())
}

/// Runs the forwarder over the same bytes and reads its JSON summary.
fn forwarder(args: &str, bytes: u64, port: u16) -> Result<Row, Error> {
    let exe = std::env::current_exe()?.with_file_name("forwarder");
    let out = Command::new(&exe)
        .args(args.split_whitespace())
        .args([
            "--bytes",
            &bytes.to_string(),
            "--dst-port",
            &port.to_string(),
            "--json",
        ])
        .output()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with('{'));
    let (Some(line), true) = (line, out.status.success()) else {
        return Err(format!(
            "the forwarder failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    };
    let v: serde_json::Value = serde_json::from_str(line)?;
    let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(Row {
        route: "forwarder (userspace, DMA)".into(),
        bytes: num("bytes") as u64,
        datagrams: num("datagrams") as u64,
        seconds: num("seconds"),
        mb_per_s: num("mb_per_s"),
        cpu_seconds_per_gb: num("cpu_seconds") / (num("bytes") / 1e9),
        syscalls: Syscalls::from_json(&v),
        context_switches: num("context_switches") as u64,
        payload_bytes_copied_by_cpu: Some(
            v["payload_bytes_copied_by_cpu"]
                .as_u64()
                .ok_or("the forwarder's summary has no payload_bytes_copied_by_cpu")?,
        ),
        cpu_copies_by_design: None,
        forwarder_speedup: None,
    })
}

fn print_table(cli: &Cli, rows: &[Row]) {
    println!(
        "copy-bench: {} bytes of {} to {} in {}-byte datagrams ({})",
        cli.bytes,
        cli.disk.display(),
        cli.dst_ip,
        1500 - 20 - 8 - dmaf::HEADER,
        examples::perf::machine_label()
    );
    println!(
        "{:<28} {:>8} {:>10} {:>9} {:>8} {:>14} {:>12}  copies by design",
        "route", "MB/s", "CPU s/GB", "syscalls", "ctx sw", "copied bytes", "forwarder is"
    );
    for r in rows {
        println!(
            "{:<28} {:>8.1} {:>10.2} {:>9} {:>8} {:>14} {:>12}  {}",
            r.route,
            r.mb_per_s,
            r.cpu_seconds_per_gb,
            r.syscalls
                .measured()
                .map_or("n/m".into(), |n| n.to_string()),
            r.context_switches,
            r.payload_bytes_copied_by_cpu
                .map_or("n/m".into(), |n| n.to_string()),
            r.forwarder_speedup
                .map_or("-".into(), |x| format!("{x:.2}x")),
            r.cpu_copies_by_design.unwrap_or("-"),
        );
    }
    println!("copied bytes: payload bytes the CPU copied, measured (the forwarder: bytes its NIC driver was given from CPU-written memory beyond the frame headers); n/m for the kernel's routes, which copy inside the kernel. copies by design: how each kernel route is built, not a measurement.");
    println!("syscalls: measured by a perf counter on raw_syscalls:sys_enter over each route's run (the forwarder: its transfer loop).");
    for r in rows {
        if let Some(why) = r.syscalls.not_measured() {
            println!("syscalls of {}: not measured ({why})", r.route);
        }
    }
}
