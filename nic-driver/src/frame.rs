//! Frames: received packets and frames to transmit.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use vfio_core::dma::{Buffer, BufferCache, BytesByWriter, DmaTarget, SharedBuffer, Writer};
use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

/// Most buffers one transmitted frame may span.
pub const MAX_SEGMENTS: usize = 4;

/// A frame in one pool buffer: the buffer, where in it the frame starts (a
/// receive ring may leave headroom), and how many bytes the frame has.
///
/// The packet owns its buffer: no device reaches it while the caller holds
/// the packet, and dropping the packet returns the buffer to its pool.
#[derive(Debug)]
pub struct Packet {
    buf: Buffer,
    // 32-bit: a packet is 32 bytes, moved in four words (offsets and
    // lengths are clamped to the buffer, and to 4 GiB).
    offset: u32,
    len: u32,
}

impl Packet {
    /// A frame of `len` bytes at the start of `buf`.
    #[inline]
    pub fn new(buf: Buffer, len: usize) -> Packet {
        Packet::at(buf, 0, len)
    }
    /// A frame of `len` bytes at `offset` in `buf` (both clamped to the buffer).
    #[inline]
    pub fn at(buf: Buffer, offset: usize, len: usize) -> Packet {
        let capacity = buf.capacity().min(u32::MAX as usize);
        let offset = offset.min(capacity);
        let len = len.min(capacity - offset);
        Packet {
            buf,
            offset: offset as u32,
            len: len as u32,
        }
    }
    /// An empty frame at `offset` (at most `buf`'s capacity: the caller's
    /// check, made once for a batch).
    #[inline]
    pub(crate) fn empty_at(buf: Buffer, offset: usize) -> Packet {
        debug_assert!(offset <= buf.capacity() && offset <= u32::MAX as usize);
        Packet {
            buf,
            offset: offset as u32,
            len: 0,
        }
    }
    /// A frame of `len` bytes at `offset` that the NIC wrote into `buf`,
    /// which the caller checked lies inside the buffer (a receive ring
    /// checks each descriptor's length against its buffers' room):
    /// recorded as the device's bytes, as [`Packet::received`] does.
    #[inline]
    pub(crate) fn received_checked(mut buf: Buffer, offset: usize, len: usize) -> Packet {
        debug_assert!(offset + len <= buf.capacity() && offset + len <= u32::MAX as usize);
        buf.device_wrote(offset, len);
        Packet {
            buf,
            offset: offset as u32,
            len: len as u32,
        }
    }
    /// A frame of `len` bytes at `offset` that the NIC wrote into `buf` (a
    /// received frame): clamped as [`Packet::at`], and recorded as the
    /// device's bytes ([`Buffer::device_wrote`]) until the CPU writes them.
    pub(crate) fn received(buf: Buffer, offset: usize, len: usize) -> Packet {
        let mut p = Packet::at(buf, offset, len);
        p.buf.device_wrote(p.offset(), p.len());
        p
    }
    /// Who last wrote the frame's bytes ([`Buffer::writer`]): the NIC for a
    /// received frame the CPU has not written since.
    #[inline]
    pub fn writer(&self) -> Writer {
        self.buf.writer(self.offset(), self.len())
    }
    /// The frame's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf.as_slice()[self.offset()..self.offset() + self.len()]
    }
    /// The frame's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (offset, len) = (self.offset(), self.len());
        &mut self.buf.as_mut_slice()[offset..offset + len]
    }
    /// The buffer from the frame's start to its end, writable (to build a
    /// frame before `set_len`).
    #[inline]
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        let offset = self.offset();
        &mut self.buf.as_mut_slice()[offset..]
    }
    /// Length of the frame.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// True for an empty frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Sets the frame's length (at most what the buffer holds after its start).
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        // At most the buffer after the start, which `at` kept under 4 GiB.
        self.len = len.min(self.buf.capacity().min(u32::MAX as usize) - self.offset()) as u32;
    }
    /// Where the frame starts in its buffer.
    pub fn offset(&self) -> usize {
        self.offset as usize
    }
    /// IOVA of the frame's first byte.
    #[inline]
    pub fn iova(&self) -> u64 {
        self.buf.iova() + self.offset as u64
    }
    /// The buffer, to give back or reuse (the frame is at [`Packet::offset`]).
    #[inline]
    pub fn into_buffer(self) -> Buffer {
        self.buf
    }
    /// Writes `bytes` into the headroom so that they end where the frame
    /// starts (a header the NIC reads with the frame from one descriptor),
    /// with [`Buffer::write_at`]: the frame's bytes are not touched, so who
    /// wrote them ([`Packet::writer`]) stays as it was. The caller checks
    /// that [`Packet::offset`] leaves room for them.
    #[inline]
    pub(crate) fn write_headroom(&mut self, bytes: &[u8]) {
        self.buf.write_at(self.offset() - bytes.len(), bytes)
    }
}

