//! Device discovery in /sys/bus/pci.

use std::fs;
use std::path::{Path, PathBuf};

use super::PciAddress;
use crate::{Error, Result};

/// What sysfs says about one PCI function, read once by [`Sysfs::device`]
/// (it does not follow later changes, such as a new driver).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PciDevice {
    /// The device's address.
    pub address: PciAddress,
    /// PCI vendor ID (`vendor`).
    pub vendor_id: u16,
    /// PCI device ID (`device`).
    pub device_id: u16,
    /// 24-bit class code (class, subclass, programming interface), e.g. 0x010802 for NVMe.
    pub class: u32,
    /// The kernel driver bound now, if any.
    pub driver: Option<String>,
    /// The IOMMU group (`/dev/vfio/N` on vfio-pci), if the IOMMU is on.
    pub iommu_group: Option<u32>,
}

/// The PCI devices in sysfs (`/sys/bus/pci`, `/sys/kernel/iommu_groups`):
/// discovery, and binding to vfio-pci and back ([`Sysfs::bind_vfio`],
/// [`Sysfs::unbind_vfio`]).
///
/// ```no_run
/// use vfio_core::pci::Sysfs;
///
/// # fn main() -> vfio_core::Result<()> {
/// let nvme = Sysfs::new().device("0000:01:00.0".parse()?)?;
/// println!("driver {:?}, IOMMU group {:?}", nvme.driver, nvme.iommu_group);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs::new()
    }
}

impl Sysfs {
    /// The system's sysfs, rooted at `/`. Nothing is read until a method asks.
    pub fn new() -> Sysfs {
        Sysfs::with_root("/")
    }

    /// A sysfs tree rooted elsewhere (for tests).
    pub(crate) fn with_root(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// A path below the root, e.g. `path("sys/bus/pci/drivers_probe")`.
    pub(crate) fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    pub(crate) fn device_dir(&self, addr: PciAddress) -> PathBuf {
        self.path(format!("sys/bus/pci/devices/{addr}"))
    }

    /// What sysfs says about the device at `addr` now.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceNotFound`] when there is no such device;
    /// [`Error::Io`] (or [`Error::PermissionDenied`]) when its `vendor`,
    /// `device` or `class` file cannot be read or holds no hex number.
    pub fn device(&self, addr: PciAddress) -> Result<PciDevice> {
        let dir = self.device_dir(addr);
        if !dir.exists() {
            return Err(Error::DeviceNotFound { addr, path: dir });
        }
        Ok(PciDevice {
            address: addr,
            vendor_id: read_hex(&dir.join("vendor"))? as u16,
            device_id: read_hex(&dir.join("device"))? as u16,
            class: read_hex(&dir.join("class"))? as u32,
            driver: link_name(&dir.join("driver")),
            iommu_group: link_name(&dir.join("iommu_group")).and_then(|g| g.parse().ok()),
        })
    }

    /// Every PCI device, sorted by address.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `/sys/bus/pci/devices` cannot be listed, and the
    /// errors of [`Sysfs::device`] for any device in it.
    pub fn devices(&self) -> Result<Vec<PciDevice>> {
        self.devices_in(&self.path("sys/bus/pci/devices"))
    }

    /// The members of IOMMU group `group`, sorted by address: the devices
    /// whose drivers decide whether the group can be used
    /// ([`Error::GroupNotViable`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the group's directory in
    /// `/sys/kernel/iommu_groups` cannot be listed (no such group), and the
    /// errors of [`Sysfs::device`] for any member.
    pub fn group_members(&self, group: u32) -> Result<Vec<PciDevice>> {
        self.devices_in(&self.path(format!("sys/kernel/iommu_groups/{group}/devices")))
    }

    fn devices_in(&self, dir: &Path) -> Result<Vec<PciDevice>> {
        let entries = fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
        let mut addrs: Vec<PciAddress> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        addrs.sort();
        addrs.into_iter().map(|a| self.device(a)).collect()
    }
}

/// A sysfs number such as `0x8086`.
fn read_hex(path: &Path) -> Result<u64> {
    let text = fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let digits = text.trim().trim_start_matches("0x");
    u64::from_str_radix(digits, 16).map_err(|_| {
        Error::io(
            "parse",
            path,
            std::io::Error::other(format!("not a hex number: {:?}", text.trim())),
        )
    })
}

/// The last component of the target of the symlink `path`, if it is one.
fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake sysfs with one device; returns its directory.
    pub(crate) fn fake_device(
        root: &Path,
        bdf: &str,
        ids: (&str, &str, &str),
        driver: Option<&str>,
        group: Option<u32>,
    ) -> PathBuf {
        let dir = root.join("sys/bus/pci/devices").join(bdf);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), format!("{}\n", ids.0)).unwrap();
        fs::write(dir.join("device"), format!("{}\n", ids.1)).unwrap();
        fs::write(dir.join("class"), format!("{}\n", ids.2)).unwrap();
        fs::write(dir.join("driver_override"), "(null)\n").unwrap();
        if let Some(d) = driver {
            let ddir = root.join("sys/bus/pci/drivers").join(d);
            fs::create_dir_all(&ddir).unwrap();
            symlink(&ddir, dir.join("driver")).unwrap();
        }
        if let Some(g) = group {
            let gdir = root.join(format!("sys/kernel/iommu_groups/{g}/devices"));
            fs::create_dir_all(&gdir).unwrap();
            symlink(&dir, gdir.join(bdf)).unwrap();
            symlink(gdir.parent().unwrap(), dir.join("iommu_group")).unwrap();
        }
        dir
    }

    #[test]
    fn reads_ids_driver_and_group() {
        let t = tempfile::tempdir().unwrap();
        fake_device(
            t.path(),
            "0000:00:03.0",
            ("0x1b36", "0x0010", "0x010802"),
            Some("nvme"),
            Some(4),
        );
        fake_device(
            t.path(),
            "0000:00:02.0",
            ("0x8086", "0x100e", "0x020000"),
            None,
            None,
        );
        let sysfs = Sysfs::with_root(t.path());
        let nvme = sysfs.device("00:03.0".parse().unwrap()).unwrap();
        assert_eq!(
            (nvme.vendor_id, nvme.device_id, nvme.class),
            (0x1b36, 0x0010, 0x010802)
        );
        assert_eq!(nvme.driver.as_deref(), Some("nvme"));
        assert_eq!(nvme.iommu_group, Some(4));
        let all = sysfs.devices().unwrap();
        assert_eq!(
            all.iter()
                .map(|d| d.address.to_string())
                .collect::<Vec<_>>(),
            ["0000:00:02.0", "0000:00:03.0"]
        );
        assert_eq!(all[0].driver, None);
        assert_eq!(all[0].iommu_group, None);
        assert_eq!(sysfs.group_members(4).unwrap(), vec![nvme]);
    }

    #[test]
    fn missing_device_names_the_path_and_the_fix() {
        let t = tempfile::tempdir().unwrap();
        let err = Sysfs::with_root(t.path())
            .device("0000:00:1e.0".parse().unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::DeviceNotFound { .. }));
        assert!(err.to_string().contains("/sys/bus/pci/devices ("), "{err}");
    }
}
