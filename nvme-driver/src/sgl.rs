//! SGL descriptors (base spec 4.1.2): how this driver describes data with a
//! Scatter Gather List when the controller supports them and the
//! [`Config`](crate::Config) chooses them ([`DataPointer`](crate::DataPointer)).
//!
//! Most commands' data is one contiguous IOVA range (a pool buffer or a
//! slice of one), so SGL1 in the command itself is one SGL Data Block
//! descriptor (figure 118) and no segment memory is needed; where PRPs need
//! a list page for a transfer of more than two pages, the SGL stays one
//! descriptor.
//!
//! A gather Write ([`IoQueuePair::submit_write_gather`](crate::IoQueuePair::submit_write_gather))
//! takes its data from several ranges: their Data Block descriptors, 16
//! bytes each, fill the command's list page (the page a PRP list of the
//! same command ID would use), and SGL1 is a Last Segment descriptor
//! (figure 121) pointing at them, its length the list's size in bytes.

use crate::spec::sgl::{DATA_BLOCK, LAST_SEGMENT};

/// Bytes of one SGL descriptor.
pub const DESCRIPTOR_BYTES: usize = 16;

/// The SGL Data Block descriptor for `len` bytes at `addr` (figure 118):
/// bytes 7:0 the address, 11:8 the length, 15 the SGL identifier (type 0h,
/// subtype 0h, Address), as the four dwords of SGL1 (CDW6..9).
pub fn data_block(addr: u64, len: u32) -> [u32; 4] {
    [
        addr as u32,
        (addr >> 32) as u32,
        len,
        u32::from(DATA_BLOCK) << 24,
    ]
}

/// The SGL Last Segment descriptor for a list of `len` bytes (a whole
/// number of descriptors) at `addr` (figure 121): laid out as a Data Block
/// descriptor, SGL identifier type 3h, subtype 0h (Address).
pub fn last_segment(addr: u64, len: u32) -> [u32; 4] {
    debug_assert!(len > 0 && (len as usize).is_multiple_of(DESCRIPTOR_BYTES));
    [
        addr as u32,
        (addr >> 32) as u32,
        len,
        u32::from(LAST_SEGMENT) << 24,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_segment_layout() {
        let d = last_segment(0x1_0000_3000, 48);
        let bytes: Vec<u8> = d.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(&bytes[0..8], &0x1_0000_3000u64.to_le_bytes());
        assert_eq!(&bytes[8..12], &48u32.to_le_bytes());
        assert_eq!(&bytes[12..15], &[0, 0, 0], "reserved");
        assert_eq!(bytes[15], 0x30, "SGL Last Segment, Address subtype");
    }

    #[test]
    fn data_block_layout() {
        let d = data_block(0x1234_5678_9abc_def0, 0x2_0000);
        let bytes: Vec<u8> = d.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(&bytes[0..8], &0x1234_5678_9abc_def0u64.to_le_bytes());
        assert_eq!(&bytes[8..12], &0x2_0000u32.to_le_bytes());
        assert_eq!(&bytes[12..15], &[0, 0, 0], "reserved");
        assert_eq!(bytes[15], 0x00, "SGL Data Block, Address subtype");
    }
}
