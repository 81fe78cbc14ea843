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
    /// The chain's head descriptor, as the queue's `add` returned it.
    pub head: u16,
    /// Bytes the device wrote into the chain's writable buffers.
    pub len: u32,
}

/// A used-ring entry the driver refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsedError {
    /// The entry names descriptor `id`, which heads no chain in flight (out of
    /// range, never given, or already used). The entry is consumed; nothing
    /// is freed.
    NotInFlight {
        /// The descriptor the entry names.
        id: u32,
    },
    /// The device says it wrote `len` bytes into the chain at `head`, whose
    /// writable buffers hold `max`. The chain is freed (the device is done
    /// with it); its bytes must not be used.
    TooLong {
        /// The chain's head descriptor.
        head: u16,
        /// The length the device wrote.
        len: u32,
        /// The bytes the chain's writable buffers hold.
        max: u32,
    },
    /// The used index moved from `from` to `to`, past the `available` chains
    /// the device was given: nothing in the ring can be trusted. The queue
    /// stays broken (every later call returns this) until the device is reset.
    IndexJump {
        /// The used index the driver had read up to.
        from: u16,
        /// The used index the device wrote.
        to: u16,
        /// Chains published and not yet used.
        available: u16,
    },
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

/// A chain in flight, by its head: how many descriptors it holds (0: no
/// chain in flight there) and how many bytes the device may write into it.
/// Two `u32`s, no padding: set and cleared with one 8-byte store.
#[derive(Clone, Copy, Debug, Default)]
struct Head {
    count: u32,
    writable: u32,
}

