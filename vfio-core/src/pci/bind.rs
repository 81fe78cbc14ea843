//! Binding a device to vfio-pci through `driver_override` + `drivers_probe`,
//! and handing it back to the driver it had.
//!
//! The driver a device had before `bind_vfio` is remembered in
//! `/run/vfio-rs/<BDF>.driver`, so that `unbind_vfio` — possibly in another
//! process, like `devbind unbind` — can restore it.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::{PciAddress, Sysfs};
use crate::{Error, Result};

const VFIO_PCI: &str = "vfio-pci";

/// What [`Sysfs::unbind_vfio`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnbindOutcome {
    /// The driver the device is bound to now (None if it has none).
    pub driver: Option<String>,
    /// False when the device was not on vfio-pci and nothing was done.
    pub changed: bool,
}

/// What [`Sysfs::bind_vfio`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindOutcome {
    /// The driver the device had before (None if it had none; `vfio-pci`
    /// when nothing changed).
    pub previous_driver: Option<String>,
    /// The device's IOMMU group (/dev/vfio/N).
    pub iommu_group: u32,
    /// False when the device was on vfio-pci already.
    pub changed: bool,
}

impl Sysfs {
    /// Binds `addr` to vfio-pci, remembering the driver it had. Checks first
    /// (device exists, IOMMU on, vfio-pci loaded) and changes nothing when a
    /// check fails. A device on vfio-pci already is left as it is. When
    /// vfio-pci is not registered, runs `modprobe vfio-pci` once. Needs root
    /// (it writes sysfs and `/run/vfio-rs`). Other devices of the IOMMU group
    /// are not touched: they must be bound too before the device can be
    /// opened ([`Error::GroupNotViable`]).
    ///
    /// # Errors
    ///
    /// [`Error::DeviceNotFound`], [`Error::NoIommuGroup`] or
    /// [`Error::VfioNotLoaded`] when a check fails; [`Error::Io`] or
    /// [`Error::PermissionDenied`] when a sysfs file or the record in
    /// `/run/vfio-rs` cannot be written; [`Error::Unsupported`] when the device
    /// is not on vfio-pci afterwards (its `driver_override` then stays
    /// `vfio-pci`).
    ///
    /// ```no_run
    /// # fn main() -> vfio_core::Result<()> {
    /// let sysfs = vfio_core::pci::Sysfs::new();
    /// let outcome = sysfs.bind_vfio("0000:01:00.0".parse()?)?;
    /// println!("was on {:?}, now /dev/vfio/{}", outcome.previous_driver, outcome.iommu_group);
    /// # Ok(()) }
    /// ```
    pub fn bind_vfio(&self, addr: PciAddress) -> Result<BindOutcome> {
        let dev = self.device(addr)?;
        let iommu_group = dev.iommu_group.ok_or(Error::NoIommuGroup { addr })?;
        let previous_driver = dev.driver.clone();
        if previous_driver.as_deref() == Some(VFIO_PCI) {
            return Ok(BindOutcome {
                previous_driver,
                iommu_group,
                changed: false,
            });
        }
        self.ensure_vfio_pci()?;
        self.remember_driver(addr, previous_driver.as_deref())?;
        let dir = self.device_dir(addr);
        write(&dir.join("driver_override"), VFIO_PCI)?;
        if previous_driver.is_some() {
            write(&dir.join("driver/unbind"), &addr.to_string())?;
        }
        write(&self.path("sys/bus/pci/drivers_probe"), &addr.to_string())?;
        match self.device(addr)?.driver {
            Some(d) if d == VFIO_PCI => Ok(BindOutcome { previous_driver, iommu_group, changed: true }),
            now => Err(Error::Unsupported {
                addr,
                what: format!(
                    "vfio-pci did not take the device after driver_override and drivers_probe (driver now: {}); see `dmesg`",
                    now.as_deref().unwrap_or("none")
                ),
            }),
        }
    }

