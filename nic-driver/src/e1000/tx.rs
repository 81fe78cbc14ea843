//! The transmit ring (8254x SDM section 3.3): one descriptor per segment (plus
//! a context descriptor when the checksum offload changes), TDT written once
//! per batch, buffers held until the NIC reports it is done with them.
//!
//! **Report Status once per batch** (issue 30). RS asks the NIC to write DD
//! back into that descriptor (SDM 3.3.3.1; QEMU's e1000 writes the status
//! back only then), one more DMA write, an IOMMU translation, per
//! descriptor that has it. The NIC processes descriptors in order, so DD
//! on one descriptor means every descriptor before it is done too. RS is
//! set only on the last descriptor of each batch handed over with one TDT
//! write, and on the end of a frame at least every [`RS_THRESH`]
//! descriptors within a long batch (DPDK's `tx_rs_thresh`), to bound how
//! long segments wait. [`TxRing::clean`] looks for DD only on those
//! descriptors, oldest first, and releases every segment up to and
//! including the one whose DD it found. A descriptor without RS never gets
//! DD from a correct NIC, and whatever a NIC writes into one is never read:
//! DD on a descriptor not in flight, without RS, or on a later RS
//! descriptor while an earlier one is not done releases nothing.
//!
//! Ordering: a release fence between writing descriptors and writing TDT (the
//! NIC reads them once it sees the tail), an acquire fence between reading DD
//! and releasing the buffers the NIC read (compiler barriers on x86-64, where
//! the hardware keeps this order; explicit for any target).

use std::collections::VecDeque;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use vfio_core::dma::{Backing, BufferCache, BytesByWriter, DmaMemory, SharedBuffer, Writer};
use vfio_core::mmio::Mmio;
use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

use super::regs::{txd, TDBAH, TDBAL, TDH, TDLEN, TDT};
use crate::frame::Hold;
use crate::held::Held;
use crate::{ChecksumOffload, FillPayload, Packet, Result, TxFrame};

/// Descriptors after which, within one batch, RS is set again on the next
/// end of a frame (DPDK's `tx_rs_thresh`, 32 by default).
pub(crate) const RS_THRESH: usize = 32;

/// Most descriptors [`TxRing::send_packets`] writes in one run.
const RUN: usize = 32;

/// A descriptor with RS in flight: DD there releases it and every
/// descriptor before it, and ends `frames` frames.
#[derive(Clone, Copy, Debug)]
struct Report {
    desc: usize,
    frames: usize,
}

/// Where RS goes in a batch of one-descriptor frames, known before the
/// loop ([`TxRing::fill`]): at the frame with
/// which [`RS_THRESH`] descriptors went without, then every `RS_THRESH`
/// frames; no counter kept per frame.
#[derive(Clone, Copy)]
struct RsPlan {
    /// The descriptors and frames unreported before the batch.
    before: (usize, usize),
    /// The batch's first frame (0-based) to get RS.
    first: usize,
    /// The batch's frame that gets RS next, and the frames its report ends.
    at: usize,
    frames: usize,
}

impl RsPlan {
    fn new(unreported: usize, frames: usize) -> RsPlan {
        let first = RS_THRESH.saturating_sub(unreported + 1);
        RsPlan {
            before: (unreported, frames),
            first,
            at: first,
            frames: frames + first + 1,
        }
    }

    /// The report for the batch's frame `n` at descriptor `desc`, if it
    /// gets RS.
    #[inline(always)]
    fn report(&mut self, n: usize, desc: usize) -> Option<Report> {
        if n != self.at {
            return None;
        }
        let report = Report {
            desc,
            frames: self.frames,
        };
        (self.at, self.frames) = (self.at + RS_THRESH, RS_THRESH);
        Some(report)
    }

    /// The descriptors and frames unreported after `sent` frames.
    fn after(&self, sent: usize) -> (usize, usize) {
        if sent > self.first {
            let after = sent - (self.at - RS_THRESH) - 1;
            (after, after)
        } else {
            (self.before.0 + sent, self.before.1 + sent)
        }
    }
}

