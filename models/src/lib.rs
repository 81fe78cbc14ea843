//! Software models of the devices this project drives, for host tests,
//! benchmarks and fuzzing: drivers run on them unchanged, through vfio-core's
//! `testing` seam (`Device::from_models`, `Mmio::from_model`,
//! `Container::dma_read` / `dma_write`). A model is written from the
//! device's specification, not from the driver: where the two disagree, a
//! test fails.
//!
//! - [`nvme`]: an NVMe controller with RAM namespaces, admin and I/O queues,
//!   PRPs, SGLs (when configured), and injected faults (held commands,
//!   hostile completions, a controller that does not stop).
//! - [`e1000`]: an Intel 82540EM with its descriptor rings, checksum
//!   insertion, address filter, statistics and link state, and hostile
//!   write-backs.
//! - [`virtio_net`]: a modern virtio-pci network device with split
//!   virtqueues, feature negotiation, checksum completion, and hostile
//!   used-ring entries.
//! - [`panicking_logger`]: a `log::Log` that panics on warnings, for the
//!   tests that no driver logs while its device may still write memory it
//!   is about to give back.
//!
//! The NIC models carry frames between the driver and the test: frames the
//! test delivers are received into the driver's buffers, frames the driver
//! sends are kept as the device read them. They run synchronously (inside
//! the driver's register writes, deterministic) or on a thread
//! ([`ModelThread`]); DMA happens only while the driver has bus mastering
//! on, as on PCI.

mod common;
pub mod e1000;
pub mod nvme;
mod nvme_sgl;
pub use vfio_core::panicking_logger;
pub mod virtio_net;

pub use common::{ModelThread, StuckCommand, Wedge};
