//! One submission/completion queue pair: its rings in DMA memory, its
//! doorbells, and the command IDs in flight (base spec section 3.3).
//!
//! Completions are device-written memory: each entry is read with volatile
//! loads and checked (command ID in flight, SQ head in range) before use.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use vfio_core::dma::{Backing, DmaMemory};
use vfio_core::mmio::Mmio;
use vfio_core::vfio::Container;

use crate::doorbell::{doorbell_offset, Doorbell, ShadowPages};
use crate::regs::DOORBELL_BASE;
use crate::spec::{Command, Completion, CQE_SIZE, SQE_SIZE};
use crate::{Error, Result};

/// How many I/O queues have their doorbells inside a BAR of `bar_len` bytes.
pub(crate) fn doorbell_limit(bar_len: usize, dstrd: u8) -> u16 {
    let stride = 4usize << dstrd;
    let pairs = bar_len.saturating_sub(DOORBELL_BASE) / (2 * stride);
    pairs.saturating_sub(1).min(u16::MAX as usize) as u16
}

/// A submission queue and the completion queue it posts to, with the same ID.
#[derive(Debug)]
pub(crate) struct QueuePair {
    qid: u16,
    entries: u16,
    sq: DmaMemory,
    cq: DmaMemory,
    bar: Arc<Mmio>,
    sq_doorbell: Doorbell,
    cq_doorbell: Doorbell,
    sq_tail: u16,
    /// The controller's SQ head as of its last completion.
    sq_head: u16,
    cq_head: u16,
    phase: bool,
    /// Free command IDs (a stack: O(1), no allocation).
    free_cids: Vec<u16>,
    in_flight: Vec<bool>,
    unrung: bool,
}

impl QueuePair {
    /// Rings of `entries` (2..=4096) in fresh DMA memory; doorbells `4 << dstrd`
    /// apart, which must lie inside the BAR (the stride is the device's word),
    /// shadowed in `shadow` when given.
    pub(crate) fn new(
        container: &Arc<Container>,
        bar: Arc<Mmio>,
        qid: u16,
        entries: u16,
        dstrd: u8,
        shadow: Option<Arc<ShadowPages>>,
    ) -> Result<QueuePair> {
        let sq_doorbell = doorbell_offset(qid, false, dstrd);
        let cq_doorbell = doorbell_offset(qid, true, dstrd);
        if !bar.fits(cq_doorbell, 4) {
            return Err(Error::Protocol(format!(
                "queue {qid}'s doorbells at {sq_doorbell:#x} (stride {} from CAP.DSTRD) lie outside the {:#x}-byte BAR0",
                4usize << dstrd,
                bar.len()
            )));
        }
        if !(2..=4096).contains(&entries) {
            return Err(Error::InvalidArgument(format!(
                "a queue of {entries} entries; 2 to 4096 are possible"
            )));
        }
        let sq = DmaMemory::new(container, entries as usize * SQE_SIZE, Backing::Auto)?;
        let cq = DmaMemory::new(container, entries as usize * CQE_SIZE, Backing::Auto)?;
        let cids = entries - 1;
        Ok(QueuePair {
            qid,
            entries,
            sq,
            cq,
            sq_doorbell: Doorbell::new(Arc::clone(&bar), sq_doorbell, shadow.clone()),
            cq_doorbell: Doorbell::new(Arc::clone(&bar), cq_doorbell, shadow),
            bar,
            sq_tail: 0,
            sq_head: 0,
            cq_head: 0,
            phase: true,
            free_cids: (0..cids).rev().collect(),
            in_flight: vec![false; entries as usize],
            unrung: false,
        })
    }

    pub(crate) fn qid(&self) -> u16 {
        self.qid
    }

    /// Keep both rings allocated and mapped after drop (the controller may
    /// still write them).
    pub(crate) fn leak_on_drop(&self) {
        self.sq.leak_on_drop();
        self.cq.leak_on_drop();
    }

    pub(crate) fn sq_iova(&self) -> u64 {
        self.sq.iova()
    }

    pub(crate) fn cq_iova(&self) -> u64 {
        self.cq.iova()
    }

    /// Forgets every command in flight and empties both rings, for a controller
    /// that was reset (it has dropped them and will DMA no more).
    pub(crate) fn reset(&mut self) {
        self.cq.write_bytes(0, &vec![0; self.cq.len()]);
        self.sq_tail = 0;
        self.sq_head = 0;
        self.cq_head = 0;
        self.phase = true;
        self.free_cids = (0..self.entries - 1).rev().collect();
        self.in_flight.fill(false);
        self.unrung = false;
        self.sq_doorbell.reset();
        self.cq_doorbell.reset();
    }

