//! The guest side of the vfio-core tests: each subcommand exercises one part of
//! vfio-core on the real (emulated) devices and prints `key=value` lines that
//! the host side of the test checks. A vfio-core error is printed and exits 1.
//!
//! - `open BDF...`: open the devices in one container; IDs, groups, registers.
//! - `irq NIC NVME`: an e1000 interrupt raised through ICS arrives on its
//!   eventfd (INTx, masked and unmasked); NVMe MSI-X vectors can be enabled.
//! - `dma BDF auto|hugepages|pages BYTES`: DMA memory mapped, written by the CPU, unmapped.
//! - `pool BDF`: every buffer of a pool allocated, distinct, returned.
//! - `nvme-async NVME BYTES`: the first BYTES of namespace 1 read as 4 KiB
//!   commands into pool buffers, 32 in flight; prints the SHA-256 of the data.
//! - `nvme-bad NVME`: requests the driver must refuse, each error printed.
//! - `nvme-queues NVME`: I/O queue pairs created until the controller's limit.
//! - `nvme-media NVME BAD_LBA BLOCKS`: on one queue pair, a read of the bad
//!   block fails with a decoded error, and every other block reads (hashes).
//! - `nvme-timeout NVME`: on a throttled drive, a 64 KiB read times out, the
//!   queue pair refuses work, a controller reset and queue re-creation hand
//!   back the aborted commands, and a small read works again.
//! - `nvme-reset NVME [interrupts]`: block 0..8 read, the controller reset,
//!   the queue pair re-created and the block read again; both hashes
//!   printed, and whether shadow doorbells, SGLs and (with `interrupts`,
//!   interrupt mode and SGLs for every command) an MSI-X vector were in use
//!   before and after.
//! - `nvme-drop NVME`: on a throttled drive, 32 reads into pool buffers are in
//!   flight when the queue pair is dropped; then every pool buffer is taken
//!   and filled with a pattern, and after the throttle would have let the
//!   reads through, every pattern is checked.
//! - `nic-tx NIC COUNT`, `nic-tx-csum NIC COUNT`, `nic-rx NIC PHASE COUNT`,
//!   `nic-rx-burst NIC`, `nic-link NIC`, `nic-tx-jumbo NIC COUNT`,
//!   `nic-udp-send NIC DST_MAC COUNT`, `udp-recv PORT COUNT SECONDS` (a kernel
//!   socket): the e1000 driver (see `nic.rs`).
//! - `reset NVME`: bus mastering set in config space; a register written, the
//!   device reset through VFIO, the register back at its reset value.
//! - `dma-limits NVME EDU`, `hugepages NVME NIC`: DMA address limits in a
//!   container shared with an unlimited device, and the hugepages a small
//!   configuration takes (see `limits.rs`).

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nic_driver::e1000::regs as e1000;
use nvme_driver::regs as nvme;
use vfio_core::dma::{Backing, BufferPool, DmaMemory};
use vfio_core::pci::PciAddress;
use vfio_core::vfio::{Container, Device, IrqKind};
use vfio_core::Result;

mod limits;
mod nic;

fn nvme_err(e: nvme_driver::Error) -> vfio_core::Error {
    match e {
        nvme_driver::Error::Vfio(v) => v,
        other => vfio_core::Error::InvalidArgument(format!("nvme: {other}")),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("open") => open(&args[1..]),
        Some("irq") if args.len() == 3 => irq(&args[1], &args[2]),
        Some("dma") if args.len() == 4 => dma(&args[1], &args[2], &args[3]),
        Some("pool") if args.len() == 2 => pool(&args[1]),
        Some("dma-cycles") if args.len() == 3 => dma_cycles(&args[1], &args[2]),
        Some("reset") if args.len() == 2 => reset(&args[1]),
        Some("nic-tx") if args.len() == 3 => nic::tx(&args[1], &args[2]),
        Some("nic-confine") if args.len() == 2 => nic::confine(&args[1]),
        Some("nic-tx-csum") if args.len() == 3 => nic::tx_csum(&args[1], &args[2]),
        Some("nic-rx") if args.len() == 4 => nic::rx(&args[1], &args[2], &args[3]),
        Some("nic-rx-burst") if args.len() == 2 => nic::rx_burst(&args[1]),
        Some("nic-link") if args.len() == 2 => nic::link(&args[1]),
        Some("nic-promisc") if args.len() == 2 => nic::promisc(&args[1]),
        Some("nic-tx-jumbo") if args.len() == 3 => nic::tx_jumbo(&args[1], &args[2]),
        Some("nic-udp-send") if args.len() == 4 => nic::udp_send(&args[1], &args[2], &args[3]),
        Some("udp-recv") if args.len() == 4 => nic::udp_recv(&args[1], &args[2], &args[3]),
        Some("nvme-async") if args.len() == 3 => nvme_async(&args[1], &args[2]),
        Some("nvme-bad") if args.len() == 2 => nvme_bad(&args[1]),
        Some("nvme-queues") if args.len() == 2 => nvme_queues(&args[1]),
        Some("nvme-media") if args.len() == 4 => nvme_media(&args[1], &args[2], &args[3]),
        Some("nvme-timeout") if args.len() == 2 => nvme_timeout(&args[1]),
        Some("nvme-confine") if args.len() == 2 => nvme_confine(&args[1]),
        Some("nvme-vanish") if args.len() == 2 => nvme_vanish(&args[1]),
        Some("nvme-drop") if args.len() == 2 => nvme_drop(&args[1]),
        Some("nvme-reset") if args.len() == 2 => nvme_reset(&args[1], false),
        Some("nvme-reset") if args.len() == 3 && args[2] == "interrupts" => {
            nvme_reset(&args[1], true)
        }
        Some("dma-limits") if args.len() == 3 => limits::dma_limits(&args[1], &args[2]),
        Some("hugepages") if args.len() == 3 => limits::hugepages(&args[1], &args[2]),
        _ => {
            eprintln!("usage: guest-check open BDF... | irq NIC NVME | dma BDF auto|hugepages|pages BYTES | pool BDF | reset NVME");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("error={e}");
            ExitCode::FAILURE
        }
    }
}

