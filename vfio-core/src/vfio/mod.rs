//! VFIO: the container (one IOMMU context), devices opened in it, and their
//! interrupts. IOMMU groups are opened and attached by the container as its
//! devices need them.
//!
//! Interrupts are waited for with [`Interrupts::wait`] or
//! [`Interrupts::wait_any`]; how to acknowledge INTx, MSI and MSI-X is in
//! [`Interrupts`](Interrupts#acknowledging-an-interrupt).

mod container;
mod device;
mod group;
mod ioctl;
mod irq;
#[cfg(feature = "tokio")]
mod irq_async;
mod lend;
mod stop;

pub use container::Container;
pub use device::{Device, RegionInfo};
#[cfg(any(test, feature = "testing"))]
pub use irq::IrqLine;
pub use irq::{Interrupts, IrqKind, Wait};
#[cfg(feature = "tokio")]
pub use irq_async::AsyncVector;
pub use lend::{Lent, Quiesce, QuiesceStep};
pub use stop::{AbortOnUnwind, Stopped};
