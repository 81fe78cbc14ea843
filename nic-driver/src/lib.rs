//! # nic-driver
//!
//! NIC drivers on vfio-core, behind one trait, [`NetDevice`], that every
//! program (pktgen, echo, the forwarder) uses unchanged.
//!
//! Frames live in buffers of a vfio-core pool. A received [`Packet`] is the
//! buffer the NIC wrote; a [`TxFrame`] is one or more buffer segments the NIC
//! reads (a small header buffer and a payload buffer another device filled go
//! out as one frame, with no copy). Every buffer goes back to its pool when
//! the device is done with it, on every path, including dropping the device.
//!
//! - [`e1000`]: Intel 8254x (QEMU's `e1000`, 82540EM; also 82545EM, 82544GC).
//! - [`virtio`]: virtio-net over modern virtio-pci (QEMU's `virtio-net-pci`
//!   with `disable-legacy=on,iommu_platform=on`).

pub mod e1000;
mod error;
mod frame;
pub mod quiesce;
#[cfg(test)]
mod testing;
pub mod virtio;

use std::collections::VecDeque;
use std::time::Duration;

pub use error::{Error, Result};

use std::sync::Arc;

use vfio_core::pci::PciAddress;
use vfio_core::vfio::Container;

/// Opens the NIC at `addr` with the driver its PCI ID calls for.
///
/// ```no_run
/// # fn main() -> nic_driver::Result<()> {
/// let container = vfio_core::vfio::Container::new()?;
/// let nic = nic_driver::open(&container, "0000:00:04.0".parse()?, nic_driver::e1000::Config::default())?;
/// println!("{} {:02x?}", nic.driver_name(), nic.mac());
/// # Ok(()) }
/// ```
pub fn open(
    container: &Arc<Container>,
    addr: PciAddress,
    config: Config,
) -> Result<Box<dyn NetDevice + Send>> {
    let device = container.open_device(addr)?;
    let (vendor, id) = (device.vendor_id()?, device.device_id()?);
    if vendor == 0x8086 && e1000::DEVICE_IDS.contains(&id) {
        return Ok(Box::new(e1000::E1000::new(device, config)?));
    }
    if vendor == virtio::regs::VENDOR && virtio::DEVICE_IDS.contains(&id) {
        return Ok(Box::new(virtio::VirtioNet::new(device, config)?));
    }
    Err(Error::Device {
        addr,
        what: format!(
            "{vendor:04x}:{id:04x} is no NIC these drivers know (e1000: 8086:{:04x?}, virtio-net: 1af4:{:04x?})",
            e1000::DEVICE_IDS,
            virtio::DEVICE_IDS
        ),
    })
}
pub use frame::{ChecksumOffload, Packet, Segment, TxFrame, MAX_SEGMENTS};

/// How a NIC is set up (every driver takes the same settings).
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub rx_ring: usize,
    pub tx_ring: usize,
    /// Frames up to 9018 bytes (16 KiB receive buffers); else up to 1518.
    pub jumbo: bool,
    /// Sleep in [`NetDevice::wait_rx`] until the NIC interrupts, instead of returning at once.
    pub interrupts: bool,
    /// Extra pool buffers beyond those the rings hold, for frames being built or held.
    pub spare_buffers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rx_ring: 256,
            tx_ring: 256,
            jumbo: false,
            interrupts: false,
            spare_buffers: 1024,
        }
    }
}

/// Link state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    /// Mb/s, when up.
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Counters since the device was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames the NIC dropped for lack of receive buffers or ring space.
    pub rx_dropped: u64,
    /// Frames received with errors, or that the driver refused (bad length, no EOP).
    pub rx_errors: u64,
}

/// A network device driven from user space.
pub trait NetDevice {
    /// The driver's name, e.g. "e1000".
    fn driver_name(&self) -> &'static str;

    /// Moves up to `max` received frames into `out` (give it the capacity, so
    /// nothing is allocated); returns how many.
    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> Result<usize>;

    /// Sends frames from the front of `frames` until it is empty or the ring is
    /// full; returns how many were queued. While the link is down nothing is
    /// taken and the error says so, so no frame is lost silently.
    fn tx_batch(&mut self, frames: &mut VecDeque<TxFrame>) -> Result<usize>;

    /// Reclaims buffers of frames the NIC has sent; returns how many frames.
    fn tx_clean(&mut self) -> usize;

    /// Frames queued for transmission and not yet sent.
    fn tx_pending(&self) -> usize;

    /// A fresh buffer from the device's pool, for building a frame.
    fn alloc_packet(&self) -> Option<Packet>;

    /// The pool the device's buffers come from (to count what is out).
    fn pool(&self) -> &Arc<vfio_core::dma::BufferPool>;

    /// The MAC address.
    fn mac(&self) -> [u8; 6];

    /// Link state now.
    fn link(&self) -> Link;

    /// Receive every frame, whatever its destination.
    fn set_promiscuous(&mut self, on: bool);

    /// Counters (hardware counters accumulated in software).
    fn stats(&mut self) -> Stats;

    /// Sleeps until a frame may have arrived or `timeout` passes (interrupt
    /// mode); in polling mode returns at once. True if woken by the device.
    fn wait_rx(&mut self, timeout: Duration) -> Result<bool>;
}

/// A MAC address a device reported, if it can be a station's own: not
/// all zeros, not a group (multicast or broadcast) address.
pub(crate) fn check_mac(mac: [u8; 6]) -> std::result::Result<[u8; 6], String> {
    if mac == [0; 6] || mac[0] & 1 == 1 {
        return Err(format!(
            "the device reports MAC {} (all zeros or a group address), which no NIC may use as its own",
            mac.map(|b| format!("{b:02x}")).join(":")
        ));
    }
    Ok(mac)
}
