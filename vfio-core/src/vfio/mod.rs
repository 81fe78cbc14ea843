//! VFIO: container, groups, devices and interrupts.

mod container;
mod device;
mod group;
mod ioctl;
mod irq;

pub use container::Container;
pub use device::{Device, RegionInfo};
pub use irq::{Interrupts, IrqKind};
