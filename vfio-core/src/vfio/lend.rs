//! Memory lent to a device until it is quiesced: [`Lent`], [`Quiesce`].

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::stop::Attempt;
use super::Device;
use crate::dma::{DmaMemory, DmaTarget};
use crate::Result;

/// Memory parked with a device: freed by its next quiesce, or leaked.
trait Parked: Send {
    fn leak(self: Box<Self>);
}
impl<T: DmaTarget> Parked for T {
    fn leak(self: Box<Self>) {
        DmaTarget::leak(*self)
    }
}

/// A driver's own quiesce step ([`Quiesce::Custom`]).
pub type QuiesceStep = Box<dyn FnMut(&Device) -> Result<()> + Send>;

/// How [`Device::quiesce`] stops a device so that it forgets every address it
/// was given ([`Device::set_quiesce`]).
#[non_exhaustive]
pub enum Quiesce {
    /// VFIO_DEVICE_RESET (FLR, PM or bus reset): the device forgets all its
    /// state. The default for devices VFIO can reset.
    Reset,
    /// Clear Bus Master Enable: the device may start no DMA from then on.
    /// The default for devices without a reset. It does not make the device
    /// forget an address: a driver that turns bus mastering back on must
    /// first program the device afresh (or make sure it holds no pending
    /// DMA), or use [`Quiesce::Custom`].
    BusMasterOff,
    /// The driver's own step (e.g. wait until the DMA engine is idle and
    /// clear its address registers), then clearing Bus Master Enable, which
    /// is what the quiesce rests on: it succeeds when the bit reads back
    /// clear, even if the step failed (logged). A step that succeeds leaves
    /// the device holding no address it was given, so that bus mastering
    /// may go back on.
    Custom(QuiesceStep),
}

impl fmt::Debug for Quiesce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quiesce::Reset => "Reset",
            Quiesce::BusMasterOff => "BusMasterOff",
            Quiesce::Custom(_) => "Custom(..)",
        })
    }
}

/// A device's loans: how often it was quiesced, what is lent, and what was
/// dropped while lent.
///
/// A quiesce takes a number when it begins (`begun`) and, once the device is
/// stopped, records it (`done`). A loan remembers `begun` when it is made;
/// it has ended once a quiesce that began after it is done (`done > since`).
/// Numbering at the start, not the end, is what makes a loan made while a
/// quiesce is under way wait for the next one.
#[derive(Default)]
pub(super) struct Loans {
    /// Quiesces begun so far.
    begun: AtomicU64,
    /// The number of the latest quiesce that completed.
    done: AtomicU64,
    /// `Lent` handles alive.
    outstanding: AtomicUsize,
    /// Memory whose `Lent` was dropped before its loan ended, with the loan's
    /// `since`: freed by a quiesce that began after the loan.
    /// Its lock also orders parking against [`Loans::abandon`].
    parked: Mutex<Vec<(u64, Box<dyn Parked>)>>,
    /// Set (under `parked`'s lock) when the device is gone without a
    /// successful quiesce: what is still lent is leaked, not freed.
    abandoned: AtomicBool,
}

impl fmt::Debug for Loans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loans")
            .field("begun", &self.begun)
            .field("done", &self.done)
            .field("outstanding", &self.outstanding)
            .field("abandoned", &self.abandoned)
            .finish_non_exhaustive()
    }
}

