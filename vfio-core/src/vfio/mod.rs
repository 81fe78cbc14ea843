//! VFIO: the container (one IOMMU context), devices opened in it, and their
//! interrupts. IOMMU groups are opened and attached by the container as its
//! devices need them.

mod container;
mod device;
mod group;
mod ioctl;
mod irq;

pub use container::Container;
pub use device::{Device, RegionInfo};
pub use irq::{Interrupts, IrqKind, Wait};
