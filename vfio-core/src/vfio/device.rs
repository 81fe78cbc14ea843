//! A VFIO device: regions, config space, BARs, bus mastering, reset.

use std::sync::Arc;

use super::{Container, Interrupts, IrqKind};
use crate::mmio::Mmio;
use crate::pci::PciAddress;
use crate::Result;

/// One region of a device (a BAR, config space, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    pub index: u32,
    pub size: u64,
    pub offset: u64,
    pub readable: bool,
    pub writable: bool,
    pub mappable: bool,
}

/// A PCI device opened through VFIO. Owns its file descriptor.
#[derive(Debug)]
pub struct Device {}

impl Device {
    /// The device's PCI address.
    pub fn address(&self) -> PciAddress {
        todo!()
    }
    /// The container this device's group is attached to.
    pub fn container(&self) -> &Arc<Container> {
        todo!()
    }
    /// Information about region `index` (BAR0..5 are 0..5, config space is 7).
    pub fn region(&self, _index: u32) -> Result<RegionInfo> {
        todo!()
    }
    /// Reads `N` bytes of config space at `offset`.
    pub fn config_read<const N: usize>(&self, _offset: u16) -> Result<[u8; N]> {
        todo!()
    }
    /// Writes bytes of config space at `offset`.
    pub fn config_write(&self, _offset: u16, _bytes: &[u8]) -> Result<()> {
        todo!()
    }
    /// Vendor ID from config space.
    pub fn vendor_id(&self) -> Result<u16> {
        todo!()
    }
    /// Device ID from config space.
    pub fn device_id(&self) -> Result<u16> {
        todo!()
    }
    /// 24-bit class code from config space.
    pub fn class_code(&self) -> Result<u32> {
        todo!()
    }
    /// Maps a memory BAR for MMIO.
    pub fn map_bar(&self, _bar: u32) -> Result<Mmio> {
        todo!()
    }
    /// Sets Bus Master Enable (and Memory Space Enable) in the command register.
    pub fn enable_bus_master(&self) -> Result<()> {
        todo!()
    }
    /// Function-level reset through VFIO_DEVICE_RESET.
    pub fn reset(&self) -> Result<()> {
        todo!()
    }
    /// How many vectors of `kind` the device has (0 if none).
    pub fn irq_count(&self, _kind: IrqKind) -> Result<u32> {
        todo!()
    }
    /// Routes `count` vectors of `kind` to fresh eventfds.
    pub fn enable_irqs(&self, _kind: IrqKind, _count: u32) -> Result<Interrupts> {
        todo!()
    }
}
