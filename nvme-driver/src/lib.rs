//! # nvme-driver
//!
//! A userspace NVMe driver on vfio-core: controller bring-up, admin commands,
//! and lock-free I/O queue pairs that read into and write from DMA buffers
//! with no copy (a pool buffer an NVMe read filled can go straight to a NIC).
//!
//! - [`Controller`]: bring-up, identify, namespaces, queue creation, reset,
//!   log pages.
//! - [`IoQueuePair`]: the data path, asynchronous (submit, ring, poll) or blocking.
//! - [`spec`]: what the controller reports: identify data and status codes.
//! - [`Error`]: everything that can go wrong, with the device's address or
//!   the command's name.
//!
//! # Memory the controller may write
//!
//! The controller reaches only memory mapped in its vfio-core container, and
//! only as long as the driver lets it:
//!
//! - A buffer given to an asynchronous command ([`IoQueuePair::submit_read`],
//!   [`IoQueuePair::submit_write`]) is moved into the queue pair; it comes
//!   back from [`IoQueuePair::poll`] once the command completed, or from
//!   [`Controller::recreate_io_queue_pair`] after a controller reset.
//! - The blocking calls ([`IoQueuePair::read`], [`IoQueuePair::write`])
//!   borrow their memory and never return while a command of theirs may
//!   still move data.
//! - Dropping a queue pair deletes its queues at the controller (or disables
//!   the controller) before its rings and the buffers it holds are freed;
//!   dropping the last of the [`Controller`] and its queue pairs shuts the
//!   controller down and disables it before the admin queue is freed. When
//!   the controller cannot be stopped, that memory is leaked on purpose
//!   (counted in [`vfio_core::dma::leaked`]) rather than reused.
//!
//! See [`IoQueuePair`] for the details, and the compile-time checks.
//!
//! # Example
//!
//! Open a controller, create an I/O queue pair, read blocks into pool
//! buffers and write one back:
//!
//! ```no_run
//! use nvme_driver::{Controller, IoQueuePair};
//! use vfio_core::dma::{Buffer, BufferPool};
//! use vfio_core::vfio::Container;
//!
//! # fn main() -> nvme_driver::Result<()> {
//! // The controller at 0000:01:00.0, bound to vfio-pci.
//! let container = Container::new()?;
//! let mut nvme = Controller::open(&container, "0000:01:00.0".parse()?)?;
//! println!("{} ({})", nvme.info().model, nvme.info().serial);
//! let ns = nvme.namespace(1)?;
//! let bs = ns.block_size as usize;
//!
//! // A queue pair of 64 entries for this thread, moving pool buffers.
//! let mut qp: IoQueuePair<Buffer> = nvme.create_io_queue_pair(64)?;
//! let pool = BufferPool::new(&container, bs, 64)?;
//!
//! // Blocking: block 0 into a buffer by DMA, changed, written to block 1.
//! let mut buf = pool.try_alloc()?;
//! qp.read(ns.nsid, 0, &mut buf, 0, bs)?;
//! buf.as_mut_slice()[0] ^= 0xff;
//! qp.write(ns.nsid, 1, &buf, 0, bs)?;
//! qp.flush(ns.nsid)?;
//! drop(buf); // back to the pool
//!
//! // Asynchronous: eight reads in one batch; the queue pair owns each
//! // buffer until `poll` hands it back with its tag (here the LBA).
//! for lba in 0..8 {
//!     let buf = pool.try_alloc()?;
//!     qp.submit_read(ns.nsid, lba, buf, 0, bs, lba)
//!         .map_err(|(e, _buf)| e)?;
//! }
//! qp.ring();
//! let mut done = 0;
//! while done < 8 {
//!     done += qp.poll(8, |c| match (c.result, c.buf) {
//!         (Ok(()), Some(buf)) => println!("LBA {}: {:02x?}", c.tag, &buf.as_slice()[..8]),
//!         (Err(e), _) => eprintln!("LBA {}: {e}", c.tag),
//!         (Ok(()), None) => {}
//!     })?;
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod admin;
#[cfg(feature = "async")]
mod async_io;
mod config;
mod controller;
mod doorbell;
mod error;
mod io;
mod prp;
mod queue;
mod sgl;
// Public but hidden: tests/ (guest-check) reads a real controller's
// registers directly with these names. Users drive the controller through
// `Controller`.
#[doc(hidden)]
pub mod regs;
pub mod spec;

pub use admin::ADMIN_TIMEOUT;
#[cfg(feature = "async")]
pub use async_io::{AsyncQueuePair, AsyncResult};
pub use config::{Config, DataPointer};
pub use controller::{Controller, SmartLog};
pub use error::{Error, Result};
pub use io::{GatherPiece, IoCompletion, IoQueuePair, IO_TIMEOUT, MAX_GATHER_PIECES};
pub use spec::{ControllerInfo, NamespaceInfo};
