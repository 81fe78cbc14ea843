//! Frames: received packets and frames to transmit.

use vfio_core::dma::{Buffer, SharedBuffer};

/// Most buffers one transmitted frame may span.
pub const MAX_SEGMENTS: usize = 4;

/// A frame in one pool buffer: the buffer and how many bytes of it are the frame.
#[derive(Debug)]
pub struct Packet {
    buf: Buffer,
    len: usize,
}

impl Packet {
    /// A frame of `len` bytes at the start of `buf`.
    pub fn new(buf: Buffer, len: usize) -> Packet {
        let len = len.min(buf.capacity());
        Packet { buf, len }
    }
    /// The frame's bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf.as_slice()[..self.len]
    }
    /// The frame's bytes, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.buf.as_mut_slice()[..len]
    }
    /// The whole buffer, writable (to build a frame before `set_len`).
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut_slice()
    }
    /// Length of the frame.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True for an empty frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Sets the frame's length (at most the buffer's capacity).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.buf.capacity());
    }
    /// IOVA of the frame's first byte.
    pub fn iova(&self) -> u64 {
        self.buf.iova()
    }
    /// The buffer, to give back or reuse.
    pub fn into_buffer(self) -> Buffer {
        self.buf
    }
}

/// One piece of a frame to transmit.
#[derive(Debug)]
pub enum Segment {
    /// A whole packet's bytes.
    Packet(Packet),
    /// `len` bytes at `offset` of a buffer (e.g. data another device wrote).
    Slice {
        buf: Buffer,
        offset: usize,
        len: usize,
    },
    /// `len` bytes at `offset` of a buffer several frames send slices of; it
    /// goes back to its pool once the NIC has sent the last of them.
    Shared {
        buf: SharedBuffer,
        offset: usize,
        len: usize,
    },
}

impl Segment {
    /// IOVA and length of the bytes this segment sends.
    pub fn dma(&self) -> (u64, usize) {
        match self {
            Segment::Packet(p) => (p.iova(), p.len()),
            Segment::Slice { buf, offset, len } => (buf.iova() + *offset as u64, *len),
            Segment::Shared { buf, offset, len } => (buf.iova() + *offset as u64, *len),
        }
    }
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

/// A frame to transmit: up to [`MAX_SEGMENTS`] segments sent back to back,
/// with optional checksum offload. Building one allocates nothing.
#[derive(Debug)]
pub struct TxFrame {
    segments: [Option<Segment>; MAX_SEGMENTS],
    count: usize,
    pub offload: Option<ChecksumOffload>,
}

impl TxFrame {
    /// A frame of one packet.
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

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.segments().map(|s| s.dma().1).sum()
    }

    /// True when the frame has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the segments out (to hold until the NIC has sent them).
    pub(crate) fn take_segments(&mut self) -> [Option<Segment>; MAX_SEGMENTS] {
        self.count = 0;
        std::mem::take(&mut self.segments)
    }
}