/// A split virtqueue. Private to the driver: its descriptors take raw IOVAs
/// that the device may write, which only the driver knows to be its own
/// buffers (the fuzz target gets [`UsedRingHarness`] instead).
#[derive(Debug)]
pub(crate) struct Virtqueue {
    mem: DmaMemory,
    size: u16,
    avail: usize,
    used: usize,
    /// The free descriptors, a stack growing down: the entries from
    /// `free_at` on, the next one to hand out at `free_at`. A batch of
    /// chains of one descriptor takes `free[free_at..]` in order, the
    /// order its heads go into the available ring.
    free: Box<[u16]>,
    free_at: usize,
    /// Per descriptor: the next one in its chain (ours, not the device's).
    next: Vec<u16>,
    /// Per head: its chain in flight (`count` 0: none).
    heads: Vec<Head>,
    /// Chains in flight (added and not yet used).
    chains: usize,
    avail_idx: u16,
    /// The available index the device has been shown.
    published: u16,
    last_used: u16,
    /// The used index as last read (checked then against `published`):
    /// entries up to it are taken without reading it again.
    used_seen: u16,
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
        // The used ring 4-byte aligned (2.7) and placed so that its entries,
        // 4 bytes in, are 8-byte aligned: each is read in one load.
        let used = (avail + 6 + 2 * n + 4).next_multiple_of(8) - 4;
        let mem = DmaMemory::new(container, used + 6 + 8 * n, Backing::Auto)?;
        mem.write_bytes(0, &vec![0; mem.len()]);
        mem.write::<u16>(avail, ring::AVAIL_F_NO_INTERRUPT);
        Ok(Virtqueue {
            mem,
            size,
            avail,
            used,
            free: (0..size).collect(),
            free_at: 0,
            next: vec![0; n],
            heads: vec![Head::default(); n],
            chains: 0,
            avail_idx: 0,
            published: 0,
            last_used: 0,
            used_seen: 0,
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
        self.free.len() - self.free_at
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
        self.free.get(self.free_at).copied()
    }

    /// Queues a chain of (IOVA, length, device writes it) buffers, at most
    /// [`MAX_CHAIN`]; returns its head, or None when it does not fit. Not
    /// visible to the device before [`Virtqueue::publish`]. Allocates nothing.
    pub fn add(&mut self, bufs: &[(u64, u32, bool)]) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > self.free() || bufs.len() > MAX_CHAIN {
            return None;
        }
        let mut ids = [0u16; MAX_CHAIN];
        let taken = self.free_at..self.free_at + bufs.len();
        ids[..bufs.len()].copy_from_slice(&self.free[taken.clone()]);
        self.free_at = taken.end;
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
            // Address, then length, flags and next as one little-endian
            // word: the descriptor in two stores under one bounds check.
            let rest = len as u64 | (flags as u64) << 32 | (next as u64) << 48;
            self.mem.write_words::<u64>(at, &[iova, rest]);
            self.next[id as usize] = next;
        }
        let head = ids[0];
        self.make_available(head, ids.len() as u16, writable);
        Some(head)
    }

    /// Queues one buffer as a chain of its own: [`Virtqueue::add`] of one
    /// buffer, without the chain to link. Returns its head, or None when no
    /// descriptor is free.
    #[inline(always)]
    pub fn add_one(&mut self, iova: u64, len: u32, device_writes: bool) -> Option<u16> {
        let head = *self.free.get(self.free_at)?;
        self.free_at += 1;
        let (flags, writable) = if device_writes {
            (ring::DESC_F_WRITE, len)
        } else {
            (0, 0)
        };
        // As in `add`: the descriptor in two stores, no NEXT flag.
        let rest = len as u64 | (flags as u64) << 32;
        let at = head as usize * ring::DESC_SIZE;
        self.mem.write_words::<u64>(at, &[iova, rest]);
        self.make_available(head, 1, writable);
        Some(head)
    }

    /// Records the chain at `head` (`count` descriptors, `writable` bytes
    /// the device may write) as in flight and puts it in the next slot of
    /// the available ring.
    #[inline]
    fn make_available(&mut self, head: u16, count: u16, writable: u32) {
        self.heads[head as usize] = Head {
            count: count.into(),
            writable,
        };
        self.chains += 1;
        let slot = self.avail + 4 + 2 * (self.avail_idx & (self.size - 1)) as usize;
        self.mem.write::<u16>(slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
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
    /// first (see [`UsedError`]). [`Virtqueue::used_ready`], then
    /// [`Virtqueue::take_used`].
    pub fn pop_used(&mut self) -> Option<std::result::Result<Used, UsedError>> {
        match self.used_ready() {
            Ok(0) => None,
            Ok(_) => self.take_used(),
            Err(e) => Some(Err(e)),
        }
    }

    /// How many used entries [`Virtqueue::take_used`] takes now: those the
    /// used index showed when last read, or, once all of them are taken,
    /// those it shows now (read once; an index past what was published
    /// breaks the queue, [`UsedError::IndexJump`], for every later call).
    /// For a batch: one call, then `take_used` until it says None.
    #[inline]
    pub fn used_ready(&mut self) -> std::result::Result<u16, UsedError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        if self.last_used == self.used_seen {
            self.read_used_index()?;
        }
        Ok(self.used_seen.wrapping_sub(self.last_used))
    }

    /// Reads the used index, checked against what was made available.
    fn read_used_index(&mut self) -> std::result::Result<(), UsedError> {
        let idx = self.mem.read::<u16>(self.used + 2);
        let pending = idx.wrapping_sub(self.last_used);
        let available = self.published.wrapping_sub(self.last_used);
        if pending > available {
            let e = UsedError::IndexJump {
                from: self.last_used,
                to: idx,
                available,
            };
            self.broken = Some(e);
            return Err(e);
        }
        self.used_seen = idx;
        // The index before the entries it covers.
        fence(Ordering::Acquire);
        Ok(())
    }

    /// The next of the entries [`Virtqueue::used_ready`] counted (None when
    /// they are all taken; the used index is not read here): its chain's
    /// descriptors back on the free stack, what the device wrote checked
    /// first ([`UsedError::NotInFlight`], [`UsedError::TooLong`]).
    #[inline]
    pub fn take_used(&mut self) -> Option<std::result::Result<Used, UsedError>> {
        if self.last_used == self.used_seen {
            return None;
        }
        let at = self.used + 4 + 8 * (self.last_used & (self.size - 1)) as usize;
        self.last_used = self.last_used.wrapping_add(1);
        // The entry's id and len (little-endian) in one load.
        let entry = self.mem.read::<u64>(at);
        Some(self.release(entry as u32, (entry >> 32) as u32))
    }

    /// Adds up to `n` chains of one buffer each, as [`Virtqueue::add_one`]
    /// does one by one, with the queue's state in locals for the batch:
    /// `f` is given the head the next chain gets and returns its buffer
    /// (IOVA, length), or None to end the batch there (that head stays
    /// free). Returns how many were added; none is visible to the device
    /// before [`Virtqueue::publish`]. The queue's counts are kept in a
    /// guard that stores them when the batch ends, also when `f` panics:
    /// the heads added are then off the free stack, in flight and
    /// counted, as after any other batch.
    ///
    /// The available ring's slots for all `n` heads the batch may take are
    /// written first, in one or two runs: slots past the available index
    /// are not read by the device (2.7.6), and those of heads left unused
    /// are written again by the next batch before they are shown.
    #[inline(always)]
    pub fn add_one_batch(
        &mut self,
        n: usize,
        device_writes: bool,
        mut f: impl FnMut(u16) -> Option<(u64, u32)>,
    ) -> usize {
        let Virtqueue {
            mem,
            size,
            avail,
            free,
            free_at,
            heads,
            chains,
            avail_idx,
            ..
        } = self;
        let mut done = BatchEnd {
            start: *free_at,
            idx: *avail_idx,
            added: 0,
            free_at,
            avail_idx,
            chains,
        };
        let (at, idx) = (done.start, done.idx);
        let taken = &free[at..];
        let taken = &taken[..n.min(taken.len())];
        // Slots idx.. (mod size): at most `free` of them, none the device
        // may still read (those hold the chains in flight).
        let first = (idx & (*size - 1)) as usize;
        let (to_end, wrapped) = taken.split_at(taken.len().min(*size as usize - first));
        let slots = *avail + 4;
        mem.write_words::<u16>(slots + 2 * first, to_end);
        if !wrapped.is_empty() {
            mem.write_words::<u16>(slots, wrapped);
        }
        let flags = if device_writes { ring::DESC_F_WRITE } else { 0 };
        let (mask, heads) = head_slots(heads, *size);
        // The descriptor table, two words a descriptor, checked once.
        let table = mem.words::<u64>(0, 2 * (mask + 1));
        for &head in taken {
            let Some((iova, len)) = f(head) else { break };
            // As in `add_one`: the descriptor in two stores, no NEXT flag.
            let rest = len as u64 | (flags as u64) << 32;
            table.write_entry(head as usize & mask, [iova, rest]);
            let writable = if device_writes { len } else { 0 };
            heads[head as usize & mask] = Head { count: 1, writable };
            done.added += 1;
        }
        done.added
    }

    /// Takes every entry [`Virtqueue::used_ready`] counted, in one pass,
    /// and hands each to `f` as [`Virtqueue::take_used`] would return it,
    /// checked the same way (a chain in flight is freed, its length checked
    /// against it; an id that heads none frees nothing). Returns how many
    /// entries were taken. The used index is not read here. The ring's
    /// position stays in locals, in a guard that stores it when the batch
    /// ends, also when `f` panics (the entries taken so far then count as
    /// taken, their chains as freed).
    #[inline(always)]
    pub fn take_used_batch(
        &mut self,
        mut f: impl FnMut(std::result::Result<Used, UsedError>),
    ) -> usize {
        let Virtqueue {
            mem,
            size,
            used,
            free,
            free_at,
            next,
            heads,
            chains,
            last_used,
            used_seen,
            ..
        } = self;
        let seen = *used_seen;
        let (mask, n) = (*size - 1, seen.wrapping_sub(*last_used));
        // The ring's entries checked to lie in the memory once: each is
        // then read at its position masked with `size - 1`, in bounds.
        let entries = mem.words::<u64>(*used + 4, mask as usize + 1);
        let (free, next, heads) = (&mut free[..], &next[..], &mut heads[..]);
        let mut done = TakeEnd {
            last: *last_used,
            free_at: *free_at,
            freed: 0,
            last_used,
            free_at_out: free_at,
            chains,
        };
        while done.last != seen {
            let at = (done.last & mask) as usize;
            done.last = done.last.wrapping_add(1);
            // The entry's id and len (little-endian) in one load.
            let entry = entries.read(at);
            let (id, len) = (entry as u32, (entry >> 32) as u32);
            let used = match release(heads, free, &mut done.free_at, next, id) {
                None => Err(UsedError::NotInFlight { id }),
                Some(max) => {
                    done.freed += 1;
                    let head = id as u16;
                    if len > max {
                        Err(UsedError::TooLong { head, len, max })
                    } else {
                        Ok(Used { head, len })
                    }
                }
            };
            f(used);
        }
        n as usize
    }

    /// Frees the chain a used entry names, if it heads one in flight.
    #[inline]
    fn release(&mut self, id: u32, len: u32) -> std::result::Result<Used, UsedError> {
        let Some(max) = release(
            &mut self.heads,
            &mut self.free,
            &mut self.free_at,
            &self.next,
            id,
        ) else {
            return Err(UsedError::NotInFlight { id });
        };
        self.chains -= 1;
        let head = id as u16;
        if len > max {
            return Err(UsedError::TooLong { head, len, max });
        }
        Ok(Used { head, len })
    }

    /// Leaves the ring memory allocated and mapped for good when dropped,
    /// for a device that could not be stopped.
    pub fn leak(&self) {
        self.mem.leak_on_drop();
    }
}

