//! The receive ring (8254x SDM section 3.2): descriptors in DMA memory, one
//! pool buffer per descriptor, RDT written once per batch. The NIC writes each
//! frame [`RX_HEADROOM`] bytes into its buffer, so that what follows the
//! 14-byte Ethernet header (and a 42-byte Ethernet/IPv4/UDP header) is 4-byte
//! aligned: another device can then DMA a payload straight from the buffer.
//!
//! Descriptors are device-written memory: each is read with volatile loads and
//! checked (DD, EOP, no errors, a length that fits the buffer) before its
//! buffer is handed out as a packet. One call reads at most the descriptors
//! the NIC owns (all but the one at RDT), so a NIC that sets DD everywhere,
//! again and again, cannot keep the driver in the loop.
//!
//! Ordering (the device reads what the CPU wrote, and the other way round):
//! an acquire fence between reading DD and reading the rest of the descriptor
//! and the frame, a release fence between re-arming descriptors and writing
//! RDT. On x86-64 both are compiler barriers only (its loads are not
//! reordered with loads, nor its stores with stores, and MMIO is uncached);
//! they make the order the device needs explicit for any target.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use vfio_core::dma::{Backing, Buffer, BufferCache, BufferPool, DmaMemory};
use vfio_core::mmio::Mmio;
use vfio_core::vfio::Container;

use super::regs::{rxd, RDBAH, RDBAL, RDH, RDLEN, RDT};
use crate::{Packet, Result};

/// What one call to [`RxRing::receive`] found besides packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RxCounts {
    /// Frames taken out as packets.
    pub taken: usize,
    pub errors: u64,
    pub no_buffer: u64,
}

/// Bytes before each received frame in its buffer (the [`Packet::offset`]
/// of every received packet): they make what follows a 14-byte Ethernet
/// header 4-byte aligned.
pub const RX_HEADROOM: usize = 2;

/// Most descriptors [`RxRing::receive`] takes in one run (a batch of
/// nic-echo's, or bench-host's, in one).
const RUN: usize = 32;

#[derive(Debug)]
pub(crate) struct RxRing {
    desc: DmaMemory,
    /// The buffer each descriptor points at, the NIC's to write until
    /// [`RxRing::receive`] swaps it for a fresh one (every descriptor has one).
    bufs: Vec<Buffer>,
    next: usize,
    /// In the middle of a frame that spans descriptors (dropped whole).
    discarding: bool,
    /// [`RxRing::receive`]'s words of a run (nothing between calls): here,
    /// not on its stack, so that no call clears 512 bytes first.
    words: [[u64; 2]; RUN],
}

impl RxRing {
    /// A ring of `size` descriptors, each armed with a buffer from `pool`;
    /// not yet given to the NIC ([`RxRing::start`]). `pool` is the driver's
    /// own, of the NIC's `container`, and the only place receive buffers
    /// come from (no caller hands the NIC receive memory): checked here, so
    /// no descriptor ever points at memory of another container.
    pub(crate) fn new(
        container: &Arc<Container>,
        pool: &Arc<BufferPool>,
        size: usize,
    ) -> Result<RxRing> {
        assert!(
            Arc::ptr_eq(pool.container(), container),
            "the receive pool is of another container than the NIC's"
        );
        let desc = DmaMemory::new(container, size * rxd::SIZE, Backing::Auto)?;
        let bufs = (0..size)
            .map(|_| pool.try_alloc())
            .collect::<vfio_core::Result<Vec<Buffer>>>()?;
        for (i, buf) in bufs.iter().enumerate() {
            desc.write_words::<u64>(i * rxd::SIZE, &armed(buf));
        }
        Ok(RxRing {
            desc,
            bufs,
            next: 0,
            discarding: false,
            words: [[0; 2]; RUN],
        })
    }

    /// Gives the ring to the NIC: base, length, head 0, tail at the last
    /// descriptor (the NIC owns all but that one).
    pub(crate) fn start(&self, bar: &Mmio) {
        bar.write32(RDBAL, self.desc.iova() as u32);
        bar.write32(RDBAH, (self.desc.iova() >> 32) as u32);
        bar.write32(RDLEN, (self.size() * rxd::SIZE) as u32);
        bar.write32(RDH, 0);
        // The armed descriptors before the NIC may read them.
        fence(Ordering::Release);
        bar.write32(RDT, (self.size() - 1) as u32);
    }

