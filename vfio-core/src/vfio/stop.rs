//! Stopping a device's DMA before the memory it was given is reused: the one
//! sequence every driver runs ([`Device::stop_dma`]), and that
//! [`Device::quiesce`] runs for memory lent with [`Device::lend`].
//!
//! 1. The driver's own step (reset the device, disable the controller,
//!    delete the queues) that proves from the device's registers that it has
//!    stopped. Registers prove something only while the device decodes memory
//!    (a BAR that does not decode reads 0, which looks like a finished reset),
//!    so the step runs only then.
//! 2. Otherwise (the step failed, returned an error, or panicked) clear Bus
//!    Master Enable and read it back: a device with it clear starts no DMA.
//! 3. Otherwise the driver's leak step: every region and buffer the device may
//!    still reach stays allocated and mapped for the rest of the process
//!    ([`crate::dma::DmaTarget::leak`]), so nothing else is ever placed there.
//!
//! # Panics
//!
//! Nothing that can run code of the program's (a logger, a driver's step) runs
//! between "the device may still write this memory" and "it is stopped or the
//! memory leaked": the step's panic is caught and resumed only after step 2 or
//! 3, and logging comes last. The leak step runs behind [`AbortOnUnwind`]: a
//! panic inside it would drop memory the device may still write, so the
//! process aborts instead.

use std::any::Any;
use std::fmt;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};

use super::Device;

/// How [`Device::stop_dma`] stopped a device's DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stopped {
    /// The driver's step stopped it and proved it from its registers.
    Proven,
    /// Bus Master Enable reads back clear: the device starts no more DMA.
    BusMasterOff,
    /// Neither could be done: the leak step ran, and the memory it covers is
    /// never reused ([`crate::dma::leaked`] counts it).
    Leaked,
}

impl Stopped {
    /// Whether memory the device was given may be reused (false: leaked).
    pub fn memory_reusable(self) -> bool {
        self != Stopped::Leaked
    }
}

/// What the sequence came to, before anything was logged.
pub(super) struct Attempt<E> {
    pub(super) stopped: Stopped,
    /// Why the driver's step did not prove the stop.
    pub(super) step: Option<Why<E>>,
    /// Why bus mastering could not be turned off.
    pub(super) bus_master: Option<crate::Error>,
    /// The step's panic, to resume after logging.
    pub(super) panic: Option<Box<dyn Any + Send>>,
}

/// Why a step proved nothing.
pub(super) enum Why<E> {
    Failed(E),
    NotDecoding,
    CommandUnreadable(crate::Error),
    Panicked,
}

impl<E: fmt::Display> fmt::Display for Why<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Failed(e) => write!(f, "{e}"),
            Why::NotDecoding => {
                f.write_str("memory decoding is off, so its registers prove nothing")
            }
            Why::CommandUnreadable(e) => write!(f, "its command register cannot be read ({e})"),
            Why::Panicked => f.write_str("the stop step panicked"),
        }
    }
}

impl<E: fmt::Display> Attempt<E> {
    /// Logs what happened (only now: a logger may panic), then resumes the
    /// step's panic, if any. The outcome, and why bus mastering could not be
    /// turned off.
    pub(super) fn finish(self, device: &Device, what: &str) -> (Stopped, Option<crate::Error>) {
        let addr = device.address();
        let Attempt {
            stopped,
            step,
            bus_master,
            panic,
        } = self;
        match (stopped, &step) {
            (Stopped::BusMasterOff, Some(why)) => log::warn!(
                "{addr}: {what}: not proven stopped ({why}); bus mastering is off, so it starts no more DMA"
            ),
            (Stopped::Leaked, _) => log::error!(
                "{addr}: {what}: not proven stopped ({}), and bus mastering could not be turned off ({}): \
                 the memory it may reach is never reused (reset the device, e.g. by rebinding it, and \
                 restart the program to get it back)",
                step.as_ref().map_or_else(|| "no step".to_string(), ToString::to_string),
                bus_master.as_ref().map_or_else(String::new, ToString::to_string),
            ),
            _ => {}
        }
        if let Some(payload) = panic {
            panic::resume_unwind(payload);
        }
        (stopped, bus_master)
    }
}

