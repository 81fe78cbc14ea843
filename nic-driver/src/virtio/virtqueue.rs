//! A split virtqueue (virtio spec 2.7) in DMA memory: the descriptor table,
//! the driver ("available") ring and the device ("used") ring. Descriptors
//! are handed out from a free stack; the chain of every head is remembered on
//! this side, so a used entry from the device is checked against what was
//! really given to it and never followed through device-writable memory.
//!
//! What the device writes (the used ring) is untrusted: an entry for a
//! descriptor that heads no chain in flight, a length longer than the chain's
//! writable buffers, or a used index that runs ahead of what was made
//! available is a [`UsedError`], never an index into memory.
//!
//! Ordering: a release fence before the available index is published (the
//! device reads descriptors and ring slots once it sees it), a full fence
//! before the used ring's flags are read to decide on a notification, and an
//! acquire fence between reading the used index and reading its entries.

use std::fmt;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use vfio_core::dma::{Backing, DmaMemory};
use vfio_core::vfio::Container;

use super::regs::ring;
use crate::{Error, Result};

/// Most descriptors in one chain: a net header and a frame's segments.
pub const MAX_CHAIN: usize = crate::MAX_SEGMENTS + 1;

/// Largest split virtqueue (2.7: "Queue Size ... maximum of 32768").
pub const MAX_SIZE: u16 = 32768;

/// A chain the device has used: its head and the bytes it wrote into it
/// (at most the chain's writable length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub head: u16,
    pub len: u32,
}

/// A used-ring entry the driver refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsedError {
    /// The entry names descriptor `id`, which heads no chain in flight (out of
    /// range, never given, or already used). The entry is consumed; nothing
    /// is freed.
    NotInFlight { id: u32 },
    /// The device says it wrote `len` bytes into the chain at `head`, whose
    /// writable buffers hold `max`. The chain is freed (the device is done
    /// with it); its bytes must not be used.
    TooLong { head: u16, len: u32, max: u32 },
    /// The used index moved from `from` to `to`, past the `available` chains
    /// the device was given: nothing in the ring can be trusted. The queue
    /// stays broken (every later call returns this) until the device is reset.
    IndexJump { from: u16, to: u16, available: u16 },
}

impl fmt::Display for UsedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            UsedError::NotInFlight { id } => write!(
                f,
                "used entry for descriptor {id}, which heads no chain in flight"
            ),
            UsedError::TooLong { head, len, max } => write!(
                f,
                "used entry for descriptor {head} says {len} bytes were written into {max} writable bytes"
            ),
            UsedError::IndexJump {
                from,
                to,
                available,
            } => write!(
                f,
                "used index jumped from {from} to {to}, past the {available} chains made available; \
                 the queue needs a device reset"
            ),
        }
    }
}

/// A split virtqueue. Public (hidden) only for the fuzz target that plays
/// the device against it.
#[derive(Debug)]
pub struct Virtqueue {
    mem: DmaMemory,
    size: u16,
    avail: usize,
    used: usize,
    free: Vec<u16>,
    /// Per descriptor: the next one in its chain (ours, not the device's).
    next: Vec<u16>,
    /// Per head: how many descriptors its chain holds (0: not in flight).
    chain: Vec<u16>,
    /// Per head: the bytes the device may write into its chain.
    writable: Vec<u32>,
    /// Chains in flight (added and not yet used).
    chains: usize,
    avail_idx: u16,
    /// The available index the device has been shown.
    published: u16,
    last_used: u16,
    broken: Option<UsedError>,
}

