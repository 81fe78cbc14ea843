//! DMA memory: pinned host memory mapped into the IOMMU at IOVAs the
//! container allocates, and buffer pools cut from it.
//!
//! - [`DmaMemory`]: one region (a descriptor ring, a large transfer), read
//!   and written with relaxed atomic word accesses and byte copies, so that
//!   threads (and software device models) racing on it are not a data race
//!   in Rust's memory model; ordering against the device is the drivers'
//!   fences.
//! - [`BufferPool`]: one region cut into equal [`Buffer`]s (packets, blocks);
//!   a buffer can become a read-only [`SharedBuffer`] with several owners.
//! - [`RawDma`]: an IOVA range that `unsafe` code vouches for.
//! - [`DmaTarget`], [`DmaTargetMut`]: what a driver takes to give any of
//!   these to a device.
//!
//! Every mapping of a container is readable and writable by every device
//! open in it: the IOMMU keeps devices out of other memory, not out of one
//! another's buffers in the same container.
//!
//! # IOVA allocation
//!
//! Each [`DmaMemory`] (and each pool, which is one `DmaMemory`) is one IOMMU
//! mapping at IOVAs the container allocates:
//!
//! - first fit, lowest address first: the lowest free range that holds the
//!   whole region, from 1 MiB up (nothing is mapped below 1 MiB, so a stray
//!   zero or small pointer faults);
//! - inside the ranges the IOMMU reports valid
//!   ([`Container::iova_ranges`]); on x86 these skip the MSI window at
//!   `0xfee00000..=0xfeefffff`;
//! - aligned to 1 GiB or 2 MiB when the region's length is a multiple of
//!   that, else to 4 KiB ([`DmaMemory::new`]);
//! - freed IOVAs go back to the allocator (merged with free neighbours) and
//!   are reused, once the memory is unmapped.
//!
//! A device that reaches only some bits of bus address (QEMU's `edu`: 28;
//! many others 32 or 48) needs its memory below [`dma_mask`]`(bits)`:
//! [`DmaMemory::new_below`] and [`BufferPool::new_below`] allocate there, and
//! [`DmaTarget::dma_range_below`] refuses memory above it that a caller hands
//! a driver. Allocate such a device's memory before large regions and pools
//! of other devices in the same container, which otherwise take the low
//! IOVAs first ([`Error::DmaLimitExhausted`] says so when nothing fits).
//!
//! ```
//! use vfio_core::dma::{dma_mask, Backing, DmaMemory};
//!
//! # fn main() -> vfio_core::Result<()> {
//! # #[cfg(feature = "testing")] {
//! # let container = vfio_core::vfio::Container::unbacked();
//! let low = DmaMemory::new_below(&container, 64 << 10, Backing::Pages, dma_mask(28))?;
//! assert!(low.iova() + low.len() as u64 - 1 <= dma_mask(28));
//! assert!(DmaMemory::new_below(&container, 4096, Backing::Pages, 0xfffff).is_err()); // below 1 MiB
//! # }
//! # Ok(()) }
//! ```
//!
//! # Who may touch DMA memory, and when
//!
//! What the compiler enforces (for drivers written without `unsafe`):
//!
//! - A device is given memory only through [`DmaTarget`] (it may read it) or
//!   [`DmaTargetMut`] (it may write it). Both traits are sealed: they are
//!   implemented by [`DmaMemory`], pool [`Buffer`]s and (read-only)
//!   [`SharedBuffer`]s, so safe code cannot make up an IOVA. The one way to
//!   name an arbitrary IOVA range is the `unsafe` [`RawDma::new`].
//! - Memory a device writes is moved into the queue that submits the command
//!   (by value) or borrowed by `&mut` for a call that returns only once the
//!   device is done with it; no `&[u8]` to it can be alive meanwhile. Memory
//!   a device only reads may be shared, but the types that share it give out
//!   `&[u8]` only.
//! - None of the traits is implemented for references, so memory a queue
//!   keeps past a call is owned by it: `mem::forget` of a queue leaks that
//!   memory (it stays mapped) rather than handing it back.
//!
//! What is checked at run time:
//!
//! - A target from another container is refused ([`DmaTarget::dma_range`]):
//!   its IOVAs mean nothing, or something else, to this device.
//! - Drivers quiesce their devices before memory returns to a pool or to the
//!   allocator (see each driver's `Drop`); what they cannot prove idle they
//!   leak on purpose. Memory given to a device through registers rather
//!   than a queue is lent to it ([`Device::lend`](crate::vfio::Device::lend)):
//!   it comes back only after [`Device::quiesce`](crate::vfio::Device::quiesce),
//!   a count compared at run time (see [`Lent`](crate::vfio::Lent)).
//!
//! What the IOMMU enforces: a device reaches only memory mapped in its
//! container, whatever it is told; a bad IOVA faults instead of reaching
//! other memory of the process or of the machine.
//!
//! ```compile_fail,E0277
//! // Safe code cannot point a device at an IOVA of its choosing.
//! struct MyIova;
//! impl vfio_core::dma::DmaTarget for MyIova {
//!     fn iova(&self) -> u64 { 0x10_0000 }
//!     fn dma_len(&self) -> usize { 4096 }
//!     fn container(&self) -> &std::sync::Arc<vfio_core::vfio::Container> { unimplemented!() }
//! }
//! ```
//!
//! ```compile_fail,E0277
//! // A shared (read-only) buffer cannot be given to a device to write.
//! fn device_writes(_: impl vfio_core::dma::DmaTargetMut) {}
//! fn try_it(b: vfio_core::dma::SharedBuffer) { device_writes(b) }
//! ```
//!
//! ```compile_fail,E0277
//! // Nor can a borrowed buffer be handed over by value: a queue could keep it
//! // past the borrow (mem::forget of the queue would end the borrow).
//! fn device_writes(_: impl vfio_core::dma::DmaTargetMut) {}
//! fn try_it(b: &mut vfio_core::dma::Buffer) { device_writes(b) }
//! ```

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

