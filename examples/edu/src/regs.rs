//! The registers of QEMU's `edu` device, named as in QEMU's
//! `docs/specs/edu.rst`: section "MMIO area spec" (offsets in BAR0),
//! "IRQ controller" and "DMA controller". Checked against `hw/misc/edu.c`
//! of QEMU 7.2, which the few facts only the source has are marked with.
//!
//! Accesses below 0x80 must be 32 bits wide; the DMA registers from 0x80 on
//! take 32 or 64 bits ("MMIO area spec"); edu.c serves no other width.

/// PCI vendor ID ("PCI specs": `1234:11e8`).
pub const VENDOR_ID: u16 = 0x1234;
/// PCI device ID.
pub const DEVICE_ID: u16 = 0x11e8;
/// Bytes of BAR0 ("PCI Region 0": 1 MB of I/O memory).
pub const BAR0_LEN: usize = 1 << 20;

/// 0x00 (RO) identification: `0xRRrr00ed`, RR the major and rr the minor
/// version (QEMU 7.2 reads 0x010000ed, version 1.0).
pub const IDENTIFICATION: usize = 0x00;
/// 0x04 (RW) card liveness check: reads back the inverse (`~`) of what was
/// last written.
pub const LIVENESS_CHECK: usize = 0x04;
/// 0x08 (RW) factorial computation: write n, and once the status register's
/// computing bit is clear it reads n! (modulo 2^32: edu.c multiplies in 32
/// bits). A write while the device computes is ignored (edu.c).
pub const FACTORIAL_COMPUTATION: usize = 0x08;
/// 0x20 (RW) status register ([`status`]).
pub const STATUS: usize = 0x20;
/// 0x24 (RO) interrupt status register: the causes raised and not yet
/// acknowledged ([`interrupt`]).
pub const INTERRUPT_STATUS: usize = 0x24;
/// 0x60 (WO) interrupt raise register: ORs the value into the interrupt
/// status register and interrupts.
pub const INTERRUPT_RAISE: usize = 0x60;
/// 0x64 (WO) interrupt acknowledge register: clears the value's bits from
/// the interrupt status register; INTx is lowered when it reaches 0.
pub const INTERRUPT_ACKNOWLEDGE: usize = 0x64;
/// 0x80 (RW) DMA source address (64-bit).
pub const DMA_SOURCE_ADDRESS: usize = 0x80;
/// 0x88 (RW) DMA destination address (64-bit).
pub const DMA_DESTINATION_ADDRESS: usize = 0x88;
/// 0x90 (RW) DMA transfer count, in bytes (64-bit).
pub const DMA_TRANSFER_COUNT: usize = 0x90;
/// 0x98 (RW) DMA command register ([`dma_command`]). While a transfer runs,
/// writes to the four DMA registers are ignored (edu.c).
pub const DMA_COMMAND: usize = 0x98;

/// Bits of the status register.
pub mod status {
    /// 0x01 computing factorial (RO).
    pub const COMPUTING: u32 = 0x01;
    /// 0x80 raise interrupt after finishing factorial computation.
    pub const RAISE_INTERRUPT: u32 = 0x80;
    /// Every bit the register has.
    pub const ALL: u32 = COMPUTING | RAISE_INTERRUPT;
}

/// Causes in the interrupt status register that the device raises itself.
pub mod interrupt {
    /// A factorial finished (edu.c `FACT_IRQ`; the document names no value).
    pub const FACTORIAL: u32 = 0x001;
    /// A DMA transfer finished ("raise interrupt 0x100 after finishing the DMA").
    pub const DMA: u32 = 0x100;
}

/// Bits of the DMA command register.
pub mod dma_command {
    /// 0x01 start transfer; reads 1 until the transfer is done.
    pub const START: u64 = 0x01;
    /// 0x02 direction: clear is from RAM to edu, set is from edu to RAM.
    pub const TO_RAM: u64 = 0x02;
    /// 0x04 raise interrupt 0x100 after finishing the DMA.
    pub const RAISE_INTERRUPT: u64 = 0x04;
}

/// "DMA controller": the device's one buffer, at this device address.
pub const BUFFER_ADDRESS: u64 = 0x40000;
/// Its length: 4096 bytes.
pub const BUFFER_LEN: usize = 4096;
/// The bytes of it a transfer may reach on QEMU 7.2: its range check
/// (edu.c `edu_check_range`) wants a count of at least 1 and start + count
/// at most `BUFFER_ADDRESS + BUFFER_LEN - 1`, so the last byte is out of
/// reach, and a transfer that fails the check stops the whole virtual machine
/// (`hw_error`). QEMU's current edu.c takes all 4096 and only logs a bad one.
pub const BUFFER_USABLE: usize = BUFFER_LEN - 1;

/// "Command line switches": the device uses the low 28 bits of a DMA address
/// (256 MiB) unless started with `-device edu,dma_mask=...`; edu.c cuts
/// every address to them, so a buffer above the limit is not where the
/// device reads or writes.
pub const DMA_ADDRESS_BITS: u32 = 28;
