//! Software models of the devices this project drives, for host tests and
//! fuzzing: drivers run on them unchanged, through vfio-core's `testing`
//! seam (`Device::from_model`, `Mmio::from_model`, `Container::dma_read` /
//! `dma_write`). A model is written from the device's specification, not
//! from the driver: where the two disagree, a test fails.
//!
//! - [`nvme`]: an NVMe controller with RAM namespaces, admin and I/O queues,
//!   PRPs, and injected faults (held commands, hostile completions, a
//!   controller that does not stop).

pub mod nvme;
