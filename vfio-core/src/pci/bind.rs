//! Binding to vfio-pci through driver_override + drivers_probe, and back.

/// What `Sysfs::bind_vfio` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindOutcome {
    /// The driver the device had before (None if it had none).
    pub previous_driver: Option<String>,
    /// The device's IOMMU group (/dev/vfio/N).
    pub iommu_group: u32,
    /// False when the device was on vfio-pci already.
    pub changed: bool,
}
