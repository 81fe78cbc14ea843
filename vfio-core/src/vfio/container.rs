//! The VFIO container: one IOMMU address space shared by every device opened in it.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io;
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use vfio_bindings::bindings::vfio::{VFIO_TYPE1v2_IOMMU, VFIO_API_VERSION};

use super::group::Group;
use super::{ioctl, Device};
use crate::dma::{IovaAllocator, MappedPtr};
use crate::pci::{PciAddress, Sysfs};
use crate::{Error, Result};

const CONTAINER_PATH: &str = "/dev/vfio/vfio";
/// IOVAs below this are never handed out (a stray zero or small pointer from a
/// device then faults instead of hitting a buffer).
const LOWEST_IOVA: u64 = 1 << 20;

/// One IOMMU context (/dev/vfio/vfio with a TYPE1v2 IOMMU). Devices from
/// different IOMMU groups opened in the same container see the same IOVAs, so
/// one DMA buffer can be handed to an NVMe controller and a NIC.
///
/// ```no_run
/// use vfio_core::vfio::Container;
///
/// # fn main() -> vfio_core::Result<()> {
/// let container = Container::new()?;
/// let nvme = container.open_device("0000:01:00.0".parse()?)?;
/// let nic = container.open_device("0000:02:00.0".parse()?)?;
/// assert!(std::sync::Arc::ptr_eq(nvme.container(), nic.container()));
/// # Ok(()) }
/// ```
///
/// The container keeps every group it attached until it is dropped itself, and
/// DMA memory keeps the container: so no mapping outlives the IOMMU context it
/// lives in (closing a container's last group tears that context down).
///
/// Every DMA mapping is readable and writable by every device of the
/// container, at IOVAs of at least 1 MiB inside the ranges the IOMMU reports
/// valid ([`Container::iova_ranges`]); a device that reaches for an IOVA
/// where nothing is mapped faults in the IOMMU. IOVAs are handed out first
/// fit, lowest address first, so memory for a device that reaches only low
/// addresses is best allocated first, and with a limit
/// ([`DmaMemory::new_below`](crate::dma::DmaMemory::new_below)); see the
/// [`dma`](crate::dma#iova-allocation) module.
#[derive(Debug)]
pub struct Container {
    // Field order is drop order: groups detach before the container fd closes.
    state: Mutex<State>,
    /// None for a container of device models (the `testing` feature): no
    /// kernel, no IOMMU, IOVAs handed out by the same allocator.
    fd: Option<OwnedFd>,
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<u32, Arc<Group>>,
    iommu: Option<Iommu>,
    /// Every mapping: IOVA -> (virtual address, length).
    mapped: BTreeMap<u64, (MappedPtr, u64)>,
}

/// The IOMMU's set-up, known once the first group is attached.
#[derive(Debug)]
struct Iommu {
    ranges: Vec<RangeInclusive<u64>>,
    dma_avail_at_start: Option<u32>,
    iova: IovaAllocator,
    mappings: usize,
    mapped_bytes: u64,
}