impl Loans {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Box<dyn Parked>)>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps memory whose loan has not ended; leaks it if the device is gone.
    fn park<T: DmaTarget>(&self, since: u64, mem: T) {
        let mut parked = self.lock();
        if self.abandoned.load(Ordering::Acquire) {
            drop(parked);
            mem.leak();
        } else {
            parked.push((since, Box::new(mem)));
        }
    }

    pub(super) fn busy(&self) -> bool {
        self.outstanding.load(Ordering::Acquire) > 0 || !self.lock().is_empty()
    }

    /// A quiesce begins: its number.
    fn begin(&self) -> u64 {
        self.begun.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Quiesce `n` succeeded: every loan made before it began has ended, and
    /// memory parked by those loans is freed.
    fn quiesced(&self, n: u64) {
        self.done.fetch_max(n, Ordering::AcqRel);
        let freed: Vec<_> = {
            let mut parked = self.lock();
            let (freed, kept) = std::mem::take(&mut *parked)
                .into_iter()
                .partition(|(since, _)| *since < n);
            *parked = kept;
            freed
        };
        drop(freed);
    }

    /// Whether a loan made when `begun` was `since` has ended.
    fn ended(&self, since: u64) -> bool {
        self.done.load(Ordering::Acquire) > since
    }

    /// The device is gone and could not be quiesced: what it was lent stays
    /// allocated and mapped for good (counted in [`crate::dma::leaked`]).
    pub(super) fn abandon(&self) {
        let parked = {
            let mut parked = self.lock();
            self.abandoned.store(true, Ordering::Release);
            std::mem::take(&mut *parked)
        };
        for (_, mem) in parked {
            mem.leak();
        }
    }
}

/// Memory lent to a device ([`Device::lend`]): it cannot be freed, returned
/// to its pool or borrowed as a slice until the device has been quiesced.
///
/// A queue-based driver (NVMe, the NICs) owns the memory its device may
/// write inside its queues and stops the device in its own `Drop`. A driver
/// that hands a device addresses through registers (a DMA engine, a
/// doorbell-less accelerator) has no queue to keep the memory in; `Lent` is
/// that keeper, for any device:
///
/// - [`Device::lend`] moves the memory in and returns a [`Lent`] handle that
///   gives out its IOVA (and, for [`DmaMemory`], its atomic accessors) but
///   no `&mut`, no slice, and no way to drop it back to a pool or the
///   allocator.
/// - [`Lent::reclaim`] gives the memory back only once the device was
///   quiesced ([`Device::quiesce`]) after the loan began.
/// - A `Lent` dropped earlier parks its memory with the device; the next
///   quiesce frees it. Dropping the [`Device`] quiesces it first when any
///   memory is lent or parked, and if that quiesce fails, the memory is
///   leaked on purpose and counted ([`crate::dma::leaked`]), never freed.
///
/// What each rule rests on:
///
/// - **The compiler**: lent memory is moved into the `Lent` (the caller's
///   binding is gone); `Lent` has no accessor that writes through `&mut` or
///   hands out `&[u8]`; the memory leaves only through `reclaim`.
/// - **Run time**: `reclaim` compares the device's quiesce count with the
///   one at the loan; `Drop` parks rather than frees.
/// - **The quiesce step**: that the device has really forgotten the address
///   ([`Quiesce`] says what each step guarantees), and the IOMMU: a driver
///   that copies an IOVA out as a plain `u64` and programs the device with it
///   again later is beyond what types can see; the IOMMU still keeps the
///   device inside its container's memory.
///
/// ```compile_fail,E0382
/// // Lent memory is gone from the caller: it cannot be written or dropped.
/// # fn f(device: &vfio_core::vfio::Device, pool: &std::sync::Arc<vfio_core::dma::BufferPool>) {
/// let mut buf = pool.alloc().unwrap();
/// let lent = device.lend(buf);
/// buf.as_mut_slice()[0] = 1;
/// # }
/// ```
///
/// ```compile_fail,E0599
/// // Nor does the loan hand out a slice of what the device may be writing.
/// # fn f(device: &vfio_core::vfio::Device, pool: &std::sync::Arc<vfio_core::dma::BufferPool>) {
/// let lent = device.lend(pool.alloc().unwrap());
/// let bytes: &[u8] = lent.as_slice();
/// # }
/// ```
///
/// ```no_run
/// use vfio_core::dma::{Backing, DmaMemory};
///
/// # fn main() -> vfio_core::Result<()> {
/// # let container = vfio_core::vfio::Container::new()?;
/// let device = container.open_device("0000:00:05.0".parse()?)?;
/// let mem = device.lend(DmaMemory::new(&container, 4096, Backing::Auto)?);
/// // ... write mem.iova() into the device's DMA address register, start it ...
/// device.quiesce()?;                 // reset (or the driver's own step)
/// let mem = mem.reclaim().unwrap();  // the device holds no address of it now
/// # let _ = mem; Ok(()) }
/// ```
pub struct Lent<T: DmaTarget> {
    /// `None` only after `reclaim` took it.
    mem: Option<T>,
    /// The device's quiesce count when the loan began.
    since: u64,
    loans: Arc<Loans>,
}

