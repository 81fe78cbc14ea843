//! Pinned host memory mapped into the IOMMU.
//!
//! The only place (with the pool's two slice constructors) where raw DMA
//! memory is touched. Every access through `&self` (words, byte copies, and
//! a software device model's DMA by IOVA) is a relaxed atomic load or store
//! of the accessed width (bytes copy as naturally aligned 8-byte words with
//! 1-, 2- and 4-byte pieces at the ends): the device may change the memory
//! at any time, and another thread of ours may access it too, so that such
//! accesses are not data races in Rust's memory model (which makes a racing
//! non-atomic or volatile access undefined behaviour). Relaxed atomics order
//! nothing: ordering against the device is the drivers' fences.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use nix::sys::mman::{madvise, mmap_anonymous, munmap, MapFlags, MmapAdvise, ProtFlags};

use crate::vfio::Container;
use crate::{Error, Result};

const PAGE: usize = 4096;
const HUGE_2M: usize = 2 << 20;
const HUGE_1G: usize = 1 << 30;

/// Which pages back DMA memory ([`DmaMemory::new`]). Hugepages mean fewer
/// IOMMU and TLB entries for the same memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backing {
    /// By size: a request of at most 1 MiB (half a 2 MiB hugepage: a
    /// descriptor ring, an NVMe queue, an identify buffer) gets ordinary
    /// 4 KiB pages, so that it does not take a whole hugepage; a larger one
    /// gets hugepages (1 GiB where the size is a multiple of 1 GiB and enough
    /// are free, else 2 MiB), or ordinary pages with a logged warning when
    /// none can be had.
    ///
    /// Each small request is still its own IOMMU mapping, not a piece of a
    /// shared arena: when it is freed its IOVAs are unmapped, so a late
    /// write by a device that was not stopped faults in the IOMMU instead of
    /// landing in memory that has been handed to someone else.
    ///
    /// ```
    /// use vfio_core::dma::{Backing, DmaMemory, PageKind};
    ///
    /// # fn main() -> vfio_core::Result<()> {
    /// # #[cfg(feature = "testing")] {
    /// # let container = vfio_core::vfio::Container::unbacked();
    /// let ring = DmaMemory::new(&container, 4096, Backing::Auto)?;
    /// assert_eq!(ring.page_kind(), PageKind::Normal);
    /// assert_eq!(ring.len(), 4096); // not rounded up to 2 MiB
    /// # }
    /// # Ok(()) }
    /// ```
    Auto,
    /// Hugepages as for a large `Auto` request, whatever the size (a 4 KiB
    /// request takes a whole 2 MiB hugepage), or
    /// [`Error::HugepagesExhausted`].
    Hugepages,
    /// Ordinary 4 KiB pages (the IOMMU makes them look contiguous to devices).
    Pages,
}

/// Largest request [`Backing::Auto`] backs with ordinary pages: half a 2 MiB
/// hugepage. Anything larger would waste less than half of its hugepages.
const AUTO_SMALL_MAX: usize = HUGE_2M / 2;

/// The pages [`Backing::Auto`] tries first for `size` bytes (it falls back to
/// ordinary pages when no hugepages can be had).
fn auto_page_kind(size: usize) -> PageKind {
    if size <= AUTO_SMALL_MAX {
        PageKind::Normal
    } else if size.is_multiple_of(HUGE_1G) {
        PageKind::Huge1G
    } else {
        PageKind::Huge2M
    }
}

/// The pages actually used ([`DmaMemory::page_kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageKind {
    /// 1 GiB hugepages.
    Huge1G,
    /// 2 MiB hugepages.
    Huge2M,
    /// Ordinary 4 KiB pages.
    Normal,
}

impl PageKind {
    /// Page size in bytes.
    pub fn size(self) -> usize {
        match self {
            PageKind::Huge1G => HUGE_1G,
            PageKind::Huge2M => HUGE_2M,
            PageKind::Normal => PAGE,
        }
    }
}

