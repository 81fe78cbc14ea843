//! PCI: addresses, discovery in sysfs, and binding devices to vfio-pci and back.

mod address;
mod bind;
mod sysfs;

pub use address::PciAddress;
pub use bind::{BindOutcome, UnbindOutcome};
pub use sysfs::{PciDevice, Sysfs};