impl<T: DmaTarget> fmt::Debug for Lent<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lent")
            .field("iova", &format_args!("{:#x}", self.mem().iova()))
            .field("len", &self.mem().dma_len())
            .field("ended", &self.ended())
            .finish()
    }
}

impl Device {
    /// Lends `mem` to this device: the returned handle keeps it allocated
    /// and mapped, and away from the CPU's writes, until the device has been
    /// quiesced ([`Device::quiesce`]). See [`Lent`].
    pub fn lend<T: DmaTarget>(&self, mem: T) -> Lent<T> {
        self.loans.outstanding.fetch_add(1, Ordering::AcqRel);
        Lent {
            mem: Some(mem),
            since: self.loans.begun.load(Ordering::Acquire),
            loans: Arc::clone(&self.loans),
        }
    }

    /// Chooses how [`Device::quiesce`] stops this device (default:
    /// [`Quiesce::Reset`] when VFIO can reset it, else
    /// [`Quiesce::BusMasterOff`]).
    pub fn set_quiesce(&self, how: Quiesce) {
        *self.quiesce.lock().unwrap_or_else(PoisonError::into_inner) = Some(how);
    }

    /// Stops the device as [`Device::set_quiesce`] chose, so that it holds
    /// no address it was given: every loan made before this call ends
    /// ([`Lent::reclaim`] succeeds) and memory parked by dropped loans is
    /// freed. Run by `Drop` when anything is lent. It runs the same
    /// sequence as [`Device::stop_dma`]: a [`Quiesce::Reset`] that fails
    /// falls back to bus mastering off, and a [`Quiesce::Custom`] step that
    /// fails or panics still ends with it (the panic is resumed after the
    /// loans are settled).
    ///
    /// # Errors
    ///
    /// Bus mastering could not be turned off after the step failed (or for
    /// [`Quiesce::BusMasterOff`]): [`crate::Error::Unsupported`] for a
    /// bus-master bit that stays set, or the error reading config space.
    /// Loans stay in force then.
    pub fn quiesce(&self) -> Result<()> {
        // Only a failure to turn bus mastering off fails the quiesce.
        let (_, bus_master) = self.quiesce_quietly().finish(self, "quiesce");
        bus_master.map_or(Ok(()), Err)
    }

    /// The quiesce's sequence, logging nothing and with the step's panic
    /// caught.
    fn quiesce_quietly(&self) -> Attempt<crate::Error> {
        let mut how = self.quiesce.lock().unwrap_or_else(PoisonError::into_inner);
        let n = self.loans.begin();
        let attempt = match how.get_or_insert_with(|| self.default_quiesce()) {
            Quiesce::Reset => self.stop_sequence(false, Some(|| self.reset()), || {}),
            Quiesce::BusMasterOff => self.stop_sequence(false, None::<fn() -> Result<()>>, || {}),
            Quiesce::Custom(step) => self.stop_sequence(
                false,
                Some(|| {
                    step(self)?;
                    self.disable_bus_master()
                }),
                || {},
            ),
        };
        if attempt.stopped.memory_reusable() {
            self.loans.quiesced(n);
        }
        attempt
    }

