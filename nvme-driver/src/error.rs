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
    /// From vfio-core: opening the device, mapping BAR0, allocating or
    /// mapping DMA memory, PCI configuration space.
    #[error(transparent)]
    Vfio(#[from] vfio_core::Error),

    /// The controller reported a fatal status, vanished, or lacks something
    /// this driver requires (the NVM command set, 4 KiB pages, a usable
    /// namespace format).
    #[error("NVMe controller {addr}: {what}")]
    Controller {
        /// The controller's PCI address.
        addr: PciAddress,
        /// What is wrong, in words.
        what: String,
    },

    /// The controller did not become ready, disable or shut down within
    /// its CAP.TO bound.
    #[error("NVMe controller {addr} did not {what} within {timeout:?} (CSTS={csts:#x})")]
    NotReady {
        /// The controller's PCI address.
        addr: PciAddress,
        /// What it did not do: "become ready", "disable" or "shut down".
        what: &'static str,
        /// How long the driver waited (from CAP.TO).
        timeout: Duration,
        /// The last value read from CSTS.
        csts: u32,
    },

    /// A command completed with an error status. The controller is done
    /// with its memory.
    #[error("{command} failed: {status}")]
    Command {
        /// The command's name, e.g. "Read" or "Identify Namespace".
        command: &'static str,
        /// The status the controller reported.
        status: Status,
    },

    /// A command did not complete in time. The queue pair (or the admin
    /// queue) is unusable until the controller is reset; it keeps the
    /// memory of the commands in flight until then.
    #[error("{command} did not complete within {timeout:?}; the queue pair is unusable until the controller is reset")]
    Timeout {
        /// The command's name, or "an earlier command" / "a queued command".
        command: &'static str,
        /// The timeout that passed.
        timeout: Duration,
    },

    /// The controller was reset or disabled since the queue pair was created:
    /// its queues are gone at the controller.
    #[error("I/O queue pair {qid} no longer exists at the controller (it was reset or disabled); reset the controller and give the queue pair to Controller::recreate_io_queue_pair")]
    QueueGone {
        /// The queue pair's ID.
        qid: u16,
    },

    /// The command was in flight when the controller was reset; it may or
    /// may not have run. Its buffer comes back with it: the reset
    /// controller no longer reaches it.
    #[error("{command} was aborted by a controller reset")]
    Aborted {
        /// The command's name.
        command: &'static str,
    },

    /// A caller asked for something this controller or queue pair cannot do
    /// (an argument out of range, a command the controller does not support,
    /// an admin queue an earlier timeout made unusable); nothing was sent to
    /// the device.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The submission queue is full; poll for completions and submit again.
    #[error(
        "submission queue {qid} is full ({depth} commands in flight); poll for completions first"
    )]
    QueueFull {
        /// The queue pair's ID.
        qid: u16,
        /// Commands in flight on it.
        depth: usize,
    },

    /// Registers read as all ones: the controller is gone (surprise removal,
    /// or its PCI function was disabled). Nothing more will complete; the
    /// queue pair keeps the memory of the commands in flight.
    #[error("NVMe controller reads as all ones: it is gone (surprise removal?); {pending} commands failed with it")]
    Removed {
        /// Commands in flight on the queue pair.
        pending: usize,
    },

    /// The device wrote something a correct controller never writes (a
    /// completion for a command not in flight, an SQ head out of range, a
    /// doorbell stride that puts doorbells outside BAR0). An I/O queue pair
    /// that reads such a completion is unusable until the controller is reset.
    #[error("NVMe controller protocol error: {0}")]
    Protocol(String),
}
