//! A fixed-size buffer pool (the mempool of DPDK and ixy): one DMA region cut
//! into equal buffers. A buffer's life: [`BufferPool::alloc`] hands it out
//! (CPU owns it) → a driver posts it to a device (the driver's ring owns it) →
//! the device is done and the driver hands it back → dropping it returns its
//! index to the pool.
#![allow(unsafe_code)]

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::provenance::DeviceWritten;
use super::{Backing, DmaMemory, DmaWord, Writer};
use crate::vfio::Container;
use crate::{Error, Result};

/// `count` buffers of `buf_size` bytes in one DMA region; alloc and free are
/// O(1) with no system call (an uncontended lock) and no heap allocation.
///
/// Buffer `i` is bytes `i * buf_size ..` of the region, at IOVA
/// `pool.iova() + i * buf_size`; a buffer of at most 4 KiB is
/// aligned to its size. Each buffer has one owner at a time: a [`Buffer`], or
/// the [`SharedBuffer`]s it became. Buffers are not cleared when they come
/// back: a new one holds what its last user or device left in it. The region
/// stays mapped while the pool or any of its buffers lives (each holds the
/// pool), and is freed as [`DmaMemory`] is.
///
/// ```no_run
/// use vfio_core::dma::BufferPool;
///
/// # fn main() -> vfio_core::Result<()> {
/// # let container = vfio_core::vfio::Container::new()?;
/// # let _nic = container.open_device("0000:00:04.0".parse()?)?;
/// let pool = BufferPool::new(&container, 2048, 4096)?;
/// let mut buf = pool.alloc().expect("a fresh pool has free buffers");
/// buf.as_mut_slice()[..6].copy_from_slice(&[0xff; 6]);
/// let iova = buf.iova(); // what a descriptor points at
/// drop(buf);             // back to the pool
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BufferPool {
    memory: DmaMemory,
    buf_size: usize,
    count: usize,
    free: Mutex<Vec<u32>>,
    /// Owners of each buffer that has been shared ([`Buffer::into_shared`]).
    shares: Box<[AtomicU32]>,
}

/// One buffer of a pool, owned exclusively: no other `Buffer` or
/// [`SharedBuffer`] covers its bytes. Goes back to its pool when dropped.
///
/// Its bytes are reached through slices ([`Buffer::as_slice`],
/// [`Buffer::as_mut_slice`]), which is sound because a device gets a buffer
/// only by value ([`DmaTargetMut`](super::DmaTargetMut)): while a `Buffer` can
/// be borrowed here, no driver has it posted to a device. Writing
/// [`Buffer::iova`] into a device register or descriptor yourself bypasses
/// that: then leave the buffer untouched until the device is done with it.
#[derive(Debug)]
pub struct Buffer {
    pool: Arc<BufferPool>,
    index: u32,
    /// The bytes a device wrote since the CPU last wrote through `&mut`.
    pub(super) written: DeviceWritten,
}

impl BufferPool {
    /// Allocates the pool's memory ([`Backing::Auto`]: hugepages where there
    /// are any, for a pool larger than 1 MiB) and maps it for DMA in
    /// `container`, which must have a device open. `buf_size` is rounded up:
    /// to a power of two (at least 64) up to 4 KiB, so that no buffer crosses
    /// a 4 KiB page; to a multiple of 4 KiB above. All buffers start free.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `buf_size` or `count` is 0 or the pool
    /// would be too large; otherwise the errors of [`DmaMemory::new`].
    ///
    /// # Panics
    ///
    /// When `count` exceeds `u32::MAX` (and the memory for that many buffers
    /// could be mapped).
    pub fn new(
        container: &Arc<Container>,
        buf_size: usize,
        count: usize,
    ) -> Result<Arc<BufferPool>> {
        BufferPool::allocate(container, buf_size, count, None)
    }