fn open_one(container: &Arc<Container>, bdf: &str) -> Result<Device> {
    container.open_device(bdf.parse::<PciAddress>()?)
}

fn open(bdfs: &[String]) -> Result<()> {
    let container = Container::new()?;
    let devices = bdfs
        .iter()
        .map(|b| open_one(&container, b))
        .collect::<Result<Vec<_>>>()?;
    for dev in &devices {
        print_identity(dev)?;
        let shared = Arc::ptr_eq(dev.container(), &container);
        println!("{}.shared_container={shared}", dev.address());
        match dev.class_code()? >> 8 {
            0x0108 => print_nvme_regs(dev)?,
            0x0200 => print_e1000_regs(dev)?,
            _ => {}
        }
    }
    println!("container.iova_ranges={:x?}", container.iova_ranges());
    println!(
        "container.dma_mappings_available={:?}",
        container.dma_mappings_available()
    );
    Ok(())
}

fn print_identity(dev: &Device) -> Result<()> {
    let a = dev.address();
    let group = vfio_core::pci::Sysfs::new().device(a)?.iommu_group;
    println!("{a}.vendor={:04x}", dev.vendor_id()?);
    println!("{a}.device={:04x}", dev.device_id()?);
    println!("{a}.class={:06x}", dev.class_code()?);
    println!(
        "{a}.group={}",
        group.map_or("none".into(), |g| g.to_string())
    );
    Ok(())
}

fn print_nvme_regs(dev: &Device) -> Result<()> {
    let bar = dev.map_bar(0)?;
    let cap = bar.read64(nvme::CAP);
    let a = dev.address();
    println!("{a}.bar0_len={}", bar.len());
    println!("{a}.cap={cap:#018x}");
    println!("{a}.cap.mqes={:#x}", nvme::cap::mqes(cap));
    println!("{a}.cap.cqr={}", nvme::cap::cqr(cap));
    println!("{a}.cap.to={:#x}", nvme::cap::to(cap));
    println!("{a}.cap.dstrd={}", nvme::cap::dstrd(cap));
    println!("{a}.cap.css={:#x}", nvme::cap::css(cap));
    println!("{a}.cap.mpsmax={}", nvme::cap::mpsmax(cap));
    println!("{a}.vs={:#010x}", bar.read32(nvme::VS));
    Ok(())
}

fn print_e1000_regs(dev: &Device) -> Result<()> {
    let bar = dev.map_bar(0)?;
    let a = dev.address();
    let status = bar.read32(e1000::STATUS);
    println!("{a}.bar0_len={}", bar.len());
    println!("{a}.status={status:#010x}");
    println!("{a}.status.link_up={}", status & e1000::status::LU != 0);
    println!("{a}.status.full_duplex={}", status & e1000::status::FD != 0);
    println!(
        "{a}.status.speed_bits={}",
        (status >> e1000::status::SPEED_SHIFT) & 3
    );
    let (ral, rah) = (bar.read32(e1000::RAL0), bar.read32(e1000::RAH0));
    let mac: Vec<String> = ral
        .to_le_bytes()
        .iter()
        .chain(&rah.to_le_bytes()[..2])
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("{a}.mac={}", mac.join(":"));
    println!("{a}.rah.valid={}", rah & e1000::rah::AV != 0);
    Ok(())
}

