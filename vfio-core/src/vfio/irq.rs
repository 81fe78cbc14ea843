//! Interrupts delivered to eventfds (VFIO_DEVICE_SET_IRQS).
//!
//! [`Device::enable_irqs`](super::Device::enable_irqs) routes each vector of
//! one [`IrqKind`] to an eventfd; [`Interrupts::wait`] and
//! [`Interrupts::wait_any`] sleep on them, or a driver adds
//! [`Interrupts::eventfd`] to its own event loop. How to acknowledge each
//! kind: [`Interrupts`].

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::eventfd::EventFd;
use nix::sys::time::TimeSpec;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX,
};

use super::device::ioctl_err;
use super::ioctl;
use crate::pci::PciAddress;
use crate::{Error, Result};

/// The three PCI interrupt mechanisms. A device uses one at a time.
/// Displayed as `INTx`, `MSI` and `MSI-X`.
///
/// ```
/// use vfio_core::vfio::IrqKind;
///
/// assert_eq!(IrqKind::Msix.to_string(), "MSI-X");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqKind {
    /// The legacy interrupt pin (one vector, possibly shared with other
    /// devices), level-triggered; VFIO masks it each time it fires
    /// ([`Interrupts::unmask`]).
    Intx,
    /// Message Signalled Interrupts: up to 32 vectors, edge messages.
    Msi,
    /// MSI-X: up to 2048 vectors, edge messages.
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

impl fmt::Display for IrqKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IrqKind::Intx => "INTx",
            IrqKind::Msi => "MSI",
            IrqKind::Msix => "MSI-X",
        })
    }
}

/// What [`Interrupts::wait`] saw.
///
/// ```
/// use vfio_core::vfio::Wait;
///
/// assert_eq!(Wait::Fired(2).count(), 2);
/// assert_eq!(Wait::TimedOut.count(), 0);
/// assert!(!Wait::TimedOut.fired());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Wait {
    /// The vector fired: the eventfd's count, at least 1, of the interrupts
    /// since it was last read. Several interrupts may make one count, and one
    /// interrupt may stand for several device events: handle everything the
    /// device has pending (see [`Interrupts`](Interrupts#acknowledging-an-interrupt)).
    Fired(u64),
    /// The timeout passed and the vector did not fire.
    TimedOut,
}

impl Wait {
    /// True for [`Wait::Fired`].
    pub fn fired(self) -> bool {
        matches!(self, Wait::Fired(_))
    }

    /// The count of [`Wait::Fired`]; 0 for [`Wait::TimedOut`].
    pub fn count(self) -> u64 {
        match self {
            Wait::Fired(n) => n,
            Wait::TimedOut => 0,
        }
    }
}

