//! Helpers for the host tests: the test plays the device, reaching driver
//! memory by IOVA through the container as a device does through the IOMMU.

use std::sync::{Arc, Mutex};

use vfio_core::mmio::{RegisterFile, RegisterModel};
use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

use crate::Config;

/// The address every model device gets.
pub(crate) fn addr() -> PciAddress {
    "0000:00:04.0".parse().unwrap()
}

/// Small rings and few spare buffers, polling.
pub(crate) fn config(rx_ring: usize, tx_ring: usize) -> Config {
    Config {
        rx_ring,
        tx_ring,
        jumbo: false,
        interrupts: false,
        spare_buffers: 4,
        // The link read again after every crate::link::CHECK_EVERY calls.
        link_poll: std::time::Duration::ZERO,
    }
}

/// PCI command register bits.
pub(crate) const COMMAND: usize = 0x04;
pub(crate) const MEMORY: u64 = 1 << 1;
pub(crate) const MASTER: u64 = 1 << 2;

/// Config space of a model: a register file a test keeps, and whether it
/// refuses to clear Bus Master Enable.
#[derive(Debug)]
pub(crate) struct ConfigSpace {
    pub regs: RegisterFile,
    pub keep_master: bool,
}

impl ConfigSpace {
    /// 256 bytes with the IDs, shared.
    pub(crate) fn new(vendor: u16, device: u16) -> Arc<Mutex<ConfigSpace>> {
        let mut regs = RegisterFile::new(256);
        regs.set(0, 2, vendor as u64);
        regs.set(2, 2, device as u64);
        Arc::new(Mutex::new(ConfigSpace {
            regs,
            keep_master: false,
        }))
    }

    /// The command register.
    pub(crate) fn command(&self) -> u64 {
        self.regs.get(COMMAND, 2)
    }
}

impl RegisterModel for ConfigSpace {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        self.regs.get(offset, size)
    }
    fn write(&mut self, offset: usize, size: usize, value: u64) {
        let keep = if offset == COMMAND && self.keep_master {
            MASTER
        } else {
            0
        };
        self.regs.set(offset, size, value | keep);
    }
}

/// Reads `N` bytes at `iova` as the device.
pub(crate) fn dma<const N: usize>(c: &Container, iova: u64) -> [u8; N] {
    let mut b = [0u8; N];
    c.dma_read(iova, &mut b).unwrap();
    b
}

pub(crate) fn dma_u16(c: &Container, iova: u64) -> u16 {
    u16::from_le_bytes(dma(c, iova))
}

pub(crate) fn dma_u32(c: &Container, iova: u64) -> u32 {
    u32::from_le_bytes(dma(c, iova))
}

pub(crate) fn dma_u64(c: &Container, iova: u64) -> u64 {
    u64::from_le_bytes(dma(c, iova))
}

/// A frame of `len` bytes whose bytes say which frame it is.
pub(crate) fn frame(id: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| id.wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}