/// Raises an e1000 interrupt cause through ICS and waits for its eventfd, twice
/// (the second proves INTx was unmasked); then enables NVMe MSI-X vectors.
fn irq(nic: &str, nvme_bdf: &str) -> Result<()> {
    let container = Container::new()?;
    let dev = open_one(&container, nic)?;
    let bar = dev.map_bar(0)?;
    for kind in [IrqKind::Intx, IrqKind::Msi, IrqKind::Msix] {
        println!("e1000.irq_count.{kind:?}={}", dev.irq_count(kind)?);
    }
    let irqs = dev.enable_irqs(IrqKind::Intx, 1)?;
    bar.write32(e1000::IMC, u32::MAX);
    bar.read32(e1000::ICR);
    irqs.unmask()?;
    let _ = irqs.wait(0, Duration::from_millis(50))?;
    println!(
        "e1000.quiet_interrupts={}",
        irqs.wait(0, Duration::from_millis(300))?.count()
    );
    bar.write32(e1000::IMS, e1000::icr::TXDW);
    for round in 1..=2 {
        bar.write32(e1000::ICS, e1000::icr::TXDW);
        let fired = irqs.wait(0, Duration::from_secs(5))?.count();
        let icr = bar.read32(e1000::ICR);
        irqs.unmask()?;
        println!("e1000.round{round}.fired={fired}");
        println!(
            "e1000.round{round}.icr_txdw={}",
            icr & e1000::icr::TXDW != 0
        );
    }
    bar.write32(e1000::IMC, u32::MAX);
    drop(irqs);
    let nvme_dev = open_one(&container, nvme_bdf)?;
    let msix = nvme_dev.irq_count(IrqKind::Msix)?;
    println!("nvme.irq_count.Msix={msix}");
    let vectors = nvme_dev.enable_irqs(IrqKind::Msix, msix.min(4))?;
    println!("nvme.msix_enabled={}", vectors.len());
    println!(
        "nvme.msix_too_many={}",
        nvme_dev.enable_irqs(IrqKind::Msix, msix + 1).is_err()
    );
    Ok(())
}

fn vm_locked_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmLck:"))
        .unwrap_or("VmLck: 0 kB");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn dma(bdf: &str, backing: &str, bytes: &str) -> Result<()> {
    let backing = match backing {
        "auto" => Backing::Auto,
        "hugepages" => Backing::Hugepages,
        "pages" => Backing::Pages,
        other => {
            return Err(vfio_core::Error::InvalidArgument(format!(
                "backing {other:?}"
            )))
        }
    };
    let size: usize = bytes
        .parse()
        .map_err(|_| vfio_core::Error::InvalidArgument(format!("size {bytes:?}")))?;
    let container = Container::new()?;
    let _dev = open_one(&container, bdf)?;
    let (maps_before, lck_before) = (container.mapping_count(), vm_locked_kib());
    let mem = DmaMemory::new(&container, size, backing)?;
    println!("dma.page_kind={:?}", mem.page_kind());
    println!("dma.len={}", mem.len());
    println!("dma.iova={:#x}", mem.iova());
    println!("dma.mappings={}", container.mapping_count() - maps_before);
    println!("dma.locked_kib_delta={}", vm_locked_kib() - lck_before);
    let words = mem.len() / 8;
    for i in 0..words {
        mem.write::<u64>(i * 8, pattern(i));
    }
    let bad = (0..words)
        .filter(|&i| mem.read::<u64>(i * 8) != pattern(i))
        .count();
    println!("dma.pattern_mismatches={bad}");
    let in_range = container
        .iova_ranges()
        .iter()
        .any(|r| r.contains(&mem.iova()) && r.contains(&(mem.iova() + mem.len() as u64 - 1)));
    println!("dma.iova_in_valid_range={in_range}");
    drop(mem);
    println!(
        "dma.mappings_after_drop={}",
        container.mapping_count() - maps_before
    );
    println!(
        "dma.locked_kib_after_drop={}",
        vm_locked_kib() as i64 - lck_before as i64
    );
    Ok(())
}

fn pattern(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa5a5_5a5a_0f0f_f0f0
}

fn pool(bdf: &str) -> Result<()> {
    let container = Container::new()?;
    let _dev = open_one(&container, bdf)?;
    let pool = BufferPool::new(&container, 2048, 1024)?;
    println!("pool.capacity={}", pool.capacity());
    println!("pool.buf_size={}", pool.buf_size());
    let mut held = Vec::new();
    while let Some(mut buf) = pool.alloc() {
        let tag = held.len() as u8;
        buf.as_mut_slice().fill(tag);
        held.push(buf);
    }
    let iovas: HashSet<u64> = held.iter().map(|b| b.iova()).collect();
    let intact = held
        .iter()
        .enumerate()
        .all(|(i, b)| b.as_slice().iter().all(|&x| x == i as u8));
    println!("pool.allocated={}", held.len());
    println!("pool.distinct_iovas={}", iovas.len());
    println!("pool.contents_intact={intact}");
    println!("pool.free_when_all_held={}", pool.free_count());
    drop(held);
    println!("pool.free_after_drop={}", pool.free_count());
    Ok(())
}