impl Device {
    /// Stops this device's DMA before memory it was given is reused: runs
    /// `stop` (the driver's step, which stops the device and proves it from
    /// its registers) while the device decodes memory; when that fails, is
    /// skipped or panics, clears Bus Master Enable; when that fails too,
    /// runs `leak`, which must leave every region and buffer the device may
    /// reach allocated and mapped ([`crate::dma::DmaTarget::leak`],
    /// [`crate::dma::DmaMemory::leak_on_drop`]). Only then does it log, and
    /// resume a panic of `stop`.
    ///
    /// Why this order: a logger and a driver's step are code of the
    /// program's and may panic; a panic that unwound while the device could
    /// still write would drop the memory (back to a pool, or unmapped) under
    /// it. So nothing that may panic runs between "the device may still
    /// write this" and "it is stopped or the memory leaked", and the `leak`
    /// step runs behind [`AbortOnUnwind`]: a panic inside it aborts the
    /// process. A panic resumed here while the thread is already unwinding
    /// (a `Drop` run by another panic) aborts too, as Rust does.
    ///
    /// Every driver in this workspace stops its device through this (its
    /// `Drop`, and its blocking calls that must return with commands in
    /// flight); [`Device::quiesce`] does too.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use vfio_core::dma::{Backing, DmaMemory, DmaTarget};
    /// use vfio_core::mmio::{RegisterFile, SharedModel};
    /// use vfio_core::vfio::{Container, Device, Stopped};
    ///
    /// # fn main() -> vfio_core::Result<()> {
    /// let container = Container::unbacked();
    /// let mut config = vec![0u8; 256];
    /// config[4] = 0x6; // memory decoding and bus mastering on
    /// let device = Device::from_model(&container, "00:04.0".parse()?, config, vec![])?;
    /// let ring = DmaMemory::new(&container, 4096, Backing::Pages)?;
    /// // A step that cannot prove the stop: bus mastering goes off instead.
    /// let stopped = device.stop_dma(
    ///     "my NIC",
    ///     || Err::<(), _>("reset did not complete"),
    ///     || ring.leak_on_drop(),
    /// );
    /// assert_eq!(stopped, Stopped::BusMasterOff);
    /// assert!(!device.bus_master_enabled()?);
    /// # Ok(()) }
    /// ```
    pub fn stop_dma<E: fmt::Display>(
        &self,
        what: &str,
        stop: impl FnOnce() -> Result<(), E>,
        leak: impl FnOnce(),
    ) -> Stopped {
        self.stop_sequence(true, Some(stop), leak)
            .finish(self, what)
            .0
    }

    /// The sequence, logging nothing: `gated` runs `stop` only while the
    /// device decodes memory; with no `stop`, straight to bus mastering off.
    pub(super) fn stop_sequence<E>(
        &self,
        gated: bool,
        stop: Option<impl FnOnce() -> Result<(), E>>,
        leak: impl FnOnce(),
    ) -> Attempt<E> {
        let mut attempt = Attempt {
            stopped: Stopped::Proven,
            step: None,
            bus_master: None,
            panic: None,
        };
        let decoding = if gated {
            self.memory_enabled()
        } else {
            Ok(true)
        };
        attempt.step = match (stop, decoding) {
            (None, _) => None,
            (Some(stop), Ok(true)) => match panic::catch_unwind(AssertUnwindSafe(stop)) {
                Ok(Ok(())) => return attempt,
                Ok(Err(e)) => Some(Why::Failed(e)),
                Err(payload) => {
                    attempt.panic = Some(payload);
                    Some(Why::Panicked)
                }
            },
            (Some(_), Ok(false)) => Some(Why::NotDecoding),
            (Some(_), Err(e)) => Some(Why::CommandUnreadable(e)),
        };
        match self.disable_bus_master() {
            Ok(()) => attempt.stopped = Stopped::BusMasterOff,
            Err(e) => {
                attempt.bus_master = Some(e);
                let guard =
                    AbortOnUnwind::new("leaking the memory of a device that could not be stopped");
                leak();
                guard.disarm();
                attempt.stopped = Stopped::Leaked;
            }
        }
        attempt
    }
}

/// Aborts the process if dropped while unwinding: wraps code that must not
/// be left half-done by a panic, because the memory a device may still
/// write would then be freed. [`AbortOnUnwind::disarm`] at the end.
///
/// ```
/// let guard = vfio_core::vfio::AbortOnUnwind::new("moving buffers out of a running queue");
/// // ... code that must finish ...
/// guard.disarm();
/// ```
#[derive(Debug)]
#[must_use = "the guard protects only until it is disarmed or dropped"]
pub struct AbortOnUnwind(&'static str);

impl AbortOnUnwind {
    /// Arms the guard; `doing` names the work in the message printed before
    /// aborting.
    pub fn new(doing: &'static str) -> AbortOnUnwind {
        AbortOnUnwind(doing)
    }

    /// The work is done: dropping the guard no longer aborts.
    pub fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        // Reached only by unwinding (disarm forgets the guard). No logger:
        // that is what may have panicked. Write errors are ignored.
        let _ = writeln!(
            std::io::stderr(),
            "vfio-core: a panic while {}: a device may still write memory that would now be freed; aborting",
            self.0
        );
        std::process::abort();
    }
}
