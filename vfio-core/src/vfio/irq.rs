//! Interrupts delivered to eventfds (VFIO_DEVICE_SET_IRQS).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::EventFd;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX,
};

use super::device::ioctl_err;
use super::ioctl;
use crate::pci::PciAddress;
use crate::{Error, Result};

/// The three PCI interrupt mechanisms. A device uses one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqKind {
    /// The legacy interrupt pin (one vector, possibly shared with other
    /// devices); VFIO masks it each time it fires ([`Interrupts::unmask`]).
    Intx,
    /// Message Signalled Interrupts: up to 32 vectors.
    Msi,
    /// MSI-X: up to 2048 vectors.
    Msix,
}

impl IrqKind {
    pub(super) fn index(self) -> u32 {
        match self {
            IrqKind::Intx => VFIO_PCI_INTX_IRQ_INDEX,
            IrqKind::Msi => VFIO_PCI_MSI_IRQ_INDEX,
            IrqKind::Msix => VFIO_PCI_MSIX_IRQ_INDEX,
        }
    }
}

/// Enabled interrupt vectors, each signalling an eventfd
/// ([`Device::enable_irqs`](super::Device::enable_irqs)). All vectors of the
/// kind are disabled on drop. Keeps the device file open.
///
/// ```no_run
/// # fn main() -> vfio_core::Result<()> {
/// use std::time::Duration;
/// use vfio_core::vfio::IrqKind;
/// # let container = vfio_core::vfio::Container::new()?;
/// # let device = container.open_device("0000:00:04.0".parse()?)?;
/// let irqs = device.enable_irqs(IrqKind::Msix, 1)?;
/// if irqs.wait(0, Duration::from_millis(100))? > 0 {
///     // handle the device's completions
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Interrupts {
    device: Arc<OwnedFd>,
    addr: PciAddress,
    kind: IrqKind,
    eventfds: Vec<EventFd>,
}

impl Interrupts {
    pub(super) fn new(
        device: Arc<OwnedFd>,
        addr: PciAddress,
        kind: IrqKind,
        eventfds: Vec<EventFd>,
    ) -> Interrupts {
        Interrupts {
            device,
            addr,
            kind,
            eventfds,
        }
    }

    /// The mechanism in use.
    pub fn kind(&self) -> IrqKind {
        self.kind
    }

    /// Number of vectors enabled.
    pub fn len(&self) -> usize {
        self.eventfds.len()
    }

    /// True when no vector is enabled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The eventfd of `vector`, to add to an epoll set or an event loop
    /// (non-blocking; reading it returns and clears the count of interrupts);
    /// None for a vector that is not enabled.
    pub fn eventfd(&self, vector: usize) -> Option<BorrowedFd<'_>> {
        self.eventfds.get(vector).map(|e| e.as_fd())
    }

    /// Waits up to `timeout` for vector `vector`; returns how many interrupts
    /// arrived since the last wait, or 0 on timeout. A zero timeout only polls.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `vector` is not enabled;
    /// [`Error::Ioctl`] when polling or reading the eventfd fails.
    pub fn wait(&self, vector: usize, timeout: Duration) -> Result<u64> {
        let eventfd = self.eventfds.get(vector).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: vector {vector} of {} enabled",
                self.addr,
                self.len()
            ))
        })?;
        let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let ready = loop {
            let mut fds = [PollFd::new(eventfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Err(Errno::EINTR) => continue,
                other => {
                    break other.map_err(|e| {
                        ioctl_err(self.addr, "poll on an interrupt eventfd", e.into())
                    })?
                }
            }
        };
        if ready == 0 {
            return Ok(0);
        }
        match eventfd.read() {
            Ok(n) => Ok(n),
            Err(Errno::EAGAIN) => Ok(0),
            Err(e) => Err(ioctl_err(
                self.addr,
                "read of an interrupt eventfd",
                e.into(),
            )),
        }
    }

    /// Unmasks INTx after it fired (VFIO masks the pin until the driver has
    /// quieted the device and calls this).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for MSI or MSI-X, which VFIO does not mask
    /// when they fire;
    /// [`Error::Ioctl`] when VFIO_DEVICE_SET_IRQS fails.
    pub fn unmask(&self) -> Result<()> {
        if self.kind != IrqKind::Intx {
            return Err(Error::InvalidArgument(format!(
                "{}: only INTx is unmasked, these are {:?}",
                self.addr, self.kind
            )));
        }
        let flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
        ioctl::set_irqs(self.device.as_fd(), self.kind.index(), flags, 0, 1, &[])
            .map_err(|e| ioctl_err(self.addr, "VFIO_DEVICE_SET_IRQS (unmask)", e))
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        let flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
        if let Err(e) = ioctl::set_irqs(self.device.as_fd(), self.kind.index(), flags, 0, 0, &[]) {
            log::warn!(
                "{}: disabling {:?} interrupts failed: {e}",
                self.addr,
                self.kind
            );
        }
    }
}