    /// Lent or parked memory still depends on this device: quiesce, or
    /// give the memory up for good if the device cannot be stopped. The
    /// memory is settled before anything is logged or a panic resumed.
    pub(super) fn end_loans(&self) {
        if !self.loans.busy() {
            return;
        }
        let attempt = self.quiesce_quietly();
        if !attempt.stopped.memory_reusable() {
            self.loans.abandon();
        }
        attempt.finish(self, "quiesce before the device is dropped");
    }
}

impl<T: DmaTarget> Lent<T> {
    pub(crate) fn mem(&self) -> &T {
        self.mem
            .as_ref()
            .expect("a Lent holds its memory until reclaimed")
    }

    /// Whether the device was quiesced since the loan began (so that
    /// [`Lent::reclaim`] succeeds).
    pub fn ended(&self) -> bool {
        self.loans.ended(self.since)
    }

    /// The memory back, once the device was quiesced after the loan began;
    /// the loan itself otherwise.
    ///
    /// # Errors
    ///
    /// `Err(self)` while the loan has not ended ([`Lent::ended`]).
    pub fn reclaim(mut self) -> std::result::Result<T, Lent<T>> {
        if !self.ended() {
            return Err(self);
        }
        Ok(self
            .mem
            .take()
            .expect("a Lent holds its memory until reclaimed"))
    }

    /// IOVA of byte 0 (what the device is told).
    pub fn iova(&self) -> u64 {
        self.mem().iova()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.mem().dma_len()
    }

    /// True when the memory is empty (never, for memory a container mapped).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Lent<DmaMemory> {
    /// The memory, for its atomic reads (and writes the device expects) while
    /// it is lent: [`DmaMemory`] gives out no reference to its bytes, so this
    /// is sound while the device writes it.
    pub fn memory(&self) -> &DmaMemory {
        self.mem()
    }
}

