//! # vfio-core
//!
//! Safe building blocks for userspace PCI device drivers on Linux VFIO, in the
//! order data flows:
//!
//! - [`pci`]: PCI addresses, device discovery in sysfs, binding to vfio-pci and back.
//! - [`vfio`]: the VFIO container (one IOMMU context shared by several devices),
//!   groups, devices (config space, BARs, reset) and interrupts delivered to eventfds.
//! - [`mmio`]: a mapped BAR with bounds-checked volatile register access.
//! - [`dma`]: pinned (hugepage) memory mapped into the IOMMU, and a
//!   fixed-size buffer pool whose buffers carry a virtual address and an IOVA.
//!
//! Drivers built on this crate need no `unsafe` for MMIO or DMA: the few places
//! that talk to the kernel or to raw memory are `vfio::ioctl`, [`mmio`],
//! `dma::memory` and the pool's slice accessors, each block with a `// SAFETY:`
//! comment.
//!
//! ```no_run
//! use std::sync::Arc;
//! use vfio_core::{dma::BufferPool, pci::PciAddress, vfio::Container};
//!
//! # fn main() -> vfio_core::Result<()> {
//! let container = Container::new()?;
//! let nvme = container.open_device("0000:00:03.0".parse::<PciAddress>()?)?;
//! let bar0 = nvme.map_bar(0)?;
//! println!("NVMe CAP = {:#x}", bar0.read64(0));
//! let pool = BufferPool::new(&container, 4096, 256)?;
//! let buf = pool.alloc().expect("a fresh pool has free buffers");
//! println!("buffer at {:p} is IOVA {:#x}", buf.as_ptr(), buf.iova());
//! # Ok(()) }
//! ```

pub mod dma;
pub mod error;
pub mod mmio;
pub mod pci;
pub mod vfio;

pub use error::{Error, Result};