#[derive(Debug)]
pub(crate) struct TxRing {
    desc: DmaMemory,
    /// The buffer each descriptor sends from, held until the NIC is done
    /// (none for a context descriptor).
    held: Held,
    tail: usize,
    clean: usize,
    in_flight: usize,
    /// The descriptors in flight with RS set, oldest first: the only ones
    /// [`TxRing::clean`] reads DD from.
    reports: VecDeque<Report>,
    /// Descriptors written since the last one with RS.
    unreported: usize,
    /// Frames ended since the last descriptor with RS.
    unreported_frames: usize,
    /// Frames in flight (queued, not yet released).
    frames: usize,
    /// The checksum context the NIC has now.
    context: Option<ChecksumOffload>,
    max_frame: usize,
    /// Bytes given to the NIC, by who wrote them ([`crate::Stats::tx_from`]).
    pub(crate) from: BytesByWriter,
}

impl TxRing {
    /// A ring of `size` descriptors for frames of at most `max_frame` bytes;
    /// not yet given to the NIC ([`TxRing::start`]).
    pub(crate) fn new(container: &Arc<Container>, size: usize, max_frame: usize) -> Result<TxRing> {
        let desc = DmaMemory::new(container, size * txd::SIZE, Backing::Auto)?;
        let held = Held::new(size);
        Ok(TxRing {
            desc,
            held,
            tail: 0,
            clean: 0,
            in_flight: 0,
            reports: VecDeque::with_capacity(size),
            unreported: 0,
            unreported_frames: 0,
            frames: 0,
            context: None,
            from: BytesByWriter::default(),
            max_frame,
        })
    }

    /// Gives the (empty) ring to the NIC: base, length, head and tail 0.
    pub(crate) fn start(&self, bar: &Mmio) {
        bar.write32(TDBAL, self.desc.iova() as u32);
        bar.write32(TDBAH, (self.desc.iova() >> 32) as u32);
        bar.write32(TDLEN, (self.size() * txd::SIZE) as u32);
        bar.write32(TDH, 0);
        bar.write32(TDT, 0);
    }

    fn size(&self) -> usize {
        self.held.size()
    }

    fn free(&self) -> usize {
        self.size() - 1 - self.in_flight
    }

    /// Frames queued and not yet sent.
    pub(crate) fn pending(&self) -> usize {
        self.frames
    }

    /// Releases the buffers of every descriptor up to the newest one with
    /// RS the NIC has written back (DD), in order; returns how many frames
    /// ended there. Reads DD only on descriptors in flight with RS, oldest
    /// first (see the module docs).
    /// Buffers of the NIC's pool go onto `cache`, others back to their pools.
    pub(crate) fn clean(&mut self, cache: &mut BufferCache) -> usize {
        let mut frames = 0;
        while let Some(&Report {
            desc: done,
            frames: ended,
        }) = self.reports.front()
        {
            if self.desc.read::<u8>(done * txd::SIZE + txd::STATUS) & txd::DD == 0 {
                break;
            }
            self.reports.pop_front();
            // DD before the buffers the NIC read go back (and may be rewritten).
            fence(Ordering::Acquire);
            // Descriptors clean..=done, in order: one or two runs of the ring.
            let (first, second) = if done >= self.clean {
                (self.clean..done + 1, 0..0)
            } else {
                (self.clean..self.size(), 0..done + 1)
            };
            self.in_flight -= first.len() + second.len();
            self.clean = super::ring_next(done, self.size());
            for range in [first, second] {
                self.held.release(range, cache);
            }
            frames += ended;
        }
        self.frames -= frames;
        frames
    }

