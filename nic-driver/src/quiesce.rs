//! Stopping a NIC's DMA before its memory is reused, and what a driver does
//! when it cannot prove the NIC stopped.
//!
//! The rule, for every driver here: no receive buffer goes back to its pool,
//! no transmit segment is released and no ring memory is unmapped while the
//! NIC may still reach it. Both the driver's `Drop` and every error return of
//! its constructor after a ring was given to the NIC (the constructor builds
//! the driver value first, so `Drop` runs) take the same three steps:
//!
//! 1. Stop the NIC and prove it stopped by reading it back (e1000: receive
//!    and transmit disabled and `CTRL.RST` completed within its bound; virtio:
//!    device status reads 0 after a reset). A read is proof only while the
//!    device decodes memory (a BAR with decoding off reads 0, which would look
//!    like a finished reset) and does not read all ones (a removed device).
//! 2. Otherwise clear Bus Master Enable and read the command register back
//!    ([`Device::disable_bus_master`]): a device with it clear starts no DMA.
//! 3. Otherwise leak on purpose: the rings leave their descriptor memory
//!    ([`DmaMemory::leak_on_drop`](vfio_core::dma::DmaMemory::leak_on_drop))
//!    and every buffer they hold ([`DmaTarget::leak`]) allocated and mapped
//!    for the rest of the process, so nothing else is ever placed there;
//!    counted in [`vfio_core::dma::leaked`] and logged with `log::error!`.

use vfio_core::dma::DmaTarget;
use vfio_core::vfio::Device;

use crate::Result;

/// Steps 1 and 2 of the rule: runs `stop` (which stops the NIC and proves it
/// from its registers) and, when that fails or registers cannot be trusted,
/// turns bus mastering off. True when the NIC's memory may be reused.
pub(crate) fn stop_dma(device: &Device, driver: &str, stop: impl FnOnce() -> Result<()>) -> bool {
    let addr = device.address();
    let why = match device.memory_enabled() {
        Ok(true) => match stop() {
            Ok(()) => return true,
            Err(e) => e.to_string(),
        },
        Ok(false) => "memory decoding is off, so its registers prove nothing".to_string(),
        Err(e) => format!("its command register cannot be read ({e})"),
    };
    match device.disable_bus_master() {
        Ok(()) => {
            log::warn!(
                "{addr}: {driver} not proven stopped ({why}); bus mastering is off, so it starts no more DMA"
            );
            true
        }
        Err(e) => {
            log::error!(
                "{addr}: {driver} not proven stopped ({why}), and bus mastering could not be turned off ({e})"
            );
            false
        }
    }
}

/// Step 3, for one buffer or region: leaves it allocated and mapped (see
/// [`DmaTarget::leak`]).
pub(crate) fn leak(target: impl DmaTarget) {
    target.leak();
}

/// Step 3: says which driver leaked how much, and why (each region is also
/// logged and counted by vfio-core).
pub(crate) fn log_leak(device: &Device, driver: &str, buffers: usize, regions: usize) {
    log::error!(
        "{}: {driver}: leaving {buffers} buffers and {regions} DMA regions allocated and mapped for good: \
         the NIC may still reach them (reset the device, e.g. by rebinding it, and restart the program \
         to get them back)",
        device.address()
    );
}