/// The end of a [`Virtqueue::add_one_batch`]: when dropped (the batch
/// done, or `f` panicking), the `added` chains taken from the free stack at
/// `start` and put in the available ring from index `idx` are stored as
/// taken, made available and in flight.
struct BatchEnd<'a> {
    start: usize,
    idx: u16,
    added: usize,
    free_at: &'a mut usize,
    avail_idx: &'a mut u16,
    chains: &'a mut usize,
}

impl Drop for BatchEnd<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        *self.free_at = self.start + self.added;
        *self.avail_idx = self.idx.wrapping_add(self.added as u16);
        *self.chains += self.added;
    }
}

/// The end of a [`Virtqueue::take_used_batch`]: when dropped (the batch
/// done, or `f` panicking), the used entries taken up to `last`, the free
/// stack's top `free_at` and the `freed` chains no longer in flight are
/// stored.
struct TakeEnd<'a> {
    last: u16,
    free_at: usize,
    freed: usize,
    last_used: &'a mut u16,
    free_at_out: &'a mut usize,
    chains: &'a mut usize,
}

impl Drop for TakeEnd<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        *self.last_used = self.last;
        *self.free_at_out = self.free_at;
        *self.chains -= self.freed;
    }
}

/// The first `size` of `slots` (one per head of a queue of `size`, a
/// power of two) and `size - 1`: every head is below `size`, so `head &
/// mask` is the head itself, and indexes the slice with no bounds check.
#[inline(always)]
pub(super) fn head_slots<T>(slots: &mut [T], size: u16) -> (usize, &mut [T]) {
    let mask = size.wrapping_sub(1) as usize;
    (mask, &mut slots[..mask + 1])
}

/// Puts the descriptors of the chain headed by `id` back on the free stack
/// (`free`, its top at `free_at`) and marks it no longer in flight;
/// returns the bytes the device could write into it, or None when `id`
/// heads no chain in flight (nothing freed).
#[inline(always)]
fn release(
    heads: &mut [Head],
    free: &mut [u16],
    free_at: &mut usize,
    next: &[u16],
    id: u32,
) -> Option<u32> {
    let h = heads.get_mut(id as usize).filter(|h| h.count > 0)?;
    let Head { count, writable } = std::mem::take(h);
    // Each descriptor of a chain in flight is off the stack: there is room.
    let mut at = *free_at;
    let mut d = id as u16;
    at -= 1;
    free[at] = d;
    for _ in 1..count {
        d = next[d as usize];
        at -= 1;
        free[at] = d;
    }
    *free_at = at;
    Some(writable)
}

/// A split virtqueue no device is ever given, for the fuzz target
/// `virtqueue_used_ring`, which plays the device against its used ring
/// (writing used entries and indices at [`UsedRingHarness::device_iova`]).
/// Not part of the API.
///
/// Unlike the driver's own queue it takes no IOVA: every descriptor of a
/// chain points at IOVA 0, which vfio-core never maps (its IOVAs start at
/// 1 MiB), so whatever reads its rings can reach no memory through them.
/// The queue that takes IOVAs is not reachable outside the driver:
///
/// ```compile_fail,E0432
/// use nic_driver::virtio::Virtqueue;
/// ```
#[doc(hidden)]
#[derive(Debug)]
pub struct UsedRingHarness {
    vq: Virtqueue,
}

impl UsedRingHarness {
    /// A queue of `size` entries (a power of two up to 32768) in fresh DMA
    /// memory of `container`.
    ///
    /// # Errors
    ///
    /// [`Error::Vfio`] for a size that is not a power of two up to 32768,
    /// or when the memory cannot be allocated.
    pub fn new(container: &Arc<Container>, size: u16) -> Result<UsedRingHarness> {
        Ok(UsedRingHarness {
            vq: Virtqueue::new(container, size)?,
        })
    }

    /// Queues a chain of `descriptors` descriptors (at most [`MAX_CHAIN`])
    /// of `len` bytes each, all device-writable or all device-readable, at
    /// IOVA 0; returns its head, or None when it does not fit. Not visible
    /// before [`UsedRingHarness::publish`].
    pub fn add(&mut self, descriptors: usize, len: u32, device_writes: bool) -> Option<u16> {
        let bufs = [(0, len, device_writes); MAX_CHAIN];
        self.vq.add(bufs.get(..descriptors)?)
    }

