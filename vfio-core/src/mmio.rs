//! A mapped BAR: bounds-checked volatile register access.
#![allow(unsafe_code)]

/// A BAR of a device mapped into this process. Unmapped on drop.
///
/// Register accessors panic on an offset that is out of range or not aligned
/// to the access size: offsets are driver constants, so that is a driver bug.
#[derive(Debug)]
pub struct Mmio {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain device memory; every access is a volatile
// read or write of one aligned word, which the device serialises.
unsafe impl Send for Mmio {}
// SAFETY: as above; no access hands out references into the mapping.
unsafe impl Sync for Mmio {}

impl Mmio {
    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True for an empty mapping.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Reads a 32-bit register.
    pub fn read32(&self, _offset: usize) -> u32 {
        let _ = self.ptr;
        todo!()
    }
    /// Writes a 32-bit register.
    pub fn write32(&self, _offset: usize, _value: u32) {
        todo!()
    }
    /// Reads a 64-bit register.
    pub fn read64(&self, _offset: usize) -> u64 {
        todo!()
    }
    /// Writes a 64-bit register.
    pub fn write64(&self, _offset: usize, _value: u64) {
        todo!()
    }
}