impl Container {
    /// Opens /dev/vfio/vfio and checks the API version and TYPE1v2 support.
    /// The IOMMU is set up when the first device is opened.
    ///
    /// # Errors
    ///
    /// [`Error::VfioNotLoaded`] when /dev/vfio/vfio does not exist;
    /// [`Error::PermissionDenied`] or [`Error::Io`] when it cannot be opened;
    /// [`Error::Ioctl`] when it does not answer the checks;
    /// [`Error::InvalidArgument`] for another VFIO API version or no TYPE1v2
    /// IOMMU.
    pub fn new() -> Result<Arc<Container>> {
        let fd = open_rw(Path::new(CONTAINER_PATH)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::VfioNotLoaded {
                path: CONTAINER_PATH.into(),
            },
            _ => Error::io("open", CONTAINER_PATH, e),
        })?;
        let version =
            ioctl::get_api_version(fd.as_fd()).map_err(|e| ioctl_err("VFIO_GET_API_VERSION", e))?;
        if version != VFIO_API_VERSION as i32 {
            return Err(Error::InvalidArgument(format!(
                "{CONTAINER_PATH} speaks VFIO API version {version}, this library {VFIO_API_VERSION}"
            )));
        }
        let type1v2 = ioctl::check_extension(fd.as_fd(), VFIO_TYPE1v2_IOMMU)
            .map_err(|e| ioctl_err("VFIO_CHECK_EXTENSION", e))?;
        if !type1v2 {
            return Err(Error::InvalidArgument(
                "the kernel's VFIO has no TYPE1v2 IOMMU; load it with `modprobe vfio_iommu_type1`"
                    .to_string(),
            ));
        }
        Ok(Arc::new(Container {
            fd: Some(fd),
            state: Mutex::default(),
        }))
    }

    /// A container without the kernel, for software device models in tests
    /// (the `testing` feature): DMA memory allocated in it is ordinary memory
    /// with IOVAs from the same allocator (48-bit, above 1 MiB), which a model
    /// reaches with [`Container::dma_read`] and [`Container::dma_write`] as a
    /// device reaches memory through the IOMMU. No device can be opened in it;
    /// models are attached with `Device::from_model`.
    #[cfg(any(test, feature = "testing"))]
    pub fn unbacked() -> Arc<Container> {
        let ranges = vec![LOWEST_IOVA..=DEFAULT_IOVA_END];
        let state = State {
            iommu: Some(Iommu {
                iova: IovaAllocator::new(&ranges),
                ranges,
                dma_avail_at_start: None,
                mappings: 0,
                mapped_bytes: 0,
            }),
            ..State::default()
        };
        Arc::new(Container {
            fd: None,
            state: Mutex::new(state),
        })
    }

    /// True for a container of device models (`Container::unbacked`).
    pub(crate) fn is_unbacked(&self) -> bool {
        self.fd.is_none()
    }

    /// Opens a device bound to vfio-pci, attaching its group to this container
    /// (and setting up the IOMMU when it is the first group). The group stays
    /// attached until the container is dropped. The device does DMA only once
    /// bus mastering is on ([`Device::enable_bus_master`]).
    ///
    /// # Errors
    ///
    /// - [`Error::DeviceNotFound`]: no such device in sysfs.
    /// - [`Error::Io`]: reading sysfs, or opening the group's `/dev/vfio/N`
    ///   (busy while another process has it open).
    /// - [`Error::BoundToOtherDriver`], [`Error::NotBoundToVfio`]: it is not on
    ///   vfio-pci ([`Sysfs::bind_vfio`](crate::pci::Sysfs::bind_vfio)).
    /// - [`Error::NoIommuGroup`]: the IOMMU is off.
    /// - [`Error::VfioNotLoaded`], [`Error::PermissionDenied`]: the group's
    ///   `/dev/vfio/N` is missing or not this user's.
    /// - [`Error::GroupNotViable`]: another device of the group is on a host
    ///   driver.
    /// - [`Error::Ioctl`]: the kernel refused to attach the group, set up the
    ///   IOMMU or hand out the device.
    /// - [`Error::InvalidArgument`]: a container of device models (the
    ///   `testing` feature).
    pub fn open_device(self: &Arc<Self>, addr: PciAddress) -> Result<Device> {
        if self.is_unbacked() {
            return Err(Error::InvalidArgument(format!(
                "{addr}: a container for device models opens no real device"
            )));
        }
        let info = Sysfs::new().device(addr)?;
        match info.driver.as_deref() {
            Some("vfio-pci") => {}
            Some(driver) => {
                return Err(Error::BoundToOtherDriver {
                    addr,
                    driver: driver.to_string(),
                })
            }
            None => return Err(Error::NotBoundToVfio { addr }),
        }
        let number = info.iommu_group.ok_or(Error::NoIommuGroup { addr })?;
        let group = self.group(number)?;
        Device::open(Arc::clone(self), &group, addr)
    }

    /// The group `number`, opened and attached if this container lacks it.
    fn group(&self, number: u32) -> Result<Arc<Group>> {
        let mut state = self.lock();
        if let Some(group) = state.groups.get(&number) {
            return Ok(Arc::clone(group));
        }
        let group = Arc::new(Group::open(self, number)?);
        if state.groups.is_empty() {
            state.iommu = Some(self.set_up_iommu()?);
        }
        state.groups.insert(number, Arc::clone(&group));
        Ok(group)
    }

    /// VFIO_SET_IOMMU, then what the IOMMU says of its IOVA ranges and mapping limit.
    fn set_up_iommu(&self) -> Result<Iommu> {
        let fd = self.fd()?.as_fd();
        ioctl::set_iommu(fd, VFIO_TYPE1v2_IOMMU).map_err(|e| ioctl_err("VFIO_SET_IOMMU", e))?;
        let raw = ioctl::iommu_info(fd).map_err(|e| ioctl_err("VFIO_IOMMU_GET_INFO", e))?;
        let info = parse_iommu_info(&raw);
        let ranges = above(&info.ranges, LOWEST_IOVA);
        log::debug!(
            "IOMMU: IOVA ranges {ranges:x?}, {:?} DMA mappings available",
            info.dma_avail
        );
        Ok(Iommu {
            iova: IovaAllocator::new(&ranges),
            ranges,
            dma_avail_at_start: info.dma_avail,
            mappings: 0,
            mapped_bytes: 0,
        })
    }

    /// The container's file descriptor (a backed container: groups are only
    /// attached to one of those).
    pub(super) fn fd(&self) -> Result<&OwnedFd> {
        self.fd.as_ref().ok_or_else(|| {
            Error::InvalidArgument("a container for device models has no VFIO file".into())
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The IOVA ranges handed out (the IOMMU's valid ranges above 1 MiB, or
    /// all 48-bit IOVAs above 1 MiB when the kernel reports none); empty
    /// until a device is open.
    pub fn iova_ranges(&self) -> Vec<RangeInclusive<u64>> {
        self.lock()
            .iommu
            .as_ref()
            .map(|i| i.ranges.clone())
            .unwrap_or_default()
    }

    /// How many more DMA mappings the IOMMU allows, when the kernel says
    /// (its count when the first device was opened, less the mappings this
    /// container holds). Each [`DmaMemory`](crate::dma::DmaMemory) and each
    /// pool is one mapping.
    pub fn dma_mappings_available(&self) -> Option<u32> {
        let state = self.lock();
        let iommu = state.iommu.as_ref()?;
        iommu
            .dma_avail_at_start
            .map(|a| a.saturating_sub(iommu.mappings as u32))
    }

    /// Number of DMA mappings this container holds now (one per live
    /// [`DmaMemory`](crate::dma::DmaMemory) or pool, and per region leaked on
    /// purpose).
    pub fn mapping_count(&self) -> usize {
        self.lock().iommu.as_ref().map_or(0, |i| i.mappings)
    }

    /// Pins `size` bytes at `vaddr` and maps them at a newly allocated IOVA
    /// (first fit, lowest address first: see the [`dma`](crate::dma) module),
    /// the whole range at or below `limit` when one is given.
    pub(crate) fn map_dma(&self, vaddr: MappedPtr, size: usize, limit: Option<u64>) -> Result<u64> {
        let mut state = self.lock();
        let iommu = state.iommu.as_mut().ok_or_else(|| {
            Error::InvalidArgument(
                "open a device in the container before allocating DMA memory".into(),
            )
        })?;
        let size = size as u64;
        let align = iova_alignment(size);
        let iova = match limit {
            None => iommu.iova.alloc(size, align)?,
            Some(limit) => iommu.iova.alloc_below(size, align, limit)?,
        };
        if let Some(fd) = &self.fd {
            if let Err(e) = ioctl::map_dma(fd.as_fd(), vaddr.addr() as u64, iova, size) {
                iommu.iova.free(iova, size);
                return Err(map_error(e, size, iommu));
            }
        }
        iommu.mappings += 1;
        iommu.mapped_bytes += size;
        state.mapped.insert(iova, (vaddr, size));
        Ok(iova)
    }

    /// Undoes `map_dma` and frees the IOVA range.
    pub(crate) fn unmap_dma(&self, iova: u64, size: usize) -> Result<()> {
        let mut state = self.lock();
        let Some(iommu) = state.iommu.as_mut() else {
            return Ok(());
        };
        let size = size as u64;
        if let Some(fd) = &self.fd {
            ioctl::unmap_dma(fd.as_fd(), iova, size)
                .map_err(|e| ioctl_err("VFIO_IOMMU_UNMAP_DMA", e))?;
        }
        iommu.iova.free(iova, size);
        iommu.mappings = iommu.mappings.saturating_sub(1);
        iommu.mapped_bytes = iommu.mapped_bytes.saturating_sub(size);
        state.mapped.remove(&iova);
        Ok(())
    }

    /// Calls `f` with the virtual address of `len` bytes at `iova` when one
    /// mapping of this container holds them all (what the IOMMU translates
    /// them to), holding the mapping table so nothing is unmapped meanwhile.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn with_translation<R>(
        &self,
        iova: u64,
        len: usize,
        f: impl FnOnce(*mut u8) -> R,
    ) -> Option<R> {
        let state = self.lock();
        let (&start, &(vaddr, size)) = state.mapped.range(..=iova).next_back()?;
        let end = iova.checked_add(len as u64)?;
        (end <= start + size).then(|| f(vaddr.at((iova - start) as usize)))
    }
}

fn open_rw(path: &Path) -> io::Result<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(OwnedFd::from)
}

fn ioctl_err(ioctl: &'static str, source: io::Error) -> Error {
    Error::Ioctl {
        ioctl,
        what: CONTAINER_PATH.to_string(),
        source,
    }
}

/// Large mappings get IOVAs aligned to their page size, so the IOMMU can use large pages.
fn iova_alignment(size: u64) -> u64 {
    [1 << 30, 2 << 20]
        .into_iter()
        .find(|&a| size.is_multiple_of(a))
        .unwrap_or(4096)
}

fn map_error(e: io::Error, size: u64, iommu: &Iommu) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOMEM) => Error::MemlockLimit {
            needed: iommu.mapped_bytes + size,
            limit: memlock_limit(),
        },
        Some(libc::ENOSPC) => Error::DmaMappingLimit {
            limit: iommu.mappings as u32,
        },
        _ => ioctl_err("VFIO_IOMMU_MAP_DMA", e),
    }
}

