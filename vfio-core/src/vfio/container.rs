//! The VFIO container: one IOMMU address space shared by every device opened in it.

use std::ops::RangeInclusive;
use std::sync::Arc;

use super::Device;
use crate::pci::PciAddress;
use crate::Result;

/// One IOMMU context (/dev/vfio/vfio with a TYPE1v2 IOMMU). Devices from
/// different IOMMU groups opened in the same container see the same IOVAs, so
/// one DMA buffer can be handed to an NVMe controller and a NIC.
#[derive(Debug)]
pub struct Container {}

impl Container {
    /// Opens /dev/vfio/vfio and checks the API version and TYPE1v2 support.
    pub fn new() -> Result<Arc<Container>> {
        todo!()
    }
    /// Opens a device bound to vfio-pci, attaching its group to this container
    /// (and setting up the IOMMU when it is the first group).
    pub fn open_device(self: &Arc<Self>, _addr: PciAddress) -> Result<Device> {
        todo!()
    }
    /// The IOMMU's valid IOVA ranges (known once a device is open).
    pub fn iova_ranges(&self) -> Vec<RangeInclusive<u64>> {
        todo!()
    }
    /// How many more DMA mappings the IOMMU allows, when the kernel says.
    pub fn dma_mappings_available(&self) -> Option<u32> {
        todo!()
    }
    /// Number of DMA mappings this container holds now.
    pub fn mapping_count(&self) -> usize {
        todo!()
    }
    /// Pins `size` bytes at `vaddr` and maps them at a newly allocated IOVA.
    pub(crate) fn map_dma(&self, _vaddr: usize, _size: usize) -> Result<u64> {
        todo!()
    }
    /// Undoes `map_dma` and frees the IOVA range.
    pub(crate) fn unmap_dma(&self, _iova: u64, _size: usize) -> Result<()> {
        todo!()
    }
}