/// `n` cycles of: map DMA memory (hugepages and 4 KiB pages, alternately),
/// make a pool and take every buffer, drop it all. Prints the kernel's count
/// of DMA mappings still available, the container's own count, VmLck and the
/// pool's free count, before and after.
fn dma_cycles(bdf: &str, n: &str) -> Result<()> {
    let n: usize = n
        .parse()
        .map_err(|_| vfio_core::Error::InvalidArgument(format!("count {n:?}")))?;
    let container = Container::new()?;
    let _dev = open_one(&container, bdf)?;
    let before = (
        container.dma_mappings_available(),
        container.mapping_count(),
        vm_locked_kib(),
    );
    let mut unaccounted = 0;
    for i in 0..n {
        let backing = if i % 2 == 0 {
            Backing::Hugepages
        } else {
            Backing::Pages
        };
        let mem = DmaMemory::new(&container, 64 << 10, backing)?;
        mem.write::<u64>(0, i as u64);
        let pool = BufferPool::new(&container, 2048, 16)?;
        let mut held = Vec::new();
        pool.alloc_batch(16, &mut held);
        let shared = held.pop().map(|b| b.into_shared());
        let copies: Vec<_> = (0..3).map(|_| shared.clone()).collect();
        drop((held, shared, copies));
        unaccounted += pool.capacity() - pool.free_count();
    }
    let after = (
        container.dma_mappings_available(),
        container.mapping_count(),
        vm_locked_kib(),
    );
    println!("cycles.done={n}");
    println!("cycles.kernel_mappings_available_before={:?}", before.0);
    println!("cycles.kernel_mappings_available_after={:?}", after.0);
    println!("cycles.container_mappings_before={}", before.1);
    println!("cycles.container_mappings_after={}", after.1);
    println!("cycles.vmlck_kib_before={}", before.2);
    println!("cycles.vmlck_kib_after={}", after.2);
    println!("cycles.pool_buffers_unaccounted={unaccounted}");
    Ok(())
}

/// Sets bus mastering, then writes CC (queue entry sizes, not enabled), resets
/// the controller and reads CC back: a reset clears it.
fn reset(bdf: &str) -> Result<()> {
    let container = Container::new()?;
    let dev = open_one(&container, bdf)?;
    dev.enable_bus_master()?;
    let command = u16::from_le_bytes(dev.config_read::<2>(4)?);
    println!("command.memory_space={}", command & (1 << 1) != 0);
    println!("command.bus_master={}", command & (1 << 2) != 0);
    let bar = dev.map_bar(0)?;
    bar.write32(nvme::CC, 6 << 16 | 4 << 20);
    println!("cc.written={:#x}", bar.read32(nvme::CC));
    dev.reset()?;
    println!("cc.after_reset={:#x}", bar.read32(nvme::CC));
    Ok(())
}

/// Reads the first `bytes` of namespace 1 with the asynchronous API: 4 KiB
/// reads into pool buffers, up to 32 in flight, reassembled by tag.
fn nvme_async(bdf: &str, bytes: &str) -> Result<()> {
    let total: usize = bytes
        .parse()
        .map_err(|_| vfio_core::Error::InvalidArgument(format!("size {bytes:?}")))?;
    let container = Container::new()?;
    let mut nvme = nvme_driver::Controller::open(&container, bdf.parse()?).map_err(nvme_err)?;
    let mut qp = nvme
        .create_io_queue_pair::<vfio_core::dma::Buffer>(64)
        .map_err(nvme_err)?;
    let pool = BufferPool::new(&container, 4096, 64)?;
    let chunks = total / 4096;
    let mut data = vec![0u8; total];
    // Counted from what `poll` hands back: completions, the distinct tags
    // among them, and the most one `poll` returned.
    let (mut completions, mut seen, mut largest_poll) = (0usize, vec![false; chunks], 0);
    let (mut next, mut max_in_flight) = (0, 0);
    while completions < chunks {
        while next < chunks && qp.in_flight() < 32 {
            let buf = pool.try_alloc()?;
            qp.submit_read(1, (next * 8) as u64, buf, 0, 4096, next as u64)
                .map_err(|(e, _)| nvme_err(e))?;
            next += 1;
        }
        max_in_flight = max_in_flight.max(qp.in_flight());
        qp.ring();
        let (mut failed, mut bad_tag) = (None, None);
        let mut this_poll = 0;
        qp.poll(usize::MAX, |c| {
            this_poll += 1;
            if let Err(e) = c.result {
                failed.get_or_insert(e);
            }
            let buf = c.buf.expect("reads carry their buffer");
            let Some(first) = seen.get_mut(c.tag as usize) else {
                bad_tag.get_or_insert(c.tag);
                return;
            };
            *first = true;
            let at = c.tag as usize * 4096;
            data[at..at + 4096].copy_from_slice(&buf.as_slice()[..4096]);
        })
        .map_err(nvme_err)?;
        completions += this_poll;
        largest_poll = largest_poll.max(this_poll);
        if let Some(e) = failed {
            return Err(nvme_err(e));
        }
        if let Some(tag) = bad_tag {
            return Err(vfio_core::Error::InvalidArgument(format!(
                "a completion with tag {tag}; tags 0..{chunks} were submitted"
            )));
        }
    }
    use sha2::Digest;
    println!("async.sha256={:x}", sha2::Sha256::digest(&data));
    println!("async.completions={completions}");
    println!(
        "async.distinct_tags={}",
        seen.iter().filter(|&&s| s).count()
    );
    println!("async.largest_poll={largest_poll}");
    // What the driver counted in flight after each refill; the refill loop
    // stops at 32, so this shows the queue was filled, not that the
    // controller worked on several commands at once.
    println!("async.max_in_flight={max_in_flight}");
    println!("async.pool_free_after={}", pool.free_count());
    Ok(())
}

