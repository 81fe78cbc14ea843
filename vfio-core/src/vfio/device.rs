//! A VFIO device: regions, config space, BARs, bus mastering, reset, interrupts.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::eventfd::{EfdFlags, EventFd};
use vfio_bindings::bindings::vfio::{
    VFIO_DEVICE_FLAGS_RESET, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
};

use super::group::Group;
use super::lend::{Loans, Quiesce};
use super::{ioctl, Container, Interrupts, IrqKind};
use crate::mmio::{self, Mmio};
use crate::pci::PciAddress;
use crate::{Error, Result};

/// PCI command register (config offset 0x04) bits.
const PCI_COMMAND: u16 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;

/// One region of a device (a BAR, config space, ...), as VFIO reports it
/// ([`Device::region`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegionInfo {
    /// The region's index: BAR0 to BAR5 are 0 to 5, the expansion ROM 6,
    /// config space 7.
    pub index: u32,
    /// Size in bytes; 0 for a BAR the device does not implement.
    pub size: u64,
    /// Offset of the region in the device file.
    pub offset: u64,
    /// The region can be read through the device file.
    pub readable: bool,
    /// The region can be written through the device file.
    pub writable: bool,
    /// The region can be mmap()ed (a memory BAR).
    pub mappable: bool,
}

/// A PCI device opened through VFIO ([`Container::open_device`]). Owns the
/// VFIO device file, closed when this value and every [`Interrupts`] made
/// from it are dropped; its group stays attached to the container. BARs
/// mapped from it ([`Device::map_bar`]) are separate values.
///
/// The device reaches only memory mapped in its container (the IOMMU), and
/// does DMA only while bus mastering is on. Memory handed to the device
/// through [`Device::lend`] stays allocated until the device is quiesced
/// ([`Device::quiesce`]); dropping a `Device` with memory lent quiesces it
/// first. Otherwise dropping it sends the device nothing: a driver that keeps
/// the device's memory itself (in its queues) stops the device (reset, or
/// [`Device::disable_bus_master`]) before that memory goes.
///
/// ```no_run
/// # fn main() -> vfio_core::Result<()> {
/// let container = vfio_core::vfio::Container::new()?;
/// let device = container.open_device("0000:00:03.0".parse()?)?;
/// println!("{:04x}:{:04x}", device.vendor_id()?, device.device_id()?);
/// device.enable_bus_master()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Device {
    backend: Backend,
    container: Arc<Container>,
    addr: PciAddress,
    flags: u32,
    num_regions: u32,
    num_irqs: u32,
    config: RegionInfo,
    /// Memory lent to the device ([`Device::lend`]).
    pub(super) loans: Arc<Loans>,
    /// How [`Device::quiesce`] stops it; `None` until first needed.
    pub(super) quiesce: Mutex<Option<Quiesce>>,
    /// This process has the function open (released with the value).
    _claim: Claim,
}

/// PCI functions open in this process, each claimed by one [`Device`]: a
/// real one process-wide, a model within its container (the key's first
/// part: 0, or the container's address).
static OPEN: Mutex<BTreeSet<(usize, PciAddress)>> = Mutex::new(BTreeSet::new());

/// One entry of [`OPEN`], removed on drop.
#[derive(Debug)]
struct Claim((usize, PciAddress));

impl Claim {
    fn take(container: &Arc<Container>, addr: PciAddress) -> Result<Claim> {
        let scope = if container.is_unbacked() {
            Arc::as_ptr(container) as usize
        } else {
            0
        };
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        if !open.insert((scope, addr)) {
            return Err(Error::AlreadyOpen { addr });
        }
        Ok(Claim((scope, addr)))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        OPEN.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.end_loans();
    }
}

/// What answers the device's accesses.
#[derive(Debug)]
enum Backend {
    /// The VFIO device file.
    Vfio(Arc<OwnedFd>),
    /// A software model (the `testing` feature).
    #[cfg(any(test, feature = "testing"))]
    Model(Arc<DeviceModel>),
}