/// Enabled interrupt vectors, each signalling an eventfd
/// ([`Device::enable_irqs`](super::Device::enable_irqs)). All vectors of the
/// kind are disabled on drop. Keeps the device file open.
///
/// # Acknowledging an interrupt
///
/// - **INTx is level-triggered.** The device holds its pin asserted until the
///   driver clears the cause (usually by reading or writing a cause register),
///   and VFIO masks the pin each time it fires, so that the host is not
///   flooded meanwhile. After a wake-up: acknowledge the cause in the device
///   *first*, then call [`Interrupts::unmask`]. Unmasked with the cause still
///   pending, the pin fires again at once.
/// - **MSI and MSI-X are edge messages**: the device writes a message per
///   interrupt and VFIO masks nothing, so there is nothing to unmask (and
///   [`Interrupts::unmask`] refuses).
/// - **A count is not a number of events.** The eventfd adds up the
///   interrupts that came since it was last read, and a device may coalesce
///   several events into one interrupt: after a wake-up read the device's
///   cause or status registers (or its completion rings) and handle
///   *everything* pending, not one event per count.
/// - **A shared INTx line wakes every device on it.** A wake-up whose cause
///   register shows nothing pending was another device's interrupt (or
///   the cause was handled already): unmask and wait again.
///
/// # Example
///
/// ```no_run
/// # fn main() -> vfio_core::Result<()> {
/// use std::time::Duration;
/// use vfio_core::vfio::{IrqKind, Wait};
/// # let container = vfio_core::vfio::Container::new()?;
/// # let device = container.open_device("0000:00:04.0".parse()?)?;
/// # let bar0 = device.map_bar(0)?;
/// let irqs = device.enable_irqs(IrqKind::Intx, 1)?;
/// if let Wait::Fired(_) = irqs.wait(0, Duration::from_millis(100))? {
///     let cause = bar0.read32(0xc0); // the device's cause register: reading acknowledges
///     irqs.unmask()?; // INTx only, and only after the device was acknowledged
///     if cause != 0 {
///         // handle every cause that is set
///     } // else: another device on a shared line
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Interrupts {
    /// The VFIO device file; None for [`Interrupts::unbacked`].
    device: Option<Arc<OwnedFd>>,
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
            device: Some(device),
            addr,
            kind,
            eventfds,
        }
    }

    /// `count` vectors of `kind` on fresh eventfds that no device signals
    /// (the `testing` feature): a test raises them with
    /// [`Interrupts::trigger`]. [`Interrupts::unmask`] does nothing on them
    /// (for INTx) and dropping them disables nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vfio_core::vfio::{Interrupts, IrqKind, Wait};
    ///
    /// # fn main() -> vfio_core::Result<()> {
    /// let irqs = Interrupts::unbacked("00:04.0".parse()?, IrqKind::Msix, 2)?;
    /// irqs.trigger(1, 3)?;
    /// assert_eq!(irqs.wait(1, Duration::ZERO)?, Wait::Fired(3));
    /// assert_eq!(irqs.wait(0, Duration::ZERO)?, Wait::TimedOut);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `count` is 0; [`Error::Ioctl`] when
    /// making an eventfd fails.
    #[cfg(any(test, feature = "testing"))]
    pub fn unbacked(addr: PciAddress, kind: IrqKind, count: u32) -> Result<Interrupts> {
        use nix::sys::eventfd::EfdFlags;
        if count == 0 {
            return Err(Error::InvalidArgument(format!(
                "{addr}: asked for 0 {kind} vectors; ask for at least 1"
            )));
        }
        let eventfds = (0..count)
            .map(|_| EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK))
            .collect::<nix::Result<Vec<_>>>()
            .map_err(|e| ioctl_err(addr, "eventfd", e.into()))?;
        Ok(Interrupts::model(addr, kind, eventfds))
    }

    /// Vectors no VFIO device file stands behind (a device model's
    /// [`IrqLine`], or [`Interrupts::unbacked`]): nothing to disable or
    /// unmask; a model or a test signals the eventfds.
    #[cfg(any(test, feature = "testing"))]
    pub(super) fn model(addr: PciAddress, kind: IrqKind, eventfds: Vec<EventFd>) -> Interrupts {
        Interrupts {
            device: None,
            addr,
            kind,
            eventfds,
        }
    }

    /// Adds `count` to the eventfd of `vector`, as `count` interrupts of the
    /// device would (the `testing` feature; any [`Interrupts`], not only
    /// [`Interrupts::unbacked`] ones).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `vector` is not enabled or `count` is 0
    /// (which would wake nobody); [`Error::Ioctl`] when the write fails.
    #[cfg(any(test, feature = "testing"))]
    pub fn trigger(&self, vector: usize, count: u64) -> Result<()> {
        if count == 0 {
            return Err(Error::InvalidArgument(format!(
                "{}: triggering {} vector {vector} 0 times wakes nobody; use a count of at least 1",
                self.addr, self.kind
            )));
        }
        self.vector(vector)?
            .write(count)
            .map(drop)
            .map_err(|e| ioctl_err(self.addr, "write of an interrupt eventfd", e.into()))
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

    /// Waits up to `timeout` for vector `vector`: [`Wait::Fired`] with the
    /// number of interrupts since the last wait (the count is cleared), or
    /// [`Wait::TimedOut`]. The timeout is kept to the microsecond (the
    /// kernel's timer slack, typically 50 µs, may add to it); a zero timeout
    /// checks without blocking, and [`Duration::MAX`] waits for ever. A
    /// wake-up that finds the count already taken (another thread waiting
    /// on the same vector read it) waits on until the deadline. For INTx,
    /// acknowledge and [`unmask`](Interrupts::unmask) after each
    /// [`Wait::Fired`] (see [`Interrupts`](Interrupts#acknowledging-an-interrupt)).
    /// It does not allocate, so a driver may wait on its data path
    /// ([`Interrupts::wait_any`] returns a list, and does).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `vector` is not enabled;
    /// [`Error::Ioctl`] when polling or reading the eventfd fails.
    pub fn wait(&self, vector: usize, timeout: Duration) -> Result<Wait> {
        let eventfd = self.vector(vector)?;
        if timeout.is_zero() {
            // A check on a data path: one read of the eventfd, no poll.
            return Ok(self.take(eventfd)?.map_or(Wait::TimedOut, Wait::Fired));
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let mut fds = [PollFd::new(eventfd.as_fd(), PollFlags::POLLIN)];
            self.poll(&mut fds, deadline)?;
            if is_ready(&fds[0]) {
                if let Some(n) = self.take(eventfd)? {
                    return Ok(Wait::Fired(n));
                }
            }
            if past(deadline) {
                return Ok(Wait::TimedOut);
            }
        }
    }

    /// Waits up to `timeout` for any of `vectors`; returns every one of them
    /// that fired, in the order given, each with its count (which is
    /// cleared), or an empty list when the timeout passed with none firing.
    /// A vector listed twice is reported once. Timeouts are as in
    /// [`Interrupts::wait`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use vfio_core::vfio::{Interrupts, IrqKind};
    ///
    /// # fn main() -> vfio_core::Result<()> {
    /// let irqs = Interrupts::unbacked("00:04.0".parse()?, IrqKind::Msix, 3)?;
    /// irqs.trigger(2, 1)?;
    /// irqs.trigger(0, 5)?;
    /// let fired = irqs.wait_any(&[0, 1, 2], Duration::from_millis(10))?;
    /// assert_eq!(fired, [(0, 5), (2, 1)]);
    /// assert!(irqs.wait_any(&[0, 1, 2], Duration::ZERO)?.is_empty()); // timed out
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `vectors` is empty or names a vector
    /// that is not enabled; [`Error::Ioctl`] when polling or reading an
    /// eventfd fails.
    pub fn wait_any(&self, vectors: &[usize], timeout: Duration) -> Result<Vec<(usize, u64)>> {
        if vectors.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{}: wait_any on no vectors would only sleep; name at least one of the {} enabled",
                self.addr,
                self.len()
            )));
        }
        let eventfds = vectors
            .iter()
            .map(|&v| self.vector(v))
            .collect::<Result<Vec<_>>>()?;
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let mut fds: Vec<PollFd> = eventfds
                .iter()
                .map(|e| PollFd::new(e.as_fd(), PollFlags::POLLIN))
                .collect();
            self.poll(&mut fds, deadline)?;
            let ready: Vec<bool> = fds.iter().map(is_ready).collect();
            drop(fds);
            let mut fired = Vec::new();
            for ((&vector, eventfd), ready) in vectors.iter().zip(&eventfds).zip(ready) {
                if !ready || fired.iter().any(|&(v, _)| v == vector) {
                    continue;
                }
                if let Some(n) = self.take(eventfd)? {
                    fired.push((vector, n));
                }
            }
            if !fired.is_empty() || past(deadline) {
                return Ok(fired);
            }
        }
    }

    /// One `ppoll` of `fds` until `deadline` (`None`: a timeout too long to
    /// add to the clock, that is, none). A signal ends it early, as a
    /// wake-up with nothing ready; the callers loop until the deadline.
    fn poll(&self, fds: &mut [PollFd], deadline: Option<Instant>) -> Result<()> {
        let remaining =
            deadline.map(|d| TimeSpec::from(d.saturating_duration_since(Instant::now())));
        match ppoll(fds, remaining, None) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(ioctl_err(
                self.addr,
                "ppoll on interrupt eventfds",
                e.into(),
            )),
        }
    }

    /// Reads (and so clears) an eventfd's count; `None` when another reader
    /// took it since the poll (a spurious wake-up).
    fn take(&self, eventfd: &EventFd) -> Result<Option<u64>> {
        match eventfd.read() {
            Ok(n) => Ok(Some(n)),
            Err(Errno::EAGAIN) => Ok(None),
            Err(e) => Err(ioctl_err(
                self.addr,
                "read of an interrupt eventfd",
                e.into(),
            )),
        }
    }

    /// The eventfd of `vector`, or an error naming the vectors there are.
    fn vector(&self, vector: usize) -> Result<&EventFd> {
        self.eventfds.get(vector).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: {} vector {vector} is not enabled; vectors 0 to {} are",
                self.addr,
                self.kind,
                self.len().saturating_sub(1)
            ))
        })
    }

    /// Unmasks INTx after it fired. VFIO masks the pin at each interrupt;
    /// acknowledge the cause in the device first (INTx is level-triggered:
    /// unmasked with the cause pending, it fires again at once). A no-op on
    /// `Interrupts::unbacked` ones (the `testing` feature).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for MSI or MSI-X, which VFIO does not mask
    /// when they fire;
    /// [`Error::Ioctl`] when VFIO_DEVICE_SET_IRQS fails.
    pub fn unmask(&self) -> Result<()> {
        if self.kind != IrqKind::Intx {
            return Err(Error::InvalidArgument(format!(
                "{}: only INTx is unmasked, these are {} (edge messages VFIO does not mask); do not call unmask for them",
                self.addr, self.kind
            )));
        }
        let Some(device) = &self.device else {
            return Ok(());
        };
        let flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
        ioctl::set_irqs(device.as_fd(), self.kind.index(), flags, 0, 1, &[])
            .map_err(|e| ioctl_err(self.addr, "VFIO_DEVICE_SET_IRQS (unmask)", e))
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        let Some(device) = &self.device else {
            return;
        };
        let flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
        if let Err(e) = ioctl::set_irqs(device.as_fd(), self.kind.index(), flags, 0, 0, &[]) {
            log::warn!(
                "{}: disabling {} interrupts failed: {e}",
                self.addr,
                self.kind
            );
        }
    }
}

