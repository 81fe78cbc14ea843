//! nic-pktgen: sends UDP frames as fast as the NIC takes them and prints
//! packets/s and Gbit/s; with `--baseline`, the same frames through the
//! kernel's driver by an AF_PACKET socket (sendmmsg) in the same run, and the ratio.
//!
//! The userspace driver's rates are from the frames the driver reported
//! sent ([`NetDevice::tx_clean`]'s counts: descriptors the NIC marked done,
//! chains the device gave back), over the time until the last of them was;
//! the kernel's from the frames sendmmsg took (no more than the interface's
//! `tx_packets` counter grew by), over the time until that counter had
//! grown by as many (or 60 s had passed). The userspace
//! frames leave from UDP port 4000, the kernel's from 4001, so a capture of
//! the wire tells them apart.
//!
//! ```text
//! nic-pktgen --device BDF --size 60 --count 100000 --batch 32 [--path fill|packets] [--dst-mac MAC] [--baseline] [--json]
//! ```
//!
//! `--path` picks the driver's transmit path: `fill` (the default) builds
//! each frame in place with [`NetDevice::tx_fill`]; `packets` allocates a
//! batch of packets, writes them, and sends them with
//! [`NetDevice::tx_packets`] (the path an echo takes).

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::Parser;
use examples::cli::{self, MacAddress};
use examples::packet::PacketSocket;
use examples::perf::machine_label;
use examples::syscount::{self, Syscalls};
use nic_driver::{Config, Error, NetDevice, Packet, Result};
use vfio_core::pci::{PciAddress, Sysfs};
use vfio_core::vfio::Container;

#[derive(Parser)]
#[command(
    about = "Send UDP frames as fast as possible (userspace NIC driver; --baseline: and the kernel's)",
    allow_negative_numbers = true
)]
struct Cli {
    /// PCI address of the NIC, bound to vfio-pci.
    #[arg(long, value_name = "BDF")]
    device: PciAddress,
    /// Frame size in bytes (60 to 1514), without the CRC.
    #[arg(long, default_value_t = 60, value_parser = cli::usize_in(60..=1514))]
    size: usize,
    /// Frames to send (at least 1).
    #[arg(long, default_value_t = 100_000, value_parser = cli::u64_in(1..=u64::MAX))]
    count: u64,
    /// Frames handed to the NIC at once (1 to 512, the transmit ring).
    #[arg(long, default_value_t = 32, value_parser = cli::usize_in(1..=512))]
    batch: usize,
    #[arg(long, default_value = "ff:ff:ff:ff:ff:ff", value_name = "MAC")]
    dst_mac: MacAddress,
    #[arg(long)]
    baseline: bool,
    #[arg(long)]
    json: bool,
    /// The driver's transmit path.
    #[arg(long, value_enum, default_value_t = TxPath::Fill)]
    path: TxPath,
}

/// How the frames reach the driver.
#[derive(Clone, Copy, Debug, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum TxPath {
    /// `tx_fill`: each frame built in a fresh buffer where the NIC sends it from.
    Fill,
    /// `alloc_packets`, the frames written, `tx_packets`.
    Packets,
}

/// One side's result.
#[derive(serde::Serialize)]
struct Run {
    /// Frames the driver took (`tx_packets`) or sendmmsg accepted.
    sent: u64,
    /// Frames the userspace driver reported sent (the sum of `tx_clean`'s
    /// counts); null for the kernel.
    completed: Option<u64>,
    seconds: f64,
    packets_per_s: f64,
    gbit_per_s: f64,
    /// Heap allocations on the send path (userspace only).
    allocations: Option<u64>,
    /// Frames the NIC counted as sent: the driver's [`nic_driver::Stats::tx_packets`]
    /// (e1000: the NIC's good-packets-transmitted counter; virtio-net: chains
    /// the device gave back), or the kernel interface's `tx_packets`, which
    /// also counts frames the kernel sends on its own.
    nic_tx_packets: u64,
    /// System calls of the send loop, measured (`syscount`; null and
    /// `syscalls_not_measured` where the kernel does not permit it).
    #[serde(flatten)]
    syscalls: Syscalls,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Err(e) = examples::signals::install() {
        eprintln!("nic-pktgen: {e}");
        return ExitCode::FAILURE;
    }
    let code = match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            examples::cli::report("nic-pktgen", &e);
            ExitCode::FAILURE
        }
    };
    examples::signals::exit_code_or("nic-pktgen", code)
}

fn run(cli: &Cli) -> Result<()> {
    let (addr, dst) = (cli.device, cli.dst_mac.octets());
    examples::cli::require_devices(&[addr]).map_err(Error::Vfio)?;
    let (user, src) = userspace(cli, addr, dst)?;
    let kernel = if cli.baseline {
        Some(kernel(
            cli,
            addr,
            &udp_frame(src, dst, cli.size, KERNEL_PORT),
        )?)
    } else {
        None
    };
    report(cli, &user, kernel.as_ref());
    Ok(())
}

