//! # nvme-driver
//!
//! A userspace NVMe driver on vfio-core: controller bring-up, admin commands,
//! and lock-free I/O queue pairs that read into and write from DMA buffers
//! with no copy (a pool buffer an NVMe read filled can go straight to a NIC).
//!
//! - [`regs`]: the controller registers. [`spec`]: commands, completions,
//!   status codes, identify data.
//! - [`Controller`]: bring-up, identify, namespaces, queue creation, log pages.
//! - [`IoQueuePair`]: the data path, asynchronous (submit, ring, poll) or blocking.
//!
//! See [`Controller`] for an example.

mod admin;
mod controller;
mod error;
mod io;
mod prp;
mod queue;
pub mod regs;
pub mod spec;

pub use admin::ADMIN_TIMEOUT;
pub use controller::{Controller, SmartLog};
pub use error::{Error, Result};
pub use io::{IoCompletion, IoQueuePair, IO_TIMEOUT};
pub use spec::{ControllerInfo, NamespaceInfo};