/// Plain integer types that may be read from device-written memory with any
/// bit pattern: `u8`, `u16`, `u32` and `u64` (sealed). Read and written in the
/// CPU's byte order, each as one relaxed atomic access of its own width
/// (`AtomicU8` .. `AtomicU64`), at an offset that is a multiple of its size.
pub trait DmaWord: Copy + sealed::Sealed {}
use sealed::Sealed as _;
mod sealed {
    /// The atomic access of a word's width.
    pub trait Sealed: Sized {
        /// Relaxed atomic load of the word at `p`.
        ///
        /// # Safety
        /// `p` is aligned to the word's size and points at live memory
        /// readable and writable for the word's size, which is only ever
        /// accessed atomically while another thread may access it.
        unsafe fn load(p: *const u8) -> Self;
        /// Relaxed atomic store of `value` at `p`.
        ///
        /// # Safety
        /// As for [`Sealed::load`].
        unsafe fn store(p: *mut u8, value: Self);
    }
}
macro_rules! dma_word {
    ($($t:ty => $atomic:ty),*) => { $(
        impl sealed::Sealed for $t {
            #[inline(always)]
            unsafe fn load(p: *const u8) -> $t {
                // SAFETY: the atomic has the word's size and (by the caller)
                // alignment, and the memory is live and only accessed
                // atomically meanwhile (the caller's promise).
                unsafe { <$atomic>::from_ptr(p.cast_mut().cast()).load(Ordering::Relaxed) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut u8, value: $t) {
                // SAFETY: as in `load`.
                unsafe { <$atomic>::from_ptr(p.cast()).store(value, Ordering::Relaxed) }
            }
        }
        impl DmaWord for $t {}
        const _: () = assert!(size_of::<$t>() == size_of::<$atomic>());
    )* };
}
dma_word!(u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64);

/// Pinned memory mapped into a container's IOMMU at an IOVA, readable and
/// writable by every device open in that container.
///
/// A device may write it at any time, so `DmaMemory` hands out no reference
/// to it: [`DmaMemory::read`], [`DmaMemory::write`] and the byte copies are
/// relaxed atomic accesses of the element's width (a word is one access,
/// whole; a byte copy is aligned 8-byte words with smaller pieces at its
/// ends). On x86 and ARM these are the plain loads and stores a volatile
/// access would be, and they are what makes `DmaMemory` honestly `Sync`:
/// two threads of ours, or a thread and a software device model, may read
/// and write the same bytes at once without a data race in Rust's memory
/// model. A racy read returns one of the values written (a word never
/// tears; a byte copy may mix two writes, a whole aligned 8-byte word at a
/// time).
///
/// What it does not do: relaxed accesses are ordered with nothing else, so
/// the order in which a device sees CPU writes (a descriptor before its
/// doorbell) and the CPU sees device writes (a done bit before the data)
/// still needs the fences the drivers use. And Rust's memory model (from
/// C++'s) leaves racing atomic accesses of different widths to overlapping
/// bytes undefined: threads that race on the same bytes should use the same
/// accesses (the same word type at the same offset, or the same byte range).
///
/// Dropping it unmaps it from the IOMMU and then frees it; when the unmap
/// fails (a device may still reach it) or [`DmaMemory::leak_on_drop`] was
/// called, it stays allocated instead, so nothing else is ever placed where a
/// device may write. Every [`DmaMemory`] holds its container, so the IOMMU
/// context outlives its mappings.
///
/// ```no_run
/// use vfio_core::dma::{Backing, DmaMemory};
///
/// # fn main() -> vfio_core::Result<()> {
/// # let container = vfio_core::vfio::Container::new()?;
/// # let _nvme = container.open_device("0000:00:03.0".parse()?)?;
/// let ring = DmaMemory::new(&container, 64 * 1024, Backing::Auto)?;
/// ring.write::<u64>(0, ring.iova());          // e.g. a descriptor's address field
/// let status: u32 = ring.read(8);             // a word the device may have written
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DmaMemory {
    ptr: NonNull<u8>,
    len: usize,
    iova: u64,
    kind: PageKind,
    container: Arc<Container>,
    /// Set by [`DmaMemory::leak_on_drop`].
    leak: AtomicBool,
}

// SAFETY: DmaMemory owns its mapping; all access through `&self` is relaxed
// atomic loads and stores of plain integers (never a data race, whichever
// threads make them), or goes through slices whose exclusivity the pool
// guarantees, so moving or sharing the handle across threads is sound.
unsafe impl Send for DmaMemory {}
// SAFETY: as above.
unsafe impl Sync for DmaMemory {}

impl DmaMemory {
    /// Allocates `size` bytes (rounded up to the page size), pins them and maps
    /// them for DMA in `container` (which must have a device open).
    ///
    /// The memory starts zeroed (fresh anonymous pages), populated, and kept
    /// out of forked children with `MADV_DONTFORK` (their copy-on-write would
    /// move the pages the IOMMU maps). Its pages are chosen by `backing`
    /// ([`Backing::Auto`]: ordinary pages up to 1 MiB, hugepages above); its
    /// length is a multiple of its page size ([`DmaMemory::len`],
    /// [`DmaMemory::page_kind`]).
    ///
    /// Its IOVA is allocated first fit, lowest address first (see
    /// [IOVA allocation](super#iova-allocation)): the lowest free address of
    /// at least 1 MiB, inside the IOMMU's valid ranges (on x86 they skip the
    /// MSI window at `0xfee00000`), aligned to 1 GiB or 2 MiB when the length
    /// is a multiple of that, else to 4 KiB. Freed IOVAs are reused. For a
    /// device that reaches only some address bits, use
    /// [`DmaMemory::new_below`].
    ///
    /// ```
    /// use vfio_core::dma::{Backing, DmaMemory};
    ///
    /// # fn main() -> vfio_core::Result<()> {
    /// # #[cfg(feature = "testing")] {
    /// # let container = vfio_core::vfio::Container::unbacked();
    /// let a = DmaMemory::new(&container, 4096, Backing::Pages)?;
    /// let b = DmaMemory::new(&container, 4096, Backing::Pages)?;
    /// assert_eq!(a.iova(), 1 << 20); // the lowest IOVA handed out
    /// assert_eq!(b.iova(), a.iova() + 4096); // first fit: right after it
    /// # }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`]: `size` is 0 or too large, or no device is
    ///   open in the container yet.
    /// - [`Error::HugepagesExhausted`]: [`Backing::Hugepages`] and none free.
    /// - [`Error::IovaExhausted`]: no free IOVA range of that length.
    /// - [`Error::MemlockLimit`], [`Error::DmaMappingLimit`], [`Error::Ioctl`]:
    ///   the kernel refused the mapping.
    /// - [`Error::Io`]: ordinary pages could not be mapped.
    pub fn new(container: &Arc<Container>, size: usize, backing: Backing) -> Result<DmaMemory> {
        DmaMemory::allocate(container, size, backing, None)
    }

    /// As [`DmaMemory::new`], but every byte's IOVA is at most `limit`
    /// (inclusive): for a device that reaches only some bits of bus address,
    /// `limit` = [`dma_mask(bits)`](super::dma_mask). Of the free IOVAs up to
    /// `limit`, the lowest that fit are taken, as [`DmaMemory::new`] does.
    ///
    /// Devices with different limits may share one container: allocate the
    /// limited device's memory first (its rings and pools), since large
    /// regions allocated before take the low IOVAs.
    ///
    /// ```no_run
    /// use vfio_core::dma::{dma_mask, Backing, DmaMemory};
    ///
    /// # fn main() -> vfio_core::Result<()> {
    /// # let container = vfio_core::vfio::Container::new()?;
    /// # let _edu = container.open_device("0000:00:05.0".parse()?)?;
    /// // QEMU's edu device reaches 28 bits of bus address.
    /// let buf = DmaMemory::new_below(&container, 4096, Backing::Auto, dma_mask(28))?;
    /// assert!(buf.iova() + buf.len() as u64 - 1 <= dma_mask(28));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::DmaLimitExhausted`] when no free IOVA range of that length
    /// lies at or below `limit`; otherwise those of [`DmaMemory::new`].
    pub fn new_below(
        container: &Arc<Container>,
        size: usize,
        backing: Backing,
        limit: u64,
    ) -> Result<DmaMemory> {
        DmaMemory::allocate(container, size, backing, Some(limit))
    }

    fn allocate(
        container: &Arc<Container>,
        size: usize,
        backing: Backing,
        limit: Option<u64>,
    ) -> Result<DmaMemory> {
        let (ptr, len, kind) = allocate(size, backing)?;
        let iova = match container.map_dma(MappedPtr(ptr), len, limit) {
            Ok(iova) => iova,
            Err(e) => {
                unmap(ptr, len);
                return Err(e);
            }
        };
        Ok(DmaMemory {
            ptr,
            len,
            iova,
            kind,
            container: Arc::clone(container),
            leak: AtomicBool::new(false),
        })
    }

    /// When dropped, leave this memory allocated and mapped at its IOVA for
    /// the rest of the process instead of freeing it: for memory a device
    /// may still write that a driver could not prove idle. Nothing else is
    /// ever placed at its addresses or its IOVAs, so a late write lands here.
    pub fn leak_on_drop(&self) {
        self.leak.store(true, Ordering::Relaxed);
    }

    /// The container whose IOMMU maps this memory: only devices opened in it
    /// can reach it, at [`DmaMemory::iova`].
    #[inline]
    pub fn container(&self) -> &Arc<Container> {
        &self.container
    }

    /// The IOVA devices use for byte 0.
    #[inline]
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Length in bytes: the size asked for, rounded up to the page size.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty (never, for an allocated region).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pages backing this memory.
    pub fn page_kind(&self) -> PageKind {
        self.kind
    }

    /// The virtual address of byte 0. Reading through it needs `unsafe`, and
    /// atomic reads: a device or another thread may write the memory at any
    /// time.
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Pointer to `len` bytes at `offset`, aligned to `align`; panics otherwise.
    /// Inlined: for the word accesses of descriptor rings the check is a
    /// compare and a branch, not a call (about 23 instructions a call).
    /// The panic is a call out of line, so the caller keeps no message
    /// arguments ready on the stack for it.
    #[inline]
    fn at(&self, offset: usize, len: usize, align: usize) -> *mut u8 {
        let inside = offset.checked_add(len).is_some_and(|end| end <= self.len);
        if !(inside && offset.is_multiple_of(align)) {
            outside(offset, len, self.len);
        }
        // SAFETY: offset + len is inside the mapping (checked above).
        unsafe { self.ptr.as_ptr().add(offset) }
    }

    /// Reads the word at byte `offset` (one relaxed atomic load of its
    /// width: never torn, never left out by the compiler).
    ///
    /// # Panics
    ///
    /// When the word is not inside the region or `offset` is not a multiple
    /// of its size.
    #[inline]
    pub fn read<T: DmaWord>(&self, offset: usize) -> T {
        // The region starts page-aligned, so an offset that is a multiple of
        // the size is an address that is (as the atomic needs; `align_of`
        // of u64 is 4 on some 32-bit targets, its atomic's is 8).
        let p = self.at(offset, size_of::<T>(), size_of::<T>());
        // SAFETY: in bounds and aligned to the size (`at`); the mapping is
        // live while `self` is, and through `&self` it is only accessed
        // atomically; T is a plain integer, valid for any bits.
        unsafe { T::load(p) }
    }

    /// Writes `value` at byte `offset` (one relaxed atomic store of its
    /// width).
    ///
    /// # Panics
    ///
    /// When the word is not inside the region or `offset` is not a multiple
    /// of its size.
    #[inline]
    pub fn write<T: DmaWord>(&self, offset: usize, value: T) {
        let p = self.at(offset, size_of::<T>(), size_of::<T>());
        // SAFETY: as in `read`; the memory is ours and writable.
        unsafe { T::store(p, value) }
    }

    /// Writes `values`, one word after the other from byte `offset`, in
    /// order (a relaxed atomic store each), with one bounds check for all of
    /// them: for an entry a device reads as a whole (an NVMe command, a
    /// descriptor) before the doorbell that hands it over.
    ///
    /// # Panics
    ///
    /// When the words are not inside the region or `offset` is not a
    /// multiple of the word size.
    #[inline]
    pub fn write_words<T: DmaWord>(&self, offset: usize, values: &[T]) {
        let len = size_of_val(values);
        let p = self.at(offset, len, size_of::<T>());
        for (i, v) in values.iter().enumerate() {
            // SAFETY: all `values.len()` words are in bounds and aligned to
            // their size (`at` checked the whole range); the memory is ours,
            // writable, and only accessed atomically through `&self`.
            unsafe { T::store(p.add(i * size_of::<T>()), *v) }
        }
    }

    /// The `n` words of type `T` from byte `offset` (a ring's entries, a
    /// table's slots), checked to lie inside the region once, here: each
    /// access through them then checks only its index against `n`, which
    /// the compiler leaves out where it sees the index below `n` (an index
    /// masked with `n - 1`). For the entries of a ring read or written one
    /// by one in a batch.
    ///
    /// # Panics
    ///
    /// When the words are not inside the region or `offset` is not a
    /// multiple of the word size.
    #[inline]
    pub fn words<T: DmaWord>(&self, offset: usize, n: usize) -> DmaWords<'_, T> {
        // Saturated: a length past usize::MAX lies outside any region.
        let len = n.saturating_mul(size_of::<T>());
        let p = self.at(offset, len, size_of::<T>());
        DmaWords {
            p,
            n,
            _memory: PhantomData,
        }
    }

    /// Copies `out.len()` bytes at `offset` into `out`, with relaxed atomic
    /// loads (aligned 8-byte words, smaller pieces at the ends).
    ///
    /// # Panics
    ///
    /// When the bytes are not inside the region.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        let p = self.at(offset, out.len(), 1);
        // SAFETY: p..p+len is inside the range `at` checked; `out` is a
        // separate slice of the same length.
        unsafe { copy_from_device(p, out) }
    }

    /// Copies `data` to `offset`, with relaxed atomic stores (aligned 8-byte
    /// words, smaller pieces at the ends).
    ///
    /// # Panics
    ///
    /// When the bytes are not inside the region.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) {
        let p = self.at(offset, data.len(), 1);
        // SAFETY: as in `read_bytes`.
        unsafe { copy_to_device(data, p) }
    }

    /// `len` bytes at `offset` as a slice. Not checked at run time (the
    /// pool's buffers lie inside its region by construction, and the check
    /// would be paid on every packet's access): debug builds assert it.
    ///
    /// # Safety
    /// The range lies inside the region, and nothing may write it while the
    /// slice lives: the caller owns it exclusively (no device has it, no
    /// `&mut` slice to it exists).
    #[inline]
    pub(crate) unsafe fn slice(&self, offset: usize, len: usize) -> &[u8] {
        debug_assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds and exclusive: the caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) }
    }

    /// `len` bytes at `offset` as a mutable slice, unchecked as
    /// [`DmaMemory::slice`].
    ///
    /// # Safety
    /// The range lies inside the region, and the caller owns it exclusively
    /// for the slice's life (no device has it, no other slice to it exists).
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) unsafe fn slice_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        debug_assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds and exclusive: the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(offset), len) }
    }
}