/// How many packets from the front of `packets` a NIC at `addr` in
/// `container`, sending frames of at most `max_frame` bytes, can send now,
/// at most `room`: each one non-empty, no longer than `max_frame` and of
/// `container` (see [`TxFrame::check`]). The first one it cannot send, if
/// it comes within `room`, ends the count and is the error.
pub(crate) fn check_packets(
    packets: &[Packet],
    max_frame: usize,
    container: &Arc<Container>,
    addr: PciAddress,
    room: usize,
) -> (usize, Option<crate::Error>) {
    for (n, p) in packets.iter().take(room).enumerate() {
        if !sendable(p, max_frame, container) {
            return (n, Some(packet_error(p, max_frame, container, addr)));
        }
    }
    (packets.len().min(room), None)
}

/// Whether a NIC in `container` sending frames of at most `max_frame`
/// bytes can send `p` (see [`check_packets`]): not empty, not too long, of
/// `container`.
#[inline(always)]
pub(crate) fn sendable(p: &Packet, max_frame: usize, container: &Arc<Container>) -> bool {
    // 1 <= len <= max_frame in one compare (0 - 1 wraps past any max_frame).
    p.len().wrapping_sub(1) < max_frame && Arc::ptr_eq(p.buf.container(), container)
}

/// Why [`check_packets`] or [`sendable`] refused `p`.
#[cold]
pub(crate) fn packet_error(
    p: &Packet,
    max_frame: usize,
    container: &Arc<Container>,
    addr: PciAddress,
) -> crate::Error {
    if !Arc::ptr_eq(p.buf.container(), container) {
        return crate::Error::ForeignMemory {
            addr,
            what: "a packet to transmit".into(),
            iova: p.iova(),
        };
    }
    if p.len == 0 {
        return crate::Error::InvalidFrame("an empty frame".into());
    }
    too_long(p.len(), max_frame)
}

/// A frame of `len` bytes, more than `max_frame`.
pub(crate) fn too_long(len: usize, max_frame: usize) -> crate::Error {
    crate::Error::InvalidFrame(format!(
        "{len} bytes is more than the {max_frame}-byte frames this NIC sends (enable jumbo frames?)"
    ))
}

/// Refuses a payload buffer of [`crate::NetDevice::tx_fill_payload`] of
/// another container than the NIC's (at `addr`, in `container`), as
/// [`TxFrame::check`] refuses such a segment.
#[inline]
pub(crate) fn check_payload_container(
    payload: &SharedBuffer,
    container: &Arc<Container>,
    addr: PciAddress,
) -> crate::Result<()> {
    if Arc::ptr_eq(payload.container(), container) {
        return Ok(());
    }
    Err(crate::Error::ForeignMemory {
        addr,
        what: "a payload buffer to transmit".into(),
        iova: payload.iova(),
    })
}

/// Whether a frame of [`crate::NetDevice::tx_fill_payload`] goes out: a
/// `header` of at most `room` bytes (and long enough for `offload`'s IP and
/// L4 headers), then `payload` inside its `capacity`-byte buffer, at most
/// `max_frame` bytes in all. `Err(None)`: a header of 0, the batch's end;
/// `Err(Some(_))`: the frame is refused, and why.
#[inline]
pub(crate) fn check_payload_frame(
    header: usize,
    room: usize,
    payload: &Range<usize>,
    capacity: usize,
    max_frame: usize,
    offload: Option<ChecksumOffload>,
) -> Result<(), Option<crate::Error>> {
    if header == 0 {
        return Err(None);
    }
    let offload_fits = offload.is_none_or(|o| o.fits(header));
    let payload_fits = payload.start <= payload.end && payload.end <= capacity;
    if header <= room && payload_fits && header + payload.len() <= max_frame && offload_fits {
        return Ok(());
    }
    Err(Some(payload_frame_refusal(
        header, room, payload, capacity, max_frame,
    )))
}