/// The INTx line of a device model (the `testing` feature), given to
/// [`Device::connect_intx`](super::Device::connect_intx): the model
/// [`raise`](IrqLine::raise)s it when it asserts its interrupt, and the
/// vector a driver enabled with
/// [`Device::enable_irqs`](super::Device::enable_irqs) fires, as VFIO
/// signals an INTx eventfd. Before a driver enables it (and after it
/// enables it again, the newest eventfd), raising reaches nobody.
///
/// ```
/// use std::time::Duration;
/// use vfio_core::vfio::{Container, Device, IrqKind, IrqLine, Wait};
///
/// # fn main() -> vfio_core::Result<()> {
/// let container = Container::unbacked();
/// let mut device = Device::from_model(&container, "00:04.0".parse()?, vec![0; 256], vec![])?;
/// let line = IrqLine::default();
/// device.connect_intx(line.clone())?;
/// assert!(!line.raise(), "no driver enabled it yet");
/// let irqs = device.enable_irqs(IrqKind::Intx, 1)?;
/// assert!(line.raise());
/// assert_eq!(irqs.wait(0, Duration::ZERO)?, Wait::Fired(1));
/// # Ok(()) }
/// ```
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, Debug, Default)]
pub struct IrqLine(Arc<std::sync::Mutex<Option<OwnedFd>>>);

