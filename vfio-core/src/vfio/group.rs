//! A VFIO group (/dev/vfio/N), attached to a container.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use vfio_bindings::bindings::vfio::VFIO_GROUP_FLAGS_VIABLE;

use super::{ioctl, Container};
use crate::pci::Sysfs;
use crate::{Error, Result};

/// An open IOMMU group attached to a container, which owns it. The group
/// detaches when its file descriptor closes (on drop).
#[derive(Debug)]
pub(crate) struct Group {
    fd: OwnedFd,
    number: u32,
}

impl Group {
    /// Opens /dev/vfio/`number`, checks it is viable and attaches it to `container`.
    pub(crate) fn open(container: &Container, number: u32) -> Result<Group> {
        let path = PathBuf::from(format!("/dev/vfio/{number}"));
        let fd: OwnedFd = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::VfioNotLoaded { path: path.clone() },
                _ => Error::io("open", &path, e),
            })?
            .into();
        let group = Group { fd, number };
        group.check_viable()?;
        ioctl::group_set_container(group.fd.as_fd(), container.fd()?.as_fd())
            .map_err(|e| group.ioctl_err("VFIO_GROUP_SET_CONTAINER", e))?;
        Ok(group)
    }

    fn check_viable(&self) -> Result<()> {
        let flags = ioctl::group_status(self.fd.as_fd())
            .map_err(|e| self.ioctl_err("VFIO_GROUP_GET_STATUS", e))?;
        if flags & VFIO_GROUP_FLAGS_VIABLE != 0 {
            return Ok(());
        }
        let others = Sysfs::new()
            .group_members(self.number)?
            .into_iter()
            .filter_map(|d| Some((d.address, d.driver?)))
            .filter(|(_, driver)| driver != "vfio-pci")
            .collect();
        Err(Error::GroupNotViable {
            group: self.number,
            others,
        })
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub(crate) fn ioctl_err(&self, ioctl: &'static str, source: io::Error) -> Error {
        Error::Ioctl {
            ioctl,
            what: format!("/dev/vfio/{}", self.number),
            source,
        }
    }
}
