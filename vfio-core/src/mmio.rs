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
#[cfg(any(test, feature = "testing"))]
use std::sync::{Arc, Mutex};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::{Error, Result};

/// A BAR of a device mapped into this process
/// ([`Device::map_bar`](crate::vfio::Device::map_bar)). Unmapped on drop.
///
/// This is device memory, not RAM: each accessor is one aligned volatile
/// access of its width, which the compiler neither leaves out nor reorders
/// with other volatile accesses, and no reference into the BAR is ever
/// handed out. Values are in the CPU's byte order (little-endian on x86_64,
/// as PCI registers are).
///
/// Register accessors panic on an offset that is out of range or not aligned
/// to the access size: offsets are driver constants, so that is a driver bug,
/// like an out-of-range slice index. A driver that computes an offset from a
/// value the device reported checks it with [`Mmio::fits`] first.
#[derive(Debug)]
pub struct Mmio {
    ptr: NonNull<u8>,
    len: usize,
    /// A software device model instead of a mapping (the `testing` feature).
    #[cfg(any(test, feature = "testing"))]
    model: Option<SharedModel>,
}

/// The registers of a software device model: every access of a driver to a
/// [`Mmio`] made by [`Mmio::from_model`] becomes a call, in program order
/// (the `testing` feature; see [`crate::vfio::Device::from_model`]).
#[cfg(any(test, feature = "testing"))]
pub trait RegisterModel: Send + std::fmt::Debug {
    /// A read of `size` bytes (1, 2, 4 or 8) at `offset`, in bounds and aligned.
    fn read(&mut self, offset: usize, size: usize) -> u64;
    /// A write of `size` bytes at `offset`, in bounds and aligned.
    fn write(&mut self, offset: usize, size: usize, value: u64);
}

/// A register model shared by the test (or model thread) and the driver.
#[cfg(any(test, feature = "testing"))]
pub type SharedModel = Arc<Mutex<dyn RegisterModel>>;

/// The simplest register model: memory. A read returns what was last written
/// (little-endian, any width), as a BAR of plain RAM would; tests set up the
/// values a device reports with [`RegisterFile::set`].
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone)]
pub struct RegisterFile {
    bytes: Vec<u8>,
}

#[cfg(any(test, feature = "testing"))]
impl RegisterFile {
    /// `len` bytes of zeros.
    pub fn new(len: usize) -> RegisterFile {
        RegisterFile {
            bytes: vec![0; len],
        }
    }

    /// Sets the little-endian bytes of `value` at `offset` (`size` of them,
    /// at most 8). Panics when they are not inside the file.
    pub fn set(&mut self, offset: usize, size: usize, value: u64) {
        self.bytes[offset..offset + size].copy_from_slice(&value.to_le_bytes()[..size]);
    }

    /// The `size` little-endian bytes at `offset` (at most 8). Panics when
    /// they are not inside the file.
    pub fn get(&self, offset: usize, size: usize) -> u64 {
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&self.bytes[offset..offset + size]);
        u64::from_le_bytes(b)
    }
}

#[cfg(any(test, feature = "testing"))]
impl RegisterModel for RegisterFile {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        self.get(offset, size)
    }
    fn write(&mut self, offset: usize, size: usize, value: u64) {
        self.set(offset, size, value)
    }
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
        #[cfg(any(test, feature = "testing"))]
        model: None,
    })
}

impl Drop for Mmio {
    fn drop(&mut self) {
        #[cfg(any(test, feature = "testing"))]
        if self.model.is_some() {
            return;
        }
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`, and no
        // reference into it can outlive `self`.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            log::warn!("munmap of a BAR failed: {e}");
        }
    }
}

/// One read and one write accessor per register width.
macro_rules! accessors {
    ($($read:ident $write:ident $t:ty, $bits:literal;)*) => {$(
        #[doc = concat!("Reads the ", $bits, "-bit register at byte `offset`.")]
        ///
        /// # Panics
        ///
        /// When the register is not inside the BAR or `offset` is not a
        /// multiple of its size (see [`Mmio::fits`]).
        pub fn $read(&self, offset: usize) -> $t {
            self.check::<$t>(offset);
            #[cfg(any(test, feature = "testing"))]
            if let Some(m) = &self.model {
                return lock(m).read(offset, size_of::<$t>()) as $t;
            }
            // SAFETY: `check` proved offset + size within the mapping and
            // aligned; the mapping lives as long as self.
            unsafe { self.ptr.as_ptr().add(offset).cast::<$t>().read_volatile() }
        }

        #[doc = concat!("Writes `value` to the ", $bits, "-bit register at byte `offset`.")]
        ///
        /// # Panics
        ///
        /// When the register is not inside the BAR or `offset` is not a
        /// multiple of its size (see [`Mmio::fits`]).
        pub fn $write(&self, offset: usize, value: $t) {
            self.check::<$t>(offset);
            #[cfg(any(test, feature = "testing"))]
            if let Some(m) = &self.model {
                return lock(m).write(offset, size_of::<$t>(), value as u64);
            }
            // SAFETY: as in the read accessor.
            unsafe { self.ptr.as_ptr().add(offset).cast::<$t>().write_volatile(value) }
        }
    )*};
}

#[cfg(any(test, feature = "testing"))]
fn lock(m: &SharedModel) -> std::sync::MutexGuard<'_, dyn RegisterModel + 'static> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mmio {
    /// Registers served by a software model instead of a device (the
    /// `testing` feature): `len` bytes, every access a call to `model`.
    #[cfg(any(test, feature = "testing"))]
    pub fn from_model(len: usize, model: SharedModel) -> Mmio {
        Mmio {
            ptr: NonNull::dangling(),
            len,
            model: Some(model),
        }
    }

    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty mapping (never, for a mapped BAR).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when a `size`-byte register at `offset` lies inside the BAR and is
    /// aligned: for offsets computed from what a device reports.
    pub fn fits(&self, offset: usize, size: usize) -> bool {
        offset.checked_add(size).is_some_and(|end| end <= self.len) && offset.is_multiple_of(size)
    }

    /// Panics unless an aligned `T` at `offset` lies inside the BAR.
    fn check<T>(&self, offset: usize) {
        let size = size_of::<T>();
        assert!(
            self.fits(offset, size),
            "MMIO access of {size} bytes at {offset:#x} is outside the {:#x}-byte BAR or misaligned",
            self.len
        );
    }

    accessors! {
        read8 write8 u8, "8";
        read16 write16 u16, "16";
        read32 write32 u32, "32";
        read64 write64 u64, "64";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_sees_every_access_and_answers_reads() {
        let regs = Arc::new(Mutex::new(RegisterFile::new(64)));
        let bar = Mmio::from_model(64, regs.clone());
        bar.write32(8, 0xdead_beef);
        bar.write16(12, 0x1234);
        assert_eq!(bar.read64(8), 0x1234_dead_beef);
        assert_eq!(bar.read8(9), 0xbe);
        regs.lock().unwrap().set(0, 4, 7);
        assert_eq!(bar.read32(0), 7);
        assert!(
            bar.fits(60, 4) && !bar.fits(62, 4) && !bar.fits(61, 2) && !bar.fits(usize::MAX, 4)
        );
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn an_access_past_the_bar_panics() {
        let bar = Mmio::from_model(16, Arc::new(Mutex::new(RegisterFile::new(16))));
        bar.read32(16);
    }
}
