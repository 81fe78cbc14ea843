//! Scatter Gather Lists for the NVMe model (NVM Express Base Specification
//! 2.0, "Scatter Gather List (SGL)" and the SGL descriptor figures): how an
//! I/O command with PSDT 01b or 10b (command dword 0 bits 15:14) describes
//! its data, walked into the pieces the controller moves.
//!
//! A descriptor is 16 bytes: Address (bytes 7:0), Length (bytes 11:8), three
//! reserved bytes, and the SGL Identifier (byte 15: type in bits 7:4,
//! subtype in bits 3:0). The command's DPTR (bytes 39:24, dwords 6 to 9)
//! holds the first one, SGL1. The model takes:
//!
//! - Data Block (0h): `length` bytes at `address`, any alignment.
//! - Bit Bucket (1h): on a read, `length` bytes of the data are discarded
//!   (its address is not used); on a write it is ignored and counts for
//!   nothing, as QEMU's controller does.
//! - Segment (2h) and Last Segment (3h): `length` bytes at `address` hold
//!   the next segment, an array of descriptors of which only the last may
//!   be a (Last) Segment descriptor; a segment a Last Segment descriptor
//!   points to has none.
//!
//! Subtype 0h (Address) only; Offset addressing is for NVMe over Fabrics.
//! The whole list is checked before any data moves, and refused with the
//! generic status the specification names:
//!
//! | status | when |
//! |---|---|
//! | 0Dh Invalid SGL Segment Descriptor | a (Last) Segment descriptor of length 0 or not a multiple of 16; one inside a last segment |
//! | 0Eh Invalid Number of SGL Descriptors | a (Last) Segment descriptor that is not the last of its segment; more than [`MAX_DESCRIPTORS`] read for one command (a chain that loops) |
//! | 0Fh Data SGL Length Invalid | the Data Blocks and Bit Buckets describe fewer bytes than the command moves, or more (the model does not report SGLS bit 18, excess length allowed); a Data Block past the end of the 64-bit address space |
//! | 11h SGL Descriptor Type Invalid | any other type (Keyed, Transport, reserved) or subtype |
//! | 1Eh SGL Data Block Granularity Invalid | with SGLS 10b ([`NvmeConfig::sgl_dword_alignment`](crate::nvme::NvmeConfig::sgl_dword_alignment)): a Data Block whose address or length is not a multiple of 4 |
//! | 04h Data Transfer Error | a segment that is not mapped (an IOMMU fault) |

use vfio_core::vfio::Container;

/// Descriptors read for one command at most: a longer list (or a chain of
/// segments pointing back at themselves) is refused, not walked forever.
pub(crate) const MAX_DESCRIPTORS: usize = 4096;

const DATA_BLOCK: u8 = 0x0;
const BIT_BUCKET: u8 = 0x1;
const SEGMENT: u8 = 0x2;
const LAST_SEGMENT: u8 = 0x3;

/// Generic command status values (base spec 2.0, Generic Command Status Values).
pub(crate) const DATA_TRANSFER_ERROR: u16 = 0x04;
const INVALID_SEGMENT: u16 = 0x0d;
const INVALID_COUNT: u16 = 0x0e;
const INVALID_LENGTH: u16 = 0x0f;
const INVALID_TYPE: u16 = 0x11;
const INVALID_GRANULARITY: u16 = 0x1e;

/// A stretch of a command's data: moved by DMA at an IOVA, or discarded
/// (a Bit Bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    Dma(u64, usize),
    Discard(usize),
}

#[derive(Clone, Copy, Debug)]
struct Descriptor {
    address: u64,
    length: u32,
    kind: u8,
    subtype: u8,
}

impl Descriptor {
    fn parse(raw: &[u8]) -> Descriptor {
        Descriptor {
            address: u64::from_le_bytes(raw[0..8].try_into().expect("8")),
            length: u32::from_le_bytes(raw[8..12].try_into().expect("4")),
            kind: raw[15] >> 4,
            subtype: raw[15] & 0xf,
        }
    }

