//! The NIC drivers' errors.

/// Result with the NIC drivers' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong driving a NIC.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From vfio-core: opening the device, mapping a BAR, allocating or
    /// mapping DMA memory, PCI configuration space, interrupts.
    #[error(transparent)]
    Vfio(#[from] vfio_core::Error),

    /// The device is not one this driver knows, or misbehaves (a reset that
    /// does not complete, registers that read all ones, a value no correct
    /// device reports).
    #[error("NIC {addr}: {what}")]
    Device {
        /// The NIC's PCI address.
        addr: vfio_core::pci::PciAddress,
        /// What is wrong, in words.
        what: String,
    },

    /// The link is down; frames were left with the caller.
    #[error("link is down on {addr}: frames are kept until it is up again")]
    LinkDown {
        /// The NIC's PCI address.
        addr: vfio_core::pci::PciAddress,
    },

    /// A frame the driver cannot send as given; the message says why.
    #[error("invalid frame: {0}")]
    InvalidFrame(String),

    /// Memory of another VFIO container handed to the NIC (a segment of a
    /// frame to transmit): the NIC does not reach it, and the same IOVA in
    /// the NIC's own container may be other memory, whose bytes the NIC
    /// would send. Refused before any descriptor points at it; the frame
    /// is taken off the queue and dropped, its buffers back to their pools
    /// (as for [`Error::InvalidFrame`]).
    #[error(
        "NIC {addr}: {what} is memory of another VFIO container (at IOVA {iova:#x} there), which this \
         NIC does not reach and whose IOVA may be other memory in the NIC's own; the frame was not \
         sent (dropped, its buffers back to their pools). Allocate it from a pool of the NIC's \
         container (NetDevice::alloc_packet, NetDevice::pool) or open both devices in one Container"
    )]
    ForeignMemory {
        /// The NIC's PCI address.
        addr: vfio_core::pci::PciAddress,
        /// What was refused, in words (which segment of how many).
        what: String,
        /// The IOVA of the refused bytes (in their own container).
        iova: u64,
    },

    /// A [`Config`](crate::Config) value this driver cannot use; the
    /// message names the value and the range it must be in.
    #[error("invalid NIC configuration: {0}")]
    InvalidConfig(String),
}
