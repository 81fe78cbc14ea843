//! Intel 8254x (e1000) registers, as named in the PCI/PCI-X Family of Gigabit
//! Ethernet Controllers Software Developer's Manual (8254x SDM), section 13.4
//! "Register Descriptions" (table 13-2 lists them all), and the descriptor
//! layouts of sections 3.2 (receive) and 3.3 (transmit).

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
/// Transmit IPG (13.4.34).
pub const TIPG: usize = 0x0410;
/// Receive Descriptor Base Address Low/High, Length, Head, Tail (13.4.27-31).
pub const RDBAL: usize = 0x2800;
pub const RDBAH: usize = 0x2804;
pub const RDLEN: usize = 0x2808;
pub const RDH: usize = 0x2810;
pub const RDT: usize = 0x2818;
/// Transmit Descriptor Base Address Low/High, Length, Head, Tail (13.4.38-42).
pub const TDBAL: usize = 0x3800;
pub const TDBAH: usize = 0x3804;
pub const TDLEN: usize = 0x3808;
pub const TDH: usize = 0x3810;
pub const TDT: usize = 0x3818;
/// Multicast Table Array, 128 registers (13.4.60).
pub const MTA: usize = 0x5200;
/// Receive Address Low/High, entry 0 (13.4.62-63).
pub const RAL0: usize = 0x5400;
pub const RAH0: usize = 0x5404;

/// Statistics registers (13.7), all cleared when read.
pub mod stats {
    /// CRC Error Count.
    pub const CRCERRS: usize = 0x4000;
    /// Missed Packets Count (no room in the receive ring or FIFO).
    pub const MPC: usize = 0x4010;
    /// Good Packets Received / Transmitted Count.
    pub const GPRC: usize = 0x4074;
    pub const GPTC: usize = 0x4080;
    /// Good Octets Received / Transmitted, low and high halves.
    pub const GORCL: usize = 0x4088;
    pub const GORCH: usize = 0x408c;
    pub const GOTCL: usize = 0x4090;
    pub const GOTCH: usize = 0x4094;
    /// Receive No Buffers Count.
    pub const RNBC: usize = 0x40a0;
}

/// CTRL bits (table 13-3).
pub mod ctrl {
    /// Full-Duplex.
    pub const FD: u32 = 1 << 0;
    /// Link Reset.
    pub const LRST: u32 = 1 << 3;
    /// Auto-Speed Detection Enable.
    pub const ASDE: u32 = 1 << 5;
    /// Set Link Up.
    pub const SLU: u32 = 1 << 6;
    /// Invert Loss-of-Signal.
    pub const ILOS: u32 = 1 << 7;
    /// Device Reset (self-clearing).
    pub const RST: u32 = 1 << 26;
    /// PHY Reset.
    pub const PHY_RST: u32 = 1 << 31;
}

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
    /// Receive Descriptor Minimum Threshold reached.
    pub const RXDMT0: u32 = 1 << 4;
    /// Receiver Overrun.
    pub const RXO: u32 = 1 << 6;
    /// Receiver Timer Interrupt (a frame arrived).
    pub const RXT0: u32 = 1 << 7;
}

/// RCTL bits (table 13-67).
pub mod rctl {
    /// Receiver Enable.
    pub const EN: u32 = 1 << 1;
    /// Unicast / Multicast Promiscuous Enable.
    pub const UPE: u32 = 1 << 3;
    pub const MPE: u32 = 1 << 4;
    /// Long Packet Enable (frames over 1522 bytes).
    pub const LPE: u32 = 1 << 5;
    /// Broadcast Accept Mode.
    pub const BAM: u32 = 1 << 15;
    /// Buffer size, bits 17:16; with BSEX (bit 25) the sizes are 16 times larger.
    pub const BSIZE_2048: u32 = 0 << 16;
    pub const BSIZE_16384: u32 = 1 << 16 | 1 << 25;
    /// Strip Ethernet CRC.
    pub const SECRC: u32 = 1 << 26;
}

/// TCTL bits (table 13-76).
pub mod tctl {
    /// Transmit Enable.
    pub const EN: u32 = 1 << 1;
    /// Pad Short Packets.
    pub const PSP: u32 = 1 << 3;
    /// Collision Threshold, bits 11:4 (15 as the manual recommends).
    pub const CT_15: u32 = 0x0f << 4;
    /// Collision Distance, bits 21:12 (64 for full duplex).
    pub const COLD_FD: u32 = 0x40 << 12;
}

/// EERD bits (13.4.4): write START with the word address, poll for DONE;
/// the word is then in bits 31:16.
pub mod eerd {
    pub const START: u32 = 1 << 0;
    pub const DONE: u32 = 1 << 4;
    pub const ADDR_SHIFT: u32 = 8;
    pub const DATA_SHIFT: u32 = 16;
}

/// RAH bits (13.4.63).
pub mod rah {
    /// Address Valid.
    pub const AV: u32 = 1 << 31;
}

/// Receive descriptor (section 3.2.3): buffer address (8 bytes), length (2),
/// checksum (2), status (1), errors (1), special (2).
pub mod rxd {
    pub const SIZE: usize = 16;
    pub const LENGTH: usize = 8;
    pub const STATUS: usize = 12;
    pub const ERRORS: usize = 13;
    /// Status: Descriptor Done, End Of Packet.
    pub const DD: u8 = 1 << 0;
    pub const EOP: u8 = 1 << 1;
}

/// Transmit descriptors (section 3.3): legacy, TCP/IP context and TCP/IP data.
pub mod txd {
    pub const SIZE: usize = 16;
    /// Dword 2 (bytes 8..12) of a data or context descriptor: length (bits 19:0
    /// of extended descriptors), DTYP (bits 23:20), command (bits 31:24).
    pub const CMD_DWORD: usize = 8;
    /// Byte 12: status (DD in bit 0). Byte 13: POPTS of a data descriptor.
    pub const STATUS: usize = 12;
    pub const POPTS: usize = 13;
    /// Descriptor Done.
    pub const DD: u8 = 1 << 0;
    /// Command bits (in bits 31:24 of dword 2).
    pub const CMD_EOP: u32 = 1 << 24;
    pub const CMD_IFCS: u32 = 1 << 25;
    pub const CMD_RS: u32 = 1 << 27;
    /// Extension: a context or data descriptor, not a legacy one.
    pub const CMD_DEXT: u32 = 1 << 29;
    /// DTYP: 0000 = context, 0001 = data.
    pub const DTYP_CONTEXT: u32 = 0 << 20;
    pub const DTYP_DATA: u32 = 1 << 20;
    /// Context TUCMD bits (bits 31:24 of dword 2 of a context descriptor):
    /// IP: the packet is IPv4; TCP: TCP (else UDP).
    pub const TUCMD_TCP: u32 = 1 << 24;
    pub const TUCMD_IP: u32 = 1 << 25;
    /// POPTS: insert the IP checksum / the TCP or UDP checksum.
    pub const POPTS_IXSM: u8 = 1 << 0;
    pub const POPTS_TXSM: u8 = 1 << 1;
}
