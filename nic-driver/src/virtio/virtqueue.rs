//! A split virtqueue (virtio spec 2.7) in DMA memory: the descriptor table,
//! the driver ("available") ring and the device ("used") ring. Descriptors
//! are handed out from a free stack; the chain of every head is remembered on
//! this side, so a used entry from the device is checked against what was
//! really given to it and never followed through device-writable memory.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use vfio_core::dma::{Backing, DmaMemory};
use vfio_core::vfio::Container;

use super::regs::ring;
use crate::Result;

/// Most descriptors in one chain: a net header and a frame's segments.
pub(crate) const MAX_CHAIN: usize = crate::MAX_SEGMENTS + 1;

#[derive(Debug)]
pub(crate) struct Virtqueue {
    mem: DmaMemory,
    size: u16,
    avail: usize,
    used: usize,
    free: Vec<u16>,
    /// Per descriptor: the next one in its chain (ours, not the device's).
    next: Vec<u16>,
    /// Per head: how many descriptors its chain holds (0: not in flight).
    chain: Vec<u16>,
    avail_idx: u16,
    last_used: u16,
}

impl Virtqueue {
    /// A queue of `size` (a power of two) entries in fresh DMA memory.
    pub(crate) fn new(container: &Arc<Container>, size: u16) -> Result<Virtqueue> {
        let n = size as usize;
        let avail = n * ring::DESC_SIZE;
        let used = (avail + 6 + 2 * n).next_multiple_of(4);
        let mem = DmaMemory::new(container, used + 6 + 8 * n, Backing::Auto)?;
        mem.write_bytes(0, &vec![0; mem.len()]);
        mem.write::<u16>(avail, ring::AVAIL_F_NO_INTERRUPT);
        Ok(Virtqueue {
            mem,
            size,
            avail,
            used,
            free: (0..size).rev().collect(),
            next: vec![0; n],
            chain: vec![0; n],
            avail_idx: 0,
            last_used: 0,
        })
    }

    pub(crate) fn desc_iova(&self) -> u64 {
        self.mem.iova()
    }
    pub(crate) fn driver_iova(&self) -> u64 {
        self.mem.iova() + self.avail as u64
    }
    pub(crate) fn device_iova(&self) -> u64 {
        self.mem.iova() + self.used as u64
    }

    /// Asks the device to interrupt (or not) when it uses buffers.
    pub(crate) fn set_interrupts(&self, on: bool) {
        let flags = if on { 0 } else { ring::AVAIL_F_NO_INTERRUPT };
        self.mem.write::<u16>(self.avail, flags);
    }

    /// True when the device has used buffers the driver has not taken.
    pub(crate) fn has_used(&self) -> bool {
        self.mem.read::<u16>(self.used + 2) != self.last_used
    }

    /// Free descriptors.
    pub(crate) fn free(&self) -> usize {
        self.free.len()
    }

    /// Chains in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.chain.iter().filter(|&&c| c > 0).count()
    }

    /// The head the next chain will get.
    pub(crate) fn next_head(&self) -> Option<u16> {
        self.free.last().copied()
    }

    /// Queues a chain of (IOVA, length, device writes it) buffers, at most
    /// [`MAX_CHAIN`]; returns its head. Not visible to the device before
    /// [`Virtqueue::publish`]. Allocates nothing.
    pub(crate) fn add(&mut self, bufs: &[(u64, u32, bool)]) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > self.free.len() || bufs.len() > MAX_CHAIN {
            return None;
        }
        let mut ids = [0u16; MAX_CHAIN];
        for id in &mut ids[..bufs.len()] {
            *id = self.free.pop().expect("counted");
        }
        let ids = &ids[..bufs.len()];
        for (k, (&(iova, len, write), &id)) in bufs.iter().zip(ids).enumerate() {
            let at = id as usize * ring::DESC_SIZE;
            let last = k + 1 == ids.len();
            let mut flags = if write { ring::DESC_F_WRITE } else { 0 };
            let next = if last { 0 } else { ids[k + 1] };
            if !last {
                flags |= ring::DESC_F_NEXT;
            }
            self.mem.write::<u64>(at, iova);
            self.mem.write::<u32>(at + 8, len);
            self.mem.write::<u16>(at + 12, flags);
            self.mem.write::<u16>(at + 14, next);
            self.next[id as usize] = next;
        }
        let head = ids[0];
        self.chain[head as usize] = ids.len() as u16;
        let slot = self.avail + 4 + 2 * (self.avail_idx % self.size) as usize;
        self.mem.write::<u16>(slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        Some(head)
    }

    /// Makes the chains added so far visible to the device.
    pub(crate) fn publish(&mut self) {
        fence(Ordering::Release);
        self.mem.write::<u16>(self.avail + 2, self.avail_idx);
    }

    /// Whether the device asks to be notified of new buffers.
    pub(crate) fn wants_notify(&self) -> bool {
        fence(Ordering::SeqCst);
        self.mem.read::<u16>(self.used) & ring::USED_F_NO_NOTIFY == 0
    }

    /// The next used chain: its head and the bytes the device wrote into it,
    /// its descriptors back on the free stack. An entry naming a head that is
    /// not in flight is an error (a device bug or attack), consumed.
    pub(crate) fn pop_used(&mut self) -> Option<Result<(u16, u32), String>> {
        let idx = self.mem.read::<u16>(self.used + 2);
        if idx == self.last_used {
            return None;
        }
        fence(Ordering::Acquire);
        let at = self.used + 4 + 8 * (self.last_used % self.size) as usize;
        self.last_used = self.last_used.wrapping_add(1);
        let (id, len) = (self.mem.read::<u32>(at), self.mem.read::<u32>(at + 4));
        let count = self.chain.get(id as usize).copied().unwrap_or(0);
        if count == 0 {
            return Some(Err(format!(
                "used entry for descriptor {id}, which is not in flight"
            )));
        }
        let mut d = id as u16;
        for _ in 0..count {
            self.free.push(d);
            d = self.next[d as usize];
        }
        self.chain[id as usize] = 0;
        Some(Ok((id as u16, len)))
    }
}