/// The UDP source port of the userspace driver's frames.
const USER_PORT: u16 = 4000;
/// The UDP source port of the kernel baseline's frames.
const KERNEL_PORT: u16 = 4001;

/// An Ethernet + IPv4 + UDP frame of `size` bytes with correct checksums
/// (198.51.100.1:`port` -> 198.51.100.2:5000), from etherparse.
fn udp_frame(src: [u8; 6], dst: [u8; 6], size: usize, port: u16) -> Vec<u8> {
    let payload = vec![0x5a; size - 42];
    let builder = etherparse::PacketBuilder::ethernet2(src, dst)
        .ipv4([198, 51, 100, 1], [198, 51, 100, 2], 64)
        .udp(port, 5000);
    let mut frame = Vec::with_capacity(size);
    builder
        .write(&mut frame, &payload)
        .expect("writing into a Vec cannot fail");
    frame
}

fn userspace(cli: &Cli, addr: PciAddress, dst: [u8; 6]) -> Result<(Run, [u8; 6])> {
    let container = Container::new()?;
    let config = Config::default()
        .tx_ring(512)
        .spare_buffers(2 * cli.batch.max(512));
    let mut nic = nic_driver::open(&container, addr, config)?;
    let frame = udp_frame(nic.mac(), dst, cli.size, USER_PORT);
    // `--path packets`' batch, allocated before the send path is measured.
    let mut queue = Vec::with_capacity(cli.batch);
    let (mut sent, mut completed) = (0u64, 0u64);
    let start = Instant::now();
    let mut result = Ok(());
    let counting = syscount::start();
    let info = allocation_counter::measure(|| {
        result = send_loop(
            nic.as_mut(),
            &frame,
            cli,
            &mut queue,
            &mut sent,
            &mut completed,
        )
    });
    let syscalls = counting.finish();
    result?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while nic.tx_pending() > 0 {
        completed += nic.tx_clean() as u64;
        if Instant::now() > deadline {
            return Err(Error::InvalidFrame(format!(
                "{} of {sent} frames not sent back by the NIC within 10 s",
                nic.tx_pending()
            )));
        }
    }
    completed += nic.tx_clean() as u64;
    let seconds = start.elapsed().as_secs_f64();
    let mut run = rates(sent, completed, cli.size, seconds, nic.stats().tx_packets);
    run.completed = Some(completed);
    run.allocations = Some(info.count_total);
    run.syscalls = syscalls;
    Ok((run, nic.mac()))
}

/// Sends until `count` frames are queued, by `--path`; adds the frames the
/// driver reports sent to `completed`.
fn send_loop(
    nic: &mut (dyn NetDevice + Send),
    frame: &[u8],
    cli: &Cli,
    queue: &mut Vec<Packet>,
    sent: &mut u64,
    completed: &mut u64,
) -> Result<()> {
    // A frame longer than the room is not copied: its length makes
    // tx_fill refuse it with an error that names both sizes.
    let mut fill = |room: &mut [u8]| {
        if let Some(at) = room.get_mut(..frame.len()) {
            at.copy_from_slice(frame);
        }
        frame.len()
    };
    while *sent < cli.count && examples::signals::requested().is_none() {
        let want = cli.batch.min((cli.count - *sent) as usize);
        *sent += match cli.path {
            TxPath::Fill => nic.tx_fill(want, &mut fill)?,
            TxPath::Packets => {
                top_up(nic, queue, want, frame)?;
                nic.tx_packets(queue)?
            }
        } as u64;
        *completed += nic.tx_clean() as u64;
    }
    Ok(())
}

/// `--path packets`: fresh packets for what the last batch sent, up to
/// `want`, the frame written into each (what a batch left unsent stays).
fn top_up(
    nic: &mut (dyn NetDevice + Send),
    queue: &mut Vec<Packet>,
    want: usize,
    frame: &[u8],
) -> Result<()> {
    let have = queue.len();
    if have < want {
        nic.alloc_packets(want - have, queue);
        for p in &mut queue[have..] {
            let Some(at) = p.buffer_mut().get_mut(..frame.len()) else {
                return Err(Error::InvalidFrame(format!(
                    "{} bytes do not fit the NIC's buffers",
                    frame.len()
                )));
            };
            at.copy_from_slice(frame);
            p.set_len(frame.len());
        }
    }
    Ok(())
}

/// A run that sent `frames` of `size` bytes in `seconds` (the rates are of
/// `frames`), of which the driver took `sent`.
fn rates(sent: u64, frames: u64, size: usize, seconds: f64, nic_tx_packets: u64) -> Run {
    let s = seconds.max(1e-9);
    Run {
        sent,
        completed: None,
        seconds,
        packets_per_s: frames as f64 / s,
        gbit_per_s: frames as f64 * size as f64 * 8.0 / s / 1e9,
        allocations: None,
        nic_tx_packets,
        syscalls: Syscalls::default(),
    }
}