    /// As [`BufferPool::new`], but every buffer's IOVAs are at most `limit`
    /// (inclusive): a pool for a device that reaches only some bits of bus
    /// address, `limit` = [`dma_mask(bits)`](super::dma_mask). The pool's
    /// region is allocated as [`DmaMemory::new_below`] does: make it before
    /// large regions and pools of other devices, which take the low IOVAs.
    ///
    /// ```no_run
    /// use vfio_core::dma::{dma_mask, BufferPool};
    ///
    /// # fn main() -> vfio_core::Result<()> {
    /// # let container = vfio_core::vfio::Container::new()?;
    /// # let _edu = container.open_device("0000:00:05.0".parse()?)?;
    /// let pool = BufferPool::new_below(&container, 4096, 64, dma_mask(28))?;
    /// let buf = pool.try_alloc()?;
    /// assert!(buf.iova() + 4095 <= dma_mask(28));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::DmaLimitExhausted`] when no free IOVA range for the pool lies
    /// at or below `limit`; otherwise those of [`BufferPool::new`].
    ///
    /// # Panics
    ///
    /// As [`BufferPool::new`].
    pub fn new_below(
        container: &Arc<Container>,
        buf_size: usize,
        count: usize,
        limit: u64,
    ) -> Result<Arc<BufferPool>> {
        BufferPool::allocate(container, buf_size, count, Some(limit))
    }