    fn is_segment(&self) -> bool {
        matches!(self.kind, SEGMENT | LAST_SEGMENT)
    }
}

/// SGL1 of a command: its dwords 6 to 9 as bytes.
pub(crate) fn sgl1(cmd: &[u32; 16]) -> [u8; 16] {
    let mut raw = [0u8; 16];
    for (i, d) in cmd[6..10].iter().enumerate() {
        raw[4 * i..4 * i + 4].copy_from_slice(&d.to_le_bytes());
    }
    raw
}

/// Whether SGL1 is a Segment or Last Segment descriptor (the command's
/// descriptors are in a list in memory).
pub(crate) fn is_segment(sgl1: &[u8; 16]) -> bool {
    Descriptor::parse(sgl1).is_segment()
}

/// The pieces the SGL starting at `sgl1` describes for a transfer of `len`
/// bytes, in order; `to_host` for a controller-to-host transfer (a read);
/// `dword` when Data Blocks must be dword aligned and of dword granularity
/// (SGLS 10b). Segments are read from `container` as the controller's DMA
/// would. Err: the status to complete the command with.
pub(crate) fn walk(
    container: &Container,
    sgl1: &[u8; 16],
    len: usize,
    to_host: bool,
    dword: bool,
) -> Result<Vec<Piece>, u16> {
    let mut walk = Walk {
        out: Vec::new(),
        need: len,
        to_host,
        dword,
    };
    let first = Descriptor::parse(sgl1);
    let mut next = if first.is_segment() {
        Some(first)
    } else {
        walk.take(&first)?;
        None
    };
    let mut read = 0;
    while let Some(segment) = next.take() {
        if segment.length == 0 || segment.length % 16 != 0 {
            return Err(INVALID_SEGMENT);
        }
        let count = segment.length as usize / 16;
        read += count;
        if read > MAX_DESCRIPTORS {
            return Err(INVALID_COUNT);
        }
        let mut list = vec![0u8; segment.length as usize];
        container
            .dma_read(segment.address, &mut list)
            .map_err(|_| DATA_TRANSFER_ERROR)?;
        for (i, raw) in list.chunks_exact(16).enumerate() {
            let d = Descriptor::parse(raw);
            if !d.is_segment() {
                walk.take(&d)?;
            } else if i + 1 < count {
                return Err(INVALID_COUNT);
            } else if segment.kind == LAST_SEGMENT {
                return Err(INVALID_SEGMENT);
            } else {
                next = Some(d);
            }
        }
    }
    if walk.need != 0 {
        return Err(INVALID_LENGTH);
    }
    Ok(walk.out)
}

struct Walk {
    out: Vec<Piece>,
    /// Bytes of the transfer not yet described.
    need: usize,
    to_host: bool,
    /// Data Blocks dword aligned and of dword granularity (SGLS 10b).
    dword: bool,
}

impl Walk {
    /// A Data Block or Bit Bucket descriptor (anything else is refused).
    fn take(&mut self, d: &Descriptor) -> Result<(), u16> {
        if !matches!(d.kind, DATA_BLOCK | BIT_BUCKET) || d.subtype != 0 {
            return Err(INVALID_TYPE);
        }
        if d.kind == BIT_BUCKET && !self.to_host {
            return Ok(());
        }
        let n = d.length as usize;
        if self.dword
            && d.kind == DATA_BLOCK
            && (!d.address.is_multiple_of(4) || !n.is_multiple_of(4))
        {
            return Err(INVALID_GRANULARITY);
        }
        if n > self.need {
            return Err(INVALID_LENGTH);
        }
        if d.kind == DATA_BLOCK && d.address.checked_add(n as u64).is_none() {
            return Err(INVALID_LENGTH);
        }
        if n == 0 {
            return Ok(());
        }
        self.need -= n;
        self.out.push(if d.kind == DATA_BLOCK {
            Piece::Dma(d.address, n)
        } else {
            Piece::Discard(n)
        });
        Ok(())
    }
}
