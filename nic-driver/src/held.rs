//! What a transmit ring's descriptors hold until the NIC is done with them,
//! by descriptor index: the buffer the bytes are in (owned, back to the
//! ring's [`BufferCache`] on release), or one share of a shared buffer
//! (dropped on release, the buffer going home with the last share).
//!
//! Owned buffers and shares are kept apart so that the common case, a ring
//! of owned buffers, stores and takes 24 bytes per descriptor with no tag
//! to match, and release looks at the shares only while there are some.

use std::ops::Range;

use vfio_core::dma::{Buffer, BufferCache, DmaTarget, SharedBuffer};

use crate::frame::Hold;

#[derive(Debug)]
pub(crate) struct Held {
    own: Vec<Option<Buffer>>,
    shared: Vec<Option<SharedBuffer>>,
    /// Shares held now.
    shares: usize,
}

impl Held {
    /// Nothing held, for a ring of `size` descriptors.
    pub(crate) fn new(size: usize) -> Held {
        Held {
            own: (0..size).map(|_| None).collect(),
            shared: (0..size).map(|_| None).collect(),
            shares: 0,
        }
    }

    /// Descriptors of the ring.
    #[inline]
    pub(crate) fn size(&self) -> usize {
        self.own.len()
    }

    /// Descriptor `i` (released since it was last used) holds `buf`.
    /// Were it still holding one (a driver's bug), that buffer would be
    /// leaked, never freed early: its slot is overwritten without a drop
    /// (so the store needs no look at the old value; debug builds assert).
    /// An index past the ring (a driver's bug too) leaks `buf` the same
    /// way: no panic path, so the caller's buffer need not be kept for
    /// unwinding.
    #[inline(always)]
    pub(crate) fn own(&mut self, i: usize, buf: Buffer) {
        debug_assert!(i < self.own.len(), "descriptor {i} past the ring");
        let old = match self.own.get_mut(i) {
            Some(slot) => slot.replace(buf),
            None => Some(buf),
        };
        debug_assert!(old.is_none(), "descriptor {i} still held a buffer");
        std::mem::forget(old);
    }

    /// The owned-buffer slots of descriptors `range` (released since they
    /// were last used), for [`Held::fill`] one by one.
    #[inline]
    pub(crate) fn slots(&mut self, range: Range<usize>) -> &mut [Option<Buffer>] {
        &mut self.own[range]
    }

    /// A slot of [`Held::slots`] holds `buf`; as in [`Held::own`], a
    /// buffer still there would be leaked, never freed early.
    #[inline(always)]
    pub(crate) fn fill(slot: &mut Option<Buffer>, buf: Buffer) {
        let old = slot.replace(buf);
        debug_assert!(old.is_none(), "a descriptor still held a buffer");
        std::mem::forget(old);
    }

    /// Descriptor `i` (released since it was last used) holds `hold`.
    #[inline(always)]
    pub(crate) fn put(&mut self, i: usize, hold: Hold) {
        match hold {
            Hold::Own(buf) => self.own(i, buf),
            Hold::Shared(share) => {
                debug_assert!(
                    self.shared[i].is_none(),
                    "descriptor {i} still holds a share"
                );
                self.shared[i] = Some(share);
                self.shares += 1;
            }
        }
    }

    /// Releases what descriptors `range` hold: owned buffers onto `cache`
    /// (another pool's go home), shares dropped.
    #[inline]
    pub(crate) fn release(&mut self, range: Range<usize>, cache: &mut BufferCache) {
        if self.shares == 0 {
            return cache.free_slots(&mut self.own[range]);
        }
        let mut dropped = 0;
        let own = self.own[range.clone()].iter_mut();
        for (own, share) in own.zip(&mut self.shared[range]) {
            if let Some(buf) = own.take() {
                cache.free(buf);
            }
            dropped += share.take().is_some() as usize;
        }
        self.shares -= dropped;
    }

    /// Leaves everything held allocated, mapped and out of its pool for
    /// good (a NIC that could not be stopped).
    pub(crate) fn leak(&mut self) {
        self.own
            .iter_mut()
            .filter_map(Option::take)
            .for_each(DmaTarget::leak);
        self.shared
            .iter_mut()
            .filter_map(Option::take)
            .for_each(DmaTarget::leak);
        self.shares = 0;
    }
}
