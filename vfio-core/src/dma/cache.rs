//! A per-queue cache of one pool's buffers (DPDK's per-core mempool cache,
//! ixy's mempool stack): a queue that gives buffers back and takes them
//! again (a transmit ring cleaning, a receive ring refilling, a sender
//! building frames) does it on a stack it owns, with no lock and no change
//! of the pool's reference count. The pool's lock is taken once per half
//! a cache, when the stack runs empty or full.
//!
//! A cached buffer is a [`Buffer`] like any other: owned by the cache, out
//! of the pool's free list ([`BufferPool::free_count`] does not count it)
//! until the cache spills it or is dropped.

use std::sync::Arc;

use super::provenance::DeviceWritten;
use super::{Buffer, BufferPool};

/// A stack of at most `size` free buffers of one pool, owned by one queue.
///
/// ```no_run
/// use vfio_core::dma::{BufferCache, BufferPool};
///
/// # fn main() -> vfio_core::Result<()> {
/// # let container = vfio_core::vfio::Container::new()?;
/// # let _nic = container.open_device("0000:00:04.0".parse()?)?;
/// let pool = BufferPool::new(&container, 2048, 4096)?;
/// let mut cache = BufferCache::new(&pool, 256);
/// let buf = cache.alloc().expect("a fresh pool has free buffers");
/// cache.free(buf); // on the cache's stack, not the pool's list
/// assert_eq!(cache.len(), 128); // the half it took from the pool at once
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BufferCache {
    pool: Arc<BufferPool>,
    /// Never grown: `size` is its capacity (so that the room check of
    /// [`BufferCache::free_batched`] is also `push`'s own).
    stack: Vec<Buffer>,
    size: usize,
}

impl BufferCache {
    /// An empty cache of up to `size` (at least 2; the stack's capacity,
    /// should the allocator give more) of `pool`'s buffers.
    pub fn new(pool: &Arc<BufferPool>, size: usize) -> BufferCache {
        let stack = Vec::with_capacity(size.max(2));
        BufferCache {
            pool: Arc::clone(pool),
            size: stack.capacity(),
            stack,
        }
    }

    /// The pool the cache takes from and gives back to.
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    /// Buffers on the stack now.
    pub fn len(&self) -> usize {
        self.stack.len()
    }

    /// True when the stack is empty.
    pub fn is_empty(&self) -> bool {
        self.stack.is_empty()
    }

    /// A free buffer (not cleared; as fresh from the pool: the CPU's, see
    /// [`Buffer::writer`]), from the stack, or, when it is empty, after
    /// taking half a cache from the pool under one lock. None when the
    /// pool has none either.
    #[inline]
    pub fn alloc(&mut self) -> Option<Buffer> {
        if self.stack.is_empty() {
            self.refill();
        }
        let mut buf = self.stack.pop()?;
        buf.written = DeviceWritten::NONE;
        Some(buf)
    }

    /// Up to `n` free buffers (as [`BufferCache::alloc`] gives them), each
    /// turned into a `T` by `f` and appended to `out`, in one pass over the
    /// stack (refilled under one lock per half a cache); how many. Fewer
    /// than `n` only when the pool has run out.
    #[inline]
    pub fn alloc_into<T>(
        &mut self,
        n: usize,
        out: &mut Vec<T>,
        mut f: impl FnMut(Buffer) -> T,
    ) -> usize {
        let mut taken = 0;
        while taken < n {
            if self.stack.is_empty() {
                self.refill();
                if self.stack.is_empty() {
                    break;
                }
            }
            let k = (n - taken).min(self.stack.len());
            let from = self.stack.len() - k;
            out.extend(self.stack.drain(from..).map(|mut buf| {
                buf.written = DeviceWritten::NONE;
                f(buf)
            }));
            taken += k;
        }
        taken
    }