mod cache;
mod iova;
mod memory;
mod pool;
mod provenance;

pub use cache::BufferCache;
pub(crate) use iova::IovaAllocator;
pub(crate) use memory::MappedPtr;
pub use memory::{Backing, DmaMemory, DmaWord, DmaWords, PageKind, RawDma};
pub use pool::{Buffer, BufferPool, SharedBuffer};
pub use provenance::{BytesByWriter, Writer};

use crate::vfio::Container;
use crate::{Error, Result};

/// Why [`DmaTarget::dma_range`] refused `offset..offset + len` of `mem`
/// for `container` (the first check it fails).
#[cold]
fn dma_range_error<T: DmaTarget + ?Sized>(
    mem: &T,
    container: &Arc<Container>,
    offset: usize,
    len: usize,
) -> Error {
    if !Arc::ptr_eq(mem.container(), container) {
        return Error::InvalidArgument(format!(
            "DMA memory at IOVA {:#x} belongs to another VFIO container; a device reaches only memory of its own container",
            mem.iova()
        ));
    }
    Error::InvalidArgument(format!(
        "{len} bytes at offset {offset} reach past the end of {} bytes of DMA memory",
        mem.dma_len()
    ))
}

mod sealed {
    pub trait Sealed {}
}

/// The highest bus address a device with `bits` address bits reaches: the
/// `limit` of [`DmaMemory::new_below`], [`BufferPool::new_below`] and
/// [`DmaTarget::dma_range_below`]. 64 bits or more reach every address.
///
/// ```
/// use vfio_core::dma::dma_mask;
///
/// assert_eq!(dma_mask(28), 0x0fff_ffff); // QEMU's edu device
/// assert_eq!(dma_mask(32), 0xffff_ffff);
/// assert_eq!(dma_mask(64), u64::MAX);
/// ```
pub const fn dma_mask(bits: u32) -> u64 {
    if bits >= u64::BITS {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

/// Memory a device may read: an IOVA in a container and a length. Drivers
/// take any of these as the source of a transfer, so data goes out from where
/// the caller has it (a pool buffer another device filled, a large region)
/// with no copy. Sealed: see the [module docs](self). `Send + 'static`, so
/// that memory a driver must give up on can be moved to [`leaked`]'s
/// quarantine.
pub trait DmaTarget: sealed::Sealed + Send + 'static {
    /// IOVA of byte 0.
    fn iova(&self) -> u64;
    /// Length in bytes.
    fn dma_len(&self) -> usize;
    /// The container whose IOMMU maps it.
    fn container(&self) -> &Arc<Container>;

    /// Who last wrote `len` bytes at `offset`: [`Writer::Device`] only if a
    /// driver recorded a device writing all of them
    /// ([`DmaTargetMut::device_wrote`]) and the CPU has not written the
    /// memory since. Pool buffers keep that record; other memory always
    /// answers [`Writer::Cpu`] (see [`Writer`]). Drivers count
    /// what they hand to a device with this, so a copy shows up in their
    /// figures.
    fn writer(&self, offset: usize, len: usize) -> Writer {
        let _ = (offset, len);
        Writer::Cpu
    }

    /// The IOVA of `len` bytes at `offset`, for a device of `container`:
    /// what a driver writes into a descriptor or register, checked.
    ///
    /// ```no_run
    /// use vfio_core::dma::{BufferPool, DmaTarget};
    ///
    /// # fn main() -> vfio_core::Result<()> {
    /// # let container = vfio_core::vfio::Container::new()?;
    /// let nic = container.open_device("0000:00:04.0".parse()?)?;
    /// let pool = BufferPool::new(&container, 2048, 64)?;
    /// let buf = pool.try_alloc()?;
    /// // Where the device is to put a 1500-byte payload after a 14-byte header:
    /// let iova = buf.dma_range(nic.container(), 14, 1500)?;
    /// assert_eq!(iova, buf.iova() + 14);
    /// assert!(buf.dma_range(nic.container(), 0, 4096).is_err()); // past the end
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the memory lives in another container
    /// (`Arc::ptr_eq` fails) or `offset + len` reaches past its end.
    #[inline]
    fn dma_range(&self, container: &Arc<Container>, offset: usize, len: usize) -> Result<u64> {
        let inside = offset
            .checked_add(len)
            .is_some_and(|end| end <= self.dma_len());
        if Arc::ptr_eq(self.container(), container) && inside {
            return Ok(self.iova() + offset as u64);
        }
        Err(dma_range_error(self, container, offset, len))
    }

    /// As [`DmaTarget::dma_range`], and checked that the last of the `len`
    /// bytes (byte `offset` when `len` is 0) lies at or below `limit`: for a
    /// driver whose device reaches only some bits of bus address
    /// ([`dma_mask`]), so that memory a caller hands it that the device
    /// cannot reach is refused instead of being reached for at a truncated
    /// address.
    ///
    /// ```no_run
    /// use vfio_core::dma::{dma_mask, BufferPool, DmaTarget};
    ///
    /// # fn main() -> vfio_core::Result<()> {
    /// # let container = vfio_core::vfio::Container::new()?;
    /// let edu = container.open_device("0000:00:05.0".parse()?)?;
    /// let pool = BufferPool::new_below(&container, 4096, 16, dma_mask(28))?;
    /// let buf = pool.try_alloc()?;
    /// let iova = buf.dma_range_below(edu.container(), 0, 4096, dma_mask(28))?;
    /// assert_eq!(iova, buf.iova());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`DmaTarget::dma_range`]; [`Error::InvalidArgument`], naming
    /// the limit, when the bytes reach above `limit`.
    fn dma_range_below(
        &self,
        container: &Arc<Container>,
        offset: usize,
        len: usize,
        limit: u64,
    ) -> Result<u64> {
        let iova = self.dma_range(container, offset, len)?;
        let last = iova + len.saturating_sub(1) as u64;
        if last > limit {
            return Err(Error::InvalidArgument(format!(
                "{len} bytes of DMA memory at IOVA {iova:#x} reach up to {last:#x}, above the device's DMA limit {limit:#x} ({} address bits); \
                 allocate memory for this device with DmaMemory::new_below or BufferPool::new_below and that limit",
                u64::BITS - limit.leading_zeros()
            )));
        }
        Ok(iova)
    }

    /// Leaves the memory allocated, mapped and out of its pool for the rest
    /// of the process: what a driver does with memory a device may still
    /// write when it cannot prove the device idle. Counted in [`leaked`], not
    /// logged (the caller says why, once). The value is kept, never dropped, in a process-wide
    /// quarantine (not `mem::forget`): what it owns stays reachable, so a
    /// leak checker such as Miri's tells this from an accidental leak.
    fn leak(self)
    where
        Self: Sized,
    {
        // Quarantined and counted before anything can run that may panic;
        // the caller logs (once, not per buffer: see `Device::stop_dma`).
        QUARANTINE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(self));
        LEAKED.fetch_add(1, Ordering::Relaxed);
    }
}