/// The kernel's e1000 driver: unbind from vfio-pci, bring the interface up,
/// send the same frames with AF_PACKET + sendmmsg, wait until the NIC has sent
/// them (its tx_packets counter), bind back.
fn kernel(cli: &Cli, addr: PciAddress, frame: &[u8]) -> Result<Run> {
    let sysfs = Sysfs::new();
    sysfs.unbind_vfio(addr)?;
    let result = kernel_send(cli, addr, frame);
    sysfs.bind_vfio(addr)?;
    result
}

fn kernel_send(cli: &Cli, addr: PciAddress, frame: &[u8]) -> Result<Run> {
    let ifname = interface(addr)?;
    let io = |what: &str, e: std::io::Error| {
        Error::InvalidFrame(format!("kernel baseline on {ifname}: {what}: {e}"))
    };
    let up = Command::new("ip")
        .args(["link", "set", "dev", &ifname, "up"])
        .status()
        .map_err(|e| io("ip link set up", e))?;
    if !up.success() {
        return Err(io("ip link set up", std::io::Error::other("failed")));
    }
    wait_for_carrier(&ifname);
    let ifindex = nix::net::if_::if_nametoindex(ifname.as_str())
        .map_err(|e| io("if_nametoindex", e.into()))?;
    let mut sock = PacketSocket::bind(ifindex, cli.batch).map_err(|e| io("AF_PACKET socket", e))?;
    let stat = PathBuf::from(format!("/sys/class/net/{ifname}/statistics/tx_packets"));
    let sent_before = read_u64(&stat);
    let start = Instant::now();
    let mut queued = 0u64;
    let counting = syscount::start();
    while queued < cli.count {
        let n = (cli.count - queued).min(cli.batch as u64) as usize;
        queued += sock.send_batch(frame, n).map_err(|e| io("sendmmsg", e))? as u64;
    }
    let syscalls = counting.finish();
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_u64(&stat).saturating_sub(sent_before) < queued && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    let seconds = start.elapsed().as_secs_f64();
    // The NIC's counter also counts frames the kernel sends on its own (e.g.
    // IPv6 router solicitations once the link is up): report ours, and what
    // the NIC counted.
    let counted = read_u64(&stat).saturating_sub(sent_before);
    let mut run = rates(queued, queued.min(counted), cli.size, seconds, counted);
    run.syscalls = syscalls;
    Ok(run)
}

/// The kernel's network interface of the NIC: under the PCI device (e1000)
/// or under its virtio device (`virtio0/net`).
fn interface(addr: PciAddress) -> Result<String> {
    let pci = PathBuf::from(format!("/sys/bus/pci/devices/{addr}"));
    let first = |dir: PathBuf| {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .next()
            .map(|e| e.file_name().to_string_lossy().into_owned())
    };
    for _ in 0..200 {
        let virtio = std::fs::read_dir(&pci).ok().and_then(|d| {
            d.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("virtio"))
            })
        });
        let found = first(pci.join("net")).or_else(|| virtio.and_then(|v| first(v.join("net"))));
        if let Some(name) = found {
            return Ok(name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::InvalidFrame(format!(
        "the kernel's driver made no network interface for {addr} within 10 s"
    )))
}

fn wait_for_carrier(ifname: &str) {
    let path = format!("/sys/class/net/{ifname}/carrier");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&path)
        .map(|s| s.trim() != "1")
        .unwrap_or(true)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_u64(path: &PathBuf) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn report(cli: &Cli, user: &Run, kernel: Option<&Run>) {
    let ratio = kernel.map(|k| user.packets_per_s / k.packets_per_s.max(1e-9));
    if cli.json {
        let json = serde_json::json!({ "machine": machine_label(), "size": cli.size, "batch": cli.batch, "path": cli.path, "count": cli.count, "userspace": user, "kernel": kernel, "ratio": ratio });
        println!("{json}");
        return;
    }
    println!(
        "nic-pktgen on {}: {} frames of {} bytes, batches of {}, path {}",
        machine_label(),
        cli.count,
        cli.size,
        cli.batch,
        match cli.path {
            TxPath::Fill => "fill",
            TxPath::Packets => "packets",
        }
    );
    let line = |name: &str, r: &Run| {
        println!(
            "  {name:<28} {:>12.0} packets/s {:>8.3} Gbit/s  ({} sent in {:.2} s{})",
            r.packets_per_s,
            r.gbit_per_s,
            r.sent,
            r.seconds,
            r.completed.map_or(String::new(), |c| format!(
                ", {c} reported sent by the driver"
            ))
        )
    };
    line("userspace driver (vfio)", user);
    if let Some(k) = kernel {
        line("kernel driver (AF_PACKET)", k);
        println!(
            "ratio userspace/kernel: {:.2}x packets/s",
            ratio.unwrap_or(0.0)
        );
    }
    println!(
        "heap allocations on the userspace send path: {}",
        user.allocations.unwrap_or(0)
    );
    println!("system calls of the send loop: userspace {}", user.syscalls);
    if let Some(k) = kernel {
        println!(
            "system calls of the send loop: kernel AF_PACKET {}",
            k.syscalls
        );
    }
}