/// Why [`check_payload_frame`] refused a frame.
#[cold]
#[inline(never)]
fn payload_frame_refusal(
    header: usize,
    room: usize,
    payload: &Range<usize>,
    capacity: usize,
    max_frame: usize,
) -> crate::Error {
    if header > room {
        return crate::Error::InvalidFrame(format!(
            "a {header}-byte header written into {room} bytes of room"
        ));
    }
    if payload.start > payload.end || payload.end > capacity {
        return crate::Error::InvalidFrame(format!(
            "payload bytes {payload:?} are not inside the {capacity}-byte buffer"
        ));
    }
    if header + payload.len() > max_frame {
        return too_long(header + payload.len(), max_frame);
    }
    crate::Error::InvalidFrame(format!(
        "a {header}-byte header does not hold the IP and L4 headers its checksum offload names"
    ))
}

/// One piece of a frame to transmit. It owns (or, for `Shared`, shares) its
/// buffer; a device that takes the frame holds the segment until the NIC
/// has read it, then drops it.
#[derive(Debug)]
pub enum Segment {
    /// A whole packet's bytes.
    Packet(Packet),
    /// `len` bytes at `offset` of a buffer (e.g. data another device wrote).
    Slice {
        /// The buffer; back to its pool when the segment is dropped.
        buf: Buffer,
        /// Where the bytes start in it.
        offset: usize,
        /// How many bytes.
        len: usize,
    },
    /// `len` bytes at `offset` of a buffer several frames send slices of; it
    /// goes back to its pool once the NIC has sent the last of them.
    Shared {
        /// One owner of the shared buffer.
        buf: SharedBuffer,
        /// Where the bytes start in it.
        offset: usize,
        /// How many bytes.
        len: usize,
    },
}

impl Segment {
    /// True when the bytes lie inside the segment's buffer (a slice past its
    /// end would send whatever the IOVAs after it hold).
    pub fn in_bounds(&self) -> bool {
        let inside = |offset: usize, len: usize, capacity: usize| {
            offset.checked_add(len).is_some_and(|end| end <= capacity)
        };
        match self {
            Segment::Packet(_) => true,
            Segment::Slice { buf, offset, len } => inside(*offset, *len, buf.capacity()),
            Segment::Shared { buf, offset, len } => inside(*offset, *len, buf.capacity()),
        }
    }

    /// The bytes this segment sends, as the CPU sees them.
    ///
    /// # Panics
    ///
    /// When they do not lie inside the buffer (see [`Segment::in_bounds`]).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Segment::Packet(p) => p.data(),
            Segment::Slice { buf, offset, len } => &buf.as_slice()[*offset..*offset + *len],
            Segment::Shared { buf, offset, len } => &buf.as_slice()[*offset..*offset + *len],
        }
    }

    /// Leaves the segment's buffer allocated, mapped and out of its pool for
    /// good (for a NIC that could not be stopped; see [Stopping](crate#stopping)).
    pub(crate) fn leak(self) {
        match self {
            Segment::Packet(p) => DmaTarget::leak(p.into_buffer()),
            Segment::Slice { buf, .. } => DmaTarget::leak(buf),
            Segment::Shared { buf, .. } => DmaTarget::leak(buf),
        }
    }

    /// Gives the segment's buffer back to `cache` (which sends another
    /// pool's buffer home); a shared buffer drops its share.
    #[inline]
    pub(crate) fn recycle(self, cache: &mut BufferCache) {
        self.into_hold().recycle(cache)
    }

    /// The buffer (or share) that keeps the segment's bytes alive, for a
    /// ring to hold once the descriptor is written (offset and length are
    /// in the descriptor then).
    #[inline]
    pub(crate) fn into_hold(self) -> Hold {
        match self {
            Segment::Packet(p) => Hold::Own(p.into_buffer()),
            Segment::Slice { buf, .. } => Hold::Own(buf),
            Segment::Shared { buf, .. } => Hold::Shared(buf),
        }
    }

    /// Who last wrote the bytes this segment sends (see
    /// [`vfio_core::dma::DmaTarget::writer`]).
    #[inline]
    pub fn writer(&self) -> Writer {
        match self {
            Segment::Packet(p) => p.writer(),
            Segment::Slice { buf, offset, len } => buf.writer(*offset, *len),
            Segment::Shared { buf, offset, len } => buf.writer(*offset, *len),
        }
    }

    /// The container whose IOMMU maps the segment's buffer: a NIC sends
    /// only segments of its own container (others are refused with
    /// [`crate::Error::ForeignMemory`]).
    pub fn container(&self) -> &Arc<Container> {
        match self {
            Segment::Packet(p) => p.buf.container(),
            Segment::Slice { buf, .. } => buf.container(),
            Segment::Shared { buf, .. } => buf.container(),
        }
    }

    /// What a driver checks and counts of the segment, from one match on
    /// its kind (the transmit path's one pass over a frame).
    #[inline]
    fn view(&self) -> View<'_> {
        let inside = |offset: usize, len: usize, capacity: usize| {
            offset.checked_add(len).is_some_and(|end| end <= capacity)
        };
        match self {
            Segment::Packet(p) => View {
                len: p.len(),
                in_bounds: true,
                container: p.buf.container(),
                writer: p.writer(),
            },
            Segment::Slice { buf, offset, len } => View {
                len: *len,
                in_bounds: inside(*offset, *len, buf.capacity()),
                container: buf.container(),
                writer: buf.writer(*offset, *len),
            },
            Segment::Shared { buf, offset, len } => View {
                len: *len,
                in_bounds: inside(*offset, *len, buf.capacity()),
                container: buf.container(),
                writer: buf.writer(*offset, *len),
            },
        }
    }

    /// IOVA and length of the bytes this segment sends (not checked against
    /// the buffer: see [`Segment::in_bounds`]).
    #[inline]
    pub fn dma(&self) -> (u64, usize) {
        match self {
            Segment::Packet(p) => (p.iova(), p.len()),
            Segment::Slice { buf, offset, len } => (buf.iova() + *offset as u64, *len),
            Segment::Shared { buf, offset, len } => (buf.iova() + *offset as u64, *len),
        }
    }
}