    /// Makes the chains added so far visible.
    pub fn publish(&mut self) {
        self.vq.publish()
    }

    /// The next used chain, as the driver takes it (see [`UsedError`]).
    pub fn pop_used(&mut self) -> Option<std::result::Result<Used, UsedError>> {
        self.vq.pop_used()
    }

    /// Free descriptors.
    pub fn free(&self) -> usize {
        self.vq.free()
    }

    /// Chains in flight.
    pub fn in_flight(&self) -> usize {
        self.vq.in_flight()
    }

    /// The used index ran ahead of the available one.
    pub fn broken(&self) -> Option<UsedError> {
        self.vq.broken()
    }

    /// IOVA of the descriptor table (to follow a chain as a device does).
    pub fn desc_iova(&self) -> u64 {
        self.vq.desc_iova()
    }

    /// IOVA of the device (used) ring (to write used entries as a device does).
    pub fn device_iova(&self) -> u64 {
        self.vq.device_iova()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{dma_u16, dma_u32, dma_u64};

    /// The device's side of a queue: what it reads and writes by IOVA.
    struct Dev {
        c: Arc<Container>,
        desc: u64,
        avail: u64,
        used: u64,
        size: u16,
        used_idx: u16,
    }

    impl Dev {
        fn new(size: u16) -> (Virtqueue, Dev) {
            let c = Container::unbacked();
            let vq = Virtqueue::new(&c, size).unwrap();
            let dev = Dev {
                desc: vq.desc_iova(),
                avail: vq.driver_iova(),
                used: vq.device_iova(),
                c,
                size,
                used_idx: 0,
            };
            (vq, dev)
        }

        fn avail_idx(&self) -> u16 {
            dma_u16(&self.c, self.avail + 2)
        }

        fn avail_slot(&self, k: u16) -> u16 {
            dma_u16(&self.c, self.avail + 4 + 2 * (k % self.size) as u64)
        }

        /// (address, length, flags, next) of descriptor `i`.
        fn desc(&self, i: u16) -> (u64, u32, u16, u16) {
            let at = self.desc + 16 * i as u64;
            let c = &self.c;
            (
                dma_u64(c, at),
                dma_u32(c, at + 8),
                dma_u16(c, at + 12),
                dma_u16(c, at + 14),
            )
        }

        /// The descriptors of the chain at `head`, as the device follows it.
        fn chain(&self, head: u16) -> Vec<u16> {
            let mut ids = vec![head];
            while self.desc(*ids.last().unwrap()).2 & ring::DESC_F_NEXT != 0 {
                ids.push(self.desc(*ids.last().unwrap()).3);
                assert!(ids.len() <= MAX_CHAIN);
            }
            ids
        }

        /// Writes a used entry at the device's next slot, without moving the index.
        fn entry(&mut self, id: u32, len: u32) {
            let at = self.used + 4 + 8 * (self.used_idx % self.size) as u64;
            self.c.dma_write(at, &id.to_le_bytes()).unwrap();
            self.c.dma_write(at + 4, &len.to_le_bytes()).unwrap();
            self.used_idx = self.used_idx.wrapping_add(1);
        }

        fn set_idx(&self, idx: u16) {
            self.c.dma_write(self.used + 2, &idx.to_le_bytes()).unwrap();
        }

        /// Uses `id` with `len` and shows it.
        fn used(&mut self, id: u32, len: u32) {
            self.entry(id, len);
            self.set_idx(self.used_idx);
        }
    }

    #[test]
    fn a_chain_is_written_as_the_device_reads_it_and_shown_only_on_publish() {
        let (mut vq, dev) = Dev::new(8);
        assert_eq!(dma_u16(&dev.c, dev.avail), ring::AVAIL_F_NO_INTERRUPT);
        let head = vq
            .add(&[
                (0x1000, 12, false),
                (0x2000, 100, false),
                (0x3000, 50, true),
            ])
            .unwrap();
        assert_eq!(head, 0, "the free stack starts at 0");
        assert_eq!(dev.avail_slot(0), head);
        assert_eq!(dev.avail_idx(), 0, "not visible before publish");
        vq.publish();
        assert_eq!(dev.avail_idx(), 1);
        let ids = dev.chain(head);
        assert_eq!(ids, [0, 1, 2]);
        assert_eq!(dev.desc(0), (0x1000, 12, ring::DESC_F_NEXT, 1));
        assert_eq!(dev.desc(1), (0x2000, 100, ring::DESC_F_NEXT, 2));
        assert_eq!(dev.desc(2), (0x3000, 50, ring::DESC_F_WRITE, 0));
        assert_eq!((vq.free(), vq.in_flight(), vq.next_head()), (5, 1, Some(3)));
        let second = vq.add(&[(0x4000, 64, true)]).unwrap();
        assert_eq!((second, dev.avail_slot(1)), (3, 3));
        vq.publish();
        assert_eq!(dev.avail_idx(), 2);
    }

    #[test]
    fn add_one_writes_a_chain_of_one_as_add_does_and_comes_back_the_same_way() {
        let (mut vq, mut dev) = Dev::new(4);
        let a = vq.add_one(0x1000, 60, false).unwrap();
        let b = vq.add_one(0x2000, 2046, true).unwrap();
        let c = vq.add(&[(0x3000, 72, false)]).unwrap();
        assert_eq!((a, b, c), (0, 1, 2), "from the same free stack");
        assert_eq!((dev.avail_slot(0), dev.avail_slot(1)), (a, b));
        assert_eq!(dev.avail_idx(), 0, "not visible before publish");
        vq.publish();
        assert_eq!(dev.avail_idx(), 3);
        assert_eq!(dev.desc(a), (0x1000, 60, 0, 0));
        assert_eq!(dev.desc(b), (0x2000, 2046, ring::DESC_F_WRITE, 0));
        assert_eq!(dev.desc(c), (0x3000, 72, 0, 0), "as add writes one");
        assert_eq!(dev.chain(b), [b]);
        assert_eq!((vq.free(), vq.in_flight()), (1, 3));
        assert!(vq.add_one(0x4000, 1, false).is_some());
        assert_eq!(vq.add_one(0x5000, 1, false), None, "no descriptor free");
        // Used in a batch: the index read once, every entry it shows taken.
        dev.entry(b as u32, 2046);
        dev.entry(a as u32, 0);
        dev.set_idx(2);
        assert_eq!(vq.used_ready(), Ok(2));
        dev.used(c as u32, 0); // shown after the read: waits for the next one
        assert_eq!(vq.take_used(), Some(Ok(Used { head: b, len: 2046 })));
        assert_eq!(vq.take_used(), Some(Ok(Used { head: a, len: 0 })));
        assert_eq!(vq.take_used(), None, "the index is not read again here");
        assert_eq!((vq.free(), vq.in_flight()), (2, 2));
        assert_eq!(vq.used_ready(), Ok(1));
        assert_eq!(vq.take_used(), Some(Ok(Used { head: c, len: 0 })));
        // The checks of what the device wrote hold on this path too.
        let d = vq.add_one(0x6000, 100, true).unwrap();
        vq.publish();
        dev.used(d as u32, 101);
        dev.used(d as u32, 0); // twice
        assert_eq!(vq.used_ready(), Ok(2));
        assert_eq!(
            vq.take_used(),
            Some(Err(UsedError::TooLong {
                head: d,
                len: 101,
                max: 100
            }))
        );
        assert_eq!(
            vq.take_used(),
            Some(Err(UsedError::NotInFlight { id: d as u32 }))
        );
        dev.set_idx(dev.used_idx.wrapping_add(2));
        assert!(matches!(
            vq.used_ready(),
            Err(UsedError::IndexJump { available: 0, .. })
        ));
        assert_eq!(vq.take_used(), None);
        assert!(vq.used_ready().is_err(), "broken for good");
        assert_eq!((vq.free(), vq.in_flight()), (3, 1));
    }

    #[test]
    fn add_one_batch_writes_what_add_one_would_and_stops_where_told() {
        let (mut vq, mut dev) = Dev::new(4);
        let mut seen = Vec::new();
        let added = vq.add_one_batch(3, false, |head| {
            seen.push(head);
            Some((0x1000 * (head as u64 + 1), 60 + head as u32))
        });
        assert_eq!((added, seen.as_slice()), (3, &[0, 1, 2][..]));
        assert_eq!(dev.avail_idx(), 0, "not visible before publish");
        vq.publish();
        assert_eq!(dev.avail_idx(), 3);
        for k in 0..3 {
            assert_eq!(dev.avail_slot(k), k);
            assert_eq!(dev.desc(k), (0x1000 * (k as u64 + 1), 60 + k as u32, 0, 0));
        }
        assert_eq!((vq.free(), vq.in_flight(), vq.next_head()), (1, 3, Some(3)));
        // Asked for more than is free: only what is free is offered. None
        // from `f` ends the batch and leaves that head free.
        let mut offered = 0;
        let added = vq.add_one_batch(10, true, |_| {
            offered += 1;
            None
        });
        assert_eq!((added, offered), (0, 1));
        assert_eq!((vq.free(), vq.next_head()), (1, Some(3)));
        vq.publish();
        assert_eq!(dev.avail_idx(), 3, "nothing more shown");
        // Device-writable: the length is what the device may write.
        assert_eq!(vq.add_one_batch(10, true, |_| Some((0x9000, 100))), 1);
        vq.publish();
        assert_eq!(dev.desc(3), (0x9000, 100, ring::DESC_F_WRITE, 0));
        assert_eq!(vq.add_one_batch(1, false, |_| panic!("none free")), 0);
        dev.used(3, 101);
        assert!(matches!(
            vq.pop_used(),
            Some(Err(UsedError::TooLong {
                head: 3,
                max: 100,
                ..
            }))
        ));
        // Round the ring, used out of order: every head comes back once and
        // each slot the device is shown names the head added there.
        for round in 0..6u16 {
            for head in [2, 0, 1] {
                if round > 0 || head != 2 {
                    dev.used(head, 0);
                }
            }
            if round == 0 {
                dev.used(2, 0);
            }
            let mut got = Vec::new();
            assert_eq!(vq.used_ready().map(|n| n > 0), Ok(true));
            while let Some(u) = vq.take_used() {
                got.push(u.unwrap().head);
            }
            got.sort();
            let before = vq.published;
            let mut heads = Vec::new();
            let added = vq.add_one_batch(4, false, |head| {
                heads.push(head);
                Some((0x2000, 60))
            });
            assert_eq!(added, heads.len());
            vq.publish();
            for (k, &head) in heads.iter().enumerate() {
                assert_eq!(dev.avail_slot(before.wrapping_add(k as u16)), head);
            }
            heads.sort();
            heads.dedup();
            assert_eq!(heads.len(), added, "round {round}: a head twice");
        }
    }

    #[test]
    fn a_batch_that_panics_leaves_the_queue_as_far_as_it_got() {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        let (mut vq, mut dev) = Dev::new(8);
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut k = 0;
            vq.add_one_batch(8, false, |_| {
                k += 1;
                assert!(k < 3, "the third frame panics");
                Some((0x1000, 60))
            })
        }));
        assert!(r.is_err());
        assert_eq!((vq.free(), vq.in_flight()), (6, 2), "two added");
        vq.publish();
        assert_eq!(dev.avail_idx(), 2);
        let (a, b) = (dev.avail_slot(0), dev.avail_slot(1));
        let c = vq.add_one(0x2000, 60, false).unwrap();
        assert!(c != a && c != b, "an added head is not handed out again");
        vq.publish();
        dev.used(a as u32, 0);
        dev.used(c as u32, 0);
        assert_eq!(vq.used_ready(), Ok(2));
        let r = catch_unwind(AssertUnwindSafe(|| {
            vq.take_used_batch(|_| panic!("the first entry panics"))
        }));
        assert!(r.is_err());
        assert_eq!((vq.free(), vq.in_flight()), (6, 2), "a taken and freed");
        let mut got = Vec::new();
        assert_eq!(vq.take_used_batch(|u| got.push(u)), 1);
        assert_eq!(got, [Ok(Used { head: c, len: 0 })]);
        assert_eq!((vq.free(), vq.in_flight()), (7, 1));
    }

    #[test]
    fn take_used_batch_takes_what_take_used_would_with_the_same_checks() {
        let (mut vq, mut dev) = Dev::new(8);
        let a = vq.add(&[(0x1000, 12, true), (0x2000, 100, true)]).unwrap();
        let b = vq.add_one(0x3000, 64, true).unwrap();
        let c = vq.add_one(0x4000, 64, false).unwrap();
        let d = vq.add_one(0x5000, 64, false).unwrap();
        vq.publish();
        dev.entry(b as u32, 64);
        dev.entry(b as u32, 1); // twice
        dev.entry(a as u32, 113); // past its 112 bytes
        dev.entry(9, 0); // past the table
        dev.set_idx(4);
        let mut got = Vec::new();
        assert_eq!(vq.take_used_batch(|u| got.push(u)), 0, "index not read yet");
        assert_eq!(vq.used_ready(), Ok(4));
        // Shown after the read: waits for the next one.
        let e = vq.add_one(0x6000, 64, false).unwrap();
        vq.publish();
        dev.used(c as u32, 0);
        assert_eq!(vq.take_used_batch(|u| got.push(u)), 4);
        assert_eq!(
            got,
            [
                Ok(Used { head: b, len: 64 }),
                Err(UsedError::NotInFlight { id: b as u32 }),
                Err(UsedError::TooLong {
                    head: a,
                    len: 113,
                    max: 112
                }),
                Err(UsedError::NotInFlight { id: 9 }),
            ]
        );
        assert_eq!((vq.free(), vq.in_flight()), (5, 3), "a and b freed once");
        assert_eq!(vq.take_used_batch(|_| panic!("all taken")), 0);
        assert_eq!(vq.used_ready(), Ok(1));
        got.clear();
        assert_eq!(vq.take_used_batch(|u| got.push(u)), 1);
        assert_eq!(got, [Ok(Used { head: c, len: 0 })]);
        assert_eq!((vq.free(), vq.in_flight()), (6, 2));
        let _ = (d, e);
        dev.set_idx(dev.used_idx.wrapping_add(1));
        assert!(matches!(vq.used_ready(), Err(UsedError::IndexJump { .. })));
        assert_eq!(vq.take_used_batch(|_| panic!("broken")), 0);
    }

    #[test]
    fn add_refuses_empty_chains_long_chains_and_chains_that_do_not_fit() {
        let (mut vq, _dev) = Dev::new(8);
        assert_eq!(vq.add(&[]), None);
        assert_eq!(vq.add(&[(0x1000, 1, false); MAX_CHAIN + 1]), None);
        assert!(vq.add(&[(0x1000, 1, false); MAX_CHAIN]).is_some());
        assert_eq!(vq.add(&[(0x1000, 1, false); 4]), None, "3 free");
        assert_eq!(vq.add(&[(0x1000, 1, false); 3]), Some(5));
        assert_eq!((vq.free(), vq.next_head()), (0, None));
        assert_eq!(vq.add(&[(0x1000, 1, false)]), None);
    }

    #[test]
    fn used_chains_come_back_in_device_order_with_exactly_their_descriptors() {
        let (mut vq, mut dev) = Dev::new(8);
        let a = vq
            .add(&[(0x1000, 12, false), (0x2000, 1000, true)])
            .unwrap();
        let b = vq.add(&[(0x3000, 2000, true)]).unwrap();
        vq.publish();
        assert!(!vq.has_used());
        assert_eq!(vq.pop_used(), None);
        dev.used(b as u32, 2000);
        assert!(vq.has_used());
        assert_eq!(vq.pop_used(), Some(Ok(Used { head: b, len: 2000 })));
        assert!(!vq.has_used());
        assert_eq!((vq.free(), vq.in_flight()), (6, 1));
        assert_eq!(vq.next_head(), Some(b), "its descriptor is free again");
        dev.used(a as u32, 7);
        assert_eq!(vq.pop_used(), Some(Ok(Used { head: a, len: 7 })));
        assert_eq!((vq.free(), vq.in_flight()), (8, 0));
        assert_eq!(vq.pop_used(), None);
        // Every descriptor is handed out once more before any repeats.
        let mut heads: Vec<u16> = (0..8).map(|_| vq.add(&[(0, 1, true)]).unwrap()).collect();
        heads.sort();
        assert_eq!(heads, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn entries_for_descriptors_not_in_flight_are_refused_and_consumed() {
        let (mut vq, mut dev) = Dev::new(8);
        let a = vq
            .add(&[(0x1000, 12, false), (0x2000, 100, false)])
            .unwrap();
        for i in 0..3 {
            vq.add(&[(0x3000 + i, 100, false)]).unwrap();
        }
        vq.publish();
        let free = vq.free();
        for id in [8, u32::MAX, 1] {
            // 8: past the table; 1: inside a chain, but no head.
            dev.used(id, 0);
            assert_eq!(vq.pop_used(), Some(Err(UsedError::NotInFlight { id })));
            assert_eq!(vq.free(), free, "nothing freed for descriptor {id}");
        }
        assert_eq!(vq.pop_used(), None, "each bad entry consumed once");
        dev.used(a as u32, 0);
        assert_eq!(vq.pop_used(), Some(Ok(Used { head: a, len: 0 })));
        assert_eq!(vq.free(), free + 2);
        // Bad entries count against what was published (4 chains, 4 entries
        // so far): one more entry runs past it.
        dev.used(a as u32, 0);
        assert!(matches!(
            vq.pop_used(),
            Some(Err(UsedError::IndexJump {
                from: 4,
                to: 5,
                available: 0
            }))
        ));
        assert_eq!(vq.free(), free + 2);
    }

    #[test]
    fn a_duplicate_within_what_was_published_is_refused_and_frees_nothing() {
        let (mut vq, mut dev) = Dev::new(8);
        let heads: Vec<u16> = (0..4).map(|i| vq.add(&[(i, 1, false)]).unwrap()).collect();
        vq.publish();
        dev.used(heads[2] as u32, 0);
        dev.used(heads[2] as u32, 0);
        assert!(matches!(vq.pop_used(), Some(Ok(Used { head, .. })) if head == heads[2]));
        let free = vq.free();
        assert_eq!(
            vq.pop_used(),
            Some(Err(UsedError::NotInFlight {
                id: heads[2] as u32
            }))
        );
        assert_eq!(vq.free(), free);
        assert_eq!(vq.in_flight(), 3);
    }

    #[test]
    fn a_length_past_the_writable_buffers_is_refused_but_the_chain_is_done() {
        let (mut vq, mut dev) = Dev::new(8);
        let rx = vq.add(&[(0x1000, 12, true), (0x2000, 1000, true)]).unwrap();
        let tx = vq.add(&[(0x3000, 1000, false)]).unwrap();
        vq.publish();
        dev.used(rx as u32, 1012);
        assert_eq!(
            vq.pop_used(),
            Some(Ok(Used {
                head: rx,
                len: 1012
            }))
        );
        let rx = vq.add(&[(0x1000, 12, true), (0x2000, 1000, true)]).unwrap();
        vq.publish();
        dev.used(rx as u32, 1013);
        let e = UsedError::TooLong {
            head: rx,
            len: 1013,
            max: 1012,
        };
        assert_eq!(vq.pop_used(), Some(Err(e)));
        assert!(e.to_string().contains("1013 bytes were written into 1012"));
        dev.used(tx as u32, 1);
        assert!(matches!(
            vq.pop_used(),
            Some(Err(UsedError::TooLong { max: 0, .. }))
        ));
        assert_eq!((vq.free(), vq.in_flight()), (8, 0), "both chains freed");
    }

    #[test]
    fn a_used_index_ahead_of_what_was_published_breaks_the_queue_for_good() {
        let (mut vq, mut dev) = Dev::new(8);
        let a = vq.add(&[(0x1000, 64, true)]).unwrap();
        vq.publish();
        let b = vq.add(&[(0x2000, 64, true)]).unwrap(); // added, never published
        dev.entry(a as u32, 10);
        dev.entry(b as u32, 10);
        dev.set_idx(2);
        let jump = UsedError::IndexJump {
            from: 0,
            to: 2,
            available: 1,
        };
        assert_eq!(vq.pop_used(), Some(Err(jump)));
        assert!(jump.to_string().contains("needs a device reset"));
        assert_eq!(vq.broken(), Some(jump));
        dev.set_idx(1); // even a sane index now: nothing more is trusted
        assert_eq!(vq.pop_used(), Some(Err(jump)));
        assert_eq!((vq.free(), vq.in_flight()), (6, 2), "nothing freed");

        let (mut vq, dev) = Dev::new(8);
        dev.set_idx(0x8000);
        assert!(matches!(
            vq.pop_used(),
            Some(Err(UsedError::IndexJump { available: 0, .. }))
        ));
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "70,000 rounds take many minutes under Miri; every other virtqueue test runs the same code there"
    )]
    fn indices_wrap_past_65535() {
        let (mut vq, mut dev) = Dev::new(4);
        for n in 0..70_000u32 {
            let head = vq.add(&[(n as u64, 100, true)]).unwrap();
            vq.publish();
            assert_eq!(dev.avail_idx(), (n + 1) as u16);
            assert_eq!(dev.avail_slot(n as u16), head);
            dev.used(head as u32, 50);
            assert_eq!(vq.pop_used(), Some(Ok(Used { head, len: 50 })), "round {n}");
        }
        assert_eq!(vq.free(), 4);
    }

    #[test]
    fn sizes_that_no_split_virtqueue_has_are_refused() {
        let c = Container::unbacked();
        for size in [0, 3, 100, 65535] {
            let e = Virtqueue::new(&c, size).unwrap_err().to_string();
            assert!(e.contains(&format!("not {size}")), "{e}");
        }
        assert_eq!(Virtqueue::new(&c, 1).unwrap().size(), 1);
        assert_eq!(Virtqueue::new(&c, MAX_SIZE).unwrap().free(), 32768);
    }

    #[test]
    fn the_rings_lie_where_the_spec_puts_them() {
        let (vq, dev) = Dev::new(256);
        assert_eq!(dev.avail - dev.desc, 256 * 16);
        // Right after the available ring (its flags, index, 256 slots and
        // used_event), at 4 bytes before a multiple of 8: 4-byte aligned as
        // the spec asks, its 8-byte entries 8-byte aligned.
        assert_eq!(dev.used - dev.avail, 4 + 6 + 512 + 2);
        assert_eq!((dev.used % 4, (dev.used + 4) % 8), (0, 0));
        for size in [1, 2, 8, 32768] {
            let (_vq, dev) = Dev::new(size);
            let avail_end = dev.avail + 6 + 2 * size as u64;
            assert!(dev.used >= avail_end && dev.used < avail_end + 8);
            assert_eq!((dev.used % 4, (dev.used + 4) % 8), (0, 0), "size {size}");
        }
        // The last used entry and avail_event fit the memory.
        dev.c
            .dma_write(dev.used + 4 + 8 * 255 + 8, &[0; 2])
            .unwrap();
        drop(vq);
        assert_eq!(dev.c.mapping_count(), 0);
    }

    #[test]
    fn notification_and_interrupt_flags() {
        let (vq, dev) = Dev::new(8);
        assert!(vq.wants_notify());
        dev.c
            .dma_write(dev.used, &ring::USED_F_NO_NOTIFY.to_le_bytes())
            .unwrap();
        assert!(!vq.wants_notify());
        vq.set_interrupts(true);
        assert_eq!(dma_u16(&dev.c, dev.avail), 0);
        vq.set_interrupts(false);
        assert_eq!(dma_u16(&dev.c, dev.avail), ring::AVAIL_F_NO_INTERRUPT);
    }

    #[test]
    fn leak_keeps_the_ring_mapped() {
        let (vq, dev) = Dev::new(8);
        vq.leak();
        drop(vq);
        assert_eq!(dev.c.mapping_count(), 1);
        assert_eq!(dev.avail_idx(), 0, "still readable by the device");
    }

    /// A device that answers with random, often hostile, used entries while
    /// the driver adds and pops: no descriptor is in two chains in flight, a
    /// chain comes back at most once, and only what was in flight is freed.
    #[test]
    fn a_random_hostile_device_never_makes_the_queue_hand_out_a_descriptor_twice() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Fewer rounds under Miri, which interprets every step.
        for _ in 0..if cfg!(miri) { 5 } else { 50 } {
            let (mut vq, mut dev) = Dev::new(8);
            let mut flight: Vec<(u16, Vec<u16>)> = Vec::new();
            for _ in 0..200 {
                let r = rand();
                match r % 4 {
                    0 => {
                        let n = 1 + (r >> 8) as usize % MAX_CHAIN;
                        let bufs = vec![(r, 64, r & 1 << 20 != 0); n];
                        let before = vq.free();
                        if n == 1 && r & 1 << 23 != 0 {
                            // A batch of chains of one, ended by `f` at a
                            // random point.
                            let want = (r >> 24) as usize % 6;
                            let stop = (r >> 28) as usize % 6;
                            let mut heads = Vec::new();
                            let added = vq.add_one_batch(want, r & 1 << 20 != 0, |head| {
                                (heads.len() < stop).then(|| {
                                    heads.push(head);
                                    (r, 64)
                                })
                            });
                            assert_eq!(added, heads.len());
                            assert_eq!(added, want.min(before).min(stop));
                            for head in heads {
                                let chain = dev.chain(head);
                                assert_eq!(chain, [head]);
                                for (_, other) in &flight {
                                    assert!(!other.contains(&head));
                                }
                                flight.push((head, chain));
                            }
                            assert_eq!(vq.free(), before - added);
                            assert_eq!(vq.in_flight(), flight.len());
                            continue;
                        }
                        let added = if n == 1 && r & 1 << 21 != 0 {
                            vq.add_one(r, 64, r & 1 << 20 != 0)
                        } else {
                            vq.add(&bufs)
                        };
                        match added {
                            Some(head) => {
                                let chain = dev.chain(head);
                                assert_eq!(chain.len(), n);
                                for (_, other) in &flight {
                                    assert!(chain.iter().all(|d| !other.contains(d)));
                                }
                                flight.push((head, chain));
                                assert_eq!(vq.free(), before - n);
                            }
                            None => assert!(n > before),
                        }
                    }
                    1 => vq.publish(),
                    2 => {
                        // Anything: a head in flight, a random id, a random length.
                        let id = match flight.get((r >> 8) as usize % 8) {
                            Some((head, _)) if r & 1 << 30 != 0 => *head as u32,
                            _ => (r >> 32) as u32 % 12,
                        };
                        dev.entry(id, (r >> 40) as u32 % 200);
                        let jump = (r >> 56) as u16 % 3;
                        dev.set_idx(dev.used_idx.wrapping_add(jump / 2));
                    }
                    _ => {
                        let before = vq.free();
                        // Half the time as a batch: the index read once
                        // before (an error there ends the round), then the
                        // entry taken without reading it.
                        if r & 1 << 23 != 0 {
                            // All the index shows, in one batch.
                            let mut got = Vec::new();
                            if vq.used_ready().is_ok() {
                                let n = vq.take_used_batch(|u| got.push(u));
                                assert_eq!(n, got.len());
                            }
                            let mut freed = 0;
                            for used in got {
                                match used {
                                    Ok(Used { head, .. })
                                    | Err(UsedError::TooLong { head, .. }) => {
                                        let k = flight
                                            .iter()
                                            .position(|f| f.0 == head)
                                            .expect("in flight");
                                        freed += flight.swap_remove(k).1.len();
                                    }
                                    Err(UsedError::NotInFlight { id }) => {
                                        assert!(flight.iter().all(|f| f.0 as u32 != id));
                                    }
                                    Err(e) => panic!("{e}"),
                                }
                            }
                            assert_eq!(vq.free(), before + freed);
                            assert_eq!(vq.in_flight(), flight.len());
                            continue;
                        }
                        let used = if r & 1 << 22 != 0 {
                            match vq.used_ready() {
                                Err(e) => Some(Err(e)),
                                Ok(_) => vq.take_used(),
                            }
                        } else {
                            vq.pop_used()
                        };
                        match used {
                            None => assert_eq!(vq.free(), before),
                            Some(Ok(Used { head, .. }))
                            | Some(Err(UsedError::TooLong { head, .. })) => {
                                let k = flight.iter().position(|f| f.0 == head).expect("in flight");
                                let (_, chain) = flight.swap_remove(k);
                                assert_eq!(vq.free(), before + chain.len());
                            }
                            Some(Err(UsedError::NotInFlight { id })) => {
                                assert!(flight.iter().all(|f| f.0 as u32 != id));
                                assert_eq!(vq.free(), before);
                            }
                            Some(Err(UsedError::IndexJump { .. })) => {
                                assert_eq!(vq.free(), before);
                                assert!(vq.broken().is_some());
                            }
                        }
                    }
                }
                assert_eq!(vq.in_flight(), flight.len());
                assert_eq!(
                    vq.free() + flight.iter().map(|f| f.1.len()).sum::<usize>(),
                    8
                );
            }
        }
    }
}
