//! Interrupts delivered to eventfds (VFIO_DEVICE_SET_IRQS).

use std::time::Duration;

use crate::Result;

/// The three PCI interrupt mechanisms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqKind {
    Intx,
    Msi,
    Msix,
}

/// Enabled interrupt vectors, each signalling an eventfd. Disabled on drop.
#[derive(Debug)]
pub struct Interrupts {}

impl Interrupts {
    /// The mechanism in use.
    pub fn kind(&self) -> IrqKind {
        todo!()
    }
    /// Number of vectors.
    pub fn len(&self) -> usize {
        todo!()
    }
    /// True when no vector is enabled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Waits up to `timeout` for vector `vector`; returns how many interrupts
    /// arrived since the last wait, or 0 on timeout.
    pub fn wait(&self, _vector: usize, _timeout: Duration) -> Result<u64> {
        todo!()
    }
    /// Unmasks INTx after it fired (INTx is masked by VFIO when it fires).
    pub fn unmask(&self) -> Result<()> {
        todo!()
    }
}
