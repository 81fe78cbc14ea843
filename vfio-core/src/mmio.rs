//! A mapped BAR: bounds-checked volatile register access.
//!
//! ```no_run
//! # fn main() -> vfio_core::Result<()> {
//! # let container = vfio_core::vfio::Container::new()?;
//! # let device = container.open_device("0000:00:03.0".parse()?)?;
//! let bar0 = device.map_bar(0)?;
//! let version = bar0.read32(0x08);
//! # Ok(()) }
//! ```
#![allow(unsafe_code)]

use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::{Error, Result};

/// A BAR of a device mapped into this process. Unmapped on drop.
///
/// Register accessors panic on an offset that is out of range or not aligned
/// to the access size: offsets are driver constants, so that is a driver bug,
/// like an out-of-range slice index.
#[derive(Debug)]
pub struct Mmio {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is device memory owned by this value; every access is a
// volatile read or write of one aligned word, which the device serialises.
unsafe impl Send for Mmio {}
// SAFETY: as above; no access hands out references into the mapping.
unsafe impl Sync for Mmio {}

/// Maps `len` bytes of the device file `fd` at `offset` (a region's offset).
pub(crate) fn map(fd: BorrowedFd, offset: u64, len: usize, what: &str) -> Result<Mmio> {
    let size =
        NonZeroUsize::new(len).ok_or_else(|| Error::InvalidArgument(format!("{what} is empty")))?;
    let offset = i64::try_from(offset)
        .map_err(|_| Error::InvalidArgument(format!("{what}: offset {offset:#x} too large")))?;
    // SAFETY: a fresh shared mapping of the device file chosen by the kernel
    // (no fixed address), so it cannot alias any Rust object.
    let ptr = unsafe {
        mmap(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd,
            offset,
        )
    }
    .map_err(|e| Error::Ioctl {
        ioctl: "mmap",
        what: what.to_string(),
        source: e.into(),
    })?;
    Ok(Mmio {
        ptr: ptr.cast(),
        len,
    })
}

impl Drop for Mmio {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`, and no
        // reference into it can outlive `self`.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            log::warn!("munmap of a BAR failed: {e}");
        }
    }
}

impl Mmio {
    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty mapping (never, for a mapped BAR).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pointer to an aligned `T` at `offset`, checked.
    fn at<T>(&self, offset: usize) -> *mut T {
        let size = std::mem::size_of::<T>();
        assert!(
            offset.checked_add(size).is_some_and(|end| end <= self.len) && offset.is_multiple_of(size),
            "MMIO access of {size} bytes at {offset:#x} is outside the {:#x}-byte BAR or misaligned",
            self.len
        );
        // SAFETY: offset + size is within the mapping (checked above).
        unsafe { self.ptr.as_ptr().add(offset).cast() }
    }

    /// Reads an 8-bit register.
    pub fn read8(&self, offset: usize) -> u8 {
        // SAFETY: `at` checked bounds and alignment; the mapping lives as long as self.
        unsafe { self.at::<u8>(offset).read_volatile() }
    }

    /// Writes an 8-bit register.
    pub fn write8(&self, offset: usize, value: u8) {
        // SAFETY: `at` checked bounds and alignment; the mapping lives as long as self.
        unsafe { self.at::<u8>(offset).write_volatile(value) }
    }

    /// Reads a 16-bit register.
    pub fn read16(&self, offset: usize) -> u16 {
        // SAFETY: `at` checked bounds and alignment; the mapping lives as long as self.
        unsafe { self.at::<u16>(offset).read_volatile() }
    }

    /// Writes a 16-bit register.
    pub fn write16(&self, offset: usize, value: u16) {
        // SAFETY: `at` checked bounds and alignment; the mapping lives as long as self.
        unsafe { self.at::<u16>(offset).write_volatile(value) }
    }

    /// Reads a 32-bit register.
    pub fn read32(&self, offset: usize) -> u32 {
        // SAFETY: `at` checked bounds and alignment; the mapping lives as long as self.
        unsafe { self.at::<u32>(offset).read_volatile() }
    }

    /// Writes a 32-bit register.
    pub fn write32(&self, offset: usize, value: u32) {
        // SAFETY: `at` checked bounds and alignment; the mapping lives as long as self.
        unsafe { self.at::<u32>(offset).write_volatile(value) }
    }

    /// Reads a 64-bit register.
    pub fn read64(&self, offset: usize) -> u64 {
        // SAFETY: `at` checked bounds and alignment; the mapping lives as long as self.
        unsafe { self.at::<u64>(offset).read_volatile() }
    }

    /// Writes a 64-bit register.
    pub fn write64(&self, offset: usize, value: u64) {
        // SAFETY: `at` checked bounds and alignment; the mapping lives as long as self.
        unsafe { self.at::<u64>(offset).write_volatile(value) }
    }
}
