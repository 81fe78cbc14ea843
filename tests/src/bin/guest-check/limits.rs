//! Guest checks of issue #18: devices with different DMA address limits in
//! one container (`dma-limits`), and the hugepages a small configuration of
//! drivers takes now that small `Backing::Auto` requests use ordinary pages
//! (`hugepages`).

use std::time::Duration;

use edu_driver::Edu;
use nic_driver::Config;
use sha2::{Digest, Sha256};
use vfio_core::dma::{dma_mask, Backing, DmaMemory};
use vfio_core::vfio::Container;
use vfio_core::{Error, Result};
use vfio_tests::check::random_bytes;

use super::nvme_err;

/// What QEMU's edu reaches: 28 bits of bus address.
const EDU_LIMIT: u64 = dma_mask(28);
/// The unlimited region allocated first: not a multiple of 2 MiB, so it is
/// placed 4 KiB-aligned right after the NVMe driver's rings and takes the
/// low IOVAs up to about 242 MiB, leaving less than 64 MiB below 2^28.
const LOW_BYTES: usize = 241 << 20;
/// The limited request that cannot fit below 2^28 any more.
const LIMITED_BYTES: usize = 64 << 20;
/// The unlimited region allocated after the edu's memory: it no longer fits
/// below 2^28 and reaches above it.
const HIGH_BYTES: usize = 64 << 20;
/// An unlimited region allocated last, which lands wholly above 2^28: the
/// memory handed to the edu, which must refuse it.
const OUTSIDE_BYTES: usize = 4 << 20;
/// The NVMe read into the high region's part above 2^28.
const NVME_LBA: u64 = 2048;
const NVME_BYTES: usize = 64 << 10;
/// The edu's transfers: all its buffer takes on QEMU 7.2.
const EDU_BYTES: usize = 4095;
/// Seed of the pattern the edu moves (the host regenerates it). Not
/// edu-demo's pattern, which earlier steps left in the device's buffer.
const EDU_SEED: u64 = 0xed0_0028;

fn edu_err(e: edu_driver::Error) -> Error {
    match e {
        edu_driver::Error::Vfio(v) => v,
        other => Error::InvalidArgument(format!("edu: {other}")),
    }
}

fn nic_err(e: nic_driver::Error) -> Error {
    match e {
        nic_driver::Error::Vfio(v) => v,
        other => Error::InvalidArgument(format!("nic: {other}")),
    }
}

/// Prints `<key>.iova`, `<key>.last` (the IOVA of the last byte) and `<key>.len`.
fn print_range(key: &str, mem: &DmaMemory) {
    println!("{key}.iova={:#x}", mem.iova());
    println!("{key}.last={:#x}", mem.iova() + mem.len() as u64 - 1);
    println!("{key}.len={}", mem.len());
}

fn sha256_of(mem: &DmaMemory, offset: usize, len: usize) -> String {
    let mut data = vec![0u8; len];
    mem.read_bytes(offset, &mut data);
    format!("{:x}", Sha256::digest(&data))
}

/// The kernel log's lines about IOMMU (DMAR) faults.
fn dmar_fault_lines() -> Vec<String> {
    let out = std::process::Command::new("dmesg")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.contains("DMAR") && l.contains("fault"))
        .map(str::to_string)
        .collect()
}

