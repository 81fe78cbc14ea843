//! The one error type of vfio-core.
//!
//! Every failure a user can cause says what is wrong and how to fix it. Lower
//! layers attach context (which device, which file, which ioctl) so that a
//! message read in a log is enough to act on.

use std::path::PathBuf;

use crate::pci::PciAddress;

/// Result with vfio-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in vfio-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A PCI address string that is not `DDDD:BB:DD.F` or `BB:DD.F`.
    #[error("invalid PCI address {input:?}: {reason}; expected DDDD:BB:DD.F or BB:DD.F in hex, e.g. 0000:00:03.0 (see `devbind status`)")]
    InvalidPciAddress {
        /// The string that was parsed.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// No such device in sysfs.
    #[error("PCI device {addr} does not exist (no {path}); run `devbind status` to list the devices this machine has")]
    DeviceNotFound {
        /// The device asked for.
        addr: PciAddress,
        /// Its sysfs directory, which does not exist.
        path: PathBuf,
    },

    /// The device is bound to a kernel driver other than vfio-pci.
    #[error("PCI device {addr} is bound to the kernel driver `{driver}`, not vfio-pci; run `devbind bind {addr}` to hand it to vfio-pci")]
    BoundToOtherDriver {
        /// The device.
        addr: PciAddress,
        /// The kernel driver it is bound to.
        driver: String,
    },

    /// The device has no driver at all.
    #[error(
        "PCI device {addr} is not bound to vfio-pci (it has no driver); run `devbind bind {addr}`"
    )]
    NotBoundToVfio {
        /// The device.
        addr: PciAddress,
    },

    /// The vfio or vfio-pci kernel modules are missing.
    #[error("VFIO is not available: {path} does not exist; load the modules with `modprobe vfio-pci` (kernel config VFIO, VFIO_PCI, VFIO_IOMMU_TYPE1)")]
    VfioNotLoaded {
        /// The file that does not exist: `/dev/vfio/vfio`, a group's
        /// `/dev/vfio/N`, or the vfio-pci driver's directory in sysfs.
        path: PathBuf,
    },

    /// The device has no IOMMU group, so the IOMMU is off.
    #[error("PCI device {addr} has no IOMMU group: the IOMMU is disabled; enable VT-d/AMD-Vi in the firmware and boot with `intel_iommu=on` (or `amd_iommu=on`)")]
    NoIommuGroup {
        /// The device.
        addr: PciAddress,
    },

    /// Other devices of the group are still bound to host drivers.
    #[error("IOMMU group {group} is not viable: {} still bound to host drivers; every device of a group must be unbound or on vfio-pci, run `devbind bind{}`", describe_members(.others), list_addrs(.others))]
    GroupNotViable {
        /// The IOMMU group number (`/dev/vfio/N`).
        group: u32,
        /// The group's devices bound to a driver other than vfio-pci, each
        /// with that driver's name.
        others: Vec<(PciAddress, String)>,
    },

    /// No permission to open a VFIO character device or sysfs file.
    #[error("permission denied on {path}: run as root, or have root run `devbind bind --user $USER <BDF>` to give this user the device's VFIO group")]
    PermissionDenied {
        /// The file that could not be opened, written or changed.
        path: PathBuf,
    },

    /// Pinning memory for DMA hit RLIMIT_MEMLOCK (the kernel refused a
    /// mapping with ENOMEM).
    #[error("locked-memory limit too low: mapping {needed} bytes for DMA would exceed RLIMIT_MEMLOCK of {limit} bytes; raise it with `ulimit -l unlimited` (or `memlock` in /etc/security/limits.conf)")]
    MemlockLimit {
        /// Bytes the container would have mapped with the refused mapping:
        /// what it maps already plus the new one.
        needed: u64,
        /// The soft RLIMIT_MEMLOCK in bytes (0 when it could not be read).
        limit: u64,
    },

    /// Hugepages were required ([`Backing::Hugepages`](crate::dma::Backing::Hugepages))
    /// but none could be mapped.
    #[error("hugepages exhausted: {needed} bytes of {page_size}-byte hugepages requested, {free_pages} pages free; reserve more with `echo N > /proc/sys/vm/nr_hugepages` (or `hugepages=N` on the kernel command line)")]
    HugepagesExhausted {
        /// Bytes asked for.
        needed: usize,
        /// The hugepage size the count below is of (2 MiB).
        page_size: usize,
        /// Free hugepages of that size, as sysfs reports them (0 if unknown).
        free_pages: u64,
    },

    /// No room left in the IOMMU's valid IOVA ranges.
    #[error("IOVA space exhausted: no free range of {size} bytes in the IOMMU's valid IOVA ranges; free DMA memory or map fewer, larger regions")]
    IovaExhausted {
        /// Bytes asked for.
        size: u64,
    },

    /// No free IOVA range under a device's DMA address limit
    /// ([`DmaMemory::new_below`](crate::dma::DmaMemory::new_below),
    /// [`BufferPool::new_below`](crate::dma::BufferPool::new_below)).
    #[error("no free IOVA range of {size} bytes ({size:#x}) at or below the DMA limit {limit:#x} ({} address bits); allocate the limited device's memory (`DmaMemory::new_below`, `BufferPool::new_below`) before large regions and pools, which otherwise take the low IOVAs first, or free some DMA memory", address_bits(*.limit))]
    DmaLimitExhausted {
        /// Bytes asked for.
        size: u64,
        /// The highest IOVA the device reaches (inclusive), e.g.
        /// [`dma_mask(28)`](crate::dma::dma_mask).
        limit: u64,
    },

    /// The IOMMU's limit on the number of DMA mappings was reached (the
    /// kernel refused a mapping with ENOSPC).
    #[error("the IOMMU allows no more DMA mappings ({limit} in use); use fewer, larger DMA regions (a pool maps its memory once), or raise vfio_iommu_type1's dma_entry_limit")]
    DmaMappingLimit {
        /// The mappings the container held when the kernel refused another.
        limit: u32,
    },

    /// A pool has no free buffer.
    #[error("buffer pool exhausted: all {capacity} buffers are in use; create the pool with more buffers or return buffers sooner")]
    PoolExhausted {
        /// The pool's number of buffers.
        capacity: usize,
    },

    /// A caller passed a value that is out of range, or asked for something
    /// that cannot be done in the current state (DMA memory in a container
    /// with no device open, a kernel whose VFIO speaks another API version).
    /// The text says which.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The device lacks something the caller asked for (a region, an interrupt
    /// type, reset), or did not do what it was told (clear Bus Master Enable,
    /// be taken by vfio-pci).
    #[error("PCI device {addr}: {what}")]
    Unsupported {
        /// The device.
        addr: PciAddress,
        /// What it lacks, or what it did instead.
        what: String,
    },

    /// A system call on a VFIO file failed: an ioctl, the `mmap` of a BAR, a
    /// config-space `pread`/`pwrite`, or making, polling or reading an
    /// interrupt eventfd.
    #[error("{ioctl} on {what} failed: {source}")]
    Ioctl {
        /// The ioctl (`VFIO_IOMMU_MAP_DMA`, ...) or system call.
        ioctl: &'static str,
        /// What it was made on: a device, a group or the container.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A file operation failed (in sysfs, `/dev/vfio`, `/run/vfio-rs`), or
    /// mapping anonymous memory did.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation: `open`, `read`, `write`, `list`, `chown`, `mmap`, ...
        op: &'static str,
        /// The file, or a description such as `anonymous memory`.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error of operation `op` on `path` in [`Error::Io`], or in
    /// [`Error::PermissionDenied`] when it is EACCES or EPERM.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        let path = path.into();
        match source.kind() {
            std::io::ErrorKind::PermissionDenied => Error::PermissionDenied { path },
            _ => Error::Io { op, path, source },
        }
    }
}

/// How many bits an address up to `limit` takes (28 for `0x0fff_ffff`).
fn address_bits(limit: u64) -> u32 {
    u64::BITS - limit.leading_zeros()
}

fn describe_members(others: &[(PciAddress, String)]) -> String {
    let parts: Vec<String> = others
        .iter()
        .map(|(a, d)| format!("{a} (driver `{d}`)"))
        .collect();
    parts.join(", ")
}

fn list_addrs(others: &[(PciAddress, String)]) -> String {
    others.iter().map(|(a, _)| format!(" {a}")).collect()
}