/// What a transmit descriptor in flight holds until the NIC is done with
/// it: the buffer its bytes are in, owned, or one share of a shared buffer.
/// Smaller than a [`Segment`] (no offset or length: the descriptor has
/// them), so a ring stores and takes it in a few moves.
#[derive(Debug)]
pub(crate) enum Hold {
    /// An owned buffer: back to the ring's cache (or its own pool).
    Own(Buffer),
    /// A share: dropped, the buffer going home with the last one.
    Shared(SharedBuffer),
}

impl Hold {
    /// Gives the buffer back to `cache` (another pool's goes home); a
    /// share is dropped.
    #[inline]
    pub(crate) fn recycle(self, cache: &mut BufferCache) {
        match self {
            Hold::Own(buf) => cache.free(buf),
            Hold::Shared(_) => {}
        }
    }
}

/// Removes the first `sent` frames of `frames`, which a driver emptied
/// (each segment taken into its ring with [`TxFrame::segment_slots`]):
/// with nothing left in them they are forgotten, not dropped slot by slot
/// (which the compiler makes a call per slot). A frame with a segment left
/// would leak that segment's buffer, never free it early; debug builds
/// assert there is none.
#[inline]
pub(crate) fn remove_sent(frames: &mut VecDeque<TxFrame>, sent: usize) {
    for frame in frames.drain(..sent) {
        debug_assert!(frame.segments.iter().all(Option::is_none));
        std::mem::forget(frame);
    }
}

/// A segment as [`TxFrame::check`] sees it.
struct View<'a> {
    len: usize,
    in_bounds: bool,
    container: &'a Arc<Container>,
    writer: Writer,
}

/// Checksums the NIC inserts (the frame's IPv4 header checksum field must be
/// 0 and its UDP/TCP checksum field must hold the pseudo-header sum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChecksumOffload {
    /// Offset of the IPv4 header in the frame (14 after a plain Ethernet header).
    pub ip_start: u8,
    /// Offset of the UDP or TCP header.
    pub l4_start: u8,
    /// TCP (else UDP).
    pub tcp: bool,
}

impl ChecksumOffload {
    /// Offset of the checksum field in the UDP or TCP header.
    pub fn checksum_offset(&self) -> usize {
        if self.tcp {
            16
        } else {
            6
        }
    }

    /// Whether `bytes` bytes from the frame's start hold the IPv4 header
    /// (20 bytes at least, before the L4 header) and the 8 bytes of a UDP
    /// header (a TCP header's first 8) this offload names.
    #[inline]
    pub(crate) fn fits(&self, bytes: usize) -> bool {
        bytes >= self.l4_start as usize + 8 && self.l4_start >= self.ip_start + 20
    }
}

/// A frame to transmit: up to [`MAX_SEGMENTS`] segments sent back to back,
/// with optional checksum offload. Building one allocates nothing. Dropping
/// it drops its segments (their buffers back to their pools).
#[derive(Debug)]
pub struct TxFrame {
    segments: [Option<Segment>; MAX_SEGMENTS],
    count: usize,
    /// Checksums for the NIC (or the driver) to insert; None to send the
    /// frame as it is.
    pub offload: Option<ChecksumOffload>,
}