    /// Whether this queue pair's doorbells are shadowed (base spec 5.8).
    pub(crate) fn has_shadow_doorbells(&self) -> bool {
        self.sq_doorbell.is_shadowed()
    }

    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    /// Commands submitted and not completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.entries as usize - 1 - self.free_cids.len()
    }

    /// Whether command ID `cid` was submitted and has not completed.
    pub(crate) fn is_in_flight(&self, cid: usize) -> bool {
        self.in_flight.get(cid).copied().unwrap_or(false)
    }

    /// Most commands that can be in flight at once.
    pub(crate) fn depth(&self) -> usize {
        self.entries as usize - 1
    }

    /// The command ID the next `submit` will use, if the queue has room.
    pub(crate) fn next_cid(&self) -> Option<u16> {
        if self.is_full() {
            None
        } else {
            self.free_cids.last().copied()
        }
    }

    /// The SQ tail after one more entry: wrapped by a compare, not `%`.
    fn next_tail(&self) -> u16 {
        let next = self.sq_tail + 1;
        if next == self.entries {
            0
        } else {
            next
        }
    }

    fn is_full(&self) -> bool {
        self.next_tail() == self.sq_head || self.free_cids.is_empty()
    }

    /// Writes `cmd` into the next SQ slot with a fresh command ID; the doorbell
    /// is written by [`QueuePair::ring`], once per batch.
    pub(crate) fn submit(&mut self, cmd: Command) -> Result<u16> {
        self.submit_with(|_| cmd).ok_or_else(|| Error::QueueFull {
            qid: self.qid,
            depth: self.in_flight(),
        })
    }

    /// As [`QueuePair::submit`], with the command made by `cmd` from its
    /// command ID (for data pointers kept by command ID, e.g. PRP lists);
    /// None, and `cmd` not called, when the queue is full. The one check of
    /// room a submission pays.
    #[inline]
    pub(crate) fn submit_with(&mut self, cmd: impl FnOnce(u16) -> Command) -> Option<u16> {
        let tail = self.next_tail();
        if tail == self.sq_head {
            return None;
        }
        let cid = self.free_cids.pop()?;
        let mut cmd = cmd(cid);
        cmd.set_cid(cid);
        // The entry as eight 64-bit stores, not sixteen 32-bit ones.
        self.sq
            .write_words::<u64>(self.sq_tail as usize * SQE_SIZE, &cmd.qwords());
        self.in_flight[cid as usize] = true;
        self.sq_tail = tail;
        self.unrung = true;
        Some(cid)
    }

    /// Tells the controller about everything submitted since the last ring.
    pub(crate) fn ring(&mut self) {
        if self.unrung {
            // The SQ entries must be in memory before the doorbell write.
            fence(Ordering::SeqCst);
            self.sq_doorbell.write(self.sq_tail);
            self.unrung = false;
        }
    }

    /// CSTS reads as all ones: the device is gone.
    pub(crate) fn device_gone(&self) -> bool {
        self.bar.read32(crate::regs::CSTS) == u32::MAX
    }

    /// Takes up to `max` new completions, calling `f` for each, then writes the
    /// CQ head doorbell once. A completion that no correct controller writes
    /// (unknown command ID, SQ head out of range) is consumed and reported as
    /// an error after the valid ones before it were handed to `f`.
    pub(crate) fn poll(&mut self, max: usize, mut f: impl FnMut(Completion)) -> Result<usize> {
        let mut taken = 0;
        let mut bad = None;
        while taken < max {
            let Some(c) = self.next_completion() else {
                break;
            };
            taken += 1;
            match self.check(&c) {
                Ok(()) => {
                    self.in_flight[c.cid as usize] = false;
                    self.free_cids.push(c.cid);
                    self.sq_head = c.sq_head;
                    f(c);
                }
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        if taken > 0 {
            self.cq_doorbell.write(self.cq_head);
        }
        match bad {
            Some(e) => Err(e),
            None => Ok(taken),
        }
    }

    /// Whether the controller has written the entry at the CQ head (its
    /// phase bit matches), without taking it.
    pub(crate) fn completion_ready(&self) -> bool {
        self.head_dw3().is_some()
    }

    /// Dword 3 of the entry at the CQ head if the controller has written it.
    #[inline]
    fn head_dw3(&self) -> Option<u32> {
        let dw3 = self.cq.read::<u32>(self.cq_head as usize * CQE_SIZE + 12);
        ((dw3 >> 16 & 1 == 1) == self.phase).then_some(dw3)
    }

    /// The entry at the CQ head if the controller has written it (its phase
    /// bit matches), advancing the head.
    #[inline]
    fn next_completion(&mut self) -> Option<Completion> {
        let base = self.cq_head as usize * CQE_SIZE;
        let dw3 = self.head_dw3()?;
        // Read the rest of the entry only after its phase bit said it is complete.
        fence(Ordering::Acquire);
        // DW1 is not read: no command this driver sends uses it, and
        // `Completion::parse` ignores it.
        let dw = [
            self.cq.read::<u32>(base),
            0,
            self.cq.read::<u32>(base + 8),
            dw3,
        ];
        self.cq_head += 1;
        if self.cq_head == self.entries {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        Some(Completion::parse(dw).0)
    }

    #[inline]
    fn check(&self, c: &Completion) -> Result<()> {
        c.validate(self.qid, self.entries, &self.in_flight)
    }
}