    fn size(&self) -> usize {
        self.bufs.len()
    }

    /// True when the descriptor at the head has a frame.
    pub(crate) fn has_frame(&self) -> bool {
        done(&self.desc, self.next)
    }

    /// Takes up to `max` frames into `out`, refilling each descriptor from
    /// `cache` (or reusing its buffer, dropping the frame, when the pool is
    /// empty); then gives the descriptors back with one RDT write. Reads at
    /// most the `size - 1` descriptors the NIC owns.
    ///
    /// Descriptors are taken in runs of at most [`RUN`] that do not wrap,
    /// in three passes: the written-back descriptors read (DD of each, one
    /// acquire fence, then the rest of each), the frames taken and the
    /// buffers swapped, the descriptors re-armed. Only the first and last
    /// passes touch descriptor memory: its atomic accesses make the
    /// compiler reload the ring's, the cache's and `out`'s fields after
    /// each one, so the middle pass, which has none, keeps them in registers.
    pub(crate) fn receive(
        &mut self,
        bar: &Mmio,
        cache: &mut BufferCache,
        out: &mut Vec<Packet>,
        max: usize,
    ) -> RxCounts {
        // Counts in locals (registers), not in the struct returned.
        let (mut taken, mut errors, mut no_buffer) = (0, 0, 0);
        let (size, mut i) = (self.size(), self.next);
        let mut seen = 0;
        let max = max.min(size - 1);
        out.reserve(max);
        // Every buffer of the ring is of the driver's pool, the cache's
        // (`new` armed it from there, and the cache holds only its own
        // pool's buffers): one capacity for all. Were one smaller, a
        // packet's bytes would still be read through bounds-checked slices.
        let capacity = cache.pool().buf_size();
        // Per descriptor of a run: dwords 2 and 3 as read (in the second
        // word), then the descriptor it is re-armed as (its buffer's IOVA
        // after the headroom, status cleared).
        let words = &mut self.words;
        while seen < size - 1 && taken < max {
            // At most what could still be taken and read, up to the ring's end.
            let want = (max - taken).min(size - 1 - seen).min(size - i).min(RUN);
            let mut ready = 0;
            while ready < want && done(&self.desc, i + ready) {
                ready += 1;
            }
            if ready == 0 {
                break;
            }
            // DD before the rest of the descriptors and the frames they describe.
            fence(Ordering::Acquire);
            // Whether every descriptor of the run holds a whole good frame
            // (as `check_descriptor` would find, with none being discarded).
            let mut all_good = !self.discarding;
            for (k, word) in words[..ready].iter_mut().enumerate() {
                // Dwords 2 and 3 (length, checksum, status, errors, special)
                // in one read, after DD; the fields by their byte offsets.
                word[1] = self.desc.read::<u64>((i + k) * rxd::SIZE + rxd::LENGTH);
                all_good &= good_frame(word[1], capacity);
            }
            let slots = &mut self.bufs[i..i + ready];
            if all_good {
                // The common case: each frame's buffer out as a packet and
                // a fresh one in, taken from the cache a run at a time.
                let mut done = 0;
                while done < ready {
                    let fresh = cache.take(ready - done);
                    let got = fresh.len();
                    if got == 0 {
                        break;
                    }
                    let slots = slots[done..].iter_mut().zip(&mut words[done..]);
                    out.extend(slots.zip(fresh).map(|((slot, word), fresh)| {
                        let len = field(word[1], rxd::LENGTH, 16);
                        let old = std::mem::replace(slot, fresh);
                        *word = armed(slot);
                        // good_frame: RX_HEADROOM + len fits the buffer.
                        Packet::received_checked(old, RX_HEADROOM, len)
                    }));
                    done += got;
                }
                taken += done;
                // The pool ran out: these frames are dropped, their buffers stay.
                for (slot, word) in slots[done..].iter().zip(&mut words[done..ready]) {
                    no_buffer += 1;
                    *word = armed(slot);
                }
            } else {
                for (slot, word) in slots.iter_mut().zip(&mut words[..ready]) {
                    let upper = word[1];
                    let status = field(upper, rxd::STATUS, 8) as u8;
                    let errors_field = field(upper, rxd::ERRORS, 8) as u8;
                    let len = field(upper, rxd::LENGTH, 16);
                    debug_assert_eq!(slot.capacity(), capacity);
                    let good =
                        check_descriptor(&mut self.discarding, status, errors_field, len, capacity);
                    errors += !good as u64;
                    if good {
                        match cache.alloc() {
                            Some(fresh) => {
                                let old = std::mem::replace(slot, fresh);
                                // check_descriptor: RX_HEADROOM + len fits the buffer.
                                out.push(Packet::received_checked(old, RX_HEADROOM, len));
                                taken += 1;
                            }
                            // The frame is dropped; its buffer stays.
                            None => no_buffer += 1,
                        }
                    }
                    *word = armed(slot);
                }
            }
            // The run's descriptors in order, one bounds check.
            self.desc
                .write_words::<u64>(i * rxd::SIZE, words[..ready].as_flattened());
            seen += ready;
            i = if i + ready == size { 0 } else { i + ready };
        }
        if seen > 0 {
            self.next = i;
            // The re-armed descriptors before the NIC may own them again.
            fence(Ordering::Release);
            bar.write32(RDT, i.checked_sub(1).unwrap_or(size - 1) as u32);
        }
        RxCounts {
            taken,
            errors,
            no_buffer,
        }
    }