    fn allocate(
        container: &Arc<Container>,
        buf_size: usize,
        count: usize,
        limit: Option<u64>,
    ) -> Result<Arc<BufferPool>> {
        let buf_size = rounded_buf_size(buf_size, count)?;
        let total = buf_size.checked_mul(count).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "a pool of {count} buffers of {buf_size} bytes is too large"
            ))
        })?;
        let memory = match limit {
            None => DmaMemory::new(container, total, Backing::Auto)?,
            Some(limit) => DmaMemory::new_below(container, total, Backing::Auto, limit)?,
        };
        Ok(BufferPool::from_memory(memory, buf_size, count))
    }

    /// A pool over `memory`, which holds at least `buf_size * count` bytes.
    pub(crate) fn from_memory(memory: DmaMemory, buf_size: usize, count: usize) -> Arc<BufferPool> {
        assert!(buf_size * count <= memory.len() && count <= u32::MAX as usize);
        let free = (0..count as u32).rev().collect();
        Arc::new(BufferPool {
            memory,
            buf_size,
            count,
            free: Mutex::new(free),
            shares: (0..count).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    fn free_list(&self) -> MutexGuard<'_, Vec<u32>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a free buffer (not cleared), or None when all are in use.
    pub fn alloc(self: &Arc<Self>) -> Option<Buffer> {
        let index = self.free_list().pop()?;
        Some(Buffer {
            pool: Arc::clone(self),
            index,
            written: DeviceWritten::NONE,
        })
    }

    /// Takes a free buffer (not cleared).
    ///
    /// # Errors
    ///
    /// [`Error::PoolExhausted`] when all are in use.
    pub fn try_alloc(self: &Arc<Self>) -> Result<Buffer> {
        self.alloc().ok_or(Error::PoolExhausted {
            capacity: self.count,
        })
    }

    /// Takes up to `n` buffers under one lock, appending them to `out`
    /// (give `out` the capacity to avoid allocating); returns how many.
    pub fn alloc_batch(self: &Arc<Self>, n: usize, out: &mut Vec<Buffer>) -> usize {
        let mut free = self.free_list();
        let take = n.min(free.len());
        for _ in 0..take {
            let index = free.pop().expect("counted above");
            out.push(Buffer {
                pool: Arc::clone(self),
                index,
                written: DeviceWritten::NONE,
            });
        }
        take
    }

    /// Returns `bufs` to the free list under one lock (a [`BufferCache`]'s
    /// spill and drop), as dropping each would, one lock each.
    ///
    /// [`BufferCache`]: super::BufferCache
    pub(super) fn give_back(&self, bufs: impl Iterator<Item = Buffer>) {
        let mut free = self.free_list();
        for buf in bufs {
            let buf = ManuallyDrop::new(buf);
            free.push(buf.index);
            // SAFETY: `buf` is never dropped, so its Arc is moved out (and
            // dropped here) exactly once; its index is back in the list.
            drop(unsafe { std::ptr::read(&buf.pool) });
        }
    }

    /// Free buffers now (others may take or return some at any time).
    pub fn free_count(&self) -> usize {
        self.free_list().len()
    }

    /// Total buffers (`count`).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.count
    }

    /// Bytes per buffer: `buf_size` as rounded by [`BufferPool::new`].
    #[inline]
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// IOVA of the first buffer (byte 0 of the pool's region).
    #[inline]
    pub fn iova(&self) -> u64 {
        self.memory.iova()
    }

    /// The container whose IOMMU maps the pool.
    #[inline]
    pub fn container(&self) -> &Arc<Container> {
        self.memory.container()
    }
}

/// Most owners of one shared buffer; a clone past it aborts (as `Arc` does),
/// since the count wrapping would free a buffer that is still in use.
const MAX_SHARES: u32 = i32::MAX as u32;

fn rounded_buf_size(buf_size: usize, count: usize) -> Result<usize> {
    if buf_size == 0 || count == 0 {
        return Err(Error::InvalidArgument(format!("a pool needs buffers of at least 1 byte and at least 1 buffer (asked {count} x {buf_size} bytes)")));
    }
    let rounded = if buf_size <= 4096 {
        buf_size.next_power_of_two().max(64)
    } else {
        buf_size
            .checked_next_multiple_of(4096)
            .unwrap_or(usize::MAX)
    };
    Ok(rounded)
}

impl Buffer {
    #[inline]
    fn offset(&self) -> usize {
        self.index as usize * self.pool.buf_size
    }

    /// IOVA of byte 0 of this buffer: what a device descriptor points at.
    #[inline]
    pub fn iova(&self) -> u64 {
        self.pool.memory.iova() + self.offset() as u64
    }

    /// Virtual address of byte 0.
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.pool.memory.as_ptr().wrapping_add(self.offset())
    }

    /// Size of the buffer in bytes (the pool's [`BufferPool::buf_size`]).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.pool.buf_size
    }

    /// The buffer's bytes, all of [`Buffer::capacity`].
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: index < count and count * buf_size <= the region's
        // length (`from_memory` asserts it), so the range is inside. This
        // Buffer is the only owner of its index, so no other slice covers
        // these bytes, and while `self` is borrowed here the buffer cannot
        // be handed to a device (that takes it by value).
        unsafe { self.pool.memory.slice(self.offset(), self.pool.buf_size) }
    }

    /// The buffer's bytes, writable. Forgets which bytes a device wrote
    /// ([`Buffer::writer`] says [`Writer::Cpu`] for all of them afterwards).
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.written = DeviceWritten::NONE;
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only slice.
        unsafe {
            self.pool
                .memory
                .slice_mut(self.offset(), self.pool.buf_size)
        }
    }

    /// Reads the word at byte `offset` in the buffer (for device-written
    /// data), as [`DmaMemory::read`] does: one relaxed atomic load.
    ///
    /// # Panics
    ///
    /// When the word is not inside the buffer or `offset` is not a multiple of
    /// its size.
    #[inline]
    pub fn read<T: DmaWord>(&self, offset: usize) -> T {
        self.check(offset, size_of::<T>());
        self.pool.memory.read(self.offset() + offset)
    }

    /// Writes `value` at byte `offset` in the buffer (one relaxed atomic
    /// store, as [`DmaMemory::write`]). Forgets
    /// which bytes a device wrote, as [`Buffer::as_mut_slice`] does.
    ///
    /// # Panics
    ///
    /// When the word is not inside the buffer or `offset` is not a multiple of
    /// its size.
    #[inline]
    pub fn write<T: DmaWord>(&mut self, offset: usize, value: T) {
        self.check(offset, size_of::<T>());
        self.written = DeviceWritten::NONE;
        self.pool.memory.write(self.offset() + offset, value)
    }

    /// Copies `bytes` to byte `offset` of the buffer. Unlike
    /// [`Buffer::as_mut_slice`] it forgets which bytes a device wrote only
    /// when it writes one of them: a header written into the headroom
    /// before a frame the device wrote leaves the frame the device's
    /// ([`Buffer::writer`]).
    ///
    /// # Panics
    ///
    /// When the bytes are not inside the buffer.
    #[inline]
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) {
        self.check(offset, bytes.len());
        self.written = self.written.after_cpu_write(offset, bytes.len());
        let to = self.as_ptr().cast_mut().wrapping_add(offset);
        // SAFETY: the bytes lie inside the buffer (`check`), which this
        // Buffer owns alone and `&mut self` borrows alone: no slice covers
        // them and no device has them (as in `as_mut_slice`); `bytes` is
        // another borrow, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), to, bytes.len()) }
    }

    #[inline]
    fn check(&self, offset: usize, len: usize) {
        assert!(
            offset
                .checked_add(len)
                .is_some_and(|e| e <= self.capacity()),
            "access at {offset:#x} beyond a {}-byte buffer",
            self.capacity()
        );
    }

    /// Who last wrote `len` bytes at `offset`: [`Writer::Device`] if a
    /// driver recorded a device writing all of them
    /// ([`Buffer::device_wrote`]) and the CPU has not written the buffer
    /// since; else [`Writer::Cpu`] (a fresh buffer is the CPU's).
    #[inline]
    pub fn writer(&self, offset: usize, len: usize) -> Writer {
        self.written.writer(offset, len)
    }

    /// Records that a device wrote `len` bytes at `offset` (replacing any
    /// earlier record; `len` 0, or a range outside the buffer, records
    /// none). Drivers call it when the device's write completed.
    #[inline]
    pub fn device_wrote(&mut self, offset: usize, len: usize) {
        self.written = DeviceWritten::new(offset, len, self.capacity());
    }

    /// The pool this buffer belongs to.
    #[inline]
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    /// The container whose IOMMU maps the buffer.
    #[inline]
    pub fn container(&self) -> &Arc<Container> {
        self.pool.container()
    }

    /// Turns this buffer into a read-only one with several owners (e.g. the
    /// datagrams a NIC sends from slices of it); it goes back to the pool when
    /// the last owner drops it. Allocates nothing.
    pub fn into_shared(self) -> SharedBuffer {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so its Arc is moved out exactly once.
        let pool = unsafe { std::ptr::read(&this.pool) };
        pool.shares[this.index as usize].store(1, Ordering::Release);
        SharedBuffer {
            pool,
            index: this.index,
            written: this.written,
        }
    }
}