/// Requests the driver must refuse without sending anything.
fn nvme_bad(bdf: &str) -> Result<()> {
    let (container, mut nvme, mut qp) = nvme_with_queue(bdf, nvme_driver::Config::new())?;
    let blocks = qp.namespace(1).map_err(nvme_err)?.blocks;
    let bs = qp.namespace(1).map_err(nvme_err)?.block_size as usize;
    let small_pool = BufferPool::new(&container, 4096, 1)?;
    let mut small = small_pool.try_alloc()?;
    let mut big = DmaMemory::new(&container, 1 << 20, Backing::Auto)?;
    let cases: [(&str, nvme_driver::Result<()>); 6] = [
        ("past_end", qp.write(1, blocks, &big, 0, bs)),
        ("straddles_end", qp.write(1, blocks - 1, &big, 0, 2 * bs)),
        ("zero_blocks", qp.read(1, 0, &mut big, 0, 0)),
        ("buffer_too_small", qp.read(1, 0, &mut small, 0, 8192)),
        ("partial_block", qp.read(1, 0, &mut big, 0, bs + 1)),
        ("unknown_nsid", qp.read(7, 0, &mut big, 0, bs)),
    ];
    for (name, result) in cases {
        match result {
            Ok(()) => println!("bad.{name}=accepted"),
            Err(e) => println!("bad.{name}={e}"),
        }
    }
    println!("bad.in_flight_after={}", qp.in_flight());
    println!(
        "bad.unknown_namespace_identify={}",
        nvme.namespace(7)
            .err()
            .map_or("accepted".into(), |e| e.to_string())
    );
    Ok(())
}

/// Creates I/O queue pairs until the controller refuses; each does one read.
fn nvme_queues(bdf: &str) -> Result<()> {
    let container = Container::new()?;
    let mut nvme = nvme_driver::Controller::open(&container, bdf.parse()?).map_err(nvme_err)?;
    println!("queues.limit={}", nvme.io_queue_limit());
    let mut buf = DmaMemory::new(&container, 4096, Backing::Auto)?;
    let mut made = Vec::new();
    loop {
        match nvme.create_io_queue_pair::<DmaMemory>(8) {
            Ok(mut qp) => {
                qp.read(1, 0, &mut buf, 0, 4096).map_err(nvme_err)?;
                made.push(qp);
            }
            Err(e) => {
                println!("queues.refused={e}");
                break;
            }
        }
        if made.len() > 64 {
            break;
        }
    }
    println!("queues.created={}", made.len());
    // Dropping a queue pair deletes it at the controller and frees its ID.
    made.clear();
    let mut again = nvme
        .create_io_queue_pair::<DmaMemory>(8)
        .map_err(nvme_err)?;
    again.read(1, 0, &mut buf, 0, 4096).map_err(nvme_err)?;
    println!("queues.after_drop=qid {}", again.qid());
    Ok(())
}

/// On one queue pair: the bad block fails, a range over it fails, the blocks
/// around it read (their SHA-256 printed), and the queue pair keeps working.
fn nvme_media(bdf: &str, bad: &str, blocks: &str) -> Result<()> {
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| vfio_core::Error::InvalidArgument(format!("number {s:?}")))
    };
    let (bad, blocks) = (num(bad)?, num(blocks)?);
    let (container, mut nvme, mut qp) = nvme_with_queue(bdf, nvme_driver::Config::new())?;
    let mut mem = DmaMemory::new(&container, (blocks * 512) as usize, Backing::Auto)?;
    let show = |r: nvme_driver::Result<()>| r.err().map_or("ok".to_string(), |e| e.to_string());
    println!(
        "media.bad_block={}",
        show(qp.read(1, bad, &mut mem, 0, 512))
    );
    println!(
        "media.range_over_bad={}",
        show(qp.read(1, bad - 10, &mut mem, 0, 20 * 512))
    );
    let mut hash = |lba: u64, n: u64| -> Result<String> {
        qp.read(1, lba, &mut mem, 0, (n * 512) as usize)
            .map_err(nvme_err)?;
        let mut data = vec![0u8; (n * 512) as usize];
        mem.read_bytes(0, &mut data);
        use sha2::Digest;
        Ok(format!("{:x}", sha2::Sha256::digest(&data)))
    };
    println!("media.before_sha256={}", hash(0, bad)?);
    println!("media.after_sha256={}", hash(bad + 1, blocks - bad - 1)?);
    println!(
        "media.error_log_entries={}",
        nvme.error_count().map_err(nvme_err)?
    );
    Ok(())
}

