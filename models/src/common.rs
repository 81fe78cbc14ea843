//! What the NIC models share: a PCI configuration space whose command
//! register gates their DMA, DMA through the container that counts faults,
//! the Internet checksum, and the thread that runs a model's DMA engine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vfio_core::mmio::RegisterModel;
use vfio_core::vfio::Container;

/// PCI command register (PCI Local Bus 3.0, 6.2.2) and its Bus Master Enable bit.
const COMMAND: usize = 0x04;
const BUS_MASTER: u8 = 1 << 2;

/// Type 0 configuration space (PCI Local Bus 3.0, 6.1): memory, except that
/// only the command register (0x04..0x06) and the BARs (0x10..0x28) take
/// writes; IDs, class, status and capabilities are read-only.
#[derive(Debug)]
pub(crate) struct PciConfig {
    bytes: [u8; 256],
    /// The command register ignores writes: Bus Master Enable cannot be
    /// cleared (a fault for tests).
    pub(crate) command_stuck: bool,
}

impl PciConfig {
    /// A header with these IDs and class code, and `caps` bytes copied in
    /// from 0x40 on (the capability list starts there when `caps` is not
    /// empty).
    pub(crate) fn new(vendor: u16, device: u16, revision: u8, class: u32, caps: &[u8]) -> Self {
        let mut bytes = [0u8; 256];
        bytes[0..2].copy_from_slice(&vendor.to_le_bytes());
        bytes[2..4].copy_from_slice(&device.to_le_bytes());
        bytes[8] = revision;
        bytes[9..12].copy_from_slice(&class.to_le_bytes()[..3]);
        bytes[0x2c..0x2e].copy_from_slice(&vendor.to_le_bytes()); // subsystem vendor
        if !caps.is_empty() {
            bytes[0x06] |= 1 << 4; // status: capabilities list
            bytes[0x34] = 0x40;
            bytes[0x40..0x40 + caps.len()].copy_from_slice(caps);
        }
        PciConfig {
            bytes,
            command_stuck: false,
        }
    }

    /// Sets the subsystem ID (0x2e).
    pub(crate) fn subsystem(mut self, id: u16) -> Self {
        self.bytes[0x2e..0x30].copy_from_slice(&id.to_le_bytes());
        self
    }

    fn bus_master(&self) -> bool {
        self.bytes[COMMAND] & BUS_MASTER != 0
    }
}

/// Faults of a NIC's register interface, for tests of what a driver does
/// when it cannot stop the device through its registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wedge {
    /// Registers work.
    #[default]
    None,
    /// Every BAR write is ignored (a hung NIC): receive and transmit stay
    /// on as they were set up, and a reset never happens. DMA still obeys
    /// Bus Master Enable.
    IgnoresWrites,
    /// Every BAR access panics, in the driver's thread: a stand-in for a
    /// driver's stop step that panics.
    Panics,
}

impl RegisterModel for PciConfig {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&self.bytes[offset..offset + size]);
        u64::from_le_bytes(b)
    }

    fn write(&mut self, offset: usize, size: usize, value: u64) {
        for (i, byte) in value.to_le_bytes()[..size].iter().enumerate() {
            let at = offset + i;
            let command = (COMMAND..COMMAND + 2).contains(&at);
            if (command && !self.command_stuck) || (0x10..0x28).contains(&at) {
                self.bytes[at] = *byte;
            }
        }
    }
}

/// A device's view of memory: IOVAs through the container, as through the
/// IOMMU, only while Bus Master Enable is set (PCI Local Bus 3.0, 6.2.2: a
/// device with it clear starts no DMA). Every access that finds no mapping,
/// or is not allowed, is counted in `faults`.
#[derive(Debug)]
pub(crate) struct Dma {
    container: Arc<Container>,
    config: Arc<Mutex<PciConfig>>,
    /// Whether the device may start DMA now (sampled by [`Dma::begin`]).
    enabled: bool,
    pub faults: u64,
}

impl Dma {
    pub(crate) fn new(container: &Arc<Container>, config: &Arc<Mutex<PciConfig>>) -> Dma {
        Dma {
            container: Arc::clone(container),
            config: Arc::clone(config),
            enabled: false,
            faults: 0,
        }
    }

    /// Bus Master Enable, as the command register holds it now.
    pub(crate) fn bus_master(&self) -> bool {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bus_master()
    }

    /// Makes the command register ignore writes (or take them again).
    pub(crate) fn set_command_stuck(&self, on: bool) {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .command_stuck = on;
    }

    /// Samples Bus Master Enable before a burst of DMA; false when clear.
    pub(crate) fn begin(&mut self) -> bool {
        let config = self.config.lock().unwrap_or_else(|p| p.into_inner());
        self.enabled = config.bus_master();
        self.enabled
    }