/// `n` words of type `T` of a [`DmaMemory`], in bounds and aligned
/// ([`DmaMemory::words`]); read and written by index, each access one
/// relaxed atomic load or store, as [`DmaMemory::read`] and
/// [`DmaMemory::write`] make.
#[derive(Debug)]
pub struct DmaWords<'a, T> {
    /// The first word: `n` words from it lie inside the memory, aligned.
    p: *mut u8,
    n: usize,
    _memory: PhantomData<(&'a DmaMemory, T)>,
}

impl<T: DmaWord> DmaWords<'_, T> {
    /// How many words.
    #[inline]
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The word at `index`: [`DmaMemory::read`] of it.
    ///
    /// # Panics
    ///
    /// When `index` is not below [`DmaWords::len`].
    #[inline]
    pub fn read(&self, index: usize) -> T {
        let p = self.at(index);
        // SAFETY: in bounds and aligned (`at`); the memory is borrowed from
        // its `DmaMemory`, so live, and only accessed atomically through
        // `&self`; T is a plain integer, valid for any bits.
        unsafe { T::load(p) }
    }

    /// Writes `value` into the word at `index`: [`DmaMemory::write`] of it.
    ///
    /// # Panics
    ///
    /// When `index` is not below [`DmaWords::len`].
    #[inline]
    pub fn write(&self, index: usize, value: T) {
        let p = self.at(index);
        // SAFETY: as in `read`; the memory is ours and writable.
        unsafe { T::store(p, value) }
    }

    /// Writes `values` into entry `index` of a table of `K`-word entries
    /// (words `K * index` on, in order): [`DmaMemory::write_words`] of
    /// them. The index is checked against the entries there are, `len / K`.
    ///
    /// # Panics
    ///
    /// When the entry is not inside the words.
    #[inline]
    pub fn write_entry<const K: usize>(&self, index: usize, values: [T; K]) {
        const { assert!(K > 0, "an entry has a word at least") };
        if index >= self.n / K {
            outside_words(index * K, self.n);
        }
        let p = self.p.wrapping_add(index * K * size_of::<T>());
        for (i, v) in values.into_iter().enumerate() {
            // SAFETY: the entry's K words are among the `n` (checked
            // above), so in bounds and aligned; as in `write` otherwise.
            unsafe { T::store(p.wrapping_add(i * size_of::<T>()), v) }
        }
    }

    /// The word at `index`, checked to be one of the `n`.
    #[inline]
    fn at(&self, index: usize) -> *mut u8 {
        if index >= self.n {
            outside_words(index, self.n);
        }
        // `index * size` is inside the `n` words `DmaMemory::words` checked.
        self.p.wrapping_add(index * size_of::<T>())
    }
}

