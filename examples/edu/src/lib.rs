//! A driver for QEMU's educational PCI device, `-device edu` (1234:11e8), on
//! vfio-core: the worked example of the chapter "A driver for any PCI
//! device" in `docs/writing-a-driver.md`. It has the parts a driver of any
//! device has, each small: registers ([`regs`]), a check of what the device
//! is, a computation polled or ended by an interrupt, DMA programmed through
//! registers with an address limit, MSI and INTx, and stopping the device
//! before the memory it was given is freed. No `unsafe`: vfio-core maps the
//! BAR and the DMA memory.
//!
//! ```no_run
//! use vfio_core::vfio::IrqKind;
//!
//! # fn main() -> edu_driver::Result<()> {
//! let mut edu = edu_driver::Edu::open("0000:00:06.0".parse()?)?;
//! edu.enable_interrupts(IrqKind::Msi)?;
//! assert_eq!(edu.factorial(5)?, 120);
//!
//! // RAM -> the device's buffer -> other RAM, by the device's DMA.
//! let (src, mut dst) = (edu.dma_memory(4096)?, edu.dma_memory(4096)?);
//! src.write_bytes(0, b"hello");
//! edu.copy_to_device(&src, 0, 5)?;
//! edu.copy_from_device(0, &mut dst, 5)?;
//! let mut back = [0u8; 5];
//! dst.read_bytes(0, &mut back);
//! assert_eq!(&back, b"hello");
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod regs;

use std::sync::Arc;
use std::time::{Duration, Instant};

use regs::{dma_command, interrupt, status};
use vfio_core::dma::{dma_mask, Backing, DmaMemory, DmaTarget, DmaTargetMut};
use vfio_core::mmio::Mmio;
use vfio_core::pci::{PciAddress, Sysfs};
use vfio_core::poll;
use vfio_core::vfio::{Container, Device, Interrupts, IrqKind, Quiesce, Wait};