/// The parts of a software device model: its config space and its BARs.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug)]
struct DeviceModel {
    config: crate::mmio::SharedModel,
    bars: Vec<(u32, usize, crate::mmio::SharedModel)>,
    /// Its INTx line, if it has one ([`Device::connect_intx`]).
    intx: Option<super::IrqLine>,
}

impl Device {
    /// A device whose config space is `config` (its first 256 bytes at least:
    /// IDs, command register, capabilities) and whose BARs are `bars` (BAR
    /// number, length, register model), in a container of device models
    /// ([`Container::unbacked`]); the `testing` feature. Drivers run on it
    /// unchanged: MMIO goes to the models, DMA to the container's memory,
    /// which the models reach with `Container::dma_read` / `dma_write`. It has
    /// no interrupts and no reset.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use vfio_core::dma::{Backing, DmaMemory};
    /// use vfio_core::mmio::{RegisterFile, SharedModel};
    /// use vfio_core::vfio::{Container, Device};
    ///
    /// # fn main() -> vfio_core::Result<()> {
    /// let container = Container::unbacked();
    /// let mut config = vec![0u8; 256];
    /// config[..4].copy_from_slice(&[0x86, 0x80, 0x0e, 0x10]); // 8086:100e
    /// let regs = Arc::new(Mutex::new(RegisterFile::new(0x1000)));
    /// let bar0: SharedModel = regs.clone();
    /// let device = Device::from_model(&container, "00:04.0".parse()?, config, vec![(0, 0x1000, bar0)])?;
    /// assert_eq!((device.vendor_id()?, device.device_id()?), (0x8086, 0x100e));
    ///
    /// let bar0 = device.map_bar(0)?;
    /// bar0.write32(0x10, 7); // what the driver does...
    /// assert_eq!(regs.lock().unwrap().get(0x10, 4), 7); // ...the model sees
    ///
    /// // A model reaches DMA memory by IOVA, as a device does:
    /// let ring = DmaMemory::new(&container, 4096, Backing::Pages)?;
    /// container.dma_write(ring.iova() + 8, &[1, 2, 3, 4])?;
    /// assert_eq!(ring.read::<u32>(8), 0x0403_0201);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `container` is not a container of
    /// device models.
    #[cfg(any(test, feature = "testing"))]
    pub fn from_model(
        container: &Arc<Container>,
        addr: PciAddress,
        config: Vec<u8>,
        bars: Vec<(u32, usize, crate::mmio::SharedModel)>,
    ) -> Result<Device> {
        let len = config.len();
        let mut file = crate::mmio::RegisterFile::new(len);
        for (i, b) in config.iter().enumerate() {
            file.set(i, 1, *b as u64);
        }
        let config: crate::mmio::SharedModel = Arc::new(std::sync::Mutex::new(file));
        Device::from_models(container, addr, (len, config), bars)
    }

    /// As [`Device::from_model`], with a model for config space too (`len`
    /// bytes, accessed a byte at a time): for a device whose config space
    /// does not behave like memory (e.g. a command register that ignores
    /// writes).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `container` is not a container of
    /// device models.
    #[cfg(any(test, feature = "testing"))]
    pub fn from_models(
        container: &Arc<Container>,
        addr: PciAddress,
        (len, config): (usize, crate::mmio::SharedModel),
        bars: Vec<(u32, usize, crate::mmio::SharedModel)>,
    ) -> Result<Device> {
        if !container.is_unbacked() {
            return Err(Error::InvalidArgument(
                "a device model lives in a container made by Container::unbacked".into(),
            ));
        }
        let size = len as u64;
        let claim = Claim::take(container, addr)?;
        Ok(Device {
            backend: Backend::Model(Arc::new(DeviceModel {
                config,
                bars,
                intx: None,
            })),
            container: Arc::clone(container),
            addr,
            flags: 0,
            num_regions: VFIO_PCI_CONFIG_REGION_INDEX + 1,
            num_irqs: 0,
            config: RegionInfo {
                index: VFIO_PCI_CONFIG_REGION_INDEX,
                size,
                offset: 0,
                readable: true,
                writable: true,
                mappable: false,
            },
            loans: Arc::default(),
            quiesce: Mutex::new(None),
            _claim: claim,
        })
    }

