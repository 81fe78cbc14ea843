//! The transmit ring (8254x SDM section 3.3): one descriptor per segment (plus
//! a context descriptor when the checksum offload changes), RS on every
//! descriptor, TDT written once per batch, buffers held until DD.
//!
//! Ordering: a release fence between writing descriptors and writing TDT (the
//! NIC reads them once it sees the tail), an acquire fence between reading DD
//! and releasing the buffers the NIC read (compiler barriers on x86-64, where
//! the hardware keeps this order; explicit for any target).

use std::collections::VecDeque;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use vfio_core::dma::{Backing, BytesByWriter, DmaMemory};
use vfio_core::mmio::Mmio;
use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

use super::regs::{txd, TDBAH, TDBAL, TDH, TDLEN, TDT};
use crate::{ChecksumOffload, Result, Segment, TxFrame};

#[derive(Debug)]
pub(crate) struct TxRing {
    desc: DmaMemory,
    /// The segment each descriptor sends, held until the NIC is done; and
    /// whether the descriptor ends a frame.
    held: Vec<(Option<Segment>, bool)>,
    tail: usize,
    clean: usize,
    in_flight: usize,
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
        let held = (0..size).map(|_| (None, false)).collect();
        Ok(TxRing {
            desc,
            held,
            tail: 0,
            clean: 0,
            in_flight: 0,
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
        self.held.len()
    }

    fn free(&self) -> usize {
        self.size() - 1 - self.in_flight
    }

    /// Frames queued and not yet sent.
    pub(crate) fn pending(&self) -> usize {
        self.held
            .iter()
            .filter(|(s, end)| s.is_some() && *end)
            .count()
    }

    /// Releases the buffers of every descriptor the NIC has written back;
    /// returns how many frames ended there.
    pub(crate) fn clean(&mut self) -> usize {
        let mut frames = 0;
        while self.in_flight > 0
            && self.desc.read::<u8>(self.clean * txd::SIZE + txd::STATUS) & txd::DD != 0
        {
            // DD before the buffers the NIC read go back (and may be rewritten).
            fence(Ordering::Acquire);
            let (segment, end) = std::mem::take(&mut self.held[self.clean]);
            drop(segment);
            frames += end as usize;
            self.clean = (self.clean + 1) % self.size();
            self.in_flight -= 1;
        }
        frames
    }

    /// Queues frames from the front of `frames` while they fit; one TDT write.
    /// A malformed frame, or one with a segment of another container than
    /// the ring's (the NIC's, `addr`), is taken off the queue (its buffers
    /// go back to their pools) and reported, after the frames before it are
    /// handed to the NIC.
    pub(crate) fn send(
        &mut self,
        bar: &Mmio,
        addr: PciAddress,
        frames: &mut VecDeque<TxFrame>,
    ) -> Result<usize> {
        let mut sent = 0;
        let mut bad = None;
        while let Some(frame) = frames.front() {
            if let Err(e) = frame.check(self.max_frame, self.desc.container(), addr) {
                frames.pop_front();
                bad = Some(e);
                break;
            }
            let needs_context = frame.offload.is_some() && frame.offload != self.context;
            if self.free() < frame.segment_count() + needs_context as usize {
                break;
            }
            let mut frame = frames.pop_front().expect("front exists");
            if needs_context {
                let offload = frame.offload.expect("checked above");
                self.put_context(offload);
            }
            frame.count_writers(&mut self.from);
            self.put_frame(&mut frame);
            sent += 1;
        }
        if sent > 0 {
            // The descriptors before the tail that tells the NIC to read them.
            fence(Ordering::Release);
            bar.write32(TDT, self.tail as u32);
        }
        bad.map_or(Ok(sent), Err)
    }

    /// Leaves the descriptor memory and every segment the ring holds
    /// allocated and mapped for good, for a NIC that could not be stopped.
    pub(crate) fn leak(&mut self) {
        self.desc.leak_on_drop();
        let held = self.held.iter_mut().filter_map(|(s, _)| s.take());
        held.for_each(Segment::leak);
    }

    fn advance(&mut self) -> usize {
        let i = self.tail;
        self.tail = (self.tail + 1) % self.size();
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
        let cmd = txd::DTYP_CONTEXT | txd::CMD_DEXT | txd::CMD_RS | tucmd;
        // Dwords 2 and 3 (command, then status and the MSS/header fields, 0)
        // as one little-endian word: the descriptor in two stores, one check.
        self.desc.write_words::<u64>(at, &[lower, cmd as u64]);
        self.held[at / txd::SIZE] = (None, false);
        self.context = Some(o);
    }

    /// One descriptor per segment; EOP on the last.
    fn put_frame(&mut self, frame: &mut TxFrame) {
        let offload = frame.offload.is_some();
        let segments = frame.take_segments();
        let count = segments.iter().flatten().count();
        for (n, segment) in segments.into_iter().flatten().enumerate() {
            let (iova, len) = segment.dma();
            let last = n + 1 == count;
            let at = self.advance() * txd::SIZE;
            let mut cmd = txd::CMD_IFCS | txd::CMD_RS | if last { txd::CMD_EOP } else { 0 };
            let mut popts = 0;
            if offload {
                cmd |= txd::CMD_DEXT | txd::DTYP_DATA;
                popts = txd::POPTS_IXSM | txd::POPTS_TXSM;
            }
            // Dword 2 (command and length) and dword 3 (status 0, then
            // POPTS) as one little-endian word after the buffer address.
            let upper = (cmd | len as u32) as u64 | ((popts as u64) << 8) << 32;
            self.desc.write_words::<u64>(at, &[iova, upper]);
            self.held[at / txd::SIZE] = (Some(segment), last);
        }
    }
}
