//! Doorbells: the MMIO registers of base spec 3.1.3.22 and, when the
//! controller took a Doorbell Buffer Config (base spec 5.8), their shadows in
//! host memory.
//!
//! With shadow doorbells the driver writes each new SQ tail or CQ head to
//! the shadow page, then reads the controller's event index for that
//! doorbell from the EventIdx page, and writes the MMIO register only when
//! the new value passed the event index (the controller stopped looking and
//! waits for a doorbell). The controller writes its event index before it
//! reads the shadow again, the driver writes the shadow before it reads the
//! event index, each with a full fence between: one of the two always sees
//! the other's write, so no submission is left unseen.
//!
//! Both pages are DMA memory the controller reads and writes. They are
//! shared (`Arc`) by the admin state and every I/O queue pair and are freed
//! only after the controller was stopped, as the admin queue's rings are. An
//! event index is device-written and is only ever compared: a wrong value
//! costs an MMIO write too many, or, from a controller that lies about
//! waiting, a command that times out.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use vfio_core::dma::{Backing, DmaMemory};
use vfio_core::mmio::Mmio;
use vfio_core::vfio::Container;

use crate::regs::DOORBELL_BASE;
use crate::spec::PAGE_SIZE;
use crate::Result;

/// The shadow doorbell page and the EventIdx page of one controller, laid
/// out as the doorbell registers are (base spec 5.8: the entry of a
/// doorbell is at its register's offset from 1000h).
#[derive(Debug)]
pub(crate) struct ShadowPages {
    shadow: DmaMemory,
    event_idx: DmaMemory,
}

impl ShadowPages {
    /// Zeroed pages with room for the doorbells of queues 0..=`max_qid`
    /// spaced `4 << dstrd` apart.
    pub(crate) fn new(container: &Arc<Container>, max_qid: u16, dstrd: u8) -> Result<ShadowPages> {
        let end = doorbell_offset(max_qid, true, dstrd) - DOORBELL_BASE + 4;
        let bytes = end.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let pages = ShadowPages {
            shadow: DmaMemory::new(container, bytes, Backing::Auto)?,
            event_idx: DmaMemory::new(container, bytes, Backing::Auto)?,
        };
        pages.clear();
        Ok(pages)
    }

    /// IOVA of the shadow doorbell page (PRP1 of Doorbell Buffer Config).
    pub(crate) fn shadow_iova(&self) -> u64 {
        self.shadow.iova()
    }

    /// IOVA of the EventIdx page (PRP2 of Doorbell Buffer Config).
    pub(crate) fn event_idx_iova(&self) -> u64 {
        self.event_idx.iova()
    }

    /// Every shadow and event index 0, as for a controller with no I/O queues.
    pub(crate) fn clear(&self) {
        let zeros = vec![0u8; self.shadow.len()];
        self.shadow.write_bytes(0, &zeros);
        self.event_idx.write_bytes(0, &zeros);
    }

    /// Keep both pages allocated and mapped after drop (the controller may
    /// still write them).
    pub(crate) fn leak_on_drop(&self) {
        self.shadow.leak_on_drop();
        self.event_idx.leak_on_drop();
    }

    fn fits(&self, slot: usize) -> bool {
        slot + 4 <= self.shadow.len()
    }
}

/// BAR0 offset of queue `qid`'s SQ tail doorbell, or its CQ head doorbell
/// when `cq` (base spec 3.1.3.22).
pub(crate) fn doorbell_offset(qid: u16, cq: bool, dstrd: u8) -> usize {
    let stride = 4usize << dstrd;
    DOORBELL_BASE + (2 * qid as usize + cq as usize) * stride
}

/// Whether a doorbell moving from `old` to `new` passed `event_idx`, the
/// value after which the controller asked to be told (base spec 5.8; the
/// comparison is modulo 2^16, as Linux and SPDK make it).
pub(crate) fn need_event(event_idx: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event_idx).wrapping_sub(1) < new.wrapping_sub(old)
}

/// One doorbell register, and its shadow when the controller has them.
#[derive(Debug)]
pub(crate) struct Doorbell {
    bar: Arc<Mmio>,
    offset: usize,
    shadow: Option<(Arc<ShadowPages>, usize)>,
    /// The value the controller was last given (shadow or MMIO).
    last: u16,
}

impl Doorbell {
    /// The doorbell at BAR0 `offset`, shadowed in `shadow` when given and
    /// when the pages reach its slot.
    pub(crate) fn new(bar: Arc<Mmio>, offset: usize, shadow: Option<Arc<ShadowPages>>) -> Doorbell {
        let slot = offset - DOORBELL_BASE;
        let shadow = shadow.filter(|s| s.fits(slot)).map(|s| (s, slot));
        let mut d = Doorbell {
            bar,
            offset,
            shadow,
            last: 0,
        };
        d.reset();
        d
    }

    /// Whether writes go through a shadow doorbell.
    pub(crate) fn is_shadowed(&self) -> bool {
        self.shadow.is_some()
    }

    /// Back to 0, as the queue is when (re-)created at the controller.
    pub(crate) fn reset(&mut self) {
        self.last = 0;
        if let Some((pages, slot)) = &self.shadow {
            pages.shadow.write::<u32>(*slot, 0);
            pages.event_idx.write::<u32>(*slot, 0);
        }
    }

    /// Gives the controller `value`; true when that took an MMIO write.
    /// The caller has fenced the queue entries this value covers.
    pub(crate) fn write(&mut self, value: u16) -> bool {
        let old = std::mem::replace(&mut self.last, value);
        let Some((pages, slot)) = &self.shadow else {
            self.bar.write32(self.offset, value as u32);
            return true;
        };
        pages.shadow.write::<u32>(*slot, value as u32);
        // The shadow must be visible before the event index is read: the
        // controller writes the index, then reads the shadow again.
        fence(Ordering::SeqCst);
        let event_idx = pages.event_idx.read::<u32>(*slot) as u16;
        if need_event(event_idx, value, old) {
            self.bar.write32(self.offset, value as u32);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_index_between_old_and_new_needs_the_doorbell() {
        // The controller asked to be told once the tail passes 5.
        assert!(need_event(5, 6, 5));
        assert!(need_event(5, 8, 3));
        assert!(need_event(7, 8, 5));
    }

    #[test]
    fn an_event_index_outside_the_move_needs_none() {
        // Index 8: the controller has seen up to 8 and reads the shadow again.
        assert!(!need_event(8, 8, 5));
        assert!(!need_event(9, 8, 5));
        // Index before `old`: it was told when the doorbell passed it.
        assert!(!need_event(4, 8, 5));
        assert!(!need_event(5, 5, 5));
    }

    #[test]
    fn the_comparison_wraps_as_queue_indexes_do() {
        // 30 -> 2 on a 32-entry queue, seen as 16-bit values.
        assert!(need_event(30, 2, 30));
        assert!(need_event(31, 2, 30));
        assert!(need_event(0, 2, 30));
        assert!(need_event(1, 2, 30));
        assert!(!need_event(2, 2, 30));
        assert!(!need_event(29, 2, 30));
        assert!(need_event(u16::MAX, 0, u16::MAX - 1));
    }

    #[test]
    fn offsets_follow_the_doorbell_stride() {
        assert_eq!(doorbell_offset(0, false, 0), 0x1000);
        assert_eq!(doorbell_offset(0, true, 0), 0x1004);
        assert_eq!(doorbell_offset(3, false, 0), 0x1018);
        assert_eq!(doorbell_offset(3, true, 2), 0x1000 + 7 * 16);
    }
}