/// One container, an NVMe controller (no DMA limit) and an edu (28 bits):
///
/// a. a large unlimited region takes the low IOVAs;
/// b. a limited request that no longer fits below 2^28 is refused with
///    `DmaLimitExhausted`, and maps nothing;
/// c. the edu's memory still comes from below 2^28, and a pattern goes
///    RAM -> edu -> other RAM through it;
/// d. a further unlimited region reaches above 2^28, and the NVMe reads
///    disk blocks into its part above; memory wholly above 2^28 is refused
///    by the edu driver (both directions), and the device's buffer shows no
///    transfer happened;
/// e. no IOMMU fault was logged meanwhile.
pub fn dma_limits(nvme_bdf: &str, edu_bdf: &str) -> Result<()> {
    let faults_before = dmar_fault_lines().len();
    let container = Container::new()?;
    let mut nvme =
        nvme_driver::Controller::open(&container, nvme_bdf.parse()?).map_err(nvme_err)?;
    let mut qp = nvme
        .create_io_queue_pair::<DmaMemory>(16)
        .map_err(nvme_err)?;
    let mut edu = Edu::new(container.open_device(edu_bdf.parse()?)?).map_err(edu_err)?;
    println!("limits.limit={EDU_LIMIT:#x}");

    // a.
    let low = DmaMemory::new(&container, LOW_BYTES, Backing::Pages)?;
    print_range("limits.low", &low);

    // b.
    let mappings = container.mapping_count();
    match DmaMemory::new_below(&container, LIMITED_BYTES, Backing::Pages, EDU_LIMIT) {
        Ok(m) => println!("limits.limited=allocated at {:#x}", m.iova()),
        Err(e @ Error::DmaLimitExhausted { .. }) => {
            println!("limits.limited=DmaLimitExhausted: {e}")
        }
        Err(e) => println!("limits.limited=another error: {e}"),
    }
    println!(
        "limits.limited.mappings_delta={}",
        container.mapping_count() as i64 - mappings as i64
    );

    // c.
    let src = edu.dma_memory(4096).map_err(edu_err)?;
    let mut dst = edu.dma_memory(4096).map_err(edu_err)?;
    print_range("limits.edu_src", &src);
    print_range("limits.edu_dst", &dst);
    src.write_bytes(0, &random_bytes(EDU_BYTES, EDU_SEED));
    edu.copy_to_device(&src, 0, EDU_BYTES).map_err(edu_err)?;
    edu.copy_from_device(0, &mut dst, EDU_BYTES)
        .map_err(edu_err)?;
    println!("limits.edu_sha256={}", sha256_of(&dst, 0, EDU_BYTES));

    // d. The unlimited device reaches above the limit.
    let mut high = DmaMemory::new(&container, HIGH_BYTES, Backing::Pages)?;
    print_range("limits.high", &high);
    let above = (EDU_LIMIT + 1).saturating_sub(high.iova()) as usize;
    if above + NVME_BYTES > high.len() {
        return Err(Error::InvalidArgument(format!(
            "the high region ends at {:#x}, leaving no {NVME_BYTES} bytes above {EDU_LIMIT:#x}",
            high.iova() + high.len() as u64 - 1
        )));
    }
    let block_size = qp.namespace(1).map_err(nvme_err)?.block_size;
    println!("limits.nvme_block_size={block_size}");
    println!("limits.nvme_lba={NVME_LBA}");
    println!("limits.nvme_bytes={NVME_BYTES}");
    println!("limits.nvme_offset={above:#x}");
    println!("limits.nvme_iova={:#x}", high.iova() + above as u64);
    high.write_bytes(above, &[0x5a; NVME_BYTES]);
    qp.read(1, NVME_LBA, &mut high, above, NVME_BYTES)
        .map_err(nvme_err)?;
    println!("limits.nvme_sha256={}", sha256_of(&high, above, NVME_BYTES));

    // d. The limited device's driver refuses memory it cannot reach.
    let mut outside = DmaMemory::new(&container, OUTSIDE_BYTES, Backing::Pages)?;
    print_range("limits.outside", &outside);
    outside.write_bytes(0, &vec![0xc3; outside.len()]);
    let show = |r: edu_driver::Result<()>| r.err().map_or("ok".to_string(), |e| e.to_string());
    println!(
        "limits.edu_to_device_outside={}",
        show(edu.copy_to_device(&outside, 0, EDU_BYTES))
    );
    println!(
        "limits.edu_from_device_outside={}",
        show(edu.copy_from_device(0, &mut outside, EDU_BYTES))
    );
    let mut back = vec![0u8; outside.len()];
    outside.read_bytes(0, &mut back);
    println!("limits.outside_intact={}", back.iter().all(|&b| b == 0xc3));
    // The device's buffer still holds the pattern: the refused copy into it
    // never ran.
    dst.write_bytes(0, &[0; EDU_BYTES]);
    edu.copy_from_device(0, &mut dst, EDU_BYTES)
        .map_err(edu_err)?;
    println!(
        "limits.edu_after_refusal_sha256={}",
        sha256_of(&dst, 0, EDU_BYTES)
    );

    // e. Faults are logged from an interrupt: give one time to show.
    std::thread::sleep(Duration::from_millis(500));
    let faults = dmar_fault_lines();
    let new = faults.get(faults_before..).unwrap_or_default();
    println!("limits.dmar_faults_new={}", new.len());
    for line in new {
        println!("limits.dmar_fault={line}");
    }
    Ok(())
}

/// `HugePages_Free` of /proc/meminfo (2 MiB pages).
fn hugepages_free() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| Error::InvalidArgument(format!("/proc/meminfo: {e}")))?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::InvalidArgument("no HugePages_Free in /proc/meminfo".into()))
}

/// The hugepages one NVMe controller with one I/O queue pair and one e1000
/// (default configuration) take, open together in one container.
pub fn hugepages(nvme_bdf: &str, nic_bdf: &str) -> Result<()> {
    let before = hugepages_free()?;
    let container = Container::new()?;
    let mut nvme =
        nvme_driver::Controller::open(&container, nvme_bdf.parse()?).map_err(nvme_err)?;
    let qp = nvme
        .create_io_queue_pair::<DmaMemory>(16)
        .map_err(nvme_err)?;
    let nic = nic_driver::open(&container, nic_bdf.parse()?, Config::default()).map_err(nic_err)?;
    let open = hugepages_free()?;
    println!("hugepages.free_before={before}");
    println!("hugepages.free_open={open}");
    println!("hugepages.used={}", before as i64 - open as i64);
    println!("hugepages.mappings={}", container.mapping_count());
    let pool = nic.pool();
    println!("hugepages.nic_pool_buffers={}", pool.capacity());
    println!("hugepages.nic_pool_buf_size={}", pool.buf_size());
    println!(
        "hugepages.nic_pool_bytes={}",
        pool.capacity() * pool.buf_size()
    );
    drop((nic, qp, nvme));
    println!("hugepages.free_after_close={}", hugepages_free()?);
    Ok(())
}