/// Result with the driver's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong driving an edu.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From vfio-core: a bad PCI address, a device not on vfio-pci, DMA
    /// memory (above the device's DMA address limit, or none free below it),
    /// interrupts.
    #[error(transparent)]
    Vfio(#[from] vfio_core::Error),
    /// Another device: its address, vendor ID and device ID.
    #[error("PCI device {0} is {1:04x}:{2:04x}, not QEMU's edu (1234:11e8); pass the address of an edu (`devbind status` lists the devices; QEMU adds one with `-device edu`)")]
    NotEdu(PciAddress, u16, u16),
    /// The device (address) reported what no edu this driver knows does.
    #[error("edu {0}: {1}")]
    Device(PciAddress, String),
    /// The device (address) did not finish something in the time given.
    #[error("edu {0}: {1} did not finish within {2:?}; the device is stuck or slow (Edu::set_timeout gives it longer)")]
    Timeout(PciAddress, String, Duration),
    /// A value the caller passed that the device cannot take.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// How long each wait for the device may take unless told otherwise. edu
/// starts a transfer 100 ms (of QEMU's virtual clock) after its command,
/// and computes a factorial at once.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest n whose factorial fits the 32-bit register.
pub const MAX_FACTORIAL: u32 = 12;

/// An edu device, opened and checked. Dropping it stops its DMA.
#[derive(Debug)]
pub struct Edu {
    bar0: Mmio,
    irqs: Option<Interrupts>,
    device: Device,
    version: (u8, u8),
    timeout: Duration,
    dma_bits: u32,
    interrupts: u64,
}

impl Edu {
    /// Opens the edu at `addr` (bound to vfio-pci) in a container of its own.
    ///
    /// # Errors
    ///
    /// [`Error::NotEdu`] for another device (read from sysfs first, so that
    /// this is the error even while it is on a kernel driver); vfio-core's
    /// when it is missing or not on vfio-pci; as [`Edu::new`].
    pub fn open(addr: PciAddress) -> Result<Edu> {
        let info = Sysfs::new().device(addr)?;
        check_ids(addr, info.vendor_id, info.device_id)?;
        Edu::new(Container::new()?.open_device(addr)?)
    }

    /// Takes an opened device: checks its IDs, maps BAR0, turns on memory
    /// decoding and bus mastering, and checks the identification register.
    ///
    /// # Errors
    ///
    /// [`Error::NotEdu`]; [`Error::Device`] for a BAR0 smaller than edu's or
    /// an identification of no edu 1.x; vfio-core's.
    pub fn new(device: Device) -> Result<Edu> {
        check_ids(device.address(), device.vendor_id()?, device.device_id()?)?;
        let mut edu = Edu {
            bar0: device.map_bar(0)?,
            irqs: None,
            device,
            version: (0, 0),
            timeout: DEFAULT_TIMEOUT,
            dma_bits: regs::DMA_ADDRESS_BITS,
            interrupts: 0,
        };
        edu.set_timeout(DEFAULT_TIMEOUT);
        // From here an error drops `edu`, whose Drop quiesces the device.
        edu.device.enable_bus_master()?;
        if edu.bar0.len() < regs::BAR0_LEN {
            return Err(edu.bad(format!("BAR0 has {:#x} bytes, not 1 MiB", edu.bar0.len())));
        }
        edu.version = edu.identify()?;
        Ok(edu)
    }

    /// Reads the identification register: `0xRRrr00ed`, major version 1
    /// (the registers this driver knows; a minor version only adds).
    fn identify(&self) -> Result<(u8, u8)> {
        let id = self.bar0.read32(regs::IDENTIFICATION);
        let [magic, zero, minor, major] = id.to_le_bytes();
        if magic != 0xed || zero != 0 {
            return Err(self.bad(format!("identification reads {id:#010x}, not 0xRRrr00ed")));
        }
        if major != 1 {
            return Err(self.bad(format!("version {major}.{minor}; this driver knows 1.x")));
        }
        Ok((major, minor))
    }

    /// The (major, minor) version in the identification register.
    pub fn version(&self) -> (u8, u8) {
        self.version
    }

    /// The device's PCI address.
    pub fn address(&self) -> PciAddress {
        self.device.address()
    }

    /// The container whose memory the device reaches.
    pub fn container(&self) -> &Arc<Container> {
        self.device.container()
    }

    /// How long each wait for the device may take ([`DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        // edu has no reset: quiescing it is waiting (this long) for a
        // transfer in flight to end, then (vfio-core) bus mastering off.
        let step = move |device: &Device| wait_dma_idle(device, timeout);
        self.device.set_quiesce(Quiesce::Custom(Box::new(step)));
    }

    /// The DMA address bits of an edu started with `-device edu,dma_mask=`
    /// ([`regs::DMA_ADDRESS_BITS`] by default; at most 64).
    pub fn set_dma_address_bits(&mut self, bits: u32) {
        self.dma_bits = bits.min(64);
    }

    /// Interrupts handled so far.
    pub fn interrupts_handled(&self) -> u64 {
        self.interrupts
    }

    /// Writes `value` to the liveness check register and checks that it
    /// reads back inverted.
    ///
    /// # Errors
    ///
    /// [`Error::Device`] when it does not.
    pub fn check_liveness(&self, value: u32) -> Result<()> {
        self.bar0.write32(regs::LIVENESS_CHECK, value);
        let back = self.bar0.read32(regs::LIVENESS_CHECK);
        if back != !value {
            return Err(self.bad(format!("liveness check: wrote {value:#x}, read {back:#x}")));
        }
        Ok(())
    }

    /// `n!`, computed by the device: polled, or ended by its interrupt
    /// after [`Edu::enable_interrupts`]. The answer is checked.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for n above [`MAX_FACTORIAL`];
    /// [`Error::Timeout`]; [`Error::Device`] for a wrong answer or a status
    /// register with bits edu does not have.
    pub fn factorial(&mut self, n: u32) -> Result<u32> {
        if n > MAX_FACTORIAL {
            let why = format!("{n}! does not fit edu's 32 bits; n must be at most 12");
            return Err(Error::InvalidArgument(why));
        }
        if self.computing()? {
            return Err(self.bad("it is still computing an earlier factorial".into()));
        }
        let raise = self.irqs.as_ref().map_or(0, |_| status::RAISE_INTERRUPT);
        self.bar0.write32(regs::STATUS, raise);
        self.bar0.write32(regs::FACTORIAL_COMPUTATION, n);
        self.wait_done("a factorial", interrupt::FACTORIAL, Edu::computing)?;
        let got = self.bar0.read32(regs::FACTORIAL_COMPUTATION);
        let want = (1..=n).product::<u32>();
        if got != want {
            return Err(self.bad(format!("the factorial of {n} reads {got}, not {want}")));
        }
        Ok(got)
    }

    /// The status register's computing bit; an error for bits edu lacks
    /// (all ones: the device is gone).
    fn computing(&self) -> Result<bool> {
        let s = self.bar0.read32(regs::STATUS);
        if s & !status::ALL != 0 {
            return Err(self.bad(format!("the status register reads {s:#010x}")));
        }
        Ok(s & status::COMPUTING != 0)
    }

    /// Routes the device's interrupt (MSI, or INTx) to an eventfd: from then
    /// on factorials and transfers end with an interrupt.
    ///
    /// # Errors
    ///
    /// vfio-core's, e.g. for a device without that kind.
    pub fn enable_interrupts(&mut self, kind: IrqKind) -> Result<()> {
        self.irqs = None;
        // Causes left from before would fire (INTx: hold the line) at once.
        self.bar0.write32(regs::INTERRUPT_ACKNOWLEDGE, u32::MAX);
        self.irqs = Some(self.device.enable_irqs(kind, 1)?);
        Ok(())
    }

    /// Writes `value` to the interrupt raise register and waits for the
    /// interrupt; returns the interrupt status it read (and acknowledged).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for 0 or before [`Edu::enable_interrupts`];
    /// [`Error::Timeout`] when no interrupt with those bits arrives.
    pub fn raise_interrupt(&mut self, value: u32) -> Result<u32> {
        if value == 0 || self.irqs.is_none() {
            let why = "raise a nonzero value, after Edu::enable_interrupts";
            return Err(Error::InvalidArgument(why.into()));
        }
        self.bar0.write32(regs::INTERRUPT_RAISE, value);
        self.wait_interrupt("a raised interrupt", value)
    }

    /// Waits for an interrupt whose status has all of `bits`. Each one is
    /// acknowledged at the device, then (INTx) unmasked: in that order, as
    /// INTx is a level the device holds until its status is 0, and VFIO
    /// masks it when it fires; unmasked while held, it fires again at once.
    fn wait_interrupt(&mut self, what: &str, bits: u32) -> Result<u32> {
        let irqs = self.irqs.as_ref().expect("called with interrupts on");
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Wait::Fired(count) = irqs.wait(0, left)? else {
                return Err(self.timed_out(&format!("the interrupt for {what}")));
            };
            // One count may stand for several interrupts: the status says all.
            self.interrupts += count;
            let seen = self.bar0.read32(regs::INTERRUPT_STATUS);
            self.bar0.write32(regs::INTERRUPT_ACKNOWLEDGE, seen);
            if irqs.kind() == IrqKind::Intx {
                irqs.unmask()?;
            }
            if seen & bits == bits {
                return Ok(seen);
            }
        }
    }

    /// Waits for the device to finish: for its interrupt `irq` when enabled,
    /// then for `busy` to read false (an interrupt says something ended; the
    /// register says what).
    fn wait_done(&mut self, what: &str, irq: u32, busy: fn(&Edu) -> Result<bool>) -> Result<()> {
        if self.irqs.is_some() {
            self.wait_interrupt(what, irq)?;
        }
        self.poll(what, || match busy(self) {
            Ok(true) => None,
            done => Some(done.map(|_| ())),
        })?
    }

    /// Calls `ready` until it returns Some, for at most the timeout.
    fn poll<T>(&self, what: &str, mut ready: impl FnMut() -> Option<T>) -> Result<T> {
        let found = poll::try_until(self.timeout, || Ok::<_, Error>(ready()))?;
        found.ok_or_else(|| self.timed_out(what))
    }

    /// The highest bus address the device reaches.
    fn dma_limit(&self) -> u64 {
        dma_mask(self.dma_bits)
    }

    /// DMA memory of `len` bytes (a page at least) at IOVAs the device can
    /// address: below its DMA limit, whatever else the container maps.
    ///
    /// # Errors
    ///
    /// vfio-core's: [`vfio_core::Error::DmaLimitExhausted`] when no IOVA
    /// range below the limit is free.
    pub fn dma_memory(&self, len: usize) -> Result<DmaMemory> {
        let limit = self.dma_limit();
        Ok(DmaMemory::new_below(
            self.container(),
            len,
            Backing::Auto,
            limit,
        )?)
    }

    /// Copies the first `len` bytes of `src` into the device buffer at `at`,
    /// by the device's DMA; returns when the device is done.
    ///
    /// # Errors
    ///
    /// As [`Edu::copy_from_device`].
    pub fn copy_to_device(&mut self, src: &impl DmaTarget, at: usize, len: usize) -> Result<()> {
        let ram = src.dma_range_below(self.container(), 0, len, self.dma_limit())?;
        self.transfer(false, ram, at, len)
    }

    /// Copies `len` bytes of the device buffer at `at` to the start of `to`.
    /// Returns only when the device is done with `to`: after a timeout, bus
    /// mastering is off (the process aborts if it cannot be turned off), so
    /// no late write reaches memory the caller gets back.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a range outside the buffer's first
    /// [`regs::BUFFER_USABLE`] bytes; vfio-core's for a range outside `to`
    /// or above the device's DMA limit; [`Error::Timeout`], after which the
    /// device does no more DMA.
    pub fn copy_from_device(
        &mut self,
        at: usize,
        to: &mut impl DmaTargetMut,
        len: usize,
    ) -> Result<()> {
        let ram = to.dma_range_below(self.container(), 0, len, self.dma_limit())?;
        self.transfer(true, ram, at, len)?;
        to.device_wrote(0, len);
        Ok(())
    }

    /// Programs one transfer between RAM at IOVA `ram` and the device buffer
    /// at `at`, and waits for it; stops DMA when it does not end.
    fn transfer(&mut self, to_ram: bool, ram: u64, at: usize, len: usize) -> Result<()> {
        let buffer = buffer(at, len)?;
        if !self.device.bus_master_enabled()? || self.dma_running() {
            return Err(self.bad(
                "DMA was stopped after a transfer that did not end; open the device again".into(),
            ));
        }
        let (what, source, destination, direction) = match to_ram {
            false => ("a DMA from RAM", ram, buffer, 0),
            true => ("a DMA to RAM", buffer, ram, dma_command::TO_RAM),
        };
        let bar = &self.bar0;
        bar.write64(regs::DMA_SOURCE_ADDRESS, source);
        bar.write64(regs::DMA_DESTINATION_ADDRESS, destination);
        bar.write64(regs::DMA_TRANSFER_COUNT, len as u64);
        let mut command = dma_command::START | direction;
        if self.irqs.is_some() {
            command |= dma_command::RAISE_INTERRUPT;
        }
        bar.write64(regs::DMA_COMMAND, command);
        let done = self.wait_done(what, interrupt::DMA, |edu| Ok(edu.dma_running()));
        if done.is_err() && self.device.quiesce().is_err() {
            log::error!(
                "edu {}: {what} may still write memory the caller gets back; aborting",
                self.address()
            );
            std::process::abort();
        }
        done
    }

    fn dma_running(&self) -> bool {
        dma_running(&self.bar0)
    }

    fn bad(&self, what: String) -> Error {
        Error::Device(self.address(), what)
    }

    fn timed_out(&self, what: &str) -> Error {
        Error::Timeout(self.address(), what.into(), self.timeout)
    }
}