/// The panic of [`DmaWords`]' index checks.
#[cold]
#[inline(never)]
#[track_caller]
fn outside_words(index: usize, n: usize) -> ! {
    panic!("DMA word {index} of {n}: out of range")
}

/// The panic of [`DmaMemory::at`].
#[cold]
#[inline(never)]
#[track_caller]
fn outside(offset: usize, len: usize, region: usize) -> ! {
    panic!(
        "DMA memory access of {len} bytes at {offset:#x} is outside the {region:#x}-byte region or misaligned"
    )
}

impl Drop for DmaMemory {
    fn drop(&mut self) {
        if self.leak.load(Ordering::Relaxed) {
            super::note_leak(self.iova, self.len);
            return;
        }
        if let Err(e) = self.container.unmap_dma(self.iova, self.len) {
            // Still mapped: a device may reach it, so it must not be reused.
            log::warn!(
                "unmapping {} bytes of DMA memory at IOVA {:#x} failed ({e}); leaving it allocated",
                self.len,
                self.iova
            );
            return;
        }
        unmap(self.ptr, self.len);
    }
}

/// Where a mapping lives in this process, for the container's table of
/// mappings: the pointer itself, not a number, so that what a device model
/// reaches through it ([`Container::dma_read`]) keeps the allocation's
/// provenance (Miri checks it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MappedPtr(NonNull<u8>);

// SAFETY: only an address; it is dereferenced by `dma_read` / `dma_write`
// under the container's lock, while the mapping it names exists.
unsafe impl Send for MappedPtr {}
// SAFETY: as above.
unsafe impl Sync for MappedPtr {}

impl MappedPtr {
    /// The address as a number (what the kernel's map ioctl takes).
    pub(crate) fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }

    /// The pointer `offset` bytes in (inside the mapping: the caller checked).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn at(self, offset: usize) -> *mut u8 {
        self.0.as_ptr().wrapping_add(offset)
    }
}

/// An IOVA range that a caller vouches for, given to a device as it is: for
/// memory mapped by other means, and for tests that aim a device at an IOVA
/// on purpose (the IOMMU must then block it). It maps, owns and frees
/// nothing: dropping it leaves the range as it was.
#[derive(Debug)]
pub struct RawDma {
    container: Arc<Container>,
    iova: u64,
    len: usize,
}

impl RawDma {
    /// `len` bytes at `iova` in `container`.
    ///
    /// # Safety
    /// For as long as a device may access the range through any command or
    /// descriptor this value is given to, every byte of it must be either
    /// unmapped in `container` (the IOMMU then blocks the access), or memory
    /// that no Rust reference reads or writes and that is neither freed nor
    /// reused.
    pub unsafe fn new(container: &Arc<Container>, iova: u64, len: usize) -> RawDma {
        RawDma {
            container: Arc::clone(container),
            iova,
            len,
        }
    }

