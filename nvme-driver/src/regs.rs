//! NVMe controller registers (BAR0), as named in the NVM Express Base
//! Specification 2.0, section 3.1.3 "Controller Properties" (figure 33).

/// Controller Capabilities (64-bit).
pub const CAP: usize = 0x00;
/// Version.
pub const VS: usize = 0x08;
/// Interrupt Mask Set.
pub const INTMS: usize = 0x0c;
/// Interrupt Mask Clear.
pub const INTMC: usize = 0x10;
/// Controller Configuration.
pub const CC: usize = 0x14;
/// Controller Status.
pub const CSTS: usize = 0x1c;
/// Admin Queue Attributes.
pub const AQA: usize = 0x24;
/// Admin Submission Queue Base Address (64-bit).
pub const ASQ: usize = 0x28;
/// Admin Completion Queue Base Address (64-bit).
pub const ACQ: usize = 0x30;
/// First doorbell register (SQ0TDBL); the rest follow with stride 4 << CAP.DSTRD.
pub const DOORBELL_BASE: usize = 0x1000;

/// Fields of CAP (section 3.1.3.1).
pub mod cap {
    /// Maximum Queue Entries Supported, zero-based (bits 15:0).
    pub fn mqes(cap: u64) -> u16 {
        cap as u16
    }
    /// Contiguous Queues Required (bit 16).
    pub fn cqr(cap: u64) -> bool {
        cap >> 16 & 1 == 1
    }
    /// Timeout in 500 ms units (bits 31:24).
    pub fn to(cap: u64) -> u8 {
        (cap >> 24) as u8
    }
    /// Doorbell Stride: doorbells are 4 << DSTRD bytes apart (bits 35:32).
    pub fn dstrd(cap: u64) -> u8 {
        (cap >> 32 & 0xf) as u8
    }
    /// Command Sets Supported (bits 44:37); bit 0 is the NVM command set.
    pub fn css(cap: u64) -> u8 {
        (cap >> 37) as u8
    }
    /// Memory Page Size Minimum: 2 ^ (12 + MPSMIN) bytes (bits 51:48).
    pub fn mpsmin(cap: u64) -> u8 {
        (cap >> 48 & 0xf) as u8
    }
    /// Memory Page Size Maximum: 2 ^ (12 + MPSMAX) bytes (bits 55:52).
    pub fn mpsmax(cap: u64) -> u8 {
        (cap >> 52 & 0xf) as u8
    }
}

/// Fields of CSTS (section 3.1.3.6).
pub mod csts {
    /// Ready.
    pub const RDY: u32 = 1 << 0;
    /// Controller Fatal Status.
    pub const CFS: u32 = 1 << 1;
}

/// Fields of CC (section 3.1.3.5).
pub mod cc {
    /// Enable.
    pub const EN: u32 = 1 << 0;
    /// I/O Command Set Selected, bits 6:4 (0 = NVM command set).
    pub const CSS_NVM: u32 = 0 << 4;
    /// Memory Page Size, bits 10:7: page size is 2 ^ (12 + MPS).
    pub const MPS_SHIFT: u32 = 7;
    /// Shutdown Notification, bits 15:14: 01b = normal shutdown.
    pub const SHN_NORMAL: u32 = 1 << 14;
    /// I/O Submission Queue Entry Size, bits 19:16, as a power of two (6: 64 bytes).
    pub const IOSQES_SHIFT: u32 = 16;
    /// I/O Completion Queue Entry Size, bits 23:20, as a power of two (4: 16 bytes).
    pub const IOCQES_SHIFT: u32 = 20;
}

/// More fields of CSTS.
pub mod csts_shst {
    /// Shutdown Status, bits 3:2.
    pub const MASK: u32 = 3 << 2;
    /// 10b: shutdown processing complete.
    pub const COMPLETE: u32 = 2 << 2;
}
