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
use std::time::Duration;

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

    /// Reads the 32-bit register at `offset` until `value & mask == expect`,
    /// for at most `timeout` ([`poll::until`](crate::poll::until)'s
    /// schedule); returns the value that matched. `what` names the wait in
    /// the error, which adds the register and the last value read.
    ///
    /// ```no_run
    /// # fn main() -> vfio_core::Result<()> {
    /// use std::time::Duration;
    /// # let container = vfio_core::vfio::Container::new()?;
    /// # let device = container.open_device("0000:00:04.0".parse()?)?;
    /// let bar0 = device.map_bar(0)?;
    /// bar0.write32(0x00, 1 << 26); // e1000 CTRL.RST
    /// bar0.poll32(0x00, 1 << 26, 0, Duration::from_secs(1), "CTRL.RST to clear")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the last read, after the timeout, still does
    /// not match.
    ///
    /// # Panics
    ///
    /// As [`Mmio::read32`], for a register outside the BAR or misaligned.
    pub fn poll32(
        &self,
        offset: usize,
        mask: u32,
        expect: u32,
        timeout: Duration,
        what: &str,
    ) -> Result<u32> {
        let mut last = 0;
        let matched = crate::poll::try_until(timeout, || {
            last = self.read32(offset);
            Ok::<_, Error>((last & mask == expect).then_some(last))
        })?;
        matched.ok_or_else(|| {
            let gone = if last == u32::MAX {
                ": all ones, is the device still there?"
            } else {
                ""
            };
            Error::Timeout {
                what: format!(
                    "{what} (register {offset:#x} & {mask:#010x} == {expect:#010x}; it read {last:#010x}{gone})"
                ),
                after: timeout,
            }
        })
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

    /// Reads 0 for the first `until` reads of each register, then `value`.
    #[derive(Debug)]
    struct Settles {
        reads: u32,
        until: u32,
        value: u64,
    }

    impl RegisterModel for Settles {
        fn read(&mut self, _: usize, _: usize) -> u64 {
            self.reads += 1;
            if self.reads > self.until {
                self.value
            } else {
                0
            }
        }
        fn write(&mut self, _: usize, _: usize, _: u64) {}
    }

    fn settles(until: u32, value: u64) -> (Arc<Mutex<Settles>>, Mmio) {
        let model = Arc::new(Mutex::new(Settles {
            reads: 0,
            until,
            value,
        }));
        let bar = Mmio::from_model(16, model.clone());
        (model, bar)
    }

    #[test]
    fn poll32_returns_the_value_that_matched() {
        let (model, bar) = settles(4, 0x8001);
        let got = bar.poll32(4, 0x1, 0x1, Duration::from_secs(10), "bit 0");
        assert_eq!(got.unwrap(), 0x8001);
        assert_eq!(model.lock().unwrap().reads, 5);
    }

    #[test]
    fn poll32_times_out_with_the_register_and_its_last_value() {
        let (_, bar) = settles(u32::MAX, 0);
        let e = bar.poll32(8, 0x4, 0x4, Duration::from_millis(2), "the ready bit");
        let text = e.unwrap_err().to_string();
        assert!(
            text.starts_with("timed out after 2ms waiting for the ready bit (register 0x8 & 0x00000004 == 0x00000004; it read 0x00000000)"),
            "{text}"
        );
        let (_, bar) = settles(0, u32::MAX as u64);
        let e = bar.poll32(8, 0x4, 0, Duration::ZERO, "the reset bit to clear");
        let text = e.unwrap_err().to_string();
        assert!(
            text.contains("all ones, is the device still there?"),
            "{text}"
        );
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn an_access_past_the_bar_panics() {
        let bar = Mmio::from_model(16, Arc::new(Mutex::new(RegisterFile::new(16))));
        bar.read32(16);
    }
}