    /// IOVA of byte 0.
    #[inline]
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty range.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The container the range is in.
    #[inline]
    pub fn container(&self) -> &Arc<Container> {
        &self.container
    }
}

/// How a software device model reaches memory (the `testing` feature): as a
/// device does through the IOMMU, by IOVA, only inside what is mapped.
#[cfg(any(test, feature = "testing"))]
impl Container {
    /// Copies `out.len()` bytes at `iova` out of the memory mapped there
    /// (relaxed atomic loads, as [`DmaMemory::read_bytes`] does, so a model
    /// on its own thread does not race the driver's accesses).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the bytes do not all lie in one
    /// mapping of this container (where an IOMMU would fault).
    pub fn dma_read(&self, iova: u64, out: &mut [u8]) -> Result<()> {
        self.with_translation(iova, out.len(), |p| {
            // SAFETY: the container's mapping table holds p..p+len (and is
            // locked, so it stays mapped); `out` is the caller's own slice.
            unsafe { copy_from_device(p, out) }
        })
        .ok_or_else(|| unmapped_error(iova, out.len()))
    }

    /// Copies `data` into the memory mapped at `iova` (relaxed atomic
    /// stores, as [`DmaMemory::write_bytes`] does).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the bytes do not all lie in one
    /// mapping of this container (where an IOMMU would fault).
    pub fn dma_write(&self, iova: u64, data: &[u8]) -> Result<()> {
        self.with_translation(iova, data.len(), |p| {
            // SAFETY: as in `dma_read`.
            unsafe { copy_to_device(data, p) }
        })
        .ok_or_else(|| unmapped_error(iova, data.len()))
    }
}

#[cfg(any(test, feature = "testing"))]
fn unmapped_error(iova: u64, len: usize) -> Error {
    Error::InvalidArgument(format!(
        "DMA of {len} bytes at IOVA {iova:#x}: not inside one mapping (an IOMMU fault)"
    ))
}

/// Maps anonymous memory for `size` bytes as `backing` asks.
fn allocate(size: usize, backing: Backing) -> Result<(NonNull<u8>, usize, PageKind)> {
    if size == 0 {
        return Err(Error::InvalidArgument("DMA memory of 0 bytes".into()));
    }
    let huge = || huge_pages(size);
    match backing {
        Backing::Pages => ordinary(size),
        Backing::Hugepages => huge().ok_or_else(|| Error::HugepagesExhausted {
            needed: size,
            page_size: HUGE_2M,
            free_pages: free_hugepages(HUGE_2M),
        }),
        Backing::Auto if auto_page_kind(size) == PageKind::Normal => ordinary(size),
        Backing::Auto => huge().map_or_else(
            || {
                log::warn!(
                    "no free 2 MiB hugepages for {size} bytes of DMA memory ({} free); using ordinary pages. \
                     Reserve hugepages with `echo N > /proc/sys/vm/nr_hugepages`",
                    free_hugepages(HUGE_2M)
                );
                ordinary(size)
            },
            Ok,
        ),
    }
}

fn huge_pages(size: usize) -> Option<(NonNull<u8>, usize, PageKind)> {
    if size.is_multiple_of(HUGE_1G) && free_hugepages(HUGE_1G) >= (size / HUGE_1G) as u64 {
        if let Ok(m) = map_anon(size, MapFlags::MAP_HUGETLB | MapFlags::MAP_HUGE_1GB) {
            return Some((m, size, PageKind::Huge1G));
        }
    }
    let len = size.checked_next_multiple_of(HUGE_2M)?;
    let m = map_anon(len, MapFlags::MAP_HUGETLB | MapFlags::MAP_HUGE_2MB).ok()?;
    Some((m, len, PageKind::Huge2M))
}

fn ordinary(size: usize) -> Result<(NonNull<u8>, usize, PageKind)> {
    let len = size.checked_next_multiple_of(PAGE).ok_or_else(|| {
        Error::InvalidArgument(format!("DMA memory of {size} bytes is too large"))
    })?;
    let m = map_anon(len, MapFlags::empty())
        .map_err(|e| Error::io("mmap", "anonymous memory", e.into()))?;
    Ok((m, len, PageKind::Normal))
}

/// Private anonymous memory, populated, kept out of forked children (whose
/// copy-on-write would move pages the device is pinned to).
fn map_anon(len: usize, extra: MapFlags) -> nix::Result<NonNull<u8>> {
    let size = NonZeroUsize::new(len).ok_or(nix::errno::Errno::EINVAL)?;
    let flags = MapFlags::MAP_PRIVATE | MapFlags::MAP_ANONYMOUS | MapFlags::MAP_POPULATE | extra;
    if cfg!(miri) {
        // Miri maps only private anonymous memory, and has no madvise.
        return miri_map(size, flags);
    }
    // SAFETY: a fresh anonymous mapping at an address the kernel picks; it
    // aliases nothing.
    let ptr = unsafe {
        mmap_anonymous(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            flags,
        )
    }?;
    // SAFETY: ptr/len is the mapping just made.
    if let Err(e) = unsafe { madvise(ptr, len, MmapAdvise::MADV_DONTFORK) } {
        log::warn!("madvise(MADV_DONTFORK) on DMA memory failed: {e}");
    }
    Ok(ptr.cast())
}

/// Under Miri: the same mapping without MAP_POPULATE and MADV_DONTFORK,
/// which Miri does not model (it has no hugepages either: those calls fail).
fn miri_map(size: NonZeroUsize, flags: MapFlags) -> nix::Result<NonNull<u8>> {
    if flags.contains(MapFlags::MAP_HUGETLB) {
        return Err(nix::errno::Errno::ENOMEM);
    }
    let flags = MapFlags::MAP_PRIVATE | MapFlags::MAP_ANONYMOUS;
    // SAFETY: a fresh anonymous mapping at an address the kernel picks.
    let ptr = unsafe {
        mmap_anonymous(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            flags,
        )
    }?;
    Ok(ptr.cast())
}