    /// Leaves the descriptor memory and every buffer the ring holds
    /// allocated and mapped for good, for a NIC that could not be stopped.
    pub(crate) fn leak(&mut self) {
        self.desc.leak_on_drop();
        self.bufs
            .drain(..)
            .for_each(vfio_core::dma::DmaTarget::leak);
    }
}

/// True when the NIC has written descriptor `i` of `desc` back (DD).
#[inline]
fn done(desc: &DmaMemory, i: usize) -> bool {
    desc.read::<u8>(i * rxd::SIZE + rxd::STATUS) & rxd::DD != 0
}

/// A receive descriptor pointing at `buf` (after the headroom), status
/// cleared, as its two words.
#[inline]
fn armed(buf: &Buffer) -> [u64; 2] {
    [buf.iova() + RX_HEADROOM as u64, 0]
}

/// The field of `bits` bits at byte `offset` of a receive descriptor, from
/// its dwords 2 and 3 (`upper`, read as one little-endian word).
#[inline(always)]
fn field(upper: u64, offset: usize, bits: u32) -> usize {
    (upper >> (8 * (offset - rxd::LENGTH))) as usize & ((1 << bits) - 1)
}

/// Whether dwords 2 and 3 of a written-back receive descriptor (`upper`)
/// hold a whole good frame that fits a `capacity`-byte buffer after the
/// headroom: what [`check_descriptor`] accepts when no frame is being
/// discarded.
#[inline(always)]
fn good_frame(upper: u64, capacity: usize) -> bool {
    let (status, errors) = (field(upper, rxd::STATUS, 8), field(upper, rxd::ERRORS, 8));
    let len = field(upper, rxd::LENGTH, 16);
    status & rxd::EOP as usize != 0 && errors == 0 && fits(len, capacity)
}

/// Whether a frame's length is not 0 and fits a `capacity`-byte buffer
/// after the headroom.
#[inline(always)]
fn fits(len: usize, capacity: usize) -> bool {
    len != 0 && len <= capacity.saturating_sub(RX_HEADROOM)
}

/// Whether a written-back receive descriptor (its STATUS, ERRORS and LENGTH
/// fields) holds a whole, good frame that fits a `capacity`-byte buffer after
/// the headroom. `discarding` carries across calls: set while the rest of a
/// frame longer than one buffer is skipped (this driver does not chain
/// buffers). The device is untrusted: any values are handled.
pub fn check_descriptor(
    discarding: &mut bool,
    status: u8,
    errors: u8,
    len: usize,
    capacity: usize,
) -> bool {
    let eop = status & rxd::EOP != 0;
    if *discarding || !eop {
        *discarding = !eop;
        return false;
    }
    errors == 0 && fits(len, capacity)
}