/// A pool buffer with several owners, read-only; back to the pool when the
/// last owner drops it. Cloning is an atomic increment (the process aborts
/// rather than let the count overflow, as `Arc` does). A device may be given
/// it to read ([`DmaTarget`](super::DmaTarget)), never to write.
///
/// ```no_run
/// use vfio_core::dma::BufferPool;
///
/// # fn main() -> vfio_core::Result<()> {
/// # let container = vfio_core::vfio::Container::new()?;
/// # let _nic = container.open_device("0000:00:04.0".parse()?)?;
/// let pool = BufferPool::new(&container, 2048, 64)?;
/// let mut buf = pool.try_alloc()?;
/// buf.as_mut_slice()[..4].copy_from_slice(b"ping");
/// let frame = buf.into_shared(); // e.g. sent on two ports
/// let again = frame.clone();
/// assert_eq!((frame.iova(), &again.as_slice()[..4]), (again.iova(), &b"ping"[..]));
/// drop(frame);
/// drop(again); // the last owner: back to the pool
/// assert_eq!(pool.free_count(), pool.capacity());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SharedBuffer {
    pool: Arc<BufferPool>,
    index: u32,
    /// What a device wrote before the buffer was shared (no owner writes it).
    written: DeviceWritten,
}

impl SharedBuffer {
    #[inline]
    fn offset(&self) -> usize {
        self.index as usize * self.pool.buf_size
    }

    /// IOVA of byte 0.
    #[inline]
    pub fn iova(&self) -> u64 {
        self.pool.memory.iova() + self.offset() as u64
    }

    /// Size of the buffer in bytes.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.pool.buf_size
    }

    /// The container whose IOMMU maps the buffer.
    #[inline]
    pub fn container(&self) -> &Arc<Container> {
        self.pool.container()
    }

    /// Who last wrote `len` bytes at `offset`, as [`Buffer::writer`] said
    /// when the buffer was shared (no owner can write it since).
    #[inline]
    pub fn writer(&self, offset: usize, len: usize) -> Writer {
        self.written.writer(offset, len)
    }

    /// The bytes (read-only: no owner can write them).
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: inside the region as in `Buffer::as_slice`; the buffer
        // was a Buffer's, consumed by `into_shared`; no owner of a
        // SharedBuffer can write it, so shared slices are sound.
        unsafe { self.pool.memory.slice(self.offset(), self.pool.buf_size) }
    }
}