impl Virtqueue {
    /// A queue of `size` entries (a power of two up to [`MAX_SIZE`]) in fresh
    /// DMA memory.
    pub fn new(container: &Arc<Container>, size: u16) -> Result<Virtqueue> {
        if !size.is_power_of_two() || size > MAX_SIZE {
            return Err(Error::Vfio(vfio_core::Error::InvalidArgument(format!(
                "a split virtqueue has a power-of-two size up to {MAX_SIZE}, not {size}"
            ))));
        }
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
            writable: vec![0; n],
            chains: 0,
            avail_idx: 0,
            published: 0,
            last_used: 0,
            broken: None,
        })
    }

    /// Entries (descriptors) in the queue.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// IOVA of the descriptor table.
    pub fn desc_iova(&self) -> u64 {
        self.mem.iova()
    }
    /// IOVA of the driver (available) ring.
    pub fn driver_iova(&self) -> u64 {
        self.mem.iova() + self.avail as u64
    }
    /// IOVA of the device (used) ring.
    pub fn device_iova(&self) -> u64 {
        self.mem.iova() + self.used as u64
    }

    /// Asks the device to interrupt (or not) when it uses buffers.
    pub fn set_interrupts(&self, on: bool) {
        let flags = if on { 0 } else { ring::AVAIL_F_NO_INTERRUPT };
        self.mem.write::<u16>(self.avail, flags);
    }

    /// True when the device has used buffers the driver has not taken.
    pub fn has_used(&self) -> bool {
        self.mem.read::<u16>(self.used + 2) != self.last_used
    }

    /// Free descriptors.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Chains in flight.
    pub fn in_flight(&self) -> usize {
        self.chains
    }

    /// The used index ran ahead of the available one: the queue needs a reset.
    pub fn broken(&self) -> Option<UsedError> {
        self.broken
    }

    /// The head the next chain will get.
    pub fn next_head(&self) -> Option<u16> {
        self.free.last().copied()
    }

    /// Queues a chain of (IOVA, length, device writes it) buffers, at most
    /// [`MAX_CHAIN`]; returns its head, or None when it does not fit. Not
    /// visible to the device before [`Virtqueue::publish`]. Allocates nothing.
    pub fn add(&mut self, bufs: &[(u64, u32, bool)]) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > self.free.len() || bufs.len() > MAX_CHAIN {
            return None;
        }
        let mut ids = [0u16; MAX_CHAIN];
        for id in &mut ids[..bufs.len()] {
            *id = self.free.pop().expect("counted");
        }
        let ids = &ids[..bufs.len()];
        let mut writable = 0u32;
        for (k, (&(iova, len, write), &id)) in bufs.iter().zip(ids).enumerate() {
            let at = id as usize * ring::DESC_SIZE;
            let last = k + 1 == ids.len();
            let mut flags = if write { ring::DESC_F_WRITE } else { 0 };
            let next = if last { 0 } else { ids[k + 1] };
            if !last {
                flags |= ring::DESC_F_NEXT;
            }
            if write {
                writable = writable.saturating_add(len);
            }
            self.mem.write::<u64>(at, iova);
            self.mem.write::<u32>(at + 8, len);
            self.mem.write::<u16>(at + 12, flags);
            self.mem.write::<u16>(at + 14, next);
            self.next[id as usize] = next;
        }
        let head = ids[0];
        self.chain[head as usize] = ids.len() as u16;
        self.writable[head as usize] = writable;
        self.chains += 1;
        let slot = self.avail + 4 + 2 * (self.avail_idx % self.size) as usize;
        self.mem.write::<u16>(slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        Some(head)
    }

    /// Makes the chains added so far visible to the device.
    pub fn publish(&mut self) {
        // Descriptors and ring slots before the index that shows them.
        fence(Ordering::Release);
        self.mem.write::<u16>(self.avail + 2, self.avail_idx);
        self.published = self.avail_idx;
    }

    /// Whether the device asks to be notified of new buffers.
    pub fn wants_notify(&self) -> bool {
        // The published index before the flags are read (and the MMIO
        // notification after them).
        fence(Ordering::SeqCst);
        self.mem.read::<u16>(self.used) & ring::USED_F_NO_NOTIFY == 0
    }

    /// The next used chain, its descriptors back on the free stack; None when
    /// the device has used nothing more. What the device wrote is checked
    /// first (see [`UsedError`]).
    pub fn pop_used(&mut self) -> Option<std::result::Result<Used, UsedError>> {
        if let Some(e) = self.broken {
            return Some(Err(e));
        }
        let idx = self.mem.read::<u16>(self.used + 2);
        let pending = idx.wrapping_sub(self.last_used);
        if pending == 0 {
            return None;
        }
        let available = self.published.wrapping_sub(self.last_used);
        if pending > available {
            let e = UsedError::IndexJump {
                from: self.last_used,
                to: idx,
                available,
            };
            self.broken = Some(e);
            return Some(Err(e));
        }
        // The index before the entry it covers.
        fence(Ordering::Acquire);
        let at = self.used + 4 + 8 * (self.last_used % self.size) as usize;
        self.last_used = self.last_used.wrapping_add(1);
        let (id, len) = (self.mem.read::<u32>(at), self.mem.read::<u32>(at + 4));
        let count = self.chain.get(id as usize).copied().unwrap_or(0);
        if count == 0 {
            return Some(Err(UsedError::NotInFlight { id }));
        }
        let head = id as u16;
        let mut d = head;
        for _ in 0..count {
            self.free.push(d);
            d = self.next[d as usize];
        }
        self.chain[head as usize] = 0;
        self.chains -= 1;
        let max = self.writable[head as usize];
        if len > max {
            return Some(Err(UsedError::TooLong { head, len, max }));
        }
        Some(Ok(Used { head, len }))
    }

    /// Leaves the ring memory allocated and mapped for good when dropped,
    /// for a device that could not be stopped.
    pub fn leak(&self) {
        self.mem.leak_on_drop();
    }
}