    /// Queues frames from the front of `frames` while they fit; one TDT write.
    /// The frames are read where they are, their segments moved out one by
    /// one into the ring, and the emptied frames removed at the end (no
    /// frame is moved as a whole). A malformed frame, or one with a segment
    /// of another container than the ring's (the NIC's, `addr`), is taken
    /// off the queue (its buffers go back to their pools) and reported,
    /// after the frames before it are handed to the NIC.
    pub(crate) fn send(
        &mut self,
        bar: &Mmio,
        addr: PciAddress,
        frames: &mut VecDeque<TxFrame>,
    ) -> Result<usize> {
        let mut sent = 0;
        let mut bad = None;
        let queued = frames.len();
        for frame in frames.iter_mut() {
            let bytes = match frame.check(self.max_frame, self.desc.container(), addr) {
                Ok(bytes) => bytes,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            };
            let needs_context = frame.offload.is_some() && frame.offload != self.context;
            if self.free() < frame.segment_count() + needs_context as usize {
                break;
            }
            if let (true, Some(offload)) = (needs_context, frame.offload) {
                self.put_context(offload);
            }
            self.from.add_all(bytes);
            sent += 1;
            // RS when this is surely the batch's last frame (the queue
            // ends here), or when RS_THRESH descriptors went unreported.
            self.put_frame(frame, sent == queued);
        }
        // The frames sent are empty now; a bad one is dropped with its buffers.
        crate::frame::remove_sent(frames, sent);
        if bad.is_some() {
            frames.pop_front();
        }
        self.hand_over(bar, sent);
        bad.map_or(Ok(sent), Err)
    }

    /// Queues packets from the front of `packets`, one descriptor each,
    /// while they fit, and removes them from `packets`; one TDT write. A
    /// packet the NIC cannot send (empty, too long, of another container)
    /// is removed and dropped and reported after the packets before it
    /// were handed over, as [`TxRing::send`] does with a frame.
    pub(crate) fn send_packets(
        &mut self,
        bar: &Mmio,
        addr: PciAddress,
        packets: &mut Vec<Packet>,
    ) -> Result<usize> {
        // At most what fits; each packet checked where it is taken (as
        // `check_packets` would), the first one the NIC cannot send ending
        // the batch and reported.
        let limit = packets.len().min(self.free());
        let (container, max_frame) = (self.desc.container(), self.max_frame);
        // The ring's counters in locals for the loop (the descriptor
        // stores would otherwise make the compiler reload them).
        let (size, mut tail) = (self.size(), self.tail);
        let (mut unreported, mut frames) = (self.unreported, self.unreported_frames);
        let (mut total, mut device) = (0, 0);
        // Per descriptor of a run: its two words (address; command and
        // length), written in a pass of their own: the descriptor stores are
        // atomic, and with them in the loop that takes the packets the
        // compiler reloads the ring's and the vector's fields each time.
        let mut words = [[0u64; 2]; RUN];
        let (mut sent, mut bad) = (0, None);
        while sent < limit {
            // Up to the ring's end, at most RUN.
            let n = (limit - sent).min(size - tail).min(RUN);
            let mut ok = n;
            let run = packets[sent..sent + n].iter().zip(&mut words[..n]);
            for (k, (p, word)) in run.enumerate() {
                if !crate::frame::sendable(p, max_frame, container) {
                    ok = k;
                    break;
                }
                // Bytes in all, and the device's among them.
                total += p.len() as u64;
                if p.writer() == Writer::Device {
                    device += p.len() as u64;
                }
                let mut cmd = txd::CMD_IFCS | txd::CMD_EOP | p.len() as u32;
                (unreported, frames) = (unreported + 1, frames + 1);
                if unreported >= RS_THRESH {
                    cmd |= txd::CMD_RS;
                    self.reports.push_back(Report {
                        desc: tail + k,
                        frames,
                    });
                    (unreported, frames) = (0, 0);
                }
                // Dword 2 (command and length), dword 3 (status, POPTS) 0.
                *word = [p.iova(), cmd as u64];
            }
            // The run's descriptors in order, one bounds check.
            self.desc
                .write_words::<u64>(tail * txd::SIZE, words[..ok].as_flattened());
            sent += ok;
            tail = if tail + ok == size { 0 } else { tail + ok };
            if ok < n {
                let p = &packets[sent];
                bad = Some(crate::frame::packet_error(p, max_frame, container, addr));
                break;
            }
        }
        // The buffers to the descriptors that send from them, in the same runs.
        let (mut at, mut drain) = (self.tail, packets.drain(..sent));
        while drain.len() > 0 {
            let n = drain.len().min(size - at);
            for (slot, p) in self.held.slots(at..at + n).iter_mut().zip(drain.by_ref()) {
                Held::fill(slot, p.into_buffer());
            }
            at = if at + n == size { 0 } else { at + n };
        }
        drop(drain);
        (self.tail, self.unreported, self.unreported_frames) = (tail, unreported, frames);
        self.in_flight += sent;
        self.from.add_all(BytesByWriter {
            device,
            cpu: total - device,
        });
        if bad.is_some() {
            packets.remove(0);
        }
        self.hand_over(bar, sent);
        bad.map_or(Ok(sent), Err)
    }