static LEAKED: AtomicUsize = AtomicUsize::new(0);

/// Everything leaked through [`DmaTarget::leak`], never dropped.
static QUARANTINE: Mutex<Vec<Box<dyn Any + Send>>> = Mutex::new(Vec::new());

/// How many DMA regions and buffers were leaked on purpose
/// ([`DmaTarget::leak`], [`DmaMemory::leak_on_drop`]) because a device might
/// still write them: 0 unless a device could not be stopped.
pub fn leaked() -> usize {
    LEAKED.load(Ordering::Relaxed)
}

pub(crate) fn note_leak(iova: u64, len: usize) {
    LEAKED.fetch_add(1, Ordering::Relaxed);
    log::error!(
        "leaving {len} bytes of DMA memory at IOVA {iova:#x} allocated and mapped for good: a device may still write them"
    );
}

/// Memory a device may also write. Implemented only by types whose owner has
/// it exclusively ([`DmaMemory`], [`Buffer`]), never by shared or borrowed
/// ones: a queue that keeps it until the device is done owns it.
pub trait DmaTargetMut: DmaTarget {
    /// Records that a device wrote `len` bytes at `offset` (replacing any
    /// earlier record): a driver calls it when the command or descriptor
    /// that wrote the memory completed successfully, and with `len` 0 when
    /// it failed (then no byte is known to be the device's). Memory that
    /// keeps no record ignores it.
    fn device_wrote(&mut self, offset: usize, len: usize);
}