/// A read that cannot finish in time on a throttled drive; then reset and recover.
fn nvme_timeout(bdf: &str) -> Result<()> {
    let (container, mut nvme, mut qp) = nvme_with_queue(bdf, nvme_driver::Config::new())?;
    qp.set_timeout(Duration::from_secs(2));
    let mut mem = DmaMemory::new(&container, 4 << 20, Backing::Auto)?;
    let show = |r: nvme_driver::Result<()>| r.err().map_or("ok".to_string(), |e| e.to_string());
    // The throttle lets a first burst through; read until it holds one back.
    let mut slow = (Ok(()), Duration::ZERO);
    for _ in 0..4 {
        let started = std::time::Instant::now();
        slow = (qp.read(1, 0, &mut mem, 0, 64 << 10), started.elapsed());
        if slow.0.is_err() {
            break;
        }
    }
    println!("timeout.slow_read={}", show(slow.0));
    println!("timeout.waited_ms={}", slow.1.as_millis());
    println!("timeout.failed={}", qp.is_failed());
    // The read returned, so its target is the caller's again: the driver
    // stopped the controller first. Nothing may land in it from now on.
    mem.write_bytes(0, &[0xc3; 64 << 10]);
    std::thread::sleep(Duration::from_secs(6));
    let mut back = vec![0u8; 64 << 10];
    mem.read_bytes(0, &mut back);
    println!("timeout.target_intact={}", back.iter().all(|&b| b == 0xc3));
    println!(
        "timeout.next_read={}",
        show(qp.read(1, 0, &mut mem, 0, 4096))
    );
    nvme.reset().map_err(nvme_err)?;
    let mut aborted = 0;
    nvme.recreate_io_queue_pair(&mut qp, |c| {
        if c.result.is_err() {
            aborted += 1;
        }
    })
    .map_err(nvme_err)?;
    println!("timeout.aborted={aborted}");
    // The throttle still charges the drained request's bytes: allow for that.
    qp.set_timeout(Duration::from_secs(30));
    // Into other memory than the aborted command had: QEMU may still finish it.
    println!(
        "timeout.read_after_reset={}",
        show(qp.read(1, 8, &mut mem, 1 << 20, 4096))
    );
    let mut data = vec![0u8; 4096];
    mem.read_bytes(1 << 20, &mut data);
    use sha2::Digest;
    println!(
        "timeout.after_reset_sha256={:x}",
        sha2::Sha256::digest(&data)
    );
    Ok(())
}

/// 32 one-block reads in flight on a throttled drive when the queue pair is
/// dropped; then the pool's buffers, every one, are the caller's: filled with
/// a pattern that must survive the time the throttle takes to let the reads
/// through (the drop deleted the queue at the controller, which waits for
/// them, or disabled the controller).
fn nvme_drop(bdf: &str) -> Result<()> {
    const READS: usize = 32;
    let container = Container::new()?;
    let mut nvme = nvme_driver::Controller::open(&container, bdf.parse()?).map_err(nvme_err)?;
    let pool = BufferPool::new(&container, 4096, READS)?;
    let mut qp = nvme
        .create_io_queue_pair::<vfio_core::dma::Buffer>(64)
        .map_err(nvme_err)?;
    for i in 0..READS {
        let buf = pool.try_alloc()?;
        qp.submit_read(1, 8 * i as u64, buf, 0, 512, i as u64)
            .map_err(|(e, _)| nvme_err(e))?;
    }
    qp.ring();
    println!("drop.in_flight={}", qp.in_flight());
    let started = std::time::Instant::now();
    drop(qp);
    println!("drop.ms={}", started.elapsed().as_millis());
    let mut held: Vec<_> = (0..READS).map_while(|_| pool.alloc()).collect();
    println!("drop.buffers_back={}", held.len());
    for (i, b) in held.iter_mut().enumerate() {
        b.as_mut_slice().fill(0x40 + i as u8);
    }
    std::thread::sleep(Duration::from_secs(4));
    let intact = held
        .iter()
        .enumerate()
        .all(|(i, b)| b.as_slice().iter().all(|&x| x == 0x40 + i as u8));
    println!("drop.patterns_intact={intact}");
    println!("drop.leaked={}", vfio_core::dma::leaked());
    let mut qp = nvme
        .create_io_queue_pair::<DmaMemory>(16)
        .map_err(nvme_err)?;
    let mut mem = DmaMemory::new(&container, 4096, Backing::Auto)?;
    qp.read(1, 0, &mut mem, 0, 4096).map_err(nvme_err)?;
    let mut data = vec![0u8; 4096];
    mem.read_bytes(0, &mut data);
    use sha2::Digest;
    println!("drop.after_sha256={:x}", sha2::Sha256::digest(&data));
    Ok(())
}