    /// Builds up to `n` frames in buffers from `cache` (see
    /// [`crate::NetDevice::tx_fill`]) while they fit, one descriptor each;
    /// one TDT write. A length of 0 from `fill` ends the batch, one past
    /// the room is refused; either way that buffer goes back to `cache`.
    ///
    /// The descriptor step is written out here and in
    /// [`TxRing::send_packets`] on purpose: one shared `#[inline(always)]`
    /// helper cost this loop 11 instructions per frame in bench-host
    /// (140.8 -> 151.7), the compiler keeping less in registers.
    pub(crate) fn fill(
        &mut self,
        bar: &Mmio,
        cache: &mut BufferCache,
        n: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<usize> {
        let n = n.min(self.free());
        let room = self.max_frame.min(cache.pool().buf_size());
        let (size, mut tail) = (self.size(), self.tail);
        let mut rs = RsPlan::new(self.unreported, self.unreported_frames);
        let (mut sent, mut bytes, mut refused) = (0, 0, None);
        while sent < n {
            let Some(mut buf) = cache.alloc() else { break };
            let len = fill(&mut buf.as_mut_slice()[..room]);
            if len == 0 || len > room {
                cache.free(buf);
                refused = (len > room).then(|| crate::frame::too_long(len, room));
                break;
            }
            let mut cmd = txd::CMD_IFCS | txd::CMD_EOP | len as u32;
            if let Some(report) = rs.report(sent, tail) {
                cmd |= txd::CMD_RS;
                self.reports.push_back(report);
            }
            self.desc
                .write_words::<u64>(tail * txd::SIZE, &[buf.iova(), cmd as u64]);
            self.held.own(tail, buf);
            tail = super::ring_next(tail, size);
            (sent, bytes) = (sent + 1, bytes + len as u64);
        }
        let (unreported, frames) = rs.after(sent);
        (self.tail, self.unreported, self.unreported_frames) = (tail, unreported, frames);
        self.in_flight += sent;
        // Written by the CPU, through the buffers' `&mut` slices.
        self.from.cpu += bytes;
        self.hand_over(bar, sent);
        refused.map_or(Ok(sent), Err)
    }

    /// Builds up to `n` frames of a header (in a buffer from `cache`,
    /// written by `fill`) and a slice of `payload`, two descriptors each
    /// (one for a header alone), after a context descriptor when `offload`
    /// is new to the NIC; one TDT write (see
    /// [`crate::NetDevice::tx_fill_payload`]).
    ///
    /// The ring takes one share of `payload` for the whole batch and holds
    /// it at the batch's last descriptor: the NIC is done with descriptors
    /// in order and [`TxRing::clean`] releases them in order, so the last
    /// one done means every slice before it was read. The room is counted
    /// as two descriptors a frame (that a frame is a header alone is known
    /// only once `fill` has built it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fill_payload(
        &mut self,
        bar: &Mmio,
        addr: PciAddress,
        cache: &mut BufferCache,
        payload: &SharedBuffer,
        offload: Option<ChecksumOffload>,
        n: usize,
        fill: &mut FillPayload<'_>,
    ) -> Result<usize> {
        crate::frame::check_payload_container(payload, self.desc.container(), addr)?;
        let needs_context = offload.is_some() && offload != self.context;
        let n = n.min(self.free().saturating_sub(needs_context as usize) / 2);
        if n == 0 {
            return Ok(0);
        }
        if let (true, Some(o)) = (needs_context, offload) {
            self.put_context(o);
        }
        let (cmd, popts) = match offload {
            Some(_) => (
                txd::CMD_IFCS | txd::CMD_DEXT | txd::DTYP_DATA,
                (txd::POPTS_IXSM | txd::POPTS_TXSM) as u64,
            ),
            None => (txd::CMD_IFCS, 0),
        };
        let room = self.max_frame.min(cache.pool().buf_size());
        let (capacity, base) = (payload.capacity(), payload.iova());
        let (size, mut tail) = (self.size(), self.tail);
        let (mut unreported, mut frames) = (self.unreported, self.unreported_frames);
        let (mut sent, mut refused, mut sliced) = (0, None, false);
        let mut from = BytesByWriter::default();
        while sent < n {
            let Some(mut buf) = cache.alloc() else { break };
            let (header, data) = fill(&mut buf.as_mut_slice()[..room]);
            let checked = crate::frame::check_payload_frame(
                header,
                room,
                &data,
                capacity,
                self.max_frame,
                offload,
            );
            if let Err(e) = checked {
                cache.free(buf);
                refused = e;
                break;
            }
            let alone = data.is_empty();
            (unreported, frames) = (unreported + 2 - alone as usize, frames + 1);
            // RS on the frame's end when RS_THRESH descriptors went without.
            let end = if alone {
                tail
            } else {
                super::ring_next(tail, size)
            };
            let rs = if unreported >= RS_THRESH {
                self.reports.push_back(Report { desc: end, frames });
                (unreported, frames) = (0, 0);
                txd::CMD_RS
            } else {
                0
            };
            // Dword 2 (command and length) and dword 3 (status 0, then
            // POPTS) as one word, after the address.
            let word = |cmd: u32, len: usize| (cmd | len as u32) as u64 | popts << 40;
            let eop = txd::CMD_EOP | rs;
            let first = word(cmd | if alone { eop } else { 0 }, header);
            self.desc
                .write_words::<u64>(tail * txd::SIZE, &[buf.iova(), first]);
            self.held.own(tail, buf);
            from.cpu += header as u64;
            if !alone {
                from.add(payload.writer(data.start, data.len()), data.len());
                let at = base + data.start as u64;
                let last = word(cmd | eop, data.len());
                self.desc.write_words::<u64>(end * txd::SIZE, &[at, last]);
                sliced = true;
            }
            tail = super::ring_next(end, size);
            sent += 1;
        }
        self.in_flight += tail.wrapping_sub(self.tail).wrapping_add(size) % size;
        (self.tail, self.unreported, self.unreported_frames) = (tail, unreported, frames);
        if sliced {
            // The batch's last descriptor (a frame's end) holds the share.
            let last = tail.checked_sub(1).unwrap_or(size - 1);
            self.held.put(last, Hold::Shared(payload.clone()));
        }
        self.from.add_all(from);
        self.hand_over(bar, sent);
        refused.map_or(Ok(sent), Err)
    }