fn memlock_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .map_or(0, |(soft, _)| soft)
}

/// `ranges` with everything below `lowest` cut off.
fn above(ranges: &[RangeInclusive<u64>], lowest: u64) -> Vec<RangeInclusive<u64>> {
    ranges
        .iter()
        .filter(|r| *r.end() >= lowest)
        .map(|r| (*r.start()).max(lowest)..=*r.end())
        .collect()
}

/// What VFIO_IOMMU_GET_INFO's capability chain says.
#[derive(Debug, Default, PartialEq, Eq)]
struct IommuInfo {
    ranges: Vec<RangeInclusive<u64>>,
    dma_avail: Option<u32>,
}

const INFO_FLAG_CAPS: u32 = 1 << 1;
const CAP_IOVA_RANGE: u16 = 1;
const CAP_DMA_AVAIL: u16 = 3;
/// Used when the kernel reports no IOVA ranges: 48-bit IOVAs.
const DEFAULT_IOVA_END: u64 = (1 << 48) - 1;

/// Walks the capability chain of a vfio_iommu_type1_info buffer. Every offset
/// and length is checked against the buffer: a short or looping chain ends the walk.
fn parse_iommu_info(buf: &[u8]) -> IommuInfo {
    let mut info = IommuInfo::default();
    let flags = read_u32(buf, 4).unwrap_or(0);
    let mut offset = if flags & INFO_FLAG_CAPS != 0 {
        read_u32(buf, 16).unwrap_or(0) as usize
    } else {
        0
    };
    for _ in 0..64 {
        if offset == 0 {
            break;
        }
        let (Some(id), Some(next)) = (read_u16(buf, offset), read_u32(buf, offset + 4)) else {
            break;
        };
        match id {
            CAP_IOVA_RANGE => info.ranges = parse_iova_ranges(buf, offset + 8),
            CAP_DMA_AVAIL => info.dma_avail = read_u32(buf, offset + 8),
            _ => {}
        }
        offset = next as usize;
    }
    if info.ranges.is_empty() {
        info.ranges.push(0..=DEFAULT_IOVA_END);
    }
    info
}