    /// Puts `wrap(bar, model)` in place of each BAR's register model of a
    /// device made by [`Device::from_model`] or [`Device::from_models`]
    /// (the `testing` feature): BARs mapped afterwards reach the wrapper,
    /// which forwards to the model, e.g. to count the accesses a driver
    /// makes. Config space is left as it is.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the device is not a software model.
    #[cfg(any(test, feature = "testing"))]
    pub fn wrap_model_bars(
        &mut self,
        mut wrap: impl FnMut(u32, crate::mmio::SharedModel) -> crate::mmio::SharedModel,
    ) -> Result<()> {
        let Backend::Model(m) = &mut self.backend else {
            return Err(Error::InvalidArgument(format!(
                "{} is not a software model: no BAR model to wrap",
                self.addr
            )));
        };
        let bars = m
            .bars
            .iter()
            .map(|(bar, len, model)| (*bar, *len, wrap(*bar, Arc::clone(model))))
            .collect();
        let (config, intx) = (Arc::clone(&m.config), m.intx.clone());
        *m = Arc::new(DeviceModel { config, bars, intx });
        Ok(())
    }

    /// Gives a device made by [`Device::from_model`] or
    /// [`Device::from_models`] one INTx vector (the `testing` feature),
    /// which its model raises through `line` (see [`IrqLine`](super::IrqLine)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the device is not a software model.
    #[cfg(any(test, feature = "testing"))]
    pub fn connect_intx(&mut self, line: super::IrqLine) -> Result<()> {
        let Backend::Model(m) = &mut self.backend else {
            return Err(Error::InvalidArgument(format!(
                "{} is not a software model: its interrupts are the kernel's",
                self.addr
            )));
        };
        *m = Arc::new(DeviceModel {
            config: Arc::clone(&m.config),
            bars: m.bars.clone(),
            intx: Some(line),
        });
        self.num_irqs = self.num_irqs.max(IrqKind::Intx.index() + 1);
        Ok(())
    }

    /// The VFIO device file (every device but a model has one).
    fn fd(&self) -> Result<&Arc<OwnedFd>> {
        match &self.backend {
            Backend::Vfio(fd) => Ok(fd),
            #[cfg(any(test, feature = "testing"))]
            Backend::Model(_) => Err(self.unsupported("is a software model".into())),
        }
    }

    /// Gets the device's fd from its (attached) group and reads what it offers.
    pub(crate) fn open(
        container: Arc<Container>,
        group: &Group,
        addr: PciAddress,
    ) -> Result<Device> {
        let claim = Claim::take(&container, addr)?;
        let name = CString::new(addr.to_string()).expect("a PCI address has no NUL");
        let fd = ioctl::group_get_device_fd(group.fd().as_fd(), &name)
            .map_err(|e| group.ioctl_err("VFIO_GROUP_GET_DEVICE_FD", e))?;
        let info = ioctl::device_info(fd.as_fd())
            .map_err(|e| ioctl_err(addr, "VFIO_DEVICE_GET_INFO", e))?;
        let config = region_info(&fd, addr, VFIO_PCI_CONFIG_REGION_INDEX)?;
        Ok(Device {
            backend: Backend::Vfio(Arc::new(fd)),
            container,
            addr,
            flags: info.flags,
            num_regions: info.num_regions,
            num_irqs: info.num_irqs,
            config,
            loans: Arc::default(),
            quiesce: Mutex::new(None),
            _claim: claim,
        })
    }

    /// The device's PCI address.
    pub fn address(&self) -> PciAddress {
        self.addr
    }

    /// The container this device's group is attached to.
    pub fn container(&self) -> &Arc<Container> {
        &self.container
    }

    /// Information about region `index` (BAR0..5 are 0..5, config space is 7).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when the device has no region `index`;
    /// [`Error::Ioctl`] when VFIO_DEVICE_GET_REGION_INFO fails.
    pub fn region(&self, index: u32) -> Result<RegionInfo> {
        if index >= self.num_regions {
            return Err(self.unsupported(format!(
                "has no region {index} ({} regions)",
                self.num_regions
            )));
        }
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Model(m) = &self.backend {
            return Ok(model_region(m, index, self.config));
        }
        region_info(self.fd()?, self.addr, index)
    }