/// Quiesces the device before the memory it was given can go: the step set
/// in [`Edu::new`] (a transfer in flight ends), then bus mastering off.
/// Interrupts are disabled after (the field's own drop).
impl Drop for Edu {
    fn drop(&mut self) {
        if let Err(e) = self.device.quiesce() {
            log::error!("edu {}: could not be stopped ({e})", self.address());
        }
    }
}

fn dma_running(bar0: &Mmio) -> bool {
    bar0.read64(regs::DMA_COMMAND) & dma_command::START != 0
}

/// edu's quiesce step ([`Quiesce::Custom`]): wait for a transfer in flight
/// to end. A register proves nothing while memory decoding is off (it reads
/// 0), so that is an error: only bus mastering off is left.
fn wait_dma_idle(device: &Device, timeout: Duration) -> vfio_core::Result<()> {
    if !device.memory_enabled()? {
        return Err(vfio_core::Error::InvalidArgument(format!(
            "edu {}: memory decoding is off, so whether DMA has ended cannot be read",
            device.address()
        )));
    }
    let bar0 = device.map_bar(0)?;
    poll::until("edu's DMA to end", timeout, || {
        (!dma_running(&bar0)).then_some(())
    })
}

fn check_ids(addr: PciAddress, vendor: u16, device: u16) -> Result<()> {
    match (vendor, device) {
        (regs::VENDOR_ID, regs::DEVICE_ID) => Ok(()),
        _ => Err(Error::NotEdu(addr, vendor, device)),
    }
}

/// The device address of `len` bytes at `at` of the device buffer, inside
/// the part a transfer may reach (QEMU 7.2).
fn buffer(at: usize, len: usize) -> Result<u64> {
    match at.checked_add(len) {
        Some(end) if len > 0 && end <= regs::BUFFER_USABLE => Ok(regs::BUFFER_ADDRESS + at as u64),
        _ => Err(Error::InvalidArgument(format!(
            "{len} bytes at {at:#x}: a transfer is 1 to 4095 bytes inside the device buffer's first 4095"
        ))),
    }
}