fn parse_iova_ranges(buf: &[u8], at: usize) -> Vec<RangeInclusive<u64>> {
    let count = read_u32(buf, at).unwrap_or(0) as usize;
    (0..count.min(256))
        .map_while(|i| {
            let base = at + 8 + i * 16;
            Some(read_u64(buf, base)?..=read_u64(buf, base + 8)?)
        })
        .filter(|r| !r.is_empty())
        .collect()
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        buf.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        buf.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(
        buf.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vfio_iommu_type1_info with an IOVA-range capability and a DMA-avail capability.
    fn info_buffer(ranges: &[(u64, u64)], avail: u32) -> Vec<u8> {
        let mut b = vec![0u8; 24];
        b[4..8].copy_from_slice(&INFO_FLAG_CAPS.to_ne_bytes());
        b[16..20].copy_from_slice(&24u32.to_ne_bytes());
        let avail_at = 24 + 16 + ranges.len() * 16;
        b.extend_from_slice(&CAP_IOVA_RANGE.to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes());
        b.extend_from_slice(&(avail_at as u32).to_ne_bytes());
        b.extend_from_slice(&(ranges.len() as u32).to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        for (s, e) in ranges {
            b.extend_from_slice(&s.to_ne_bytes());
            b.extend_from_slice(&e.to_ne_bytes());
        }
        b.extend_from_slice(&CAP_DMA_AVAIL.to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&avail.to_ne_bytes());
        b
    }

    #[test]
    fn capability_chain_gives_ranges_and_mapping_limit() {
        let buf = info_buffer(&[(0, 0xfedf_ffff), (0xfef0_0000, 0xffff_ffff_ffff)], 65535);
        let info = parse_iommu_info(&buf);
        assert_eq!(
            info.ranges,
            vec![0..=0xfedf_ffff, 0xfef0_0000..=0xffff_ffff_ffff]
        );
        assert_eq!(info.dma_avail, Some(65535));
    }

    #[test]
    fn truncated_or_looping_chains_do_not_panic() {
        let buf = info_buffer(&[(0, 0xffff)], 7);
        for len in 0..buf.len() {
            let info = parse_iommu_info(&buf[..len]);
            assert!(!info.ranges.is_empty());
        }
        let mut looping = info_buffer(&[(0, 0xffff)], 7);
        looping[24 + 4..24 + 8].copy_from_slice(&24u32.to_ne_bytes());
        assert_eq!(parse_iommu_info(&looping).ranges, vec![0..=0xffff]);
    }

    #[test]
    fn no_capabilities_means_48_bit_iovas() {
        assert_eq!(
            parse_iommu_info(&[0u8; 24]).ranges,
            vec![0..=DEFAULT_IOVA_END]
        );
    }

    #[test]
    fn ranges_are_cut_below_the_lowest_iova() {
        let r = above(
            &[0..=0xfff, 0..=0xfedf_ffff, 0xfef0_0000..=u64::MAX],
            1 << 20,
        );
        assert_eq!(r, vec![0x10_0000..=0xfedf_ffff, 0xfef0_0000..=u64::MAX]);
    }

    #[test]
    fn alignment_follows_the_size() {
        assert_eq!(iova_alignment(1 << 30), 1 << 30);
        assert_eq!(iova_alignment(6 << 20), 2 << 20);
        assert_eq!(iova_alignment(12288), 4096);
    }
}
