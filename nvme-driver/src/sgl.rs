//! SGL descriptors (base spec 4.1.2): how this driver describes data with a
//! Scatter Gather List when the controller supports them and the
//! [`Config`](crate::Config) chooses them ([`DataPointer`](crate::DataPointer)).
//!
//! A command's data is one contiguous IOVA range (a pool buffer or a slice
//! of one), so SGL1 in the command itself is one SGL Data Block descriptor
//! (figure 118) and no segment memory is needed; where PRPs need a list page
//! for a transfer of more than two pages, the SGL stays one descriptor.

use crate::spec::sgl::DATA_BLOCK;

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

#[cfg(test)]
mod tests {
    use super::*;

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