    /// Hands `addr` back to the driver it had before [`Sysfs::bind_vfio`] (or to
    /// the kernel's default driver). A device that is not on vfio-pci is left
    /// as it is, and the outcome says nothing changed. Needs root.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceNotFound`] when there is no such device; [`Error::Io`]
    /// or [`Error::PermissionDenied`] when a sysfs file cannot be written.
    pub fn unbind_vfio(&self, addr: PciAddress) -> Result<UnbindOutcome> {
        let dev = self.device(addr)?;
        if dev.driver.as_deref() != Some(VFIO_PCI) {
            return Ok(UnbindOutcome {
                driver: dev.driver,
                changed: false,
            });
        }
        let dir = self.device_dir(addr);
        write(&dir.join("driver_override"), "\n")?;
        write(&dir.join("driver/unbind"), &addr.to_string())?;
        let bound = match self.recorded_driver(addr) {
            Some(d) => write(
                &self.path(format!("sys/bus/pci/drivers/{d}/bind")),
                &addr.to_string(),
            )
            .is_ok(),
            None => false,
        };
        if !bound {
            write(&self.path("sys/bus/pci/drivers_probe"), &addr.to_string())?;
        }
        let _ = fs::remove_file(self.state_file(addr));
        Ok(UnbindOutcome {
            driver: self.device(addr)?.driver,
            changed: true,
        })
    }

    /// Gives user `uid` (group `gid`) the VFIO group's character device
    /// (`/dev/vfio/<group>`), so that user can open the devices in it without
    /// root. The user also needs a locked-memory limit large enough for its
    /// DMA memory ([`Error::MemlockLimit`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (or [`Error::PermissionDenied`]) when the `chown` fails,
    /// e.g. because the group is on no vfio-pci device yet.
    pub fn give_group_to_user(&self, group: u32, uid: u32, gid: u32) -> Result<()> {
        let path = self.path(format!("dev/vfio/{group}"));
        nix::unistd::chown(&path, Some(uid.into()), Some(gid.into()))
            .map_err(|e| Error::io("chown", &path, e.into()))
    }

    /// vfio-pci must be registered; try `modprobe vfio-pci` once if it is not.
    fn ensure_vfio_pci(&self) -> Result<()> {
        let dir = self.path("sys/bus/pci/drivers/vfio-pci");
        if !dir.exists() && self.path("") == Path::new("/") {
            let _ = Command::new("modprobe").arg("vfio-pci").status();
        }
        if dir.exists() {
            Ok(())
        } else {
            Err(Error::VfioNotLoaded { path: dir })
        }
    }

    fn state_file(&self, addr: PciAddress) -> std::path::PathBuf {
        self.path(format!("run/vfio-rs/{addr}.driver"))
    }

    fn remember_driver(&self, addr: PciAddress, driver: Option<&str>) -> Result<()> {
        let file = self.state_file(addr);
        if let Some(dir) = file.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        fs::write(&file, driver.unwrap_or("")).map_err(|e| Error::io("write", &file, e))
    }

    fn recorded_driver(&self, addr: PciAddress) -> Option<String> {
        let text = fs::read_to_string(self.state_file(addr)).ok()?;
        let name = text.trim();
        (!name.is_empty() && name != "." && name != ".." && !name.contains('/'))
            .then(|| name.to_string())
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|e| Error::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::sysfs::tests::fake_device;

    const NVME: (&str, &str, &str) = ("0x1b36", "0x0010", "0x010802");

    fn addr() -> PciAddress {
        "0000:00:03.0".parse().unwrap()
    }

    #[test]
    fn no_iommu_group_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let dir = fake_device(t.path(), "0000:00:03.0", NVME, Some("nvme"), None);
        let err = Sysfs::with_root(t.path()).bind_vfio(addr()).unwrap_err();
        assert!(matches!(err, Error::NoIommuGroup { .. }), "{err}");
        assert!(err.to_string().contains("intel_iommu=on"));
        assert_eq!(
            fs::read_to_string(dir.join("driver_override")).unwrap(),
            "(null)\n"
        );
        assert!(!t.path().join("run").exists());
    }