    /// Reads `N` bytes of config space at `offset` (VFIO virtualizes some
    /// registers).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the bytes reach past config space;
    /// [`Error::Ioctl`] when the read fails or is short.
    pub fn config_read<const N: usize>(&self, offset: u16) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        let at = self.config_offset(offset, N)?;
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Model(m) = &self.backend {
            let mut config = m.config.lock().unwrap_or_else(|p| p.into_inner());
            for (i, b) in buf.iter_mut().enumerate() {
                *b = config.read(at as usize + i, 1) as u8;
            }
            return Ok(buf);
        }
        let n = nix::sys::uio::pread(self.fd()?.as_fd(), &mut buf, at as i64)
            .map_err(|e| self.config_err("read", e))?;
        if n != N {
            return Err(self.config_err("read", nix::errno::Errno::EIO));
        }
        Ok(buf)
    }

    /// Writes `bytes` to config space at `offset` (VFIO may filter or
    /// virtualize what is written).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the bytes reach past config space;
    /// [`Error::Ioctl`] when the write fails or is short.
    pub fn config_write(&self, offset: u16, bytes: &[u8]) -> Result<()> {
        let at = self.config_offset(offset, bytes.len())?;
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Model(m) = &self.backend {
            let mut config = m.config.lock().unwrap_or_else(|p| p.into_inner());
            for (i, b) in bytes.iter().enumerate() {
                config.write(at as usize + i, 1, *b as u64);
            }
            return Ok(());
        }
        let n = nix::sys::uio::pwrite(self.fd()?.as_fd(), bytes, at as i64)
            .map_err(|e| self.config_err("write", e))?;
        if n != bytes.len() {
            return Err(self.config_err("write", nix::errno::Errno::EIO));
        }
        Ok(())
    }

    /// The file offset of config-space bytes `offset..offset+len`, checked.
    fn config_offset(&self, offset: u16, len: usize) -> Result<u64> {
        let end = offset as u64 + len as u64;
        if end > self.config.size {
            return Err(Error::InvalidArgument(format!(
                "{}: config space access {offset:#x}..{end:#x} beyond its {:#x} bytes",
                self.addr, self.config.size
            )));
        }
        Ok(self.config.offset + offset as u64)
    }

    fn config_err(&self, op: &str, e: nix::errno::Errno) -> Error {
        Error::Ioctl {
            ioctl: if op == "read" { "pread" } else { "pwrite" },
            what: format!("{} config space", self.addr),
            source: e.into(),
        }
    }

    /// Vendor ID from config space.
    ///
    /// # Errors
    ///
    /// As [`Device::config_read`].
    pub fn vendor_id(&self) -> Result<u16> {
        self.config_read::<2>(0x00).map(u16::from_le_bytes)
    }

    /// Device ID from config space.
    ///
    /// # Errors
    ///
    /// As [`Device::config_read`].
    pub fn device_id(&self) -> Result<u16> {
        self.config_read::<2>(0x02).map(u16::from_le_bytes)
    }

    /// 24-bit class code from config space (0x010802 for NVMe).
    ///
    /// # Errors
    ///
    /// As [`Device::config_read`].
    pub fn class_code(&self) -> Result<u32> {
        let [prog_if, subclass, class] = self.config_read::<3>(0x09)?;
        Ok(u32::from_be_bytes([0, class, subclass, prog_if]))
    }

    /// Maps memory BAR `bar` (0..=5) for MMIO, all of it. The device answers
    /// MMIO only once Memory Space Enable is set ([`Device::enable_bus_master`]
    /// sets it).
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`]: `bar` is above 5.
    /// - [`Error::Unsupported`]: the BAR is not implemented, cannot be mapped
    ///   (an I/O-port BAR) or is too large for this process.
    /// - [`Error::Ioctl`]: VFIO_DEVICE_GET_REGION_INFO or the `mmap` failed.
    pub fn map_bar(&self, bar: u32) -> Result<Mmio> {
        if bar > 5 {
            return Err(Error::InvalidArgument(format!(
                "BAR {bar}: a PCI device has BARs 0 to 5"
            )));
        }
        let region = self.region(bar)?;
        if region.size == 0 {
            return Err(self.unsupported(format!("BAR {bar} is not implemented")));
        }
        if !region.mappable {
            return Err(self.unsupported(format!(
                "BAR {bar} cannot be mapped (an I/O-port BAR, or one VFIO will not mmap)"
            )));
        }
        let len = usize::try_from(region.size)
            .map_err(|_| self.unsupported(format!("BAR {bar} is too large to map")))?;
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Model(m) = &self.backend {
            let (_, _, model) = m
                .bars
                .iter()
                .find(|b| b.0 == bar)
                .expect("region() found it");
            return Ok(Mmio::from_model(len, Arc::clone(model)));
        }
        mmio::map(
            self.fd()?.as_fd(),
            region.offset,
            len,
            &format!("{} BAR {bar}", self.addr),
        )
    }

    /// Sets Memory Space Enable and Bus Master Enable in the command register,
    /// so the device may answer MMIO and do DMA (into memory mapped in its
    /// container only).
    ///
    /// # Errors
    ///
    /// As [`Device::config_read`] and [`Device::config_write`].
    pub fn enable_bus_master(&self) -> Result<()> {
        let wanted = self.command()? | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
        self.config_write(PCI_COMMAND, &wanted.to_le_bytes())
    }

    /// Clears Bus Master Enable and reads the command register back: from
    /// then on the device may start no DMA (PCI base spec 7.5.1.1.3). The
    /// last resort of a driver that must stop a device it cannot reset;
    /// [`Device::enable_bus_master`] undoes it.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when the bit reads back set; otherwise as
    /// [`Device::config_read`] and [`Device::config_write`].
    pub fn disable_bus_master(&self) -> Result<()> {
        let command = self.command()?;
        self.config_write(PCI_COMMAND, &(command & !PCI_COMMAND_MASTER).to_le_bytes())?;
        if self.bus_master_enabled()? {
            return Err(self.unsupported("kept Bus Master Enable set after it was cleared".into()));
        }
        Ok(())
    }

    /// Whether Bus Master Enable is set (the device may do DMA).
    ///
    /// # Errors
    ///
    /// As [`Device::config_read`].
    pub fn bus_master_enabled(&self) -> Result<bool> {
        Ok(self.command()? & PCI_COMMAND_MASTER != 0)
    }

    /// Whether Memory Space Enable is set: only then does the device answer
    /// MMIO, and only then do its registers' values mean anything (a BAR that
    /// does not decode reads 0, which looks like a finished reset).
    ///
    /// # Errors
    ///
    /// As [`Device::config_read`].
    pub fn memory_enabled(&self) -> Result<bool> {
        Ok(self.command()? & PCI_COMMAND_MEMORY != 0)
    }

    /// The command register (config offset 0x04).
    fn command(&self) -> Result<u16> {
        self.config_read::<2>(PCI_COMMAND).map(u16::from_le_bytes)
    }

    /// Resets the device through VFIO_DEVICE_RESET (FLR, PM or bus reset,
    /// whichever the kernel has for it).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when VFIO has no reset for the device (nor does
    /// a software model); [`Error::Ioctl`] when the reset fails.
    pub fn reset(&self) -> Result<()> {
        if self.flags & VFIO_DEVICE_FLAGS_RESET == 0 {
            return Err(self
                .unsupported("has no reset method VFIO can use (no FLR, PM or bus reset)".into()));
        }
        ioctl::device_reset(self.fd()?.as_fd())
            .map_err(|e| ioctl_err(self.addr, "VFIO_DEVICE_RESET", e))
    }

    /// How many vectors of `kind` the device has (0 if none).
    ///
    /// # Errors
    ///
    /// [`Error::Ioctl`] when VFIO_DEVICE_GET_IRQ_INFO fails.
    pub fn irq_count(&self, kind: IrqKind) -> Result<u32> {
        let index = kind.index();
        if index >= self.num_irqs {
            return Ok(0);
        }
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Model(m) = &self.backend {
            return Ok((kind == IrqKind::Intx && m.intx.is_some()).into());
        }
        let info = ioctl::irq_info(self.fd()?.as_fd(), index)
            .map_err(|e| ioctl_err(self.addr, "VFIO_DEVICE_GET_IRQ_INFO", e))?;
        Ok(info.count)
    }

    /// Routes vectors `0..count` of `kind` to fresh eventfds. Disabled again
    /// when the returned [`Interrupts`] is dropped. The device must also be
    /// told to raise them (its own registers, and for MSI and MSI-X, bus
    /// mastering: an MSI is a DMA write).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when the device has no interrupts of `kind`;
    /// [`Error::InvalidArgument`] when `count` is 0 or more than it has;
    /// [`Error::Ioctl`] when making an eventfd or VFIO_DEVICE_SET_IRQS fails.
    pub fn enable_irqs(&self, kind: IrqKind, count: u32) -> Result<Interrupts> {
        let available = self.irq_count(kind)?;
        if available == 0 {
            return Err(self.unsupported(format!("has no {kind} interrupts")));
        }
        if count == 0 || count > available {
            return Err(Error::InvalidArgument(format!(
                "{}: asked for {count} {kind} vectors, the device has 1 to {available}",
                self.addr
            )));
        }
        let eventfds = (0..count)
            .map(|_| EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK))
            .collect::<nix::Result<Vec<_>>>()
            .map_err(|e| ioctl_err(self.addr, "eventfd", e.into()))?;
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Model(m) = &self.backend {
            // irq_count: a model has INTx only, through its line.
            let line = m.intx.as_ref().expect("a model with INTx has a line");
            let copy = eventfds[0]
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| ioctl_err(self.addr, "dup of an interrupt eventfd", e))?;
            line.connect(copy);
            return Ok(Interrupts::model(self.addr, kind, eventfds));
        }
        let raw: Vec<i32> = eventfds.iter().map(|e| e.as_fd().as_raw_fd()).collect();
        let flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
        let fd = self.fd()?;
        ioctl::set_irqs(fd.as_fd(), kind.index(), flags, 0, count, &raw)
            .map_err(|e| ioctl_err(self.addr, "VFIO_DEVICE_SET_IRQS", e))?;
        Ok(Interrupts::new(Arc::clone(fd), self.addr, kind, eventfds))
    }

    /// [`Quiesce::Reset`] when VFIO can reset the device, else
    /// [`Quiesce::BusMasterOff`].
    pub(super) fn default_quiesce(&self) -> Quiesce {
        if self.flags & VFIO_DEVICE_FLAGS_RESET != 0 {
            Quiesce::Reset
        } else {
            Quiesce::BusMasterOff
        }
    }

    fn unsupported(&self, what: String) -> Error {
        Error::Unsupported {
            addr: self.addr,
            what,
        }
    }
}

/// A model's region `index`: a BAR it has, its config space, or nothing.
#[cfg(any(test, feature = "testing"))]
fn model_region(m: &DeviceModel, index: u32, config: RegionInfo) -> RegionInfo {
    if index == VFIO_PCI_CONFIG_REGION_INDEX {
        return config;
    }
    let size = m
        .bars
        .iter()
        .find(|b| b.0 == index)
        .map_or(0, |b| b.1 as u64);
    RegionInfo {
        index,
        size,
        offset: 0,
        readable: size > 0,
        writable: size > 0,
        mappable: size > 0,
    }
}

fn region_info(fd: &OwnedFd, addr: PciAddress, index: u32) -> Result<RegionInfo> {
    let info = ioctl::region_info(fd.as_fd(), index)
        .map_err(|e| ioctl_err(addr, "VFIO_DEVICE_GET_REGION_INFO", e))?;
    Ok(RegionInfo {
        index,
        size: info.size,
        offset: info.offset,
        readable: info.flags & VFIO_REGION_INFO_FLAG_READ != 0,
        writable: info.flags & VFIO_REGION_INFO_FLAG_WRITE != 0,
        mappable: info.flags & VFIO_REGION_INFO_FLAG_MMAP != 0,
    })
}

pub(super) fn ioctl_err(addr: PciAddress, ioctl: &'static str, source: io::Error) -> Error {
    Error::Ioctl {
        ioctl,
        what: format!("PCI device {addr}"),
        source,
    }
}