/// A page at an IOVA the container never mapped, as a buggy driver might
/// hand it to a device. Safe code cannot name such an IOVA (`DmaTarget` is
/// sealed); this test does it on purpose to see the IOMMU block it.
#[allow(unsafe_code)]
fn unmapped(container: &Arc<Container>, iova: u64) -> vfio_core::dma::RawDma {
    // SAFETY: every IOVA this is called with lies outside the container's
    // mappings (past the end of a mapping the test made, below the 1 MiB the
    // container never hands out, or a heap virtual address, far above the
    // IOVAs in use), so the IOMMU blocks the device's access to it; the test
    // checks the DMAR fault and the canaries.
    unsafe { vfio_core::dma::RawDma::new(container, iova, 4096) }
}

/// Asks the NVMe controller to write a block to IOVAs that are not mapped:
/// just past a mapped canary buffer, the virtual address of a heap canary
/// (what a driver confusing addresses would pass), and a low IOVA. Prints
/// what the driver reported, whether the canaries changed, and what a read
/// into mapped memory returns after a controller reset.
fn nvme_confine(bdf: &str) -> Result<()> {
    let (container, mut nvme, mut qp) = nvme_with_queue(bdf, nvme_driver::Config::new())?;
    qp.set_timeout(Duration::from_secs(5));
    let canary = DmaMemory::new(&container, 64 << 10, Backing::Auto)?;
    canary.write_bytes(0, &[0xa5; 64 << 10]);
    let heap = vec![0x5au8; 3 * 4096];
    let page = (heap.as_ptr() as u64).next_multiple_of(4096);
    let targets = [
        ("after_canary", canary.iova() + canary.len() as u64),
        ("virtual_address", page),
        ("low", 0x1000),
    ];
    for (name, iova) in targets {
        println!("confine.{name}.iova={iova:#x}");
        // The emulated IOMMU records one fault at a time and drops one that
        // arrives while the last is still pending, and the kernel prints
        // DMAR faults rate-limited (10 lines per 5 s, two per fault, and a
        // 4 KiB write may fault twice): wait for the guest kernel to log
        // this one before the next, and try again (the same write to the
        // same unmapped IOVA) if it never shows, for longer than one
        // rate-limit window (2 s per attempt).
        for attempt in 1..=5 {
            let r = qp.read(1, 0, &mut unmapped(&container, iova), 0, 4096);
            println!(
                "confine.{name}={}",
                r.err().map_or("ok".to_string(), |e| e.to_string())
            );
            if qp.is_failed() {
                nvme.reset().map_err(nvme_err)?;
                nvme.recreate_io_queue_pair(&mut qp, |_| {})
                    .map_err(nvme_err)?;
            }
            if dmar_fault_logged(iova) {
                println!("confine.{name}.attempts={attempt}");
                break;
            }
        }
    }
    let mut back = vec![0u8; 64 << 10];
    canary.read_bytes(0, &mut back);
    println!(
        "confine.dma_canary_intact={}",
        back.iter().all(|&b| b == 0xa5)
    );
    println!(
        "confine.heap_canary_intact={}",
        heap.iter().all(|&b| b == 0x5a)
    );
    reset_and_read(&container, &mut nvme, &mut qp, "confine")
}