#[cfg(any(test, feature = "testing"))]
impl IrqLine {
    /// Signals the enabled vector once; false when no driver enabled it
    /// (or the write failed).
    pub fn raise(&self) -> bool {
        let fd = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        fd.as_ref()
            .is_some_and(|fd| nix::unistd::write(fd, &1u64.to_ne_bytes()).is_ok())
    }

    /// Makes `eventfd` (a copy of the driver's) the one raising signals.
    pub(super) fn connect(&self, eventfd: OwnedFd) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(eventfd);
    }
}

/// Whether a poll found `fd` ready (readable, or in error, which the read
/// then reports).
fn is_ready(fd: &PollFd) -> bool {
    fd.revents().is_some_and(|r| !r.is_empty())
}

/// Whether `deadline` has passed; never for `None` (no deadline).
fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn irqs(kind: IrqKind, count: u32) -> Interrupts {
        Interrupts::unbacked("00:04.0".parse().unwrap(), kind, count).unwrap()
    }

    #[test]
    fn a_sub_millisecond_timeout_waits_that_long_and_times_out() {
        let irqs = irqs(IrqKind::Msix, 1);
        let timeout = Duration::from_micros(300);
        let start = Instant::now();
        let got = irqs.wait(0, timeout).unwrap();
        let took = start.elapsed();
        assert_eq!(got, Wait::TimedOut);
        assert!(took >= timeout, "returned after {took:?}");
        assert!(took < Duration::from_millis(50), "returned after {took:?}");
    }

    #[test]
    fn a_zero_timeout_checks_without_blocking() {
        let irqs = irqs(IrqKind::Msi, 1);
        let start = Instant::now();
        assert_eq!(irqs.wait(0, Duration::ZERO).unwrap(), Wait::TimedOut);
        assert!(start.elapsed() < Duration::from_millis(50));
        irqs.trigger(0, 1).unwrap();
        assert_eq!(irqs.wait(0, Duration::ZERO).unwrap(), Wait::Fired(1));
    }

    #[test]
    fn interrupts_before_the_wait_are_one_count_and_cleared() {
        let irqs = irqs(IrqKind::Msix, 1);
        irqs.trigger(0, 1).unwrap();
        irqs.trigger(0, 2).unwrap();
        assert_eq!(
            irqs.wait(0, Duration::from_secs(5)).unwrap(),
            Wait::Fired(3)
        );
        assert_eq!(irqs.wait(0, Duration::ZERO).unwrap(), Wait::TimedOut);
    }

    #[test]
    fn an_interrupt_from_another_thread_wakes_the_waiter() {
        let irqs = Arc::new(irqs(IrqKind::Intx, 1));
        let raiser = Arc::clone(&irqs);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            raiser.trigger(0, 1).unwrap();
        });
        let start = Instant::now();
        let got = irqs.wait(0, Duration::from_secs(10)).unwrap();
        let took = start.elapsed();
        t.join().unwrap();
        assert_eq!(got, Wait::Fired(1));
        assert!(took < Duration::from_secs(5), "woken after {took:?}");
    }

    #[test]
    fn wait_any_reports_every_vector_that_fired() {
        let irqs = irqs(IrqKind::Msix, 4);
        irqs.trigger(3, 2).unwrap();
        irqs.trigger(1, 1).unwrap();
        let fired = irqs
            .wait_any(&[0, 1, 3, 1], Duration::from_secs(5))
            .unwrap();
        assert_eq!(fired, [(1, 1), (3, 2)]);
        let none = irqs.wait_any(&[0, 1, 2, 3], Duration::from_micros(200));
        assert_eq!(none.unwrap(), []);
    }

    #[test]
    fn a_wake_up_whose_count_was_taken_waits_on_until_the_deadline() {
        // Two waiters on one vector, one interrupt: one gets it, the other
        // finds the count gone (EAGAIN) and must keep waiting, not return.
        let irqs = Arc::new(irqs(IrqKind::Msix, 1));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let irqs = Arc::clone(&irqs);
                std::thread::spawn(move || {
                    let start = Instant::now();
                    (
                        irqs.wait(0, Duration::from_millis(300)).unwrap(),
                        start.elapsed(),
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        irqs.trigger(0, 1).unwrap();
        let mut results: Vec<_> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
        results.sort_by_key(|r| r.0.count());
        assert_eq!(results[1].0, Wait::Fired(1));
        assert_eq!(results[0].0, Wait::TimedOut);
        assert!(results[0].1 >= Duration::from_millis(300), "{results:?}");
    }

    #[test]
    fn bad_vectors_and_unmask_of_msi_say_what_is_wrong() {
        let irqs = irqs(IrqKind::Msix, 2);
        let e = irqs.wait(2, Duration::ZERO).unwrap_err().to_string();
        assert!(
            e.contains("MSI-X vector 2 is not enabled; vectors 0 to 1"),
            "{e}"
        );
        assert!(irqs.wait_any(&[], Duration::ZERO).is_err());
        let e = irqs.unmask().unwrap_err().to_string();
        assert!(e.contains("these are MSI-X"), "{e}");
        assert!(self::irqs(IrqKind::Intx, 1).unmask().is_ok());
    }

    #[test]
    fn kinds_display_by_their_pci_names() {
        let names: Vec<String> = [IrqKind::Intx, IrqKind::Msi, IrqKind::Msix]
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(names, ["INTx", "MSI", "MSI-X"]);
    }
}