    /// Hands the `sent` frames just written to the NIC: RS on the last
    /// descriptor if the batch ended without one, one TDT write.
    fn hand_over(&mut self, bar: &Mmio, sent: usize) {
        if sent > 0 {
            if self.unreported > 0 {
                // The batch ended on a frame that did not fit or a bad one:
                // its last descriptor (a frame's end) gets RS now, before
                // the NIC may read it.
                let last = self.tail.checked_sub(1).unwrap_or(self.size() - 1);
                self.report(last);
            }
            self.frames += sent;
            // The descriptors before the tail that tells the NIC to read them.
            fence(Ordering::Release);
            bar.write32(TDT, self.tail as u32);
        }
    }

    /// Leaves the descriptor memory and every segment the ring holds
    /// allocated and mapped for good, for a NIC that could not be stopped.
    pub(crate) fn leak(&mut self) {
        self.desc.leak_on_drop();
        self.held.leak();
    }

    fn advance(&mut self) -> usize {
        let i = self.tail;
        self.tail = super::ring_next(i, self.size());
        self.in_flight += 1;
        i
    }

    /// A TCP/IP context descriptor (section 3.3.6) for IPv4 + UDP/TCP checksums.
    fn put_context(&mut self, o: ChecksumOffload) {
        let at = self.advance() * txd::SIZE;
        let ip = o.ip_start as u64;
        let l4 = o.l4_start as u64;
        let l4_sum = l4 + o.checksum_offset() as u64;
        // IPCSS, IPCSO (checksum at +10), IPCSE (20-byte header); TUCSS, TUCSO, TUCSE = 0 (to the end).
        let lower = ip | (ip + 10) << 8 | (ip + 19) << 16 | l4 << 32 | l4_sum << 40;
        let tucmd = txd::TUCMD_IP | if o.tcp { txd::TUCMD_TCP } else { 0 };
        let cmd = txd::DTYP_CONTEXT | txd::CMD_DEXT | tucmd;
        // Dwords 2 and 3 (command, then status and the MSS/header fields, 0)
        // as one little-endian word: the descriptor in two stores, one check.
        self.desc.write_words::<u64>(at, &[lower, cmd as u64]);
        self.unreported += 1;
        self.context = Some(o);
    }