impl Clone for SharedBuffer {
    #[inline]
    fn clone(&self) -> Self {
        let before = self.pool.shares[self.index as usize].fetch_add(1, Ordering::Relaxed);
        if before >= MAX_SHARES {
            std::process::abort();
        }
        SharedBuffer {
            pool: Arc::clone(&self.pool),
            index: self.index,
            written: self.written,
        }
    }
}

impl Drop for SharedBuffer {
    #[inline]
    fn drop(&mut self) {
        if self.pool.shares[self.index as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
            self.last_share_dropped();
        }
    }
}

impl SharedBuffer {
    /// The last owner is gone: the buffer goes back to the pool (under its lock).
    #[cold]
    #[inline(never)]
    fn last_share_dropped(&self) {
        self.pool.free_list().push(self.index);
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.pool.free_list().push(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(buf_size: usize, count: usize) -> Arc<BufferPool> {
        BufferPool::new(&Container::unbacked(), buf_size, count).unwrap()
    }

    #[test]
    fn sizes_are_rounded() {
        assert_eq!(rounded_buf_size(1, 1).unwrap(), 64);
        assert_eq!(rounded_buf_size(1500, 1).unwrap(), 2048);
        assert_eq!(rounded_buf_size(4096, 1).unwrap(), 4096);
        assert_eq!(rounded_buf_size(4097, 1).unwrap(), 8192);
        assert_eq!(rounded_buf_size(9000, 1).unwrap(), 12288);
        assert!(rounded_buf_size(0, 1).is_err());
        assert!(rounded_buf_size(64, 0).is_err());
    }

    #[test]
    fn every_buffer_once_then_exhausted() {
        let p = pool(2048, 16);
        let mut held: Vec<Buffer> = (0..16).map(|_| p.alloc().unwrap()).collect();
        assert!(p.alloc().is_none());
        assert!(matches!(
            p.try_alloc(),
            Err(Error::PoolExhausted { capacity: 16 })
        ));
        let mut iovas: Vec<u64> = held.iter().map(Buffer::iova).collect();
        iovas.sort();
        let expected: Vec<u64> = (0..16).map(|i| p.iova() + i * 2048).collect();
        assert_eq!(iovas, expected);
        for (i, b) in held.iter_mut().enumerate() {
            b.as_mut_slice().fill(i as u8);
        }
        for (i, b) in held.iter().enumerate() {
            assert!(
                b.as_slice().iter().all(|&x| x == i as u8),
                "buffer {i} was overwritten"
            );
        }
        assert_eq!(p.free_count(), 0);
        held.truncate(10);
        assert_eq!(p.free_count(), 6);
        drop(held);
        assert_eq!(p.free_count(), 16);
    }

    #[test]
    fn batch_takes_what_is_there() {
        let p = pool(64, 8);
        let mut out = Vec::with_capacity(16);
        assert_eq!(p.alloc_batch(5, &mut out), 5);
        assert_eq!(p.alloc_batch(5, &mut out), 3);
        assert_eq!(p.free_count(), 0);
        out.clear();
        assert_eq!(p.free_count(), 8);
    }

    #[test]
    fn buffer_bytes_are_the_pools_memory() {
        let p = pool(4096, 4);
        let mut b = p.alloc().unwrap();
        b.write::<u32>(12, 0xdead_beef);
        assert_eq!(b.read::<u32>(12), 0xdead_beef);
        let off = (b.iova() - p.iova()) as usize;
        assert_eq!(p.memory.read::<u32>(off + 12), 0xdead_beef);
        assert_eq!(b.as_slice()[12..16], 0xdead_beef_u32.to_le_bytes());
    }

    #[test]
    fn a_shared_buffer_returns_when_its_last_owner_goes() {
        let p = pool(4096, 2);
        let mut b = p.alloc().unwrap();
        b.as_mut_slice()[..3].copy_from_slice(b"abc");
        let iova = b.iova();
        let shared = b.into_shared();
        let more: Vec<SharedBuffer> = (0..5).map(|_| shared.clone()).collect();
        assert_eq!(p.free_count(), 1);
        assert_eq!(
            (shared.iova(), &shared.as_slice()[..3]),
            (iova, &b"abc"[..])
        );
        drop(shared);
        assert_eq!(p.free_count(), 1, "owners remain");
        drop(more);
        assert_eq!(p.free_count(), 2, "the last owner gave it back");
        let again = p.alloc().unwrap().into_shared();
        drop(again);
        assert_eq!(p.free_count(), 2);
    }

    #[test]
    fn a_device_write_is_remembered_until_the_cpu_writes() {
        use crate::dma::{DmaTarget, DmaTargetMut};
        let p = pool(4096, 2);
        let mut b = p.alloc().unwrap();
        assert_eq!(b.writer(0, 1), Writer::Cpu, "a fresh buffer is the CPU's");
        DmaTargetMut::device_wrote(&mut b, 512, 1024);
        assert_eq!(b.writer(512, 1024), Writer::Device);
        assert_eq!(DmaTarget::writer(&b, 600, 10), Writer::Device);
        assert_eq!(b.writer(511, 2), Writer::Cpu, "a byte before the write");
        assert_eq!(b.writer(1535, 2), Writer::Cpu, "a byte after it");
        let _: u8 = b.read(600);
        let _ = b.as_slice();
        assert_eq!(b.writer(512, 1024), Writer::Device, "reads change nothing");
        b.write::<u16>(0, 7);
        assert_eq!(
            b.writer(512, 1024),
            Writer::Cpu,
            "a word written by the CPU"
        );
        b.device_wrote(0, 4096);
        b.as_mut_slice();
        assert_eq!(
            b.writer(0, 1),
            Writer::Cpu,
            "a &mut slice may write any byte"
        );
        b.device_wrote(0, 100);
        let shared = b.into_shared();
        assert_eq!(shared.writer(0, 100), Writer::Device);
        assert_eq!(DmaTarget::writer(&shared.clone(), 50, 50), Writer::Device);
        assert_eq!(shared.writer(0, 101), Writer::Cpu);
        drop(shared);
        let mut again = p.alloc().unwrap();
        let mut other = p.alloc().unwrap();
        assert_eq!(
            (again.writer(0, 1), other.writer(0, 1)),
            (Writer::Cpu, Writer::Cpu),
            "no record survives the pool"
        );
        again.device_wrote(0, 10);
        again.device_wrote(0, 0);
        assert_eq!(
            again.writer(0, 10),
            Writer::Cpu,
            "a failed command records none"
        );
        other.device_wrote(4000, 200);
        assert_eq!(
            other.writer(4000, 96),
            Writer::Cpu,
            "a range past the buffer records none"
        );
    }

    #[test]
    fn write_at_keeps_the_record_unless_it_writes_into_it() {
        let p = pool(2048, 1);
        let mut b = p.alloc().unwrap();
        b.device_wrote(14, 60);
        b.write_at(2, &[0xaa; 12]);
        assert_eq!(b.as_slice()[2..14], [0xaa; 12]);
        assert_eq!((b.as_slice()[1], b.as_slice()[14]), (0, 0), "only those");
        assert_eq!(
            b.writer(14, 60),
            Writer::Device,
            "a header before the frame"
        );
        b.write_at(74, &[1; 4]);
        assert_eq!(b.writer(14, 60), Writer::Device, "bytes after it");
        b.write_at(73, &[7]);
        assert_eq!(
            b.writer(14, 59),
            Writer::Cpu,
            "a byte of it written: the CPU's"
        );
        assert_eq!(b.as_slice()[73], 7);
        b.device_wrote(14, 60);
        b.write_at(10, &[0; 8]);
        assert_eq!(b.writer(18, 10), Writer::Cpu, "an overlapping header");
    }

    #[test]
    #[should_panic]
    fn write_at_past_the_buffer_panics() {
        let p = pool(64, 1);
        let mut b = p.alloc().unwrap();
        b.write_at(60, &[0; 8]);
    }

    #[test]
    fn memory_without_a_record_is_always_the_cpus() {
        use crate::dma::{DmaTarget, DmaTargetMut};
        let c = Container::unbacked();
        let mut m = DmaMemory::new(&c, 4096, Backing::Auto).unwrap();
        m.device_wrote(0, 4096);
        assert_eq!(DmaTarget::writer(&m, 0, 4096), Writer::Cpu);
    }

    #[test]
    #[should_panic(expected = "beyond")]
    fn access_past_the_buffer_panics() {
        let p = pool(64, 2);
        let b = p.alloc().unwrap();
        let _: u32 = b.read(62);
    }
}
