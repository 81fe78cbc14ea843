//! Intel 8254x (e1000) registers, as named in the PCI/PCI-X Family of Gigabit
//! Ethernet Controllers Software Developer's Manual (8254x SDM), section 13.4
//! "Register Descriptions" (table 13-2 lists them all).

/// Device Control (13.4.1).
pub const CTRL: usize = 0x0000;
/// Device Status (13.4.2).
pub const STATUS: usize = 0x0008;
/// EEPROM Read (13.4.4).
pub const EERD: usize = 0x0014;
/// Interrupt Cause Read, cleared by the read (13.4.17).
pub const ICR: usize = 0x00c0;
/// Interrupt Cause Set: raises the causes written (13.4.19).
pub const ICS: usize = 0x00c8;
/// Interrupt Mask Set/Read (13.4.20).
pub const IMS: usize = 0x00d0;
/// Interrupt Mask Clear (13.4.21).
pub const IMC: usize = 0x00d8;
/// Receive Control (13.4.22).
pub const RCTL: usize = 0x0100;
/// Transmit Control (13.4.33).
pub const TCTL: usize = 0x0400;
/// Receive Address Low, entry 0 (13.4.62).
pub const RAL0: usize = 0x5400;
/// Receive Address High, entry 0 (13.4.63).
pub const RAH0: usize = 0x5404;

/// STATUS bits (table 13-5).
pub mod status {
    /// Full Duplex.
    pub const FD: u32 = 1 << 0;
    /// Link Up.
    pub const LU: u32 = 1 << 1;
    /// Link speed, bits 7:6: 00 = 10, 01 = 100, 1x = 1000 Mb/s.
    pub const SPEED_SHIFT: u32 = 6;
}

/// Interrupt cause bits of ICR/ICS/IMS/IMC (table 13-69).
pub mod icr {
    /// Transmit Descriptor Written Back.
    pub const TXDW: u32 = 1 << 0;
    /// Link Status Change.
    pub const LSC: u32 = 1 << 2;
}

/// RAH bits (13.4.63).
pub mod rah {
    /// Address Valid.
    pub const AV: u32 = 1 << 31;
}