    /// Up to `n` free buffers (as [`BufferCache::alloc`] gives them) taken
    /// off the stack at once, for the caller to zip with what they go into
    /// (an exact-size iterator: a vector extended from it reserves once and
    /// checks no capacity per item). The stack holding fewer than `n`, it
    /// is refilled first under one lock (up to the cache's size). Fewer
    /// than `n` when the pool has run out, or `n` is more than the cache
    /// holds: call again for the rest (none: the pool has none).
    #[inline]
    pub fn take(&mut self, n: usize) -> impl ExactSizeIterator<Item = Buffer> + '_ {
        if self.stack.len() < n {
            self.refill_for(n);
        }
        let from = self.stack.len() - n.min(self.stack.len());
        self.stack.drain(from..).map(|mut buf| {
            buf.written = DeviceWritten::NONE;
            buf
        })
    }

    /// Takes `buf` back: onto the stack when it is of the cache's pool
    /// (the stack full, half of it goes back to the pool first, under one
    /// lock); another pool's goes back to its own pool.
    #[inline]
    pub fn free(&mut self, buf: Buffer) {
        if Arc::ptr_eq(buf.pool(), &self.pool) && self.stack.len() < self.size {
            self.stack.push(buf);
        } else {
            self.free_slow(buf);
        }
    }

    /// [`BufferCache::free`], the room checked against the stack's
    /// capacity (the cache's size: the stack never grows), which is
    /// `push`'s own check too, so the push is a store with no check of its
    /// own. For a loop giving buffers back one by one (virtio-net's
    /// transmit reclaim: 8.1 instructions fewer per packet). `free` keeps
    /// its form: in the e1000's `TxRing::fill`, where only a refused frame
    /// frees, this one left the loop 2.9 instructions a frame longer (its
    /// registers allocated otherwise).
    #[inline]
    pub fn free_batched(&mut self, buf: Buffer) {
        if Arc::ptr_eq(buf.pool(), &self.pool) && self.stack.len() < self.stack.capacity() {
            self.stack.push(buf);
        } else {
            self.free_slow(buf);
        }
    }

    /// Takes back every buffer in `slots` (a ring's, by descriptor),
    /// leaving each slot empty, as [`BufferCache::free`] one by one would,
    /// in one pass: when the stack has room for them all, each buffer of
    /// the cache's pool is pushed with no spill check.
    #[inline]
    pub fn free_slots(&mut self, slots: &mut [Option<Buffer>]) {
        // The slot's pool, null for an empty slot: one compare with the
        // cache's (never null) for both questions.
        let pool = Arc::as_ptr(&self.pool);
        let ours = |slot: &Option<Buffer>| {
            let of = slot
                .as_ref()
                .map_or(std::ptr::null(), |buf| Arc::as_ptr(buf.pool()));
            std::ptr::eq(of, pool)
        };
        if self.stack.len() + slots.len() <= self.size && slots.iter().all(ours) {
            // The common case, every slot holding one of the pool's
            // buffers: one look at the stack's room, then only moves.
            let taken = slots.iter_mut().map(|slot| match slot.take() {
                Some(buf) => buf,
                None => unreachable!("every slot was checked to hold a buffer"),
            });
            return self.stack.extend(taken);
        }
        slots
            .iter_mut()
            .filter_map(Option::take)
            .for_each(|buf| self.free(buf));
    }

    /// [`BufferCache::free`] of another pool's buffer, or onto a full stack.
    #[cold]
    fn free_slow(&mut self, buf: Buffer) {
        if !Arc::ptr_eq(buf.pool(), &self.pool) {
            return drop(buf);
        }
        self.spill();
        self.stack.push(buf);
    }

    #[cold]
    fn refill(&mut self) {
        self.pool.alloc_batch(self.size / 2, &mut self.stack);
    }

    /// [`BufferCache::take`] of `n` with fewer on the stack: half a cache
    /// from the pool, or what `n` needs when that is more, within the
    /// cache's size.
    #[cold]
    fn refill_for(&mut self, n: usize) {
        let len = self.stack.len();
        let want = (self.size / 2).max(n - len).min(self.size - len);
        self.pool.alloc_batch(want, &mut self.stack);
    }

    #[cold]
    fn spill(&mut self) {
        let keep = self.size / 2;
        self.pool.give_back(self.stack.drain(keep..));
    }
}