/// Copies `out.len()` bytes out of device-visible memory at `src` with
/// relaxed atomic loads ([`copy_steps`]: naturally aligned 8-byte words, and
/// 1-, 2- and 4-byte pieces before the first and after the last of them).
///
/// # Safety
/// `src..src + out.len()` must be live memory, readable and writable, that
/// `out` does not overlap and that is only accessed atomically while other
/// threads may access it.
unsafe fn copy_from_device(src: *const u8, out: &mut [u8]) {
    let dst = out.as_mut_ptr();
    copy_steps(src.addr(), out.len(), |at, size| {
        // SAFETY: each step lies inside both ranges (`copy_steps`), and its
        // device side is aligned to its size, as the atomic load needs (and
        // only accessed atomically: the caller); the plain side is `out`,
        // ours, and takes unaligned accesses.
        unsafe {
            let (s, d) = (src.add(at), dst.add(at));
            match size {
                8 => d.cast::<u64>().write_unaligned(u64::load(s)),
                4 => d.cast::<u32>().write_unaligned(u32::load(s)),
                2 => d.cast::<u16>().write_unaligned(u16::load(s)),
                _ => d.write(u8::load(s)),
            }
        }
    });
}

/// Copies `data` into device-visible memory at `dst`, as
/// [`copy_from_device`] does the other way (relaxed atomic stores).
///
/// # Safety
/// `dst..dst + data.len()` must be live writable memory that `data` does not
/// overlap and that is only accessed atomically while other threads may
/// access it.
unsafe fn copy_to_device(data: &[u8], dst: *mut u8) {
    let src = data.as_ptr();
    copy_steps(dst.addr(), data.len(), |at, size| {
        // SAFETY: as in `copy_from_device`, the other way.
        unsafe {
            let (s, d) = (src.add(at), dst.add(at));
            match size {
                8 => u64::store(d, s.cast::<u64>().read_unaligned()),
                4 => u32::store(d, s.cast::<u32>().read_unaligned()),
                2 => u16::store(d, s.cast::<u16>().read_unaligned()),
                _ => u8::store(d, s.read()),
            }
        }
    });
}

/// Calls `step(offset, size)` for each step of a copy of `len` bytes at
/// device address `addr`, each `size` (8, 4, 2 or 1) bytes at an address
/// that is a multiple of `size`: up to the first 8-aligned address the
/// largest such piece that fits, then 8-byte words while they fit, then the
/// largest pieces that fit (a 12-byte virtio-net header at an aligned
/// buffer is two steps, 8 and 4 bytes). The same address and length always
/// give the same steps. Plain loops, no iterator adapters: under Miri every
/// adapter layer is interpreted per step.
#[inline(always)]
fn copy_steps(addr: usize, len: usize, mut step: impl FnMut(usize, usize)) {
    let mut at = 0;
    while at < len && !addr.wrapping_add(at).is_multiple_of(8) {
        let size = piece(addr.wrapping_add(at), len - at);
        step(at, size);
        at += size;
    }
    while len - at >= 8 {
        step(at, 8);
        at += 8;
    }
    while at < len {
        let size = piece(addr.wrapping_add(at), len - at);
        step(at, size);
        at += size;
    }
}

/// The largest of 8, 4, 2 and 1 bytes that `addr` is a multiple of and that
/// is at most `left` (at least 1).
#[inline(always)]
fn piece(addr: usize, left: usize) -> usize {
    let aligned = 1 << addr.trailing_zeros().min(3);
    let fits = 1 << left.ilog2().min(3);
    aligned.min(fits)
}

fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: ptr/len is a mapping made by `map_anon`, no longer referenced.
    if let Err(e) = unsafe { munmap(ptr.cast::<c_void>(), len) } {
        log::warn!("munmap of DMA memory failed: {e}");
    }
}