impl<T: DmaTarget> Drop for Lent<T> {
    fn drop(&mut self) {
        let Some(mem) = self.mem.take() else {
            self.loans.outstanding.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        if self.ended() {
            drop(mem); // the device was quiesced since: the memory goes back
        } else {
            self.loans.park(self.since, mem);
        }
        self.loans.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::dma::{Backing, BufferPool};
    use crate::mmio::{RegisterFile, SharedModel};
    use crate::vfio::Container;
    use crate::Error;

    const BUS_MASTER: u64 = 1 << 2;

    /// A device model with bus mastering on, and its config space to look at.
    fn device(container: &Arc<Container>) -> (Device, Arc<Mutex<RegisterFile>>) {
        let config = Arc::new(Mutex::new(RegisterFile::new(256)));
        config.lock().unwrap().set(0x04, 2, 0x6); // memory + bus master
        let shared: SharedModel = config.clone();
        let device =
            Device::from_models(container, "00:05.0".parse().unwrap(), (256, shared), vec![])
                .unwrap();
        (device, config)
    }

    fn bus_master(config: &Mutex<RegisterFile>) -> bool {
        config.lock().unwrap().get(0x04, 2) & BUS_MASTER != 0
    }

    #[test]
    fn memory_comes_back_only_after_a_quiesce() {
        let container = Container::unbacked();
        let (device, config) = device(&container);
        let pool = BufferPool::new(&container, 2048, 4).unwrap();
        let lent = device.lend(pool.alloc().unwrap());
        assert!(!lent.ended());
        let lent = lent.reclaim().expect_err("the device was not quiesced");
        assert_eq!(pool.free_count(), 3);
        device.quiesce().unwrap();
        assert!(!bus_master(&config), "a model has no reset: bus master off");
        assert!(lent.ended());
        let buf = lent.reclaim().expect("quiesced since the loan");
        drop(buf);
        assert_eq!(pool.free_count(), 4);
    }

    #[test]
    fn a_loan_made_after_the_quiesce_has_not_ended() {
        let container = Container::unbacked();
        let (device, _) = device(&container);
        let pool = BufferPool::new(&container, 2048, 4).unwrap();
        device.quiesce().unwrap();
        let lent = device.lend(pool.alloc().unwrap());
        assert!(!lent.ended());
        assert!(lent.reclaim().is_err());
    }

    #[test]
    fn a_dropped_loan_is_parked_until_the_next_quiesce() {
        let container = Container::unbacked();
        let (device, _) = device(&container);
        let pool = BufferPool::new(&container, 2048, 4).unwrap();
        drop(device.lend(pool.alloc().unwrap()));
        assert_eq!(pool.free_count(), 3, "parked, not back in the pool");
        device.quiesce().unwrap();
        assert_eq!(pool.free_count(), 4);
    }

    #[test]
    fn dropping_the_device_quiesces_it_when_memory_is_lent() {
        let container = Container::unbacked();
        let (device, config) = device(&container);
        let pool = BufferPool::new(&container, 2048, 4).unwrap();
        let lent = device.lend(pool.alloc().unwrap());
        drop(device.lend(pool.alloc().unwrap()));
        drop(device);
        assert!(!bus_master(&config));
        assert_eq!(pool.free_count(), 3, "the parked one is freed");
        assert!(lent.ended());
        drop(lent);
        assert_eq!(pool.free_count(), 4);
    }

    #[test]
    fn dropping_an_idle_device_touches_nothing() {
        let container = Container::unbacked();
        let (device, config) = device(&container);
        drop(device);
        assert!(bus_master(&config), "nothing lent: no quiesce");
    }

    #[test]
    fn a_custom_step_runs_before_bus_mastering_goes_off() {
        let container = Container::unbacked();
        let (device, config) = device(&container);
        let saw_master = Arc::new(AtomicBool::new(false));
        let saw = Arc::clone(&saw_master);
        device.set_quiesce(Quiesce::Custom(Box::new(move |d: &Device| {
            saw.store(d.bus_master_enabled()?, Ordering::Relaxed);
            Ok(())
        })));
        let mem = device.lend(DmaMemory::new(&container, 4096, Backing::Pages).unwrap());
        mem.memory().write::<u32>(0, 7); // atomic access while lent
        device.quiesce().unwrap();
        assert!(saw_master.load(Ordering::Relaxed));
        assert!(!bus_master(&config));
        assert_eq!(mem.reclaim().unwrap().read::<u32>(0), 7);
    }

    /// Config space whose command register keeps Bus Master Enable set.
    #[derive(Debug)]
    struct StuckMaster(RegisterFile);
    impl crate::mmio::RegisterModel for StuckMaster {
        fn read(&mut self, offset: usize, size: usize) -> u64 {
            self.0.read(offset, size)
        }
        fn write(&mut self, offset: usize, size: usize, value: u64) {
            let keep = if offset == 0x04 { BUS_MASTER } else { 0 };
            self.0.write(offset, size, value | keep);
        }
    }

    #[test]
    fn a_failed_step_still_ends_the_loan_once_bus_mastering_is_off() {
        let container = Container::unbacked();
        let (device, config) = device(&container);
        device.set_quiesce(Quiesce::Custom(Box::new(|d: &Device| {
            Err(Error::Unsupported {
                addr: d.address(),
                what: "DMA engine stays busy".into(),
            })
        })));
        let lent = device.lend(DmaMemory::new(&container, 4096, Backing::Pages).unwrap());
        device.quiesce().unwrap();
        assert!(!bus_master(&config));
        assert!(lent.reclaim().is_ok());
    }

    /// A device model whose Bus Master Enable stays set.
    fn stuck_device(container: &Arc<Container>) -> Device {
        let mut file = RegisterFile::new(256);
        file.set(0x04, 2, 0x6);
        let config: SharedModel = Arc::new(Mutex::new(StuckMaster(file)));
        Device::from_models(container, "00:06.0".parse().unwrap(), (256, config), vec![]).unwrap()
    }

    #[test]
    fn memory_of_a_device_that_cannot_be_quiesced_is_leaked_not_freed() {
        let container = Container::unbacked();
        let device = stuck_device(&container);
        let pool = BufferPool::new(&container, 2048, 4).unwrap();
        let lent = device.lend(pool.alloc().unwrap());
        drop(device.lend(pool.alloc().unwrap()));
        let leaked = crate::dma::leaked();
        let err = device.quiesce().unwrap_err();
        assert!(err.to_string().contains("Bus Master Enable"), "{err}");
        let lent = lent.reclaim().expect_err("not quiesced");
        drop(device); // quiesce fails again: everything is given up
        drop(lent);
        assert_eq!(pool.free_count(), 2, "neither buffer came back");
        assert!(crate::dma::leaked() >= leaked + 2);
    }

    #[test]
    fn a_loan_made_while_a_quiesce_is_under_way_waits_for_the_next() {
        let container = Container::unbacked();
        let (device, _) = device(&container);
        let pool = BufferPool::new(&container, 2048, 4).unwrap();
        let during: Arc<Mutex<Option<Lent<_>>>> = Arc::default();
        let (slot, lender, first) = (
            Arc::clone(&during),
            Arc::clone(&pool),
            AtomicBool::new(true),
        );
        device.set_quiesce(Quiesce::Custom(Box::new(move |d: &Device| {
            // Lent after the step began: the device may be given its address
            // after it was stopped.
            if first.swap(false, Ordering::Relaxed) {
                *slot.lock().unwrap() = Some(d.lend(lender.alloc().unwrap()));
            }
            Ok(())
        })));
        device.quiesce().unwrap();
        let lent = during.lock().unwrap().take().unwrap();
        assert!(!lent.ended(), "lent during the quiesce, so not ended by it");
        drop(lent);
        assert_eq!(pool.free_count(), 3, "parked until a later quiesce");
        device.quiesce().unwrap();
        assert_eq!(pool.free_count(), 4);
    }

    #[test]
    fn a_panicking_step_still_turns_bus_mastering_off_before_the_panic_goes_on() {
        let container = Container::unbacked();
        let (device, config) = device(&container);
        device.set_quiesce(Quiesce::Custom(Box::new(|_: &Device| {
            panic!("a driver bug")
        })));
        let lent = device.lend(DmaMemory::new(&container, 4096, Backing::Pages).unwrap());
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| device.quiesce()));
        assert!(unwound.is_err(), "the step's panic is resumed");
        assert!(!bus_master(&config), "bus mastering went off first");
        assert!(lent.ended(), "bus master off ends the loan");
        assert!(lent.reclaim().is_ok());
    }

