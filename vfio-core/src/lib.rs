//! # vfio-core
//!
//! Safe building blocks for userspace PCI device drivers on Linux VFIO, in the
//! order data flows:
//!
//! - [`pci`]: PCI addresses, device discovery in sysfs, binding to vfio-pci and back.
//! - [`vfio`]: the VFIO container (one IOMMU context shared by several devices),
//!   devices (config space, BARs, bus mastering, reset) and interrupts
//!   delivered to eventfds.
//! - [`mmio`]: a mapped BAR with bounds-checked volatile register access.
//! - [`dma`]: pinned memory (hugepages for regions over 1 MiB) mapped into the IOMMU, and a
//!   fixed-size buffer pool whose buffers carry a virtual address and an IOVA.
//! - [`poll`]: waiting for a device, a condition polled until a timeout.
//! - [`error`]: the one [`Error`] type, whose messages say what to do.
//!
//! Drivers built on this crate need no `unsafe` for MMIO or DMA (see the trust
//! boundary below for what that does and does not promise): the few places
//! that talk to the kernel or to raw memory are `vfio::ioctl`, [`mmio`],
//! `dma::memory` and the pool's slice accessors (and, with the `tokio`
//! feature, `vfio::irq_async`'s registration of an eventfd with tokio), each
//! block with a `// SAFETY:` comment. The one `unsafe` function, [`dma::RawDma::new`], names an IOVA
//! range of the caller's choosing.
//!
//! # The trust boundary
//!
//! "No `unsafe`" does not mean the types confine the device. Exactly:
//!
//! - **The types** (the compiler) see to it that the CPU never reads, frees or
//!   reuses memory while a driver has given it to a device through a
//!   [`dma::DmaTarget`]: such memory is moved into the driver's queue or
//!   borrowed `&mut` until the driver has seen the device finish with it, or
//!   stopped it ([`vfio::Device::stop_dma`], [`vfio::Device::quiesce`]), or
//!   leaked it for good. CPU accesses to DMA memory through shared handles are
//!   relaxed atomics, so they never race in Rust's memory model.
//! - **Run time** checks what types cannot: a buffer of another container is
//!   refused ([`dma::DmaTarget::dma_range`]), a PCI function is open once per
//!   process ([`Error::AlreadyOpen`]), a loan ends only after a quiesce that
//!   began after it, and a panic between "the device may write this" and
//!   "stopped or leaked" cannot hand the memory back (the stop sequence
//!   catches the driver's step and logs last; the leak step and NVMe's
//!   blocking calls abort rather than unwind, see [`vfio::AbortOnUnwind`]).
//! - **The IOMMU** confines what no Rust type can: [`mmio::Mmio::write64`] and
//!   its kin are safe and can write any number into a device's DMA address
//!   register. Whatever a driver's MMIO writes tell a device, it reaches only
//!   memory mapped in its container. Inside that container it can reach every
//!   mapping: a driver's MMIO writes must name only memory it holds as a
//!   `DmaTarget` for as long as the device may use it. That is the rule a
//!   driver author must get right, and what the drivers here are tested for.
//!
//! # Memory a device may touch
//!
//! A device reaches only memory mapped in its container: the IOMMU faults any
//! other IOVA. This crate maps memory only as [`dma::DmaMemory`] (a buffer
//! pool is one), which stays mapped while a handle to it lives. What a device
//! may write is read with relaxed atomic accesses (never a data race, even
//! with another thread on the same bytes); slices are given out only of pool
//! buffers that no device has. Drivers take memory as [`dma::DmaTarget`]
//! (device reads) or [`dma::DmaTargetMut`] (device writes), which safe code
//! cannot implement; the [`dma`] module has the rules and what checks them.
//!
//! # Example
//!
//! Bind a device, open it, map its BAR, and give it a buffer to read. The
//! device is made up: a ring of 16-byte descriptors (a 64-bit address, a
//! 32-bit length, a 32-bit flag the device sets when done), whose base goes
//! in a register at 0x10, with a doorbell at 0x18.
//!
//! ```no_run
//! use vfio_core::dma::{Backing, BufferPool, DmaMemory, DmaTarget};
//! use vfio_core::pci::{PciAddress, Sysfs};
//! use vfio_core::vfio::Container;
//!
//! # fn main() -> vfio_core::Result<()> {
//! let addr: PciAddress = "0000:01:00.0".parse()?;
//! // Take the device from its kernel driver and give it to vfio-pci (as root).
//! Sysfs::new().bind_vfio(addr)?;
//!
//! // One IOMMU context; opening the device attaches its IOMMU group to it.
//! let container = Container::new()?;
//! let device = container.open_device(addr)?;
//! device.enable_bus_master()?;
//! let bar0 = device.map_bar(0)?;
//! println!("{addr}: {:04x}:{:04x}", device.vendor_id()?, device.device_id()?);
//!
//! // A descriptor ring and a pool of 2 KiB buffers, both mapped in the container.
//! let ring = DmaMemory::new(&container, 4096, Backing::Auto)?;
//! let pool = BufferPool::new(&container, 2048, 256)?;
//! let mut buf = pool.try_alloc()?;
//! buf.as_mut_slice()[..5].copy_from_slice(b"hello");
//!
//! // Lend both to the device: until it is quiesced, neither can be freed,
//! // returned to the pool or borrowed as a slice.
//! let ring = device.lend(ring);
//! let buf = device.lend(buf);
//! // Hand the buffer's IOVA to the device: checked against its container.
//! let iova = buf.dma_range(device.container(), 0, 5)?;
//! ring.memory().write::<u64>(0, iova);
//! ring.memory().write::<u32>(8, 5);
//! bar0.write64(0x10, ring.iova());
//! bar0.write32(0x18, 1);
//! while ring.memory().read::<u32>(12) == 0 {
//!     std::hint::spin_loop();
//! }
//!
//! // Stop the device (a reset, or the driver's own step), then take the
//! // buffer back. Dropping `device` with memory lent quiesces it too.
//! device.quiesce()?;
//! let buf = buf.reclaim().expect("quiesced since the loan");
//! drop(buf); // back to the pool
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `testing`: software device models for host tests, with no kernel and no
//!   hardware: `Container::unbacked`, `Device::from_model`,
//!   `Mmio::from_model`, `Container::dma_read`/`dma_write` and the
//!   `mmio::RegisterModel` trait, and `panicking_logger` (a logger that
//!   panics on every warning, for a driver's panic-safety tests). For
//!   dev-dependencies only, never in a driver's build.

#![deny(missing_docs)]

pub mod dma;
pub mod error;
pub mod mmio;
#[cfg(feature = "testing")]
pub mod panicking_logger;
pub mod pci;
pub mod poll;
pub mod vfio;

pub use error::{Error, Result};