    /// Sets RS on descriptor `i`, already written (and not yet given to
    /// the NIC), and expects DD there.
    fn report(&mut self, i: usize) {
        let at = i * txd::SIZE + txd::CMD_DWORD;
        let dword = self.desc.read::<u32>(at);
        self.desc.write::<u32>(at, dword | txd::CMD_RS);
        self.reports.push_back(Report {
            desc: i,
            frames: self.unreported_frames,
        });
        (self.unreported, self.unreported_frames) = (0, 0);
    }

    /// One descriptor per segment, each segment moved out of `frame` into
    /// the ring; EOP on the last, and RS there too when `last_of_batch` or
    /// [`RS_THRESH`] descriptors went without it.
    fn put_frame(&mut self, frame: &mut TxFrame, last_of_batch: bool) {
        let (cmd, popts) = if frame.offload.is_some() {
            let cmd = txd::CMD_IFCS | txd::CMD_DEXT | txd::DTYP_DATA;
            (cmd, txd::POPTS_IXSM | txd::POPTS_TXSM)
        } else {
            (txd::CMD_IFCS, 0)
        };
        let slots = frame.segment_slots();
        let count = slots.len();
        for (n, slot) in slots.iter_mut().enumerate() {
            let Some(segment) = slot.take() else { continue };
            let (iova, len) = segment.dma();
            self.put(
                iova,
                len,
                cmd,
                popts,
                segment.into_hold(),
                n + 1 == count,
                last_of_batch,
            );
        }
    }

    /// One data descriptor for `segment` (`len` bytes at `iova`), which the
    /// ring holds until the NIC is done; EOP when it is a frame's `end`,
    /// and then RS too when `last_of_batch` or [`RS_THRESH`] descriptors
    /// went without it.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn put(
        &mut self,
        iova: u64,
        len: usize,
        mut cmd: u32,
        popts: u8,
        held: crate::frame::Hold,
        end: bool,
        last_of_batch: bool,
    ) {
        let i = self.advance();
        self.unreported += 1;
        if end {
            cmd |= txd::CMD_EOP;
            self.unreported_frames += 1;
            if last_of_batch || self.unreported >= RS_THRESH {
                cmd |= txd::CMD_RS;
                self.reports.push_back(Report {
                    desc: i,
                    frames: self.unreported_frames,
                });
                (self.unreported, self.unreported_frames) = (0, 0);
            }
        }
        // Dword 2 (command and length) and dword 3 (status 0, then
        // POPTS) as one little-endian word after the buffer address.
        let upper = (cmd | len as u32) as u64 | ((popts as u64) << 8) << 32;
        self.desc.write_words::<u64>(i * txd::SIZE, &[iova, upper]);
        self.held.put(i, held);
    }
}