impl TxFrame {
    /// A frame of one packet, without offload.
    #[inline]
    pub fn packet(p: Packet) -> TxFrame {
        let mut f = TxFrame {
            segments: Default::default(),
            count: 0,
            offload: None,
        };
        f.segments[0] = Some(Segment::Packet(p));
        f.count = 1;
        f
    }

    /// Appends a segment; gives it back when the frame has [`MAX_SEGMENTS`] already.
    #[inline]
    pub fn push(&mut self, s: Segment) -> Result<(), Segment> {
        if self.count == MAX_SEGMENTS {
            return Err(s);
        }
        self.segments[self.count] = Some(s);
        self.count += 1;
        Ok(())
    }

    /// The segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments[..self.count].iter().flatten()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.count
    }

    /// Total length in bytes (the segments' lengths, not checked against
    /// their buffers).
    #[inline]
    pub fn len(&self) -> usize {
        self.segments().map(|s| s.dma().1).sum()
    }

    /// True when the frame has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first segment, writable (a driver may fill in a header field).
    pub(crate) fn first_segment_mut(&mut self) -> Option<&mut Segment> {
        self.segments[0].as_mut()
    }

    /// Whether the NIC at `addr` in `container`, sending frames of at most
    /// `max_frame` bytes, can send this one: segments non-empty, inside
    /// their buffers and of `container` (memory of another container is
    /// not mapped for the NIC, and its IOVA may be other memory in
    /// `container`), the length, and the offload offsets. When it can, its
    /// bytes by who wrote them, for the driver to add to
    /// [`crate::Stats::tx_from`] once it takes the frame. One pass over the
    /// segments, one match on each: a pointer comparison per segment for
    /// the container.
    #[inline]
    pub(crate) fn check(
        &self,
        max_frame: usize,
        container: &Arc<Container>,
        addr: PciAddress,
    ) -> crate::Result<BytesByWriter> {
        let mut bytes = BytesByWriter::default();
        for s in self.segments[..self.count].iter().flatten() {
            let v = s.view();
            if !v.in_bounds || v.len == 0 || !Arc::ptr_eq(v.container, container) {
                return Err(self.refusal(max_frame, container, addr));
            }
            // In bounds: no more than the buffer holds, so the sum cannot overflow.
            bytes.add(v.writer, v.len);
        }
        let len = bytes.total() as usize;
        let offload_fits = self.offload.is_none_or(|o| o.fits(len));
        if len == 0 || len > max_frame || !offload_fits {
            return Err(self.refusal(max_frame, container, addr));
        }
        Ok(bytes)
    }

    /// Why [`TxFrame::check`] refuses the frame: the first segment that is
    /// out of bounds or of another container, then an empty frame, an
    /// empty segment, a frame too long, an offload that does not fit.
    #[cold]
    #[inline(never)]
    fn refusal(
        &self,
        max_frame: usize,
        container: &Arc<Container>,
        addr: PciAddress,
    ) -> crate::Error {
        let mut len = 0;
        let mut empty_segment = false;
        for (n, s) in self.segments[..self.count].iter().enumerate() {
            let Some(s) = s else { continue };
            let v = s.view();
            if !v.in_bounds {
                return crate::Error::InvalidFrame(
                    "a segment reaches past the end of its buffer".into(),
                );
            }
            if !Arc::ptr_eq(v.container, container) {
                return crate::Error::ForeignMemory {
                    addr,
                    what: format!(
                        "segment {} of {} of a frame to transmit",
                        n + 1,
                        self.segment_count()
                    ),
                    iova: s.dma().0,
                };
            }
            len += v.len;
            empty_segment |= v.len == 0;
        }
        if len == 0 {
            return crate::Error::InvalidFrame("an empty frame".into());
        }
        if empty_segment {
            return crate::Error::InvalidFrame("a frame with an empty segment".into());
        }
        if len > max_frame {
            return too_long(len, max_frame);
        }
        // What is left is the offload (check refuses nothing else).
        let (ip, l4) = self.offload.map_or((0, 0), |o| (o.ip_start, o.l4_start));
        crate::Error::InvalidFrame(format!(
            "checksum offload with IP at {ip} and L4 at {l4} does not fit a {len}-byte frame"
        ))
    }

    /// The segment slots in use, for a driver to take each segment out of
    /// (`Option::take`) into its ring without moving the frame; a frame
    /// whose segments were taken is left empty.
    pub(crate) fn segment_slots(&mut self) -> &mut [Option<Segment>] {
        let count = std::mem::take(&mut self.count);
        &mut self.segments[..count]
    }
}