macro_rules! dma_target {
    ($($t:ty: $iova:expr, $len:expr $(, $writer:expr)?;)*) => {$(
        impl sealed::Sealed for $t {}
        impl DmaTarget for $t {
            #[inline]
            fn iova(&self) -> u64 {
                $iova(self)
            }
            #[inline]
            fn dma_len(&self) -> usize {
                $len(self)
            }
            #[inline]
            fn container(&self) -> &Arc<Container> {
                self.container()
            }
            $(#[inline]
            fn writer(&self, offset: usize, len: usize) -> Writer {
                $writer(self, offset, len)
            })?
        }
    )*};
}

dma_target! {
    DmaMemory: DmaMemory::iova, DmaMemory::len;
    Buffer: Buffer::iova, Buffer::capacity, Buffer::writer;
    SharedBuffer: SharedBuffer::iova, SharedBuffer::capacity, SharedBuffer::writer;
    RawDma: RawDma::iova, RawDma::len;
}

/// Memory lent to a device is still memory a device may read: it can be the
/// source of another device's transfer while lent.
impl<T: DmaTarget> sealed::Sealed for crate::vfio::Lent<T> {}
impl<T: DmaTarget> DmaTarget for crate::vfio::Lent<T> {
    fn iova(&self) -> u64 {
        self.mem().iova()
    }
    fn dma_len(&self) -> usize {
        self.mem().dma_len()
    }
    fn container(&self) -> &Arc<Container> {
        self.mem().container()
    }
    fn writer(&self, offset: usize, len: usize) -> Writer {
        self.mem().writer(offset, len)
    }
}

/// Keeps no record of device writes (its owner writes it through `&self`,
/// e.g. descriptor rings): always [`Writer::Cpu`].
impl DmaTargetMut for DmaMemory {
    fn device_wrote(&mut self, _offset: usize, _len: usize) {}
}
impl DmaTargetMut for Buffer {
    #[inline]
    fn device_wrote(&mut self, offset: usize, len: usize) {
        Buffer::device_wrote(self, offset, len)
    }
}
/// Keeps no record: always [`Writer::Cpu`].
impl DmaTargetMut for RawDma {
    fn device_wrote(&mut self, _offset: usize, _len: usize) {}
}
