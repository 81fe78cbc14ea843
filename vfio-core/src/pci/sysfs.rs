//! Device discovery in /sys/bus/pci.

use std::path::PathBuf;

use super::{BindOutcome, PciAddress};
use crate::Result;

/// What sysfs says about one PCI function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDevice {
    pub address: PciAddress,
    pub vendor_id: u16,
    pub device_id: u16,
    /// 24-bit class code (class, subclass, programming interface), e.g. 0x010802 for NVMe.
    pub class: u32,
    /// The kernel driver bound now, if any.
    pub driver: Option<String>,
    /// The IOMMU group, if the IOMMU is on.
    pub iommu_group: Option<u32>,
}

/// A view of sysfs below a root directory (`/` on a real system, a temporary
/// tree in tests).
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs::new()
    }
}

impl Sysfs {
    /// The system's sysfs, rooted at `/`.
    pub fn new() -> Sysfs {
        Sysfs::with_root("/")
    }
    /// A sysfs tree rooted elsewhere (for tests).
    pub fn with_root(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }
    /// One device; [`crate::Error::DeviceNotFound`] if it does not exist.
    pub fn device(&self, _addr: PciAddress) -> Result<PciDevice> {
        todo!()
    }
    /// Every PCI device, sorted by address.
    pub fn devices(&self) -> Result<Vec<PciDevice>> {
        todo!()
    }
    /// The members of an IOMMU group.
    pub fn group_members(&self, _group: u32) -> Result<Vec<PciDevice>> {
        todo!()
    }
    /// Binds `addr` to vfio-pci, remembering the driver it had.
    pub fn bind_vfio(&self, _addr: PciAddress) -> Result<BindOutcome> {
        todo!()
    }
    /// Hands `addr` back to the driver it had before `bind_vfio` (or the
    /// kernel's default driver). Returns the driver it is bound to now.
    pub fn unbind_vfio(&self, _addr: PciAddress) -> Result<Option<String>> {
        todo!()
    }
}
