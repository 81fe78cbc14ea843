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
    #[error("invalid PCI address {input:?}: {reason}; expected DDDD:BB:DD.F or BB:DD.F in hex, e.g. 0000:00:03.0 (the names in /sys/bus/pci/devices)")]
    InvalidPciAddress {
        /// The string that was parsed.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// No such device in sysfs.
    #[error("PCI device {addr} does not exist (no {path}); the devices this machine has are listed in /sys/bus/pci/devices (vfio_core::pci::Sysfs::devices)")]
    DeviceNotFound {
        /// The device asked for.
        addr: PciAddress,
        /// Its sysfs directory, which does not exist.
        path: PathBuf,
    },

    /// The device is bound to a kernel driver other than vfio-pci.
    #[error("PCI device {addr} is bound to the kernel driver `{driver}`, not vfio-pci; bind it to vfio-pci (vfio_core::pci::Sysfs::bind_vfio, or as root: {})", bind_commands(*.addr, true))]
    BoundToOtherDriver {
        /// The device.
        addr: PciAddress,
        /// The kernel driver it is bound to.
        driver: String,
    },

    /// The device has no driver at all.
    #[error("PCI device {addr} is not bound to vfio-pci (it has no driver); bind it to vfio-pci (vfio_core::pci::Sysfs::bind_vfio, or as root: {})", bind_commands(*.addr, false))]
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
    #[error("IOMMU group {group} is not viable: {} still bound to host drivers; every device of a group must be unbound or on vfio-pci: bind {} to vfio-pci too (vfio_core::pci::Sysfs::bind_vfio, or as root for each BDF: {})", describe_members(.others), list_addrs(.others), BIND_ANY)]
    GroupNotViable {
        /// The IOMMU group number (`/dev/vfio/N`).
        group: u32,
        /// The group's devices bound to a driver other than vfio-pci, each
        /// with that driver's name.
        others: Vec<(PciAddress, String)>,
    },

    /// No permission to open a VFIO character device or sysfs file.
    #[error("permission denied on {}: {}", .path.display(), permission_fix(.path))]
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

    /// The PCI function is already open in this process ([`crate::vfio::Device`]
    /// values are not shared by opening twice: two drivers on one device would
    /// each program it with their own memory).
    #[error("PCI device {addr} is already open in this process (another Device value, e.g. another driver, has it); drop that one first, or pass it to the code that needs it instead of opening the device again")]
    AlreadyOpen {
        /// The device.
        addr: PciAddress,
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

    /// A condition polled for did not hold within its timeout
    /// ([`poll::until`](crate::poll::until), [`Mmio::poll32`](crate::mmio::Mmio::poll32)).
    #[error("timed out after {after:?} waiting for {what}; the device did not get there in time: check that it is present and working (a reset may help), or allow it longer")]
    Timeout {
        /// What was awaited, e.g. `CSTS.RDY = 1`.
        what: String,
        /// The timeout that passed.
        after: std::time::Duration,
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
    let parts: Vec<String> = others.iter().map(|(a, _)| a.to_string()).collect();
    parts.join(", ")
}

/// The shell commands that bind `addr` to vfio-pci, the kernel's way:
/// override the driver, unbind the one it has (when `bound`), probe.
fn bind_commands(addr: PciAddress, bound: bool) -> String {
    let dev = format!("/sys/bus/pci/devices/{addr}");
    let unbind = if bound {
        format!("echo {addr} > {dev}/driver/unbind; ")
    } else {
        String::new()
    };
    format!(
        "echo vfio-pci > {dev}/driver_override; {unbind}echo {addr} > /sys/bus/pci/drivers_probe"
    )
}

/// [`bind_commands`] for any device, named BDF.
const BIND_ANY: &str = "echo vfio-pci > /sys/bus/pci/devices/BDF/driver_override; echo BDF > /sys/bus/pci/devices/BDF/driver/unbind; echo BDF > /sys/bus/pci/drivers_probe";

/// How to get the access that was denied on `path`: a group file of
/// /dev/vfio is given to the user; anything else (sysfs) needs root.
fn permission_fix(path: &std::path::Path) -> String {
    if path.starts_with("/dev/vfio") && path != std::path::Path::new("/dev/vfio/vfio") {
        let p = path.display();
        format!("run as root, or have root give this user the VFIO group file: chown $USER {p} (vfio_core::pci::Sysfs::give_group_to_user)")
    } else {
        "run as root; to use a device bound to vfio-pci without root, have root give this user its VFIO group file: chown $USER /dev/vfio/<group> (vfio_core::pci::Sysfs::give_group_to_user)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn bind_errors_name_the_library_call_and_the_kernel_way() {
        let e = Error::BoundToOtherDriver {
            addr: addr("0000:01:00.0"),
            driver: "nvme".into(),
        }
        .to_string();
        assert!(e.contains("vfio_core::pci::Sysfs::bind_vfio"), "{e}");
        assert!(
            e.contains("echo vfio-pci > /sys/bus/pci/devices/0000:01:00.0/driver_override; echo 0000:01:00.0 > /sys/bus/pci/devices/0000:01:00.0/driver/unbind; echo 0000:01:00.0 > /sys/bus/pci/drivers_probe"),
            "{e}"
        );
        let e = Error::NotBoundToVfio {
            addr: addr("0000:01:00.0"),
        }
        .to_string();
        assert!(e.contains("Sysfs::bind_vfio"), "{e}");
        assert!(
            !e.contains("unbind"),
            "a device with no driver has none to unbind: {e}"
        );
        let e = Error::GroupNotViable {
            group: 7,
            others: vec![
                (addr("0000:02:00.0"), "e1000".into()),
                (addr("0000:02:00.1"), "e1000".into()),
            ],
        }
        .to_string();
        assert!(
            e.contains("bind 0000:02:00.0, 0000:02:00.1 to vfio-pci too"),
            "{e}"
        );
        assert!(e.contains("0000:02:00.1 (driver `e1000`)"), "{e}");
    }

    #[test]
    fn permission_errors_say_which_file_to_give_the_user() {
        let e = Error::PermissionDenied {
            path: "/dev/vfio/12".into(),
        }
        .to_string();
        assert!(e.contains("chown $USER /dev/vfio/12"), "{e}");
        let e = Error::PermissionDenied {
            path: "/sys/bus/pci/drivers_probe".into(),
        }
        .to_string();
        assert!(e.contains("run as root;"), "{e}");
        assert!(e.contains("/dev/vfio/<group>"), "{e}");
    }

    #[test]
    fn no_message_recommends_a_tool_the_library_user_does_not_have() {
        let a = addr("0000:01:00.0");
        let all = [
            Error::InvalidPciAddress {
                input: "x".into(),
                reason: "too short",
            },
            Error::DeviceNotFound {
                addr: a,
                path: "/sys/bus/pci/devices/0000:01:00.0".into(),
            },
            Error::BoundToOtherDriver {
                addr: a,
                driver: "nvme".into(),
            },
            Error::NotBoundToVfio { addr: a },
            Error::GroupNotViable {
                group: 1,
                others: vec![(a, "nvme".into())],
            },
            Error::PermissionDenied {
                path: "/dev/vfio/1".into(),
            },
        ];
        for e in all {
            assert!(!e.to_string().contains("devbind"), "{e}");
        }
    }
}