/// Free hugepages of `page_size` bytes, from sysfs (0 if unknown).
fn free_hugepages(page_size: usize) -> u64 {
    let path = format!(
        "/sys/kernel/mm/hugepages/hugepages-{}kB/free_hugepages",
        page_size / 1024
    );
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(size: usize) -> DmaMemory {
        DmaMemory::new(&Container::unbacked(), size, Backing::Pages).unwrap()
    }

    #[test]
    fn words_and_bytes_round_trip() {
        let m = memory(10_000);
        assert_eq!(m.len(), 12288, "rounded up to 4 KiB pages");
        assert_eq!(m.page_kind(), PageKind::Normal);
        m.write::<u64>(8, 0x1122_3344_5566_7788);
        assert_eq!(m.read::<u32>(8), 0x5566_7788);
        assert_eq!(m.read::<u16>(14), 0x1122);
        m.write_bytes(100, b"hello");
        let mut out = [0u8; 5];
        m.read_bytes(100, &mut out);
        assert_eq!(&out, b"hello");
    }

    #[test]
    fn a_window_of_words_reads_and_writes_only_its_own() {
        let m = memory(4096);
        m.write_bytes(0, &[0xee; 4096]);
        // The last 8 u64s of the region.
        let w = m.words::<u64>(4096 - 64, 8);
        assert_eq!((w.len(), w.is_empty()), (8, false));
        for i in 0..8 {
            w.write(i, i as u64 * 0x0101);
        }
        for i in 0..8 {
            assert_eq!(w.read(i), i as u64 * 0x0101);
            assert_eq!(m.read::<u64>(4096 - 64 + 8 * i), i as u64 * 0x0101);
        }
        assert_eq!(m.read::<u64>(4096 - 72), 0xeeee_eeee_eeee_eeee);
        assert!(m.words::<u16>(4096, 0).is_empty());
    }

    #[test]
    fn an_entry_of_two_words_lands_at_twice_its_index() {
        let m = memory(4096);
        let w = m.words::<u64>(64, 6);
        w.write_entry(2, [7, 8]);
        assert_eq!((m.read::<u64>(64 + 32), m.read::<u64>(64 + 40)), (7, 8));
        assert_eq!((w.read(3), w.read(5)), (0, 8));
        // 6 words hold 3 entries of two: entry 3 is outside.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.write_entry(3, [1, 1])));
        assert!(r.is_err());
        assert_eq!(m.read::<u64>(64 + 48), 0, "nothing written past the window");
    }

    #[test]
    #[should_panic(expected = "DMA word 8 of 8")]
    fn a_word_past_the_window_panics() {
        memory(4096).words::<u64>(0, 8).read(8);
    }

    #[test]
    fn a_window_outside_the_region_or_misaligned_panics() {
        let m = memory(4096);
        for (offset, n) in [(4096 - 56, 8), (4, 1), (0, usize::MAX / 4)] {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                m.words::<u64>(offset, n);
            }));
            assert!(r.is_err(), "{n} words at {offset}");
        }
    }

    #[test]
    fn words_written_in_a_row_land_in_order_and_nothing_beside_them() {
        let m = memory(4096);
        m.write_bytes(0, &[0xee; 4096]);
        let words: Vec<u32> = (1..=16).map(|i| i * 0x0101_0101).collect();
        m.write_words::<u32>(4096 - 64, &words);
        for (i, w) in words.iter().enumerate() {
            assert_eq!(m.read::<u32>(4096 - 64 + 4 * i), *w);
        }
        assert_eq!(
            m.read::<u32>(4096 - 68),
            0xeeee_eeee,
            "the word before is untouched"
        );
        m.write_words::<u64>(8, &[]);
        assert_eq!(
            m.read::<u64>(8),
            0xeeee_eeee_eeee_eeee,
            "no words, no write"
        );
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn words_past_the_end_panic_before_any_is_written() {
        let m = memory(4096);
        m.write_words::<u32>(4096 - 60, &[1; 16]);
    }

    #[test]
    #[should_panic(expected = "misaligned")]
    fn misaligned_words_panic() {
        memory(4096).write_words::<u32>(2, &[1]);
    }

    /// Every alignment of start and length, on both sides of a copy: the
    /// block-and-word copies move exactly the bytes asked, no more.
    #[test]
    fn copies_at_every_alignment_move_exactly_the_bytes_asked() {
        let c = Container::unbacked();
        let m = DmaMemory::new(&c, 4096, Backing::Pages).unwrap();
        let source: Vec<u8> = (0..1200).map(|i| (i % 251 + 1) as u8).collect();
        let (zeros, ones) = ([0u8; 1100], [0xffu8; 8]);
        for at in 0..9 {
            for len in (0..18).chain([511, 512, 513, 1031]) {
                // Checked: the bytes before the copy, it, and 9 after it.
                let span = at + len + 9;
                let zeros = &zeros[..span];
                for (skew, via_iova) in [(0, false), (3, false), (0, true), (5, true)] {
                    m.write_bytes(0, zeros);
                    let data = &source[skew..skew + len];
                    if via_iova {
                        c.dma_write(m.iova() + at as u64, data).unwrap();
                    } else {
                        m.write_bytes(at, data);
                    }
                    let mut all = vec![0xffu8; span];
                    m.read_bytes(0, &mut all);
                    assert_eq!(all[..at], zeros[..at], "{at}+{len}");
                    assert_eq!(&all[at..at + len], data, "{at}+{len}");
                    assert_eq!(all[at + len..], zeros[at + len..], "{at}+{len}");
                    let mut back = vec![0xffu8; len + skew];
                    if via_iova {
                        c.dma_read(m.iova() + at as u64, &mut back[skew..]).unwrap();
                    } else {
                        m.read_bytes(at, &mut back[skew..]);
                    }
                    assert_eq!(&back[skew..], data, "{at}+{len} back");
                    assert_eq!(back[..skew], ones[..skew], "{at}+{len}");
                }
            }
        }
    }

    /// Two threads share one region: one writes a word, a run of words
    /// and a byte range over and over while the other reads the same bytes
    /// with the same accesses. Every word read is one of the words written,
    /// whole; in the byte range each byte is one of the two written there,
    /// and each piece the copy moves as one access comes whole from one
    /// write. Under
    /// Miri (`cargo xtask miri`) a data race between the two fails it.
    #[test]
    fn two_threads_racing_on_the_same_bytes_read_whole_written_values() {
        const ROUNDS: usize = if cfg!(miri) { 200 } else { 20_000 };
        // Copied as pieces of 1, 2, 8, 8, 4 and 1 bytes (`copy_steps`).
        const AT: usize = 0x45;
        const PIECES: [(usize, usize); 6] = [(0, 1), (1, 3), (3, 11), (11, 19), (19, 23), (23, 24)];
        const LEN: usize = 24;
        let words = [0x1111_2222_u32, 0xaaaa_bbbb];
        let runs = [[1u64, 2], [0x8000_0000_0000_0003, 0x8000_0000_0000_0004]];
        let bytes: [[u8; LEN]; 2] = [
            std::array::from_fn(|i| i as u8 + 1),
            std::array::from_fn(|i| 0x80 | (i as u8 + 1)),
        ];
        let m = Arc::new(memory(4096));
        m.write::<u32>(0, words[0]);
        m.write_words::<u64>(16, &runs[0]);
        m.write_bytes(AT, &bytes[0]);
        let writer = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    m.write::<u32>(0, words[i % 2]);
                    m.write_words::<u64>(16, &runs[i % 2]);
                    m.write_bytes(AT, &bytes[i % 2]);
                }
            })
        };
        for _ in 0..ROUNDS {
            let w = m.read::<u32>(0);
            assert!(words.contains(&w), "torn word {w:#x}");
            for (i, at) in [16, 24].into_iter().enumerate() {
                let w = m.read::<u64>(at);
                assert!(w == runs[0][i] || w == runs[1][i], "torn word {w:#x}");
            }
            let mut out = [0u8; LEN];
            m.read_bytes(AT, &mut out);
            for (i, b) in out.iter().enumerate() {
                assert!(*b == bytes[0][i] || *b == bytes[1][i], "byte {i}: {b:#x}");
            }
            for (start, end) in PIECES {
                let piece = &out[start..end];
                let from = piece[0] >> 7;
                assert!(piece.iter().all(|b| b >> 7 == from), "torn {piece:x?}");
            }
        }
        writer.join().unwrap();
    }

    #[test]
    fn a_copy_takes_aligned_pieces_then_words_then_aligned_pieces() {
        let steps = |addr, len| {
            let mut all = Vec::new();
            copy_steps(addr, len, |at, size| all.push((at, size)));
            all
        };
        let want = [(0, 2), (2, 8), (10, 8), (18, 4), (22, 2), (24, 1)];
        assert_eq!(steps(0x1006, 2 + 16 + 7), want);
        assert_eq!(
            steps(0x1005, 20),
            [(0, 1), (1, 2), (3, 8), (11, 8), (19, 1)]
        );
        assert_eq!(steps(0x1003, 4), [(0, 1), (1, 2), (3, 1)]);
        assert_eq!(steps(0x1001, 2), [(0, 1), (1, 1)]);
        assert_eq!(steps(0x1000, 12), [(0, 8), (8, 4)], "a virtio-net header");
        assert_eq!(steps(0x1000, 16), [(0, 8), (8, 8)]);
        assert_eq!(steps(0x1000, 4096).len(), 512, "a page: 512 words");
        assert_eq!(steps(0x1000, 0), []);
        for addr in 0x1000..0x1010 {
            for len in 0..40 {
                let all = steps(addr, len);
                let mut at = 0;
                for (off, size) in all {
                    assert_eq!(off, at, "{addr:#x}+{len}: contiguous");
                    assert!((addr + off).is_multiple_of(size), "{addr:#x}+{len}");
                    at += size;
                }
                assert_eq!(at, len, "{addr:#x}+{len}: every byte once");
            }
        }
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn out_of_range_read_panics() {
        let m = memory(4096);
        let _: u32 = m.read(4094);
    }

    #[test]
    #[should_panic(expected = "misaligned")]
    fn misaligned_read_panics() {
        let m = memory(4096);
        let _: u64 = m.read(4);
    }

    #[test]
    fn a_model_reaches_mapped_memory_by_iova_and_nothing_else() {
        let c = Container::unbacked();
        let m = DmaMemory::new(&c, 8192, Backing::Pages).unwrap();
        assert!(m.iova() >= 1 << 20);
        c.dma_write(m.iova() + 4090, b"across").unwrap();
        let mut out = [0u8; 6];
        m.read_bytes(4090, &mut out);
        assert_eq!(&out, b"across");
        m.write::<u32>(0, 0x0403_0201);
        c.dma_read(m.iova(), &mut out[..4]).unwrap();
        assert_eq!(out[..4], [1, 2, 3, 4]);
        assert!(
            c.dma_read(m.iova() + 8190, &mut out).is_err(),
            "past the end"
        );
        assert!(c.dma_write(m.iova() - 1, b"x").is_err(), "before the start");
        let iova = m.iova();
        drop(m);
        assert!(c.dma_read(iova, &mut out).is_err(), "unmapped on drop");
        assert_eq!(c.mapping_count(), 0);
    }

    #[test]
    fn auto_gives_ordinary_pages_up_to_half_a_hugepage() {
        assert_eq!(auto_page_kind(1), PageKind::Normal);
        assert_eq!(auto_page_kind(4096), PageKind::Normal);
        assert_eq!(auto_page_kind(1 << 20), PageKind::Normal);
        assert_eq!(auto_page_kind((1 << 20) + 1), PageKind::Huge2M);
        assert_eq!(auto_page_kind(2 << 20), PageKind::Huge2M);
        assert_eq!(auto_page_kind(3 << 30), PageKind::Huge1G);
        assert_eq!(auto_page_kind((1 << 30) + 4096), PageKind::Huge2M);
    }

    /// What one NVMe controller with one I/O queue pair of 64 entries and
    /// one e1000 with `Config::default()` ask of `Backing::Auto` (the sizes
    /// of nvme-driver's queue.rs, admin.rs and controller.rs, and
    /// nic-driver's e1000 rx.rs, tx.rs and mod.rs), and how many 2 MiB
    /// hugepages that takes: every request rounded up to whole hugepages as
    /// `Auto` did before, and now.
    #[test]
    fn driver_rings_and_queues_take_no_hugepage() {
        let requests = [
            ("NVMe admin SQ, 32 x 64 B", 32 * 64),
            ("NVMe admin CQ, 32 x 16 B", 32 * 16),
            ("NVMe admin scratch (identify)", 4096),
            ("NVMe I/O SQ, 64 x 64 B", 64 * 64),
            ("NVMe I/O CQ, 64 x 16 B", 64 * 16),
            ("NVMe PRP lists, (63 + 1) x 4 KiB", 64 * 4096),
            ("e1000 RX ring, 256 x 16 B", 256 * 16),
            ("e1000 TX ring, 256 x 16 B", 256 * 16),
            ("e1000 pool, (2 x 256 + 256 + 1024) x 2 KiB", 1792 * 2048),
        ];
        let hugepages = |of: &dyn Fn(usize) -> bool| -> usize {
            requests
                .iter()
                .filter(|(_, size)| of(*size))
                .map(|(_, size)| size.div_ceil(HUGE_2M))
                .sum()
        };
        let before = hugepages(&|_| true);
        let after = hugepages(&|size| auto_page_kind(size) != PageKind::Normal);
        assert_eq!(before, 10, "6 for the NVMe controller, 4 for the e1000");
        assert_eq!(after, 2, "the e1000's 3.5 MiB pool only");
        let small: Vec<_> = requests
            .iter()
            .filter(|(_, size)| auto_page_kind(*size) == PageKind::Normal)
            .map(|(what, _)| *what)
            .collect();
        assert_eq!(small.len(), 8, "{small:?}");
    }

    #[test]
    fn a_small_auto_request_is_its_own_mapping_of_ordinary_pages() {
        let c = Container::unbacked();
        let a = DmaMemory::new(&c, 2048, Backing::Auto).unwrap();
        let b = DmaMemory::new(&c, 1 << 20, Backing::Auto).unwrap();
        assert_eq!((a.page_kind(), a.len()), (PageKind::Normal, 4096));
        assert_eq!((b.page_kind(), b.len()), (PageKind::Normal, 1 << 20));
        assert_eq!(c.mapping_count(), 2);
        let iova = a.iova();
        drop(a);
        assert_eq!(c.mapping_count(), 1);
        assert!(
            c.dma_write(iova, b"late").is_err(),
            "freed memory is unmapped: a late device write faults"
        );
    }

    #[test]
    fn zero_bytes_is_an_error() {
        assert!(matches!(
            allocate(0, Backing::Auto),
            Err(Error::InvalidArgument(_))
        ));
    }
}
