//! The NVMe driver's errors.

use std::time::Duration;

use vfio_core::pci::PciAddress;

use crate::spec::Status;

/// Result with the NVMe driver's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong driving an NVMe controller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From vfio-core: opening, mapping, DMA memory.
    #[error(transparent)]
    Vfio(#[from] vfio_core::Error),

    /// The controller reported a fatal status, vanished, or lacks something required.
    #[error("NVMe controller {addr}: {what}")]
    Controller { addr: PciAddress, what: String },

    /// The controller did not become ready / disabled / shut down in time.
    #[error("NVMe controller {addr} did not {what} within {timeout:?} (CSTS={csts:#x})")]
    NotReady {
        addr: PciAddress,
        what: &'static str,
        timeout: Duration,
        csts: u32,
    },

    /// A command completed with an error status.
    #[error("{command} failed: {status}")]
    Command {
        command: &'static str,
        status: Status,
    },

    /// A command did not complete in time. The queue pair is unusable until the controller is reset.
    #[error("{command} did not complete within {timeout:?}; the queue pair is unusable until the controller is reset")]
    Timeout {
        command: &'static str,
        timeout: Duration,
    },

    /// The controller was reset or disabled since the queue pair was created:
    /// its queues are gone at the controller.
    #[error("I/O queue pair {qid} no longer exists at the controller (it was reset or disabled); reset the controller and give the queue pair to Controller::recreate_io_queue_pair")]
    QueueGone { qid: u16 },

    /// The command was in flight when the controller was reset; it may or may not have run.
    #[error("{command} was aborted by a controller reset")]
    Aborted { command: &'static str },

    /// A caller passed something out of range; nothing was sent to the device.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The submission queue is full; poll for completions and submit again.
    #[error(
        "submission queue {qid} is full ({depth} commands in flight); poll for completions first"
    )]
    QueueFull { qid: u16, depth: usize },

    /// Registers read as all ones: the controller is gone (surprise removal,
    /// or its PCI function was disabled). Nothing more will complete.
    #[error("NVMe controller reads as all ones: it is gone (surprise removal?); {pending} commands failed with it")]
    Removed { pending: usize },

    /// The device wrote something a correct controller never writes.
    #[error("NVMe controller protocol error: {0}")]
    Protocol(String),
}