    pub(crate) fn read(&mut self, iova: u64, out: &mut [u8]) -> bool {
        let ok = self.enabled && self.container.dma_read(iova, out).is_ok();
        self.faults += !ok as u64;
        ok
    }

    pub(crate) fn write(&mut self, iova: u64, data: &[u8]) -> bool {
        let ok = self.enabled && self.container.dma_write(iova, data).is_ok();
        self.faults += !ok as u64;
        ok
    }

    pub(crate) fn read_u16(&mut self, iova: u64) -> Option<u16> {
        let mut b = [0u8; 2];
        self.read(iova, &mut b).then(|| u16::from_le_bytes(b))
    }
}

/// The Internet checksum (RFC 1071) of `bytes`, added to the 16-bit
/// one's complement sum already in the field it goes into (`initial`,
/// e.g. a pseudo-header sum software left there): the complement of the
/// folded sum of both.
pub(crate) fn internet_checksum(bytes: &[u8], initial: u16) -> u16 {
    let mut sum = initial as u64;
    let mut pairs = bytes.chunks_exact(2);
    for p in &mut pairs {
        sum += u16::from_be_bytes([p[0], p[1]]) as u64;
    }
    if let [last] = pairs.remainder() {
        sum += (*last as u64) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Computes the checksum over `frame[start..end]` (the field at `at`
/// included, with what it holds) and stores it big-endian at `at`. Nothing
/// happens when the range or the field lie outside the frame.
pub(crate) fn insert_checksum(frame: &mut [u8], start: usize, end: usize, at: usize) {
    if start >= end || end > frame.len() || at + 2 > frame.len() {
        return;
    }
    let field = u16::from_be_bytes([frame[at], frame[at + 1]]);
    frame[at..at + 2].copy_from_slice(&[0, 0]);
    let sum = internet_checksum(&frame[start..end], field);
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// How a model runs: inside the driver's register writes and the test's
/// calls (synchronous, deterministic), or on a thread of its own.
pub(crate) trait Engine: Send + 'static {
    /// Does what the device has pending: transmit what was made available,
    /// receive queued frames into free buffers.
    fn poll(&mut self);
    /// Turns processing inside register writes off (a thread runs the model) or on.
    fn set_threaded(&mut self, on: bool);
}

/// A model's DMA engine on its own thread ([`crate::e1000::E1000Model::spawn`],
/// [`crate::virtio_net::VirtioNetModel::spawn`]): it polls the model every
/// 20 µs, so the driver sees descriptors completed some time after it gave
/// them, as on hardware. Dropping it stops and joins the thread, and the
/// model is synchronous again.
///
/// Its DMA and the driver's volatile reads of the same memory race in
/// Rust's memory model, as a real device's DMA does; Miri reports that as
/// a data race, so tests with a model thread are for native runs (the
/// synchronous mode runs the same code on one thread).
pub struct ModelThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// Makes the model synchronous again.
    restore: Box<dyn Fn() + Send>,
}

impl std::fmt::Debug for ModelThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelThread")
            .field("running", &self.handle.is_some())
            .finish()
    }
}

pub(crate) fn spawn<M: Engine>(model: &Arc<Mutex<M>>) -> ModelThread {
    model
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_threaded(true);
    let stop = Arc::new(AtomicBool::new(false));
    let (m, s) = (Arc::clone(model), Arc::clone(&stop));
    let handle = std::thread::spawn(move || {
        while !s.load(Ordering::Acquire) {
            m.lock().unwrap_or_else(|p| p.into_inner()).poll();
            std::thread::sleep(Duration::from_micros(20));
        }
    });
    let m = Arc::clone(model);
    ModelThread {
        stop,
        handle: Some(handle),
        restore: Box::new(move || {
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_threaded(false)
        }),
    }
}

impl Drop for ModelThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (self.restore)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_internet_checksum_of_rfc_1071s_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&bytes, 0), !0xddf2);
        assert_eq!(
            internet_checksum(&bytes[..7], 0),
            !0xdcfb,
            "an odd byte is padded with 0"
        );
        let mut frame = bytes.to_vec();
        frame.extend([0, 0]);
        insert_checksum(&mut frame, 0, 10, 8);
        assert_eq!(
            internet_checksum(&frame, 0),
            0,
            "a checksummed range sums to 0"
        );
    }
}

/// Config space whose command register (offset 4) ignores writes: bus
/// mastering cannot be turned off, for tests of the path where a device can
/// be stopped neither by its own registers nor by Bus Master Enable.
#[derive(Debug)]
pub struct StuckCommand(pub vfio_core::mmio::RegisterFile);

impl vfio_core::mmio::RegisterModel for StuckCommand {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        self.0.read(offset, size)
    }
    fn write(&mut self, offset: usize, size: usize, value: u64) {
        if !(4..6).contains(&offset) {
            self.0.write(offset, size, value);
        }
    }
}