    #[test]
    fn a_panicking_step_in_drop_leaks_what_a_stuck_device_was_lent() {
        let container = Container::unbacked();
        let device = stuck_device(&container);
        device.set_quiesce(Quiesce::Custom(Box::new(|_: &Device| {
            panic!("a driver bug")
        })));
        let pool = BufferPool::new(&container, 2048, 4).unwrap();
        let lent = device.lend(pool.alloc().unwrap());
        drop(device.lend(pool.alloc().unwrap()));
        let leaked = crate::dma::leaked();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(device)));
        assert!(unwound.is_err(), "the step's panic is resumed");
        drop(lent);
        assert_eq!(pool.free_count(), 2, "neither buffer came back to the pool");
        assert!(crate::dma::leaked() >= leaked + 2);
    }

    #[test]
    fn a_function_open_in_this_process_cannot_be_opened_again_until_dropped() {
        let container = Container::unbacked();
        let (device, _) = device(&container);
        let config: SharedModel = Arc::new(Mutex::new(RegisterFile::new(256)));
        let again =
            Device::from_models(&container, device.address(), (256, config.clone()), vec![]);
        let err = again.expect_err("00:05.0 is open already");
        assert!(matches!(err, Error::AlreadyOpen { addr } if addr == device.address()));
        assert!(
            err.to_string()
                .contains("0000:00:05.0 is already open in this process"),
            "{err}"
        );
        drop(device);
        Device::from_models(
            &container,
            "00:05.0".parse().unwrap(),
            (256, config),
            vec![],
        )
        .expect("free again once the first is dropped");
    }
}