/// Waits up to 2 s for the kernel's log to show an IOMMU (DMAR) fault at
/// `iova`.
fn dmar_fault_logged(iova: u64) -> bool {
    let want = format!("fault addr {iova:#x} ");
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if let Ok(out) = std::process::Command::new("dmesg").output() {
            let log = String::from_utf8_lossy(&out.stdout);
            if log.lines().any(|l| l.contains("DMAR") && l.contains(&want)) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The controller at `bdf` in a fresh container, with one 16-entry queue
/// pair for commands on `DmaMemory`.
fn nvme_with_queue(
    bdf: &str,
    config: nvme_driver::Config,
) -> Result<(
    Arc<Container>,
    nvme_driver::Controller,
    nvme_driver::IoQueuePair<DmaMemory>,
)> {
    let container = Container::new()?;
    let mut nvme =
        nvme_driver::Controller::open_with(&container, bdf.parse()?, config).map_err(nvme_err)?;
    let qp = nvme
        .create_io_queue_pair::<DmaMemory>(16)
        .map_err(nvme_err)?;
    Ok((container, nvme, qp))
}

/// Resets the controller, re-creates the queue pair, reads block 0..8 into
/// fresh memory and prints `<key>.after_reset_sha256=`.
fn reset_and_read(
    container: &Arc<Container>,
    nvme: &mut nvme_driver::Controller,
    qp: &mut nvme_driver::IoQueuePair<DmaMemory>,
    key: &str,
) -> Result<()> {
    nvme.reset().map_err(nvme_err)?;
    nvme.recreate_io_queue_pair(qp, |_| {}).map_err(nvme_err)?;
    let mut mem = DmaMemory::new(container, 4096, Backing::Auto)?;
    qp.read(1, 0, &mut mem, 0, 4096).map_err(nvme_err)?;
    let mut data = vec![0u8; 4096];
    mem.read_bytes(0, &mut data);
    use sha2::Digest;
    println!("{key}.after_reset_sha256={:x}", sha2::Sha256::digest(&data));
    println!(
        "{key}.shadow_doorbells_after_reset={}",
        nvme.uses_shadow_doorbells() && qp.uses_shadow_doorbells()
    );
    Ok(())
}

/// Reads block 0..8, prints its hash and whether the queue pair rings
/// shadow doorbells, then resets as [`reset_and_read`] does.
fn nvme_reset(bdf: &str, interrupts: bool) -> Result<()> {
    // With `interrupts`, SGLs for every command too: a reset with both on.
    let data_pointer = if interrupts {
        nvme_driver::DataPointer::Sgl
    } else {
        nvme_driver::DataPointer::Auto
    };
    let config = nvme_driver::Config::new()
        .interrupts(interrupts)
        .data_pointer(data_pointer);
    let (container, mut nvme, mut qp) = nvme_with_queue(bdf, config)?;
    let mut mem = DmaMemory::new(&container, 4096, Backing::Auto)?;
    qp.read(1, 0, &mut mem, 0, 4096).map_err(nvme_err)?;
    let mut data = vec![0u8; 4096];
    mem.read_bytes(0, &mut data);
    use sha2::Digest;
    println!("reset.before_sha256={:x}", sha2::Sha256::digest(&data));
    println!("reset.shadow_doorbells={}", qp.uses_shadow_doorbells());
    println!("reset.data_pointer={:?}", qp.data_pointer());
    println!("reset.interrupt_vector={:?}", qp.interrupt_vector());
    reset_and_read(&container, &mut nvme, &mut qp, "reset")?;
    println!(
        "reset.interrupt_vector_after_reset={:?}",
        qp.interrupt_vector()
    );
    Ok(())
}

/// Turns the function's memory decoding and bus mastering off in its PCI
/// command register (through sysfs, behind the driver's back) or back on.
fn set_decoding(bdf: &str, on: bool) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let io = |e: std::io::Error| vfio_core::Error::InvalidArgument(format!("{bdf} config: {e}"));
    let path = format!("/sys/bus/pci/devices/{bdf}/config");
    let cfg = std::fs::read(&path).map_err(io)?;
    let bits = 0x6u8; // memory space, bus master
    let command = if on { cfg[4] | bits } else { cfg[4] & !bits };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io)?;
    f.seek(SeekFrom::Start(4)).map_err(io)?;
    f.write_all(&[command]).map_err(io)
}

/// The controller vanishes under a read in flight: its function stops
/// decoding memory and mastering the bus (what the guest can do to a QEMU
/// device; registers then read as 0 here, as all ones after a real surprise
/// removal). Prints how the polling loop ended and how long it took, then
/// turns the function back on and checks that a reset recovers it.
fn nvme_vanish(bdf: &str) -> Result<()> {
    let (container, mut nvme, mut qp) = nvme_with_queue(bdf, nvme_driver::Config::new())?;
    qp.set_timeout(Duration::from_secs(2));
    let mem = DmaMemory::new(&container, 1 << 20, Backing::Auto)?;
    set_decoding(bdf, false)?;
    let started = std::time::Instant::now();
    qp.submit_read(1, 0, mem, 0, 4096, 7)
        .map_err(|(e, _)| nvme_err(e))?;
    qp.ring();
    let ended = loop {
        match qp.poll(16, drop) {
            Ok(0) => continue,
            Ok(n) => break format!("completed {n}"),
            Err(e) => break e.to_string(),
        }
    };
    println!("vanish.poll={ended}");
    println!("vanish.seconds={:.1}", started.elapsed().as_secs_f64());
    println!(
        "vanish.next_read={}",
        qp.read(
            1,
            0,
            &mut DmaMemory::new(&container, 4096, Backing::Auto)?,
            0,
            4096
        )
        .err()
        .map_or("ok".to_string(), |e| e.to_string())
    );
    set_decoding(bdf, true)?;
    reset_and_read(&container, &mut nvme, &mut qp, "vanish")
}
