//! A VFIO group (/dev/vfio/N), attached to a container.