impl Drop for BufferCache {
    fn drop(&mut self) {
        self.pool.give_back(self.stack.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::Writer;
    use crate::vfio::Container;

    fn pool(count: usize) -> Arc<BufferPool> {
        BufferPool::new(&Container::unbacked(), 64, count).unwrap()
    }

    #[test]
    fn takes_and_gives_back_half_a_cache_at_a_time() {
        let p = pool(16);
        let mut c = BufferCache::new(&p, 8);
        let b = c.alloc().unwrap();
        assert_eq!((c.len(), p.free_count()), (3, 12));
        c.free(b);
        assert_eq!(c.len(), 4);
        let taken: Vec<Buffer> = (0..16).map_while(|_| c.alloc()).collect();
        assert_eq!((taken.len(), p.free_count(), c.len()), (16, 0, 0));
        assert!(c.alloc().is_none());
        for b in taken {
            c.free(b);
            assert!(c.len() <= 8);
        }
        // 16 back: the stack filled (8), spilled 4, took 4 more, then 4 more.
        assert_eq!((c.len(), p.free_count()), (8, 8));
        drop(c);
        assert_eq!(p.free_count(), 16);
    }

    #[test]
    fn alloc_into_takes_what_the_pool_has_across_refills() {
        let p = pool(10);
        let mut c = BufferCache::new(&p, 4);
        let mut dirty = c.alloc().unwrap();
        dirty.device_wrote(0, 8);
        c.free(dirty);
        let mut out = Vec::new();
        assert_eq!(c.alloc_into(7, &mut out, |b| (b.writer(0, 8), b)), 7);
        assert!(out.iter().all(|(w, _)| *w == Writer::Cpu), "records reset");
        let mut iovas: Vec<u64> = out.iter().map(|(_, b)| b.iova()).collect();
        iovas.sort_unstable();
        iovas.dedup();
        assert_eq!(iovas.len(), 7, "seven distinct buffers");
        assert_eq!(c.alloc_into(7, &mut out, |b| (Writer::Cpu, b)), 3);
        assert_eq!((out.len(), p.free_count(), c.len()), (10, 0, 0));
        assert_eq!(c.alloc_into(1, &mut out, |b| (Writer::Cpu, b)), 0);
    }

    #[test]
    fn free_batched_spills_and_sends_strangers_home_as_free_does() {
        let (p, q) = (pool(16), pool(4));
        let mut c = BufferCache::new(&p, 8);
        let taken: Vec<Buffer> = (0..16).map_while(|_| c.alloc()).collect();
        for b in taken {
            c.free_batched(b);
            assert!(c.len() <= 8);
        }
        assert_eq!((c.len(), p.free_count()), (8, 8));
        c.free_batched(q.alloc().unwrap());
        assert_eq!((c.len(), q.free_count()), (8, 4));
    }

    #[test]
    fn take_refills_within_the_cache_and_gives_what_the_pool_has() {
        let p = pool(10);
        let mut c = BufferCache::new(&p, 8);
        let mut dirty = c.alloc().unwrap();
        dirty.device_wrote(0, 8);
        c.free(dirty);
        // 4 on the stack; 6 wanted: refilled to 8 (not past the size).
        assert_eq!(c.len(), 4);
        let taken: Vec<Buffer> = c.take(6).collect();
        assert_eq!((taken.len(), c.len(), p.free_count()), (6, 2, 2));
        assert!(taken.iter().all(|b| b.writer(0, 8) == Writer::Cpu));
        // More than the pool and the stack hold: what there is.
        let rest: Vec<Buffer> = c.take(9).collect();
        assert_eq!((rest.len(), c.len(), p.free_count()), (4, 0, 0));
        assert_eq!(c.take(1).len(), 0, "the pool is out");
        drop((taken, rest));
        assert_eq!(p.free_count(), 10);
    }

    #[test]
    fn another_pools_buffer_goes_home() {
        let (p, q) = (pool(4), pool(4));
        let mut c = BufferCache::new(&p, 4);
        let foreign = q.alloc().unwrap();
        c.free(foreign);
        assert_eq!((c.len(), q.free_count()), (0, 4));
    }

    #[test]
    fn a_recycled_buffer_is_the_cpus_again() {
        let p = pool(2);
        let mut c = BufferCache::new(&p, 2);
        let mut b = c.alloc().unwrap();
        b.device_wrote(0, 64);
        assert_eq!(b.writer(0, 64), Writer::Device);
        let iova = b.iova();
        c.free(b);
        let b = c.alloc().unwrap();
        assert_eq!((b.iova(), b.writer(0, 64)), (iova, Writer::Cpu));
    }

    #[test]
    fn free_slots_empties_every_slot_like_free_one_by_one() {
        let (p, q) = (pool(16), pool(4));
        let mut c = BufferCache::new(&p, 8);
        // Every slot one of the pool's, room for all: all onto the stack.
        let mut slots: Vec<Option<Buffer>> = vec![c.alloc(), c.alloc(), c.alloc()];
        let before = c.len();
        c.free_slots(&mut slots);
        assert!(slots.iter().all(Option::is_none));
        assert_eq!(c.len(), before + 3);
        // An empty slot and another pool's buffer among them: that one home.
        let mut slots: Vec<Option<Buffer>> = vec![c.alloc(), None, q.alloc(), c.alloc()];
        let before = c.len();
        c.free_slots(&mut slots);
        assert!(slots.iter().all(Option::is_none));
        assert_eq!((c.len(), q.free_count()), (before + 2, 4));
        // No room for all: one by one, spilling half a cache to the pool.
        let mut slots: Vec<Option<Buffer>> = (0..8).map(|_| p.alloc()).collect();
        c.free_slots(&mut slots);
        assert!(slots.iter().all(Option::is_none));
        assert!(c.len() <= 8);
        drop(c);
        assert_eq!(p.free_count(), 16, "every buffer home");
    }
}