    #[test]
    fn vfio_pci_not_loaded_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let dir = fake_device(t.path(), "0000:00:03.0", NVME, Some("nvme"), Some(3));
        let err = Sysfs::with_root(t.path()).bind_vfio(addr()).unwrap_err();
        assert!(matches!(err, Error::VfioNotLoaded { .. }), "{err}");
        assert!(err.to_string().contains("modprobe vfio-pci"));
        assert_eq!(
            fs::read_to_string(dir.join("driver_override")).unwrap(),
            "(null)\n"
        );
    }

    #[test]
    fn already_on_vfio_pci_is_not_changed() {
        let t = tempfile::tempdir().unwrap();
        fake_device(t.path(), "0000:00:03.0", NVME, Some("vfio-pci"), Some(3));
        let out = Sysfs::with_root(t.path()).bind_vfio(addr()).unwrap();
        assert_eq!(
            out,
            BindOutcome {
                previous_driver: Some("vfio-pci".into()),
                iommu_group: 3,
                changed: false
            }
        );
    }

    #[test]
    fn bind_writes_override_unbind_and_probe_then_checks() {
        let t = tempfile::tempdir().unwrap();
        let dir = fake_device(t.path(), "0000:00:03.0", NVME, Some("nvme"), Some(3));
        fs::create_dir_all(t.path().join("sys/bus/pci/drivers/vfio-pci")).unwrap();
        let err = Sysfs::with_root(t.path()).bind_vfio(addr()).unwrap_err();
        // A fake tree cannot re-bind, so the final check must catch it.
        assert!(
            err.to_string().contains("vfio-pci did not take the device"),
            "{err}"
        );
        assert!(err.to_string().contains("driver now: nvme"), "{err}");
        assert_eq!(
            fs::read_to_string(dir.join("driver_override")).unwrap(),
            "vfio-pci"
        );
        let drivers = t.path().join("sys/bus/pci/drivers");
        assert_eq!(
            fs::read_to_string(drivers.join("nvme/unbind")).unwrap(),
            "0000:00:03.0"
        );
        assert_eq!(
            fs::read_to_string(t.path().join("sys/bus/pci/drivers_probe")).unwrap(),
            "0000:00:03.0"
        );
        assert_eq!(
            Sysfs::with_root(t.path())
                .recorded_driver(addr())
                .as_deref(),
            Some("nvme")
        );
    }

    #[test]
    fn unbind_of_a_device_not_on_vfio_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let dir = fake_device(t.path(), "0000:00:03.0", NVME, Some("nvme"), Some(3));
        let now = Sysfs::with_root(t.path()).unbind_vfio(addr()).unwrap();
        assert_eq!(now.driver.as_deref(), Some("nvme"));
        assert!(!now.changed);
        assert_eq!(
            fs::read_to_string(dir.join("driver_override")).unwrap(),
            "(null)\n"
        );
    }

    #[test]
    fn unbind_clears_override_and_binds_the_recorded_driver() {
        let t = tempfile::tempdir().unwrap();
        let dir = fake_device(t.path(), "0000:00:03.0", NVME, Some("vfio-pci"), Some(3));
        let sysfs = Sysfs::with_root(t.path());
        sysfs.remember_driver(addr(), Some("nvme")).unwrap();
        fs::create_dir_all(t.path().join("sys/bus/pci/drivers/nvme")).unwrap();
        assert!(sysfs.unbind_vfio(addr()).unwrap().changed);
        let drivers = t.path().join("sys/bus/pci/drivers");
        assert_eq!(
            fs::read_to_string(dir.join("driver_override")).unwrap(),
            "\n"
        );
        assert_eq!(
            fs::read_to_string(drivers.join("vfio-pci/unbind")).unwrap(),
            "0000:00:03.0"
        );
        assert_eq!(
            fs::read_to_string(drivers.join("nvme/bind")).unwrap(),
            "0000:00:03.0"
        );
        assert!(!sysfs.state_file(addr()).exists());
    }
}
